"""Scripts that read the stack through the pulumi CLI, with a fake `pulumi` on PATH."""

from __future__ import annotations

import json
import logging
import stat
import time

import ollama
import pytest

import smoke_test
import wait_ready
from ops import cli

FAKE_PULUMI = """#!/bin/sh
# Fake pulumi CLI: the few commands the operator scripts run.
case "$*" in
  "stack output --json"*) cat {outputs} ;;
  "stack --show-name"*) echo dev ;;
  "config get apiKey"*) [ -n "{api_key}" ] && echo "{api_key}" || {{ echo "error: configuration key 'apiKey' not found for stack 'dev'" >&2; exit 255; }} ;;
  *) echo "unexpected pulumi call: $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)


@pytest.fixture
def fake_pulumi(tmp_path, monkeypatch):
    """Install a fake pulumi that prints the given outputs and apiKey config."""

    def _install(outputs: dict, api_key: str = ""):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        outputs_file = tmp_path / "outputs.json"
        outputs_file.write_text(json.dumps(outputs))
        script = bin_dir / "pulumi"
        script.write_text(FAKE_PULUMI.format(outputs=outputs_file, api_key=api_key))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    return _install


def test_smoke_test_reads_endpoint_and_key(start_standin, fake_pulumi, capsys):
    secret = "k-" + "7" * 30
    server = start_standin(gpu="on", api_key=secret)
    ollama.Client(host=server.url, headers={"Authorization": f"Bearer {secret}"}).pull("qwen3:8b")
    fake_pulumi({"endpoint": server.url, "publicIp": "127.0.0.1", "models": ["qwen3:8b"]}, api_key=secret)

    code = smoke_test.main([])
    captured = capsys.readouterr()

    assert code == cli.EXIT_OK
    assert "qwen3:8b 100% in VRAM" in captured.out
    assert secret not in captured.out + captured.err


def test_smoke_test_stack_model_missing(start_standin, fake_pulumi, capsys):
    server = start_standin(gpu="on")
    ollama.Client(host=server.url).pull("qwen3:8b")
    fake_pulumi({"endpoint": server.url, "models": ["deepseek-r1:32b"]})

    code = smoke_test.main([])

    assert code == cli.EXIT_FAILED
    assert "missing deepseek-r1:32b" in capsys.readouterr().out


def test_wait_ready_host_from_stack(sshd, keys, remote, fake_pulumi, tmp_path, monkeypatch):
    """Without --host the address comes from publicIp, and the host key is recorded for stack dev."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    remote.status.write_text(json.dumps({"state": "ready", "phase": "ready", "started_at": time.time() - 5,
                                         "updated_at": time.time(), "models": [], "phases": {}}))
    fake_pulumi({"publicIp": "127.0.0.1"})
    sshd.start(keys.host_a)

    code = wait_ready.main(["--port", str(sshd.port), "--identity", str(keys.client), "--status-path",
                            str(remote.status), "--log-path", str(remote.log), "--timeout", "10"])

    assert code == cli.EXIT_OK
    assert (tmp_path / "home" / ".config" / "ollama-alicloud" / "known_hosts" / "dev").is_file()


def test_missing_output_is_stack_error(fake_pulumi, caplog):
    fake_pulumi({"endpoint": "http://127.0.0.1:9"})

    code = wait_ready.main(["--timeout", "1"])

    assert code == cli.EXIT_STACK
    assert any("no public IP output" in r.getMessage() for r in caplog.records)


def test_no_pulumi_cli_is_stack_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))

    code = smoke_test.main([])

    assert code == cli.EXIT_STACK
    assert any("pulumi CLI was not found" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999999", "http://127.0.0.1:99999", "127.0.0.1:11434"])
def test_invalid_endpoint_output_is_stack_error(url, fake_pulumi, caplog):
    """An endpoint output with a port outside 1 to 65535 ended in a ValueError traceback."""
    fake_pulumi({"endpoint": url, "models": ["qwen3:8b"]})

    code = smoke_test.main([])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    assert code == cli.EXIT_STACK
    assert any(m.startswith(f"the stack's Ollama URL output is invalid: invalid URL {url!r}") for m in errors), errors
