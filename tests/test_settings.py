"""Settings validation: each bad value is rejected with its key, value and fix."""

from __future__ import annotations

from typing import Any

import pytest

from components.settings import (
    DEFAULTS,
    SettingsError,
    build_settings,
    required_data_disk_gib,
)

# (overrides, key named in the error, pattern in the message); None key means valid.
CASES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("defaults with required keys", {}, None, None),
    ("cidr malformed", {"allowedCidrs": ["203.0.113.300/24"]}, "allowedCidrs", "not a valid CIDR"),
    ("cidr host bits", {"allowedCidrs": ["203.0.113.7/24"]}, "allowedCidrs", "did you mean 203.0.113.0/24"),
    ("cidr ipv6", {"allowedCidrs": ["2001:db8::/32"]}, "allowedCidrs", "IPv6"),
    ("cidr list empty", {"allowedCidrs": []}, "allowedCidrs", "at least one"),
    ("cidr not a list", {"allowedCidrs": "203.0.113.0/24"}, "allowedCidrs", "at least one"),
    ("world open without opt-in", {"allowedCidrs": ["0.0.0.0/0"]}, "allowedCidrs", "allowPublicUnauthenticated"),
    ("half the internet without opt-in", {"allowedCidrs": ["0.0.0.0/1"]}, "allowedCidrs", "internet"),
    ("world open with opt-in", {"allowedCidrs": ["0.0.0.0/0"], "allowPublicUnauthenticated": True}, None, None),
    ("models empty", {"models": []}, "models", "non-empty list"),
    ("models not a list", {"models": "deepseek-r1:32b"}, "models", "non-empty list"),
    ("model name malformed", {"models": ["deepseek r1:32b"]}, "models", "not an Ollama model name"),
    ("model name with shell", {"models": ["qwen3;reboot"]}, "models", "not an Ollama model name"),
    ("model listed twice", {"models": ["qwen3", "qwen3:latest"]}, "models", "listed twice"),
    ("hf.co model accepted", {"models": ["hf.co/Qwen/Qwen3-8B-GGUF:Q4_K_M"]}, None, None),
    ("data disk too small for 32b", {"dataDiskSize": 30}, "dataDiskSize", "at least 38 GiB"),
    ("data disk too small for two", {"models": ["deepseek-r1:32b", "deepseek-r1:70b"], "dataDiskSize": 90},
     "dataDiskSize", "deepseek-r1:70b ~43 GB"),
    ("data disk below minimum", {"dataDiskSize": 10, "models": ["qwen3:8b"]}, "dataDiskSize", "from 20"),
    ("data disk category unknown", {"dataDiskCategory": "ssd"}, "dataDiskCategory", "must be one of"),
    ("system disk too small", {"systemDiskSize": 19}, "systemDiskSize", "from 20 to 2048"),
    ("system disk not a number", {"systemDiskSize": "40"}, "systemDiskSize", "whole number"),
    ("driver 470", {"nvidiaDriverVersion": "470.82.01"}, "nvidiaDriverVersion", "older than 550"),
    ("driver malformed", {"nvidiaDriverVersion": "latest"}, "nvidiaDriverVersion", "not an NVIDIA driver version"),
    ("driver 570 accepted", {"nvidiaDriverVersion": "570.172.08"}, None, None),
    ("ollama with CVE-2024-37032", {"ollamaVersion": "0.1.33"}, "ollamaVersion", "CVE-2024-37032"),
    ("ollama with CVE-2026-7482", {"ollamaVersion": "0.17.0"}, "ollamaVersion", "CVE-2026-7482"),
    ("ollama with CVE-2026-7020", {"ollamaVersion": "0.20.2"}, "ollamaVersion", "CVE-2026-7020"),
    ("ollama with leading v", {"ollamaVersion": "v0.32.15"}, "ollamaVersion", "no leading v"),
    ("ollama release candidate", {"ollamaVersion": "0.33.0-rc2"}, "ollamaVersion", "no -rc"),
    ("ssh key missing", {"sshPublicKey": ""}, "sshPublicKey", "missing"),
    ("ssh key is a path", {"sshPublicKey": "~/.ssh/id_ed25519.pub"}, "sshPublicKey", "file path"),
    ("ssh key malformed", {"sshPublicKey": "ssh-ed25519"}, "sshPublicKey", "not an OpenSSH public key"),
    ("instance type not GPU", {"instanceType": "ecs.g7.4xlarge"}, "instanceType", "not a GPU instance type"),
    ("instance type malformed", {"instanceType": "gn7i"}, "instanceType", "not an ECS instance type"),
    ("instance type other GPU accepted", {"instanceType": "ecs.gn6i-c4g1.xlarge"}, None, None),
    ("zone of another region", {"zone": "cn-beijing-i"}, "zone", "not a zone of region cn-hangzhou"),
    ("region missing", {"region": ""}, "alicloud:region", "missing"),
    ("image id malformed", {"imageId": "aliyun_3_x64"}, "imageId", "not an image ID"),
    ("bandwidth zero", {"internetBandwidthOut": 0}, "internetBandwidthOut", "from 1 to 100"),
    ("vswitch without vpc", {"vswitchId": "vsw-bp1abc", "zone": "cn-hangzhou-i"}, "vswitchId", "without vpcId"),
    ("vswitch without zone", {"vswitchId": "vsw-bp1abc", "vpcId": "vpc-bp1abc"}, "vswitchId", "without zone"),
    ("vpc without vswitch", {"vpcId": "vpc-bp1abc"}, "vpcId", "without vswitchId"),
    ("keep-alive malformed", {"keepAlive": "one hour"}, "keepAlive", "Ollama duration"),
    ("mirror url with quote", {"ollamaBaseUrl": 'https://mirror.example/"x'}, "ollamaBaseUrl", "http(s) URL"),
    ("mirror url ftp", {"driverBaseUrl": "ftp://mirror.example/tesla"}, "driverBaseUrl", "http(s) URL"),
    ("registry with scheme", {"modelRegistry": "https://registry.example"}, "modelRegistry", "registry host"),
    ("pull retries negative", {"pullRetries": -1}, "pullRetries", "from 0 to 20"),
    ("opt-in not boolean", {"allowPublicUnauthenticated": "yes"}, "allowPublicUnauthenticated", "true or false"),
    ("model with trailing newline", {"models": ["qwen3:8b\n"]}, "models", "not an Ollama model name"),
    ("version with trailing newline", {"ollamaVersion": "0.32.15\n"}, "ollamaVersion", "not a release version"),
    ("keep-alive with trailing newline", {"keepAlive": "1h\n"}, "keepAlive", "Ollama duration"),
    ("region with shell", {"region": "cn-shanghai; rm"}, "alicloud:region", "not a region ID"),
    ("cidr listed twice", {"allowedCidrs": ["192.0.2.5/32", "192.0.2.5/32"]}, "allowedCidrs", "listed twice"),
    ("spot with fallback accepted", {"spot": True, "spotFallback": True}, None, None),
    ("spot not boolean", {"spot": "yes"}, "spot", "true or false"),
    ("spot interruption unknown", {"spotInterruptionBehavior": "Hibernate"}, "spotInterruptionBehavior",
     "must be one of Stop, Terminate"),
    ("ttl 8 hours accepted", {"ttlHours": 8}, None, None),
    ("ttl negative", {"ttlHours": -1}, "ttlHours", "or 0 to never release"),
    ("ttl beyond 3 years", {"ttlHours": 26281}, "ttlHours", "3 years"),
    ("ttl not a number", {"ttlHours": "8h"}, "ttlHours", "whole number of hours"),
    ("ttl renewal malformed", {"ttlRenewedAt": "2026-01-31 08:00"}, "ttlRenewedAt", "not a UTC time"),
    ("idle stop 30 minutes accepted", {"idleStopMinutes": 30}, None, None),
    ("idle stop negative", {"idleStopMinutes": -5}, "idleStopMinutes", "whole number of minutes"),
    ("keep disk not boolean", {"keepModelDisk": "true"}, "keepModelDisk", "true or false"),
    ("snapshot id malformed", {"dataDiskSnapshotId": "snap-1"}, "dataDiskSnapshotId", "not a snapshot ID"),
    ("snapshot id accepted", {"dataDiskSnapshotId": "s-bp1abc"}, None, None),
    ("ecs endpoint with quote", {"ecsApiEndpoint": 'https://ecs"x'}, "ecsApiEndpoint", "http(s) URL"),
    ("metadata url empty", {"instanceMetadataUrl": ""}, "instanceMetadataUrl", "http(s) URL"),
]


@pytest.mark.parametrize(("overrides", "key", "pattern"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_settings_validation_table(valid_config: dict[str, Any], overrides: dict[str, Any],
                                   key: str | None, pattern: str | None) -> None:
    values = {**valid_config, **overrides}
    if key is None:
        build_settings(values)
        return

    with pytest.raises(SettingsError) as raised:
        build_settings(values)
    problems = [problem for problem in raised.value.problems if problem.key == key]
    assert problems, f"no problem reported for {key}: {raised.value}"
    message = str(raised.value)
    assert pattern in message
    assert "pulumi config" in message, "every error must say which command fixes it"
    bad_value = values.get("region" if key == "alicloud:region" else key)
    assert repr(bad_value) in message, f"the bad value {bad_value!r} must be shown"


def test_settings_report_every_problem_at_once(valid_config: dict[str, Any]) -> None:
    values = {**valid_config, "systemDiskSize": 5, "nvidiaDriverVersion": "470.82.01", "models": []}
    with pytest.raises(SettingsError) as raised:
        build_settings(values)
    assert {problem.key for problem in raised.value.problems} == {"systemDiskSize", "nvidiaDriverVersion", "models"}


def test_private_ssh_key_not_echoed(valid_config: dict[str, Any]) -> None:
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"
    with pytest.raises(SettingsError) as raised:
        build_settings({**valid_config, "sshPublicKey": secret})
    assert "PRIVATE key" in str(raised.value)
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU" not in str(raised.value)


def test_required_disk_has_headroom() -> None:
    # 20 GB is 18.6 GiB; 1.5 times that plus 10 GiB.
    assert required_data_disk_gib(("deepseek-r1:32b",)) == 38
    assert required_data_disk_gib(("unknown-model:1b",)) == 20


def test_settings_defaults_match_issue() -> None:
    assert DEFAULTS["instanceType"] == "ecs.gn7i-c16g1.4xlarge"
    assert DEFAULTS["systemDiskSize"] == 40
    assert DEFAULTS["dataDiskSize"] == 500
    assert DEFAULTS["models"] == ["deepseek-r1:32b"]
    assert int(DEFAULTS["nvidiaDriverVersion"].split(".")[0]) >= 550
