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
from pathlib import Path
from typing import Any

import orjson

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

# Defender 1117 (action taken) carries the same event data as 1116, with the action done.
_D1117 = copy.deepcopy(_WIN[-1][4])
_D1117.update({"Action ID": "2", "Action Name": "Quarantine", "Status Code": "3", "Post Clean Status": "0"})
_WIN.append(("defender/1117", DEFENDER, 1117, "Microsoft-Windows-Windows Defender", _D1117,
             {"threat_name": "Trojan:Win32/Wacatac.B!ml", "action": "Quarantine"}))

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


def evtx_json(i: int, channel: str, event_id: int, provider: str, data: dict) -> dict:
    """An EVTX record converted to JSON by evtx_dump (XML attributes under "#attributes")."""
    return {"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {"Provider": {"#attributes": {"Name": provider, "Guid": "5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},
                   "EventID": event_id, "Version": 5, "Level": 4, "Task": 1, "Opcode": 0,
                   "Keywords": "0x8000000000000000", "TimeCreated": {"#attributes": {"SystemTime": "2026-11-20T10:04:05.123000Z"}},
                   "EventRecordID": 70000 + i, "Correlation": None,
                   "Execution": {"#attributes": {"ProcessID": 3120, "ThreadID": 4012}},
                   "Channel": channel, "Computer": HOST,
                   "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
        "EventData": copy.deepcopy(data)}}


SHAPES = {"winlogbeat": winlogbeat, "logstash": logstash, "nxlog": nxlog, "evtx_dump": evtx_json}


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


# ------------------------------------------------------------------ ECS


def _ecs(i: int, kind: str, category: list[str], etype: list[str], **fields: Any) -> dict:
    doc: dict[str, Any] = {
        "@timestamp": TS, "ecs": {"version": "8.11.0"},
        "agent": {"type": "endpoint", "version": "8.11.1", "id": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
                  "name": "WS-AMELIA-07"},
        "host": {"id": "4c4c4544-0051-3510-8057-b4c04f4e4d32", "name": "ws-amelia-07.corp.example",
                 "hostname": "WS-AMELIA-07", "ip": ["10.20.30.41"], "mac": ["3c-22-fb-0a-1b-2d"],
                 "os": {"family": "windows", "name": "Windows 11 Pro", "version": "23H2"}},
        "event": {"kind": kind, "category": category, "type": etype, "id": f"Nx9{i:05d}Qm",
                  "created": TS, "dataset": "endpoint.events", "module": "endpoint"},
        "organization": {"id": "acme-corp"},
        "message": f"Endpoint event on {HOST} by {ACCOUNT} with {PW}",
        "user": {"name": ACCOUNT, "domain": "CORP", "id": SID},
    }
    for path, value in fields.items():
        node = doc
        parts = path.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return doc


def _process(**extra: Any) -> dict:
    return {"process__pid": 4312, "process__executable": f"{PROFILE}\\AppData\\Local\\app\\sync.exe",
            "process__name": "sync.exe", **extra}


ECS_EVENTS: list[tuple[str, dict, dict]] = [
    ("process start", _ecs(1, "event", ["process"], ["start"], **_process(
        process__command_line=f"sync.exe --user {ACCOUNT} --password {PW} --api-key {TOKEN}",
        process__args=["sync.exe", "--password", PW], process__parent__pid=3988,
        process__parent__executable="C:\\Windows\\explorer.exe",
        process__parent__command_line=f"explorer.exe /token {TOKEN}",
        process__hash__sha256="0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        host__geo__country_iso_code="DE")),
     {"event_kind": "process_start", "pid": 4312, "parent_pid": 3988, "country": "DE"}),
    ("network outbound", _ecs(2, "event", ["network"], ["start", "connection"], **_process(
        network__direction="egress", network__transport="tcp", source__ip="10.20.30.41", source__port=50312,
        destination__ip="203.0.113.77", destination__port=443, destination__domain="sync.example.net")),
     {"event_kind": "network_connect", "remote_ip": "203.0.113.77", "remote_port": 443}),
    ("network inbound", _ecs(3, "event", ["network"], ["start", "connection"], **_process(
        network__direction="ingress", source__ip="198.51.100.9", source__port=61022,
        destination__ip="10.20.30.41", destination__port=3389)),
     {"event_kind": "network_connect", "remote_ip": "198.51.100.9", "remote_port": 61022}),
    ("file creation", _ecs(4, "event", ["file"], ["creation"], **_process(
        file__path=f"{PROFILE}\\Downloads\\report-{TOKEN}.docx", file__name=f"report-{TOKEN}.docx",
        file__extension="docx")),
     {"event_kind": "file_write", "pid": 4312}),
    ("registry change", _ecs(5, "event", ["registry"], ["change"], **_process(
        registry__path=f"HKU\\{SID}\\Software\\Vendor\\Sync\\Token", registry__hive="HKU",
        registry__key=f"{SID}\\Software\\Vendor\\Sync", registry__value="Token",
        registry__data__strings=[TOKEN], registry__data__type="REG_SZ")),
     {"event_kind": "registry_set"}),
    ("registry key creation", _ecs(6, "event", ["registry"], ["creation"], **_process(
        registry__path=f"HKU\\{SID}\\Software\\Vendor\\New")),
     {"event_kind": "registry_key"}),
    ("dns query", _ecs(7, "event", ["network"], ["protocol", "info"], **_process(
        network__protocol="dns", dns__question__name="cdn.example.org", dns__question__type="A",
        dns__resolved_ip=["198.51.100.23"])),
     {"event_kind": "dns_query", "query_name": "cdn.example.org"}),
    ("web access", _ecs(8, "event", ["web"], ["access"],
                         url__full=f"https://{ACCOUNT}:{PW}@portal.example.com/login?session={TOKEN}",
                         url__domain="portal.example.com", http__request__method="GET",
                         http__request__referrer=f"https://mail.example.com/inbox?u={ACCOUNT}",
                         user_agent__name="Firefox", user_agent__original="Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"),
     {"url_host": "portal.example.com", "referrer_host": "mail.example.com", "browser": "Firefox"}),
    ("logon", _ecs(9, "event", ["authentication", "session"], ["start"], event__outcome="success",
                   event__action="logged-in", source__ip="192.0.2.15", source__port=50111,
                   process__executable="C:\\Windows\\System32\\svchost.exe", process__pid=680),
     {"event_kind": "logon", "remote_ip": "192.0.2.15"}),
    ("alert", _ecs(10, "alert", ["malware", "intrusion_detection"], ["info", "denied"], **_process(
        rule__name="Malicious Behavior Detection Alert: Credential Access", event__action="rule_detection",
        event__outcome="success", file__path=f"{PROFILE}\\Downloads\\setup-{TOKEN}.exe",
        file__hash__sha256="9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        url__full=f"https://dl.example.net/p?key={TOKEN}")),
     {"threat_name": "Malicious Behavior Detection Alert: Credential Access",
      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "source_url_host": "dl.example.net"}),
]


def ecs_events() -> list[tuple[str, dict, dict]]:
    return copy.deepcopy(ECS_EVENTS)


def ecs_unmapped() -> list[tuple[str, dict]]:
    return [
        ("event/authentication/start", _ecs(20, "event", ["authentication"], ["start"], event__outcome="failure",
                                            source__ip="192.0.2.15")),
        ("event/package/installation", _ecs(21, "event", ["package"], ["installation"],
                                            package__name="tool", package__path=f"{PROFILE}\\tool")),
        ("metric/host/info", _ecs(22, "metric", ["host"], ["info"], host__cpu__usage=0.4)),
    ]


# ------------------------------------------------------------------ OCSF

TIME_MS = 1795169045123  # 2026-11-20T10:04:05.123Z


def _ocsf(i: int, class_uid: int, activity_id: int, **fields: Any) -> dict:
    category = class_uid // 1000 if class_uid < 100000 else class_uid // 100000
    doc: dict[str, Any] = {
        "class_uid": class_uid, "activity_id": activity_id, "category_uid": category,
        "type_uid": class_uid * 100 + activity_id, "severity_id": 1, "status_id": 1, "time": TIME_MS,
        "metadata": {"uid": f"7f3e{i:04d}-5d2c-4b1a-9e8f-0a1b2c3d4e5f", "version": "1.1.0",
                     "product": {"name": "Example EDR", "vendor_name": "Example", "version": "4.2.0"},
                     "tenant_uid": "acme-corp", "log_name": "edr"},
        "device": {"uid": "4c4c4544-0051-3510-8057-b4c04f4e4d32", "hostname": HOST, "name": "WS-AMELIA-07",
                   "type_id": 2, "ip": "10.20.30.41", "os": {"name": "Windows 11", "type_id": 100},
                   "location": {"country": "FR", "city": "Lyon"}, "groups": [{"name": "office"}]},
        "actor": {"user": {"name": ACCOUNT, "domain": "CORP", "uid": SID},
                  "process": {"pid": 3988, "file": {"path": f"{PROFILE}\\AppData\\Local\\app\\sync.exe",
                                                    "name": "sync.exe"}}},
        "message": f"activity by {ACCOUNT} on {HOST}",
        "raw_data": f"<Event><Data Name='CommandLine'>sync.exe --password {PW}</Data></Event>",
    }
    for path, value in fields.items():
        node = doc
        parts = path.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return doc


OCSF_EVENTS: list[tuple[str, dict, dict]] = [
    ("1007/1 process launch", _ocsf(1, 1007, 1, process={
        "pid": 4312, "cmd_line": f"net use \\\\fs01\\share /user:CORP\\{ACCOUNT} {PW}",
        "file": {"path": "C:\\Windows\\System32\\net.exe", "name": "net.exe"},
        "user": {"name": ACCOUNT, "domain": "CORP"},
        "parent_process": {"pid": 3988, "file": {"path": f"{PROFILE}\\AppData\\Local\\app\\sync.exe"},
                           "cmd_line": f"sync.exe --token {TOKEN}"}}),
     {"event_kind": "process_start", "pid": 4312, "parent_pid": 3988, "country": "FR"}),
    ("1001/1 file create", _ocsf(2, 1001, 1, file={"path": f"{PROFILE}\\Downloads\\report-{TOKEN}.docx",
                                                  "name": f"report-{TOKEN}.docx", "type_id": 1}),
     {"event_kind": "file_write", "pid": 3988}),
    ("201002/2 registry value set", _ocsf(3, 201002, 2, reg_value={
        "path": f"HKU\\{SID}\\Software\\Vendor\\Sync\\Token", "name": "Token", "data": TOKEN, "type_id": 1}),
     {"event_kind": "registry_set"}),
    ("201001/1 registry key create", _ocsf(4, 201001, 1, reg_key={"path": f"HKU\\{SID}\\Software\\Vendor\\New"}),
     {"event_kind": "registry_key"}),
    ("4003/1 dns query", _ocsf(5, 4003, 1, query={"hostname": "cdn.example.org", "type": "A", "class": "IN"},
                               answers=[{"rdata": "198.51.100.23", "type": "A"}],
                               src_endpoint={"ip": "10.20.30.41", "port": 53011}),
     {"event_kind": "dns_query", "query_name": "cdn.example.org"}),
    ("4002/3 http get", _ocsf(6, 4002, 3, http_request={
        "http_method": "GET", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0",
        "referrer": f"https://mail.example.com/inbox?u={ACCOUNT}",
        "url": {"url_string": f"https://{ACCOUNT}:{PW}@portal.example.com/login?session={TOKEN}",
                "hostname": "portal.example.com", "path": "/login", "query_string": f"session={TOKEN}"}}),
     {"url_host": "portal.example.com", "referrer_host": "mail.example.com"}),
    ("4001/1 network open outbound", _ocsf(7, 4001, 1, connection_info={"direction_id": 2, "protocol_name": "tcp"},
                                           src_endpoint={"ip": "10.20.30.41", "port": 50312},
                                           dst_endpoint={"ip": "203.0.113.77", "port": 443,
                                                         "hostname": "sync.example.net"}),
     {"event_kind": "network_connect", "remote_ip": "203.0.113.77", "remote_port": 443}),
    ("4001/6 network traffic inbound", _ocsf(8, 4001, 6, connection_info={"direction_id": 1},
                                             src_endpoint={"ip": "198.51.100.9", "port": 61022},
                                             dst_endpoint={"ip": "10.20.30.41", "port": 3389}),
     {"event_kind": "network_connect", "remote_ip": "198.51.100.9", "remote_port": 61022}),
    ("3002/1 logon", _ocsf(9, 3002, 1, user={"name": ACCOUNT, "domain": "CORP", "uid": SID}, logon_type_id=10,
                           logon_type="Remote Interactive", src_endpoint={"ip": "192.0.2.15"},
                           auth_protocol="Kerberos"),
     {"event_kind": "logon", "logon_type": 10, "remote_ip": "192.0.2.15"}),
    ("2004/1 detection finding", _ocsf(10, 2004, 1, finding_info={
        "uid": "f-3301", "title": "Trojan:Win32/Wacatac.B!ml", "desc": f"found in {PROFILE} by {ACCOUNT}"},
        malware=[{"name": "Wacatac", "classification_ids": [3]}], disposition="Blocked", disposition_id=2,
        evidences=[{"file": {"path": f"{PROFILE}\\Downloads\\setup-{TOKEN}.exe",
                             "hashes": [{"algorithm_id": 3,
                                         "value": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]},
                    "url": {"url_string": f"https://dl.example.net/p?key={TOKEN}"}}]),
     {"threat_name": "Wacatac", "action": "Blocked",
      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "source_url_host": "dl.example.net"}),
]


def ocsf_events() -> list[tuple[str, dict, dict]]:
    return copy.deepcopy(OCSF_EVENTS)


def ocsf_unmapped() -> list[tuple[str, dict]]:
    return [
        ("1007/2", _ocsf(20, 1007, 2, process={"pid": 4312, "file": {"path": "C:\\x.exe"}})),
        ("6003/1", _ocsf(21, 6003, 1, api={"operation": "GetObject"})),
        ("3002/1", _ocsf(22, 3002, 1, status_id=2, user={"name": ACCOUNT})),
    ]


def numbered(fmt: str, obj: dict, i: int) -> dict:
    """A copy of a sample event with its own event id (so copies are not producer retries)."""
    obj = copy.deepcopy(obj)
    if fmt == "windows-events":
        if "winlog" in obj:
            obj["winlog"]["record_id"] = i
        elif "record_number" in obj:
            obj["record_number"] = str(i)
        elif "Event" in obj:
            obj["Event"]["System"]["EventRecordID"] = i
        else:
            obj["RecordNumber"] = i
    elif fmt == "ecs":
        obj["event"]["id"] = f"ev-{i}"
    elif fmt == "ocsf":
        obj["metadata"]["uid"] = f"uid-{i}"
    return obj


def many(fmt: str, n: int) -> list[dict]:
    """`n` events of a format: its samples, the unmapped ones included, cycled with distinct ids."""
    pool = _pool(fmt)
    return [numbered(fmt, pool[i % len(pool)], i) for i in range(n)]


SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample" / "formats"
SAMPLE_PROFILE = """# A consent profile for the bundled format samples (docs/input-formats.md): every device of
# tenant acme-corp accepted the EULA and the security-network statement; users in the Netherlands.
default_country = "NL"

[tenants."acme-corp"]
consent = ["eula", "ksn"]

[default]
consent = ["eula", "ksn"]
"""


def sample_files() -> dict[Path, bytes]:
    """The bundled samples under sample/formats/: each format's events (every export shape, the
    unmapped ones included) and a consent profile. `python tests/format_samples.py` writes them."""
    out = {SAMPLE_DIR / "consent-profile.toml": SAMPLE_PROFILE.encode()}
    for fmt in ("windows-events", "ecs", "ocsf"):
        out[SAMPLE_DIR / f"{fmt}.ndjson"] = b"".join(orjson.dumps(o) + b"\n" for o in many(fmt, len(_pool(fmt))))
    return out


def _pool(fmt: str) -> list[dict]:
    events = {"windows-events": (windows_events, windows_unmapped), "ecs": (ecs_events, ecs_unmapped),
              "ocsf": (ocsf_events, ocsf_unmapped)}[fmt]
    return [s for _, s, _ in events[0]()] + [s for _, s in events[1]()]


if __name__ == "__main__":
    SAMPLE_DIR.mkdir(exist_ok=True)
    for path, data in sample_files().items():
        path.write_bytes(data)
        print(f"wrote {path}")
