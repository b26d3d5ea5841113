"""Realistic source events of each mapped format, written for these tests from the public field
references (Sysmon's event schema, the Windows security-audit event pages, Winlogbeat's exported
fields, the ECS field reference, the OCSF schema browser). No event is copied from a dataset.

Every free-text field carries a planted secret (PLANTED_*), an account name (`amelia.rourke`),
host names and SIDs, so the tests can scan the whole output for them. `events(fmt)` gives
(name, source object, what the mapped record must say) triples; `PLANTED` the strings that
must never be found in any output.
"""
# ruff: noqa: E501  (event data written out as the events carry it)

from __future__ import annotations

import base64
import copy
from typing import Any

HOST = "WS-AMELIA-07.corp.example"
ACCOUNT = "amelia.rourke"
SID = "S-1-5-21-3623811015-3361044348-30300820-1013"
PW = "PLANTEDpw-Zq8vX2"          # after a credential switch / in user info
TOKEN = "ghp_PLANTED0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0"  # a GitHub token shape
ENC_PW = "PLANTEDenc-Kd93Lq"      # inside a PowerShell -EncodedCommand payload
PLANTED = [PW, TOKEN, ENC_PW, ACCOUNT, "WS-AMELIA-07", SID, "PLANTED"]
TS = "2026-11-20T10:04:05.123Z"
UTC = "2026-11-20 10:04:05.123"


def _enc(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


ENCODED = _enc(f"$p = ConvertTo-SecureString '{ENC_PW}' -AsPlainText -Force; Invoke-Thing -Password '{ENC_PW}'")
PROFILE = f"C:\\Users\\{ACCOUNT}"

# ------------------------------------------------------------------ Windows: event data per event

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SECURITY = "Security"
POWERSHELL = "Microsoft-Windows-PowerShell/Operational"
WLAN = "Microsoft-Windows-WLAN-AutoConfig/Operational"
DEFENDER = "Microsoft-Windows-Windows Defender/Operational"

_WIN: list[tuple[str, str, int, str, dict[str, Any], dict[str, Any]]] = [
    # (name, channel, id, provider, event data, expected mapped data)
    ("sysmon/1", SYSMON, 1, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "UtcTime": UTC, "ProcessGuid": "{5770385f-c22a-6384-0f00-000000000d00}",
        "ProcessId": "4312", "Image": "C:\\Windows\\System32\\net.exe", "FileVersion": "10.0.19041.1",
        "Description": "Net Command", "Product": "Microsoft Windows Operating System", "Company": "Microsoft",
        "OriginalFileName": "net.exe",
        "CommandLine": f"net use \\\\fs01\\share /user:CORP\\{ACCOUNT} {PW}",
        "CurrentDirectory": f"{PROFILE}\\", "User": f"CORP\\{ACCOUNT}",
        "LogonGuid": "{5770385f-c1f0-6384-3b1b-020000000000}", "LogonId": "0x21b3b", "TerminalSessionId": "1",
        "IntegrityLevel": "Medium", "Hashes": "SHA256=0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9",
        "ParentProcessGuid": "{5770385f-c229-6384-0e00-000000000d00}", "ParentProcessId": "3988",
        "ParentImage": f"{PROFILE}\\AppData\\Local\\Temp\\run.exe",
        "ParentCommandLine": f"run.exe --token {TOKEN}", "ParentUser": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "process_start", "pid": 4312, "parent_pid": 3988}),
    ("sysmon/3", SYSMON, 3, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "UtcTime": UTC, "ProcessGuid": "{5770385f-c22a-6384-1100-000000000d00}",
        "ProcessId": "2240", "Image": f"{PROFILE}\\AppData\\Local\\app\\sync.exe", "User": f"CORP\\{ACCOUNT}",
        "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": "10.20.30.41",
        "SourceHostname": HOST, "SourcePort": "50312", "SourcePortName": "-", "DestinationIsIpv6": "false",
        "DestinationIp": "203.0.113.77", "DestinationHostname": "sync.example.net", "DestinationPort": "443",
        "DestinationPortName": "https",
    }, {"event_kind": "network_connect", "pid": 2240, "remote_ip": "203.0.113.77", "remote_port": 443}),
    ("sysmon/11", SYSMON, 11, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "UtcTime": UTC, "ProcessGuid": "{5770385f-c22a-6384-1200-000000000d00}",
        "ProcessId": "6120", "Image": "C:\\Program Files\\Mozilla Firefox\\firefox.exe",
        "TargetFilename": f"{PROFILE}\\Downloads\\invoice-{TOKEN}.pdf",
        "CreationUtcTime": UTC, "User": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "file_write", "pid": 6120}),
    ("sysmon/12", SYSMON, 12, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "EventType": "CreateKey", "UtcTime": UTC,
        "ProcessGuid": "{5770385f-c22a-6384-1300-000000000d00}", "ProcessId": "812",
        "Image": "C:\\Windows\\regedit.exe", "TargetObject": f"HKU\\{SID}\\Software\\Vendor\\Sync",
        "User": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "registry_key", "pid": 812}),
    ("sysmon/13", SYSMON, 13, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "EventType": "SetValue", "UtcTime": UTC,
        "ProcessGuid": "{5770385f-c22a-6384-1300-000000000d00}", "ProcessId": "812",
        "Image": "C:\\Windows\\regedit.exe",
        "TargetObject": f"HKU\\{SID}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\Sync",
        "Details": f"{PROFILE}\\sync.exe --password {PW}", "User": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "registry_set", "pid": 812}),
    ("sysmon/14", SYSMON, 14, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "EventType": "RenameKey", "UtcTime": UTC,
        "ProcessGuid": "{5770385f-c22a-6384-1300-000000000d00}", "ProcessId": "812",
        "Image": "C:\\Windows\\regedit.exe", "TargetObject": f"HKU\\{SID}\\Software\\Vendor\\Old",
        "NewName": f"HKU\\{SID}\\Software\\Vendor\\New", "User": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "registry_rename", "pid": 812}),
    ("sysmon/22", SYSMON, 22, "Microsoft-Windows-Sysmon", {
        "RuleName": "-", "UtcTime": UTC, "ProcessGuid": "{5770385f-c22a-6384-1400-000000000d00}",
        "ProcessId": "6120", "QueryName": "telemetry.example.org", "QueryStatus": "0",
        "QueryResults": "::ffff:198.51.100.23;", "Image": "C:\\Program Files\\Mozilla Firefox\\firefox.exe",
        "User": f"CORP\\{ACCOUNT}",
    }, {"event_kind": "dns_query", "pid": 6120, "query_name": "telemetry.example.org"}),
    ("security/4688", SECURITY, 4688, "Microsoft-Windows-Security-Auditing", {
        "SubjectUserSid": SID, "SubjectUserName": ACCOUNT, "SubjectDomainName": "CORP",
        "SubjectLogonId": "0x21b3b", "NewProcessId": "0x10d8", "NewProcessName": "C:\\Windows\\System32\\cmd.exe",
        "TokenElevationType": "%%1938", "ProcessId": "0xf94",
        "CommandLine": f"cmd.exe /c curl -u admin:{PW} https://intra.example.com/api",
        "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
        "ParentProcessName": "C:\\Windows\\explorer.exe", "MandatoryLabel": "S-1-16-8192",
    }, {"event_kind": "process_start", "pid": 0x10d8, "parent_pid": 0xF94}),
    ("security/4624", SECURITY, 4624, "Microsoft-Windows-Security-Auditing", {
        "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS-AMELIA-07$", "SubjectDomainName": "CORP",
        "SubjectLogonId": "0x3e7", "TargetUserSid": SID, "TargetUserName": ACCOUNT, "TargetDomainName": "CORP",
        "TargetLogonId": "0x8dcdc", "LogonType": "10", "LogonProcessName": "User32",
        "AuthenticationPackageName": "Negotiate", "WorkstationName": "WS-AMELIA-07",
        "LogonGuid": "{00000000-0000-0000-0000-000000000000}", "TransmittedServices": "-",
        "LmPackageName": "-", "KeyLength": "0", "ProcessId": "0x2a8",
        "ProcessName": "C:\\Windows\\System32\\svchost.exe", "IpAddress": "192.0.2.15", "IpPort": "0",
        "ImpersonationLevel": "%%1833", "ElevatedToken": "%%1843",
    }, {"event_kind": "logon", "logon_type": 10, "remote_ip": "192.0.2.15", "pid": 0x2A8}),
    ("security/5156", SECURITY, 5156, "Microsoft-Windows-Security-Auditing", {
        "ProcessID": "2240", "Application": "\\device\\harddiskvolume3\\users\\amelia.rourke\\appdata\\sync.exe",
        "Direction": "%%14593", "SourceAddress": "10.20.30.41", "SourcePort": "50312",
        "DestAddress": "203.0.113.77", "DestPort": "443", "Protocol": "6", "FilterRTID": "70422",
        "LayerName": "%%14611", "LayerRTID": "48", "RemoteUserID": "S-1-0-0", "RemoteMachineID": "S-1-0-0",
    }, {"event_kind": "firewall_connection", "pid": 2240, "remote_ip": "203.0.113.77", "remote_port": 443}),
    ("security/5158", SECURITY, 5158, "Microsoft-Windows-Security-Auditing", {
        "ProcessId": "2240", "Application": "\\device\\harddiskvolume3\\users\\amelia.rourke\\appdata\\sync.exe",
        "SourceAddress": "0.0.0.0", "SourcePort": "50312", "Protocol": "6", "FilterRTID": "0",
        "LayerName": "%%14608", "LayerRTID": "36",
    }, {"event_kind": "firewall_connection", "pid": 2240}),
    ("powershell/4104", POWERSHELL, 4104, "Microsoft-Windows-PowerShell", {
        "MessageNumber": "1", "MessageTotal": "1",
        "ScriptBlockText": (f"$cred = New-Object PSCredential('CORP\\{ACCOUNT}', (ConvertTo-SecureString "
                            f"'{PW}' -AsPlainText -Force))\nInvoke-WebRequest -Uri "
                            f"'https://{ACCOUNT}:{PW}@files.example.com/drop?key={TOKEN}' -Credential $cred\n"
                            f"powershell.exe -NoProfile -EncodedCommand {ENCODED}"),
        "ScriptBlockId": "c5f9a0e4-8a34-4f1b-9d4e-0e6a2b7c1d11", "Path": f"{PROFILE}\\scripts\\sync.ps1",
    }, {"event_kind": "script_block"}),
    ("powershell/4103", POWERSHELL, 4103, "Microsoft-Windows-PowerShell", {
        "ContextInfo": (f"        Severity = Informational\r\n        Host Name = ConsoleHost\r\n"
                        f"        Host Version = 5.1.19041.1\r\n        Host ID = 9d7f0a4e-1c2b-4b5e-8f3a-2a1b0c9d8e7f\r\n"
                        f"        Host Application = powershell.exe -nop -enc {ENCODED}\r\n"
                        f"        Engine Version = 5.1.19041.1\r\n        Runspace ID = 4f1e2d3c-0b9a-4876-a5b4-c3d2e1f0a9b8\r\n"
                        f"        Pipeline ID = 12\r\n        Command Name = Invoke-WebRequest\r\n"
                        f"        Command Type = Cmdlet\r\n        Script Name = {PROFILE}\\scripts\\sync.ps1\r\n"
                        f"        Command Path = \r\n        Sequence Number = 31\r\n"
                        f"        User = CORP\\{ACCOUNT}\r\n        Connected User = \r\n        Shell ID = Microsoft.PowerShell\r\n"),
        "UserData": "",
        "Payload": (f"CommandInvocation(Invoke-WebRequest): \"Invoke-WebRequest\"\r\nParameterBinding(Invoke-WebRequest): "
                    f"name=\"Uri\"; value=\"https://api.example.com/v1/upload?access_token={TOKEN}\"\r\n"
                    f"ParameterBinding(Invoke-WebRequest): name=\"Headers\"; value=\"Authorization: Bearer {TOKEN}\""),
    }, {"event_kind": "command_invocation"}),
    ("powershell_classic/800", "Windows PowerShell", 800, "PowerShell", {
        "param1": "Invoke-WebRequest -Uri https://api.example.com/x",
        "param2": (f"\tDetailSequence=1\r\n\tDetailTotal=1\r\n\r\n\tSequenceNumber=41\r\n\r\n\tUserId=CORP\\{ACCOUNT}\r\n"
                   f"\tHostName=ConsoleHost\r\n\tHostVersion=5.1.19041.1\r\n\tHostId=9d7f0a4e-1c2b-4b5e-8f3a-2a1b0c9d8e7f\r\n"
                   f"\tHostApplication=powershell.exe -ExecutionPolicy Bypass -EncodedCommand {ENCODED}\r\n"
                   f"\tEngineVersion=5.1.19041.1\r\n\tRunspaceId=4f1e2d3c-0b9a-4876-a5b4-c3d2e1f0a9b8\r\n\tPipelineId=3\r\n"
                   f"\tScriptName=\r\n\tCommandLine=Invoke-WebRequest -Uri https://{ACCOUNT}:{PW}@api.example.com/x"),
        "param3": (f"CommandInvocation(Invoke-WebRequest): \"Invoke-WebRequest\"\r\nParameterBinding(Invoke-WebRequest): "
                   f"name=\"Uri\"; value=\"https://{ACCOUNT}:{PW}@api.example.com/x\""),
    }, {"event_kind": "command_invocation"}),
    ("wlan/8001", WLAN, 8001, "Microsoft-Windows-WLAN-AutoConfig", {
        "InterfaceGuid": "{3f0d4a2e-77c1-4b8a-9e0d-5a6b7c8d9e0f}", "InterfaceDescription": "Intel(R) Wi-Fi 6 AX201 160MHz",
        "ConnectionMode": "Automatic connection with a profile", "ProfileName": "Amelia's iPhone",
        "SSID": "Amelia's iPhone", "BSSType": "Infrastructure", "PHYType": "802.11ax",
        "AuthenticationAlgorithm": "WPA2-Personal", "CipherAlgorithm": "AES-CCMP", "OnexEnabled": "0",
        "ConnectionId": "0x6", "NonBroadcast": "No", "BSSID": "3C:22:FB:0A:1B:2C",
    }, {"security": "WPA2"}),
    ("wlan/8003", WLAN, 8003, "Microsoft-Windows-WLAN-AutoConfig", {
        "InterfaceGuid": "{3f0d4a2e-77c1-4b8a-9e0d-5a6b7c8d9e0f}", "InterfaceDescription": "Intel(R) Wi-Fi 6 AX201 160MHz",
        "ConnectionMode": "Automatic connection with a profile", "ProfileName": "CafeGuest",
        "SSID": "CafeGuest", "BSSType": "Infrastructure", "Reason": "The network is disconnected by the user.",
        "ConnectionId": "0x7", "ReasonCode": "0x28000",
    }, {}),
    ("defender/1116", DEFENDER, 1116, "Microsoft-Windows-Windows Defender", {
        "Product Name": "Microsoft Defender Antivirus", "Product Version": "4.18.23110.3",
        "Detection ID": "{1c7e9f3a-2b4d-4e6f-8a0b-1c2d3e4f5a6b}", "Detection Time": "2026-11-20T10:04:05.123Z",
        "Threat ID": "2147735503", "Threat Name": "Trojan:Win32/Wacatac.B!ml", "Severity ID": "5",
        "Severity Name": "Severe", "Category ID": "8", "Category Name": "Trojan",
        "FWLink": "https://go.microsoft.com/fwlink/?linkid=37020&name=Trojan:Win32/Wacatac.B!ml",
        "Status Code": "1", "Status Description": "", "State": "1", "Source ID": "3",
        "Source Name": "Real-Time Protection", "Process Name": f"{PROFILE}\\AppData\\Local\\app\\sync.exe",
        "Detection User": f"CORP\\{ACCOUNT}",
        "Path": f"file:_{PROFILE}\\Downloads\\setup-{TOKEN}.exe",
        "Origin ID": "4", "Origin Name": "Internet", "Execution ID": "1", "Execution Name": "Suspended",
        "Type ID": "0", "Type Name": "Concrete", "Pre Execution Status": "0", "Action ID": "9",
        "Action Name": "Not Applicable", "Error Code": "0x00000000",
        "Error Description": "The operation completed successfully. ",
        "Post Clean Status": "0", "Additional Actions ID": "0", "Additional Actions String": "No additional actions required",
        "Remediation User": "", "Security intelligence Version": "AV: 1.403.1234.0",
        "Engine Version": "AM: 1.1.23110.2",
    }, {"threat_name": "Trojan:Win32/Wacatac.B!ml", "action": "Not Applicable"}),
]

WIN_TYPES = {"wlan": "wifi", "defender": "detection"}


def winlogbeat(i: int, channel: str, event_id: int, provider: str, data: dict) -> dict:
    """The event as Winlogbeat 8 / Elastic Agent ship it (ECS fields beside `winlog`)."""
    return {
        "@timestamp": TS, "agent": {"type": "winlogbeat", "version": "8.11.1", "name": "WS-AMELIA-07",
                                     "id": "8a9b0c1d-2e3f-4a5b-6c7d-8e9f0a1b2c3d"},
        "ecs": {"version": "8.0.0"}, "host": {"name": "ws-amelia-07.corp.example", "hostname": "ws-amelia-07",
                                              "ip": ["10.20.30.41"], "mac": ["3C-22-FB-0A-1B-2D"]},
        "event": {"code": str(event_id), "kind": "event", "provider": provider, "created": TS},
        "log": {"level": "information"}, "message": f"event {event_id} on {HOST} for {ACCOUNT}",
        "winlog": {"channel": channel, "event_id": str(event_id), "record_id": 58213 + i, "computer_name": HOST,
                   "provider_name": provider, "provider_guid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
                   "process": {"pid": 3120, "thread": {"id": 4012}}, "api": "wineventlog", "task": "",
                   "opcode": "Info", "version": 5,
                   "user": {"identifier": "S-1-5-18", "domain": "NT AUTHORITY", "name": "SYSTEM", "type": "User"},
                   "event_data": copy.deepcopy(data)},
    }


def logstash(i: int, channel: str, event_id: int, provider: str, data: dict) -> dict:
    """The older Winlogbeat 6 shape as Logstash forwards it (top-level event_data)."""
    return {"@timestamp": TS, "@version": "1", "type": "wineventlog", "tags": ["beats_input_codec_plain_applied"],
            "beat": {"name": "WS-AMELIA-07", "hostname": "WS-AMELIA-07", "version": "6.8.23"},
            "computer_name": HOST, "event_id": event_id, "log_name": channel, "source_name": provider,
            "record_number": str(91000 + i), "level": "Information", "message": f"{ACCOUNT} on {HOST}",
            "event_data": copy.deepcopy(data)}


def nxlog(i: int, channel: str, event_id: int, provider: str, data: dict) -> dict:
    """NXLog im_msvistalog + to_json(), DateFormat set to ISO with the zone: event data flat."""
    return {"EventTime": "2026-11-20T11:04:05.123000+01:00", "Hostname": HOST, "Keywords": "-9223372036854775808",
            "EventType": "INFO", "SeverityValue": 2, "Severity": "INFO", "EventID": event_id,
            "SourceName": provider, "ProviderGuid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}", "Version": 5,
            "Task": 1, "OpcodeValue": 0, "RecordNumber": 120000 + i, "ProcessID": 3120, "ThreadID": 4012,
            "Channel": channel, "Domain": "NT AUTHORITY", "AccountName": "SYSTEM", "UserID": "S-1-5-18",
            "AccountType": "User", "Message": f"event for {ACCOUNT} {PW}", "Opcode": "Info",
            "EventReceivedTime": "2026-11-20 11:04:06", "SourceModuleName": "eventlog",
            "SourceModuleType": "im_msvistalog", **copy.deepcopy(data)}


SHAPES = {"winlogbeat": winlogbeat, "logstash": logstash, "nxlog": nxlog}


def windows_events() -> list[tuple[str, dict, dict]]:
    """Every Windows sample event in each export shape: (name, source, expected data subset)."""
    out = []
    i = 0
    for shape, make in SHAPES.items():
        for name, channel, event_id, provider, data, expected in _WIN:
            out.append((f"{shape}:{name}", make(i, channel, event_id, provider, data), expected))
            i += 1
    return out


def windows_unmapped() -> list[tuple[str, dict]]:
    """Events no mapping entry covers: counted as unmapped_event, never quarantined."""
    return [
        ("security/4625", winlogbeat(900, SECURITY, 4625, "Microsoft-Windows-Security-Auditing",
                                     {"TargetUserName": ACCOUNT, "IpAddress": "192.0.2.15", "Status": "0xc000006d"})),
        ("sysmon/5", nxlog(901, SYSMON, 5, "Microsoft-Windows-Sysmon", {"Image": f"{PROFILE}\\x.exe"})),
        ("other/7045", winlogbeat(902, "System", 7045, "Service Control Manager",
                                  {"ServiceName": "svc", "ImagePath": f"{PROFILE}\\svc.exe --pw {PW}"})),
    ]
