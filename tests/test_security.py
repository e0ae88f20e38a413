"""Exposure policy and the API key: what the program opens, and where the key never goes."""

from __future__ import annotations

import json

import pytest

from components.settings import SettingsError, build_settings
from tests.stack_plans import cached_plan as plan
from scripts.plan import decode_write_files

API_KEY = "test-api-key-0123456789abcdef0123456789abcdef"
RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"
INSTANCE = "alicloud:ecs/instance:Instance"


def rules_by_port(result) -> dict[str, set[str]]:
    ports: dict[str, set[str]] = {}
    for rule in result.of_type(RULE):
        ports.setdefault(rule.inputs["portRange"], set()).add(rule.inputs["cidrIp"])
    return ports


def test_public_api_with_key_succeeds() -> None:
    result = plan("dev", apiKey=API_KEY, allowedCidrs=["0.0.0.0/0"])
    assert rules_by_port(result) == {"11434/11434": {"0.0.0.0/0"}}, "SSH stays closed to the internet"


def test_api_key_absent_from_exports_and_user_data() -> None:
    result = plan("dev", apiKey=API_KEY, allowedCidrs=["0.0.0.0/0"])
    user_data = result.of_type(INSTANCE)[0].inputs["userData"]
    decoded = "\n".join(decode_write_files(user_data).values())
    assert API_KEY not in json.dumps(result.exports)
    assert API_KEY not in user_data
    assert API_KEY not in decoded
    for resource in result.resources:
        assert API_KEY not in json.dumps(resource.inputs, default=str), resource.name


def test_api_key_hash_in_user_data() -> None:
    import hashlib

    result = plan("dev", apiKey=API_KEY)
    env = decode_write_files(result.of_type(INSTANCE)[0].inputs["userData"])["/etc/ollama-bootstrap/bootstrap.env"]
    assert f'API_KEY_SHA256="{hashlib.sha256(API_KEY.encode()).hexdigest()}"' in env
    assert 'OLLAMA_BIND="127.0.0.1:11435"' in env, "Ollama must listen on loopback behind the proxy"
    assert 'ALLOW_MODEL_MANAGEMENT="false"' in env


def test_no_key_binds_all_interfaces() -> None:
    env = decode_write_files(plan("dev").of_type(INSTANCE)[0].inputs["userData"])[
        "/etc/ollama-bootstrap/bootstrap.env"]
    assert 'API_KEY_SHA256=""' in env
    assert 'OLLAMA_BIND="0.0.0.0:11434"' in env


def test_public_ssh_needs_opt_in() -> None:
    opened = plan("dev", apiKey=API_KEY, allowedCidrs=["0.0.0.0/0"], allowPublicSsh=True)
    assert rules_by_port(opened)["22/22"] == {"0.0.0.0/0"}


def test_mixed_cidrs_keep_narrow_ssh() -> None:
    result = plan("dev", apiKey=API_KEY, allowedCidrs=["0.0.0.0/0", "198.51.100.0/24"])
    assert rules_by_port(result) == {"11434/11434": {"0.0.0.0/0", "198.51.100.0/24"},
                                     "22/22": {"198.51.100.0/24"}}


def test_password_login_disabled() -> None:
    import yaml

    document = yaml.safe_load(plan("dev").of_type(INSTANCE)[0].inputs["userData"])
    assert document["ssh_pwauth"] is False


SECURITY_CASES = [
    ("short key", {"apiKey": "short"}, "apiKey", "at least 32"),
    ("key with space", {"apiKey": "a" * 20 + " " + "b" * 20}, "apiKey", "without spaces"),
    ("key in plain text", {"apiKey": API_KEY, "apiKeyIsSecret": False}, "apiKey", "plain text"),
    ("origin star without key", {"allowedOrigins": ["*"]}, "allowedOrigins", "only with an API key"),
    ("origin malformed", {"allowedOrigins": ["chat.example.com"]}, "allowedOrigins", "list of origins"),
    ("public ssh opt-in not boolean", {"allowPublicSsh": "yes"}, "allowPublicSsh", "true or false"),
    ("management opt-in not boolean", {"allowModelManagement": 1}, "allowModelManagement", "true or false"),
]


@pytest.mark.parametrize(("overrides", "key", "pattern"), [case[1:] for case in SECURITY_CASES],
                         ids=[case[0] for case in SECURITY_CASES])
def test_security_settings_table(valid_config: dict, overrides: dict, key: str, pattern: str) -> None:
    with pytest.raises(SettingsError) as raised:
        build_settings({**valid_config, **overrides})
    assert key in {problem.key for problem in raised.value.problems}
    assert pattern in str(raised.value)


@pytest.mark.parametrize("overrides", [
    {"apiKey": API_KEY, "allowedCidrs": ["0.0.0.0/0"]},
    {"apiKey": API_KEY, "allowedOrigins": ["*"]},
    {"allowedOrigins": ["https://chat.example.com", "http://localhost:3000"]},
], ids=["public with key", "any origin with key", "listed origins"])
def test_security_settings_accepted(valid_config: dict, overrides: dict) -> None:
    build_settings({**valid_config, **overrides})


def test_key_never_in_error_message(valid_config: dict) -> None:
    with pytest.raises(SettingsError) as raised:
        build_settings({**valid_config, "apiKey": "tooshort-secret", "apiKeyIsSecret": False})
    assert "tooshort-secret" not in str(raised.value)
