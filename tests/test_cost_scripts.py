"""The cost scripts: extend_ttl.py against a recording `pulumi`, wake.py against stand-ins on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from scripts import wake
from tests.standin.alicloud_api import (
    INSTANCE_ID,
    USER_ACCESS_KEY_ID,
    USER_ACCESS_KEY_SECRET,
    AlicloudStandin,
    StandinState,
)

ROOT = Path(__file__).resolve().parent.parent
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def fake_pulumi(tmp_path: Path, exit_code: int = 0) -> tuple[dict[str, str], Path]:
    """Put a `pulumi` on PATH that appends its arguments to a file as JSON lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "pulumi-calls.jsonl"
    script = bin_dir / "pulumi"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"print('error: stack not found', file=sys.stderr) if {exit_code} else None\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def run_extend(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "extend_ttl.py"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_extend_ttl_sets_renewal(tmp_path: Path) -> None:
    env, calls = fake_pulumi(tmp_path)

    completed = run_extend(env, "--stack", "dev")

    assert completed.returncode == 0, completed.stderr
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call[:3] == ["config", "set", "ttlRenewedAt"]
    assert ISO_UTC.match(call[3]), call
    assert call[4:] == ["--stack", "dev"]


def test_extend_ttl_sets_hours(tmp_path: Path) -> None:
    env, calls = fake_pulumi(tmp_path)

    completed = run_extend(env, "--hours", "12")

    assert completed.returncode == 0, completed.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded[0] == ["config", "set", "ttlHours", "12"]
    assert recorded[1][:3] == ["config", "set", "ttlRenewedAt"]


def test_extend_ttl_reports_pulumi_failure(tmp_path: Path) -> None:
    env, _ = fake_pulumi(tmp_path, exit_code=255)

    completed = run_extend(env, "--stack", "nosuchstack")

    assert completed.returncode == 1
    assert "stack not found" in completed.stderr


def test_extend_ttl_rejects_zero_hours(tmp_path: Path) -> None:
    env, calls = fake_pulumi(tmp_path)

    completed = run_extend(env, "--hours", "0")

    assert completed.returncode == 2
    assert not calls.exists(), "nothing is written for invalid arguments"


class VersionServer:
    """A stand-in for Ollama's GET /api/version on 127.0.0.1."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = b'{"version":"0.32.15"}'
                self.send_response(200 if self.path == "/api/version" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlicloudStandin]:
    monkeypatch.setenv("ALICLOUD_ACCESS_KEY", USER_ACCESS_KEY_ID)
    monkeypatch.setenv("ALICLOUD_SECRET_KEY", USER_ACCESS_KEY_SECRET)
    monkeypatch.delenv("ALICLOUD_SECURITY_TOKEN", raising=False)
    with AlicloudStandin(StandinState(instance_status="Stopped")) as standin:
        yield standin


def wake_args(cloud: AlicloudStandin, port: int, timeout: float = 10) -> list[str]:
    return ["--instance-id", INSTANCE_ID, "--region", "cn-hangzhou", "--ecs-endpoint", cloud.ecs_url,
            "--port", str(port), "--timeout", str(timeout), "--interval", "0.1"]


def test_wake_starts_stopped_instance(cloud: AlicloudStandin) -> None:
    ollama = VersionServer()
    try:
        code = wake.main(wake_args(cloud, ollama.port))
    finally:
        ollama.close()

    assert code == wake.EXIT_OK
    assert len(cloud.state.start_calls) == 1, cloud.state.rejected_calls
    assert cloud.state.start_calls[0]["InstanceId"] == INSTANCE_ID
    assert cloud.state.instance_status == "Running"


def test_wake_running_instance_no_start(cloud: AlicloudStandin) -> None:
    cloud.state.instance_status = "Running"
    ollama = VersionServer()
    try:
        code = wake.main(wake_args(cloud, ollama.port))
    finally:
        ollama.close()

    assert code == wake.EXIT_OK
    assert cloud.state.start_calls == []


def test_wake_times_out_without_api(cloud: AlicloudStandin) -> None:
    ollama = VersionServer()
    port = ollama.port
    ollama.close()

    code = wake.main(wake_args(cloud, port, timeout=0.5))

    assert code == wake.EXIT_TIMEOUT


def test_wake_reports_rejected_key(cloud: AlicloudStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICLOUD_SECRET_KEY", "wrong-secret")

    code = wake.main(wake_args(cloud, 9))

    assert code == wake.EXIT_API_FAILED
    assert cloud.state.rejected_calls[0]["code"] == "SignatureDoesNotMatch"
