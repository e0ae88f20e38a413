"""The idle-stop script run as on the instance, against stand-ins on 127.0.0.1.

Stand-ins answer for Ollama's /api/ps, the metadata service and the ECS API, so the
script runs unchanged and no request leaves this machine. Time passing is simulated by
the state file the script keeps between its once-a-minute runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from components.userdata import BOOTSTRAP_DIR
from tests.standin.alicloud_api import INSTANCE_ID, ROLE_NAME, SECURITY_TOKEN, AlicloudStandin, StandinState

SCRIPT = BOOTSTRAP_DIR / "ollama-idle-stop.py"
# The instance runs the script with its own python3 (3.6 on Alibaba Cloud Linux 3); set
# IDLE_STOP_PYTHON to such an interpreter to test with it.
PYTHON = os.environ.get("IDLE_STOP_PYTHON", sys.executable)
IDLE_MINUTES = 30
LOADED_MODEL = {"name": "qwen3:0.6b", "expires_at": "2026-12-04T21:00:00Z", "size_vram": 500}


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("ollama_idle_stop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeOllama:
    """Answers GET /api/ps with `models`, or HTTP 503 while `down`."""

    models: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    def serve(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"models": fake.models}).encode()
                self.send_response(503 if fake.down or self.path != "/api/ps" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server


@dataclass
class Instance:
    """One simulated instance: its config, state files and the stand-ins it talks to."""

    root: Path
    standin: AlicloudStandin
    ollama: FakeOllama
    ollama_port: int
    sessions: str = ""

    @property
    def state_file(self) -> Path:
        return self.root / "run" / "state.json"

    def write_config(self, **overrides: str) -> None:
        values = {
            "IDLE_STOP_MINUTES": str(IDLE_MINUTES),
            "IDLE_STOP_ROLE": ROLE_NAME,
            "ECS_API_ENDPOINT": self.standin.ecs_url,
            "INSTANCE_METADATA_URL": self.standin.metadata_url,
            "OLLAMA_BIND": f"0.0.0.0:{self.ollama_port}",
            **overrides,
        }
        (self.root / "bootstrap.env").write_text("".join(f'{key}="{value}"\n' for key, value in values.items()))

    def set_bootstrap_state(self, state: str) -> None:
        (self.root / "status.json").write_text(json.dumps({"state": state}))

    def seed_state(self, idle_seconds: float, models: Any = "current") -> None:
        """Pretend the last check ran with `models` loaded and the last activity was idle_seconds ago."""
        if models == "current":
            models = sorted([m["name"], m["expires_at"], m["size_vram"]] for m in self.ollama.models)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"last_activity": time.time() - idle_seconds, "models": models,
                                               "stop_requested_at": None}))

    def run(self, **environment: str) -> subprocess.CompletedProcess[str]:
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        who = bin_dir / "who"
        who.write_text(f"#!/bin/sh\nprintf '%s' '{self.sessions}'\n")
        who.chmod(0o755)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "BOOTSTRAP_CONFIG": str(self.root / "bootstrap.env"),
            "BOOTSTRAP_STATE_DIR": str(self.root),
            "IDLE_STOP_STATE": str(self.state_file),
            **environment,
        }
        return subprocess.run([PYTHON, str(SCRIPT)], env=env, capture_output=True, text=True,
                              timeout=60, check=False)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    ollama = FakeOllama(models=[dict(LOADED_MODEL)])
    server = ollama.serve()
    with AlicloudStandin(StandinState()) as standin:
        machine = Instance(tmp_path, standin, ollama, server.server_address[1])
        machine.write_config()
        machine.set_bootstrap_state("ready")
        yield machine
    server.shutdown()
    server.server_close()


def test_rpc_signature_documented_example() -> None:
    """Guards against a signing bug, which ECS would answer with SignatureDoesNotMatch."""
    # The worked example of Alibaba Cloud's RPC signature documentation (secret "testsecret").
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert load_script().rpc_signature(params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_idle_instance_stopped_once(instance: Instance) -> None:
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    first = instance.run()
    second = instance.run()

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert len(instance.standin.state.stop_calls) == 1, instance.standin.state.rejected_calls
    [call] = instance.standin.state.stop_calls
    assert call["InstanceId"] == INSTANCE_ID
    assert call["StoppedMode"] == "StopCharging"
    assert call["SecurityToken"] == SECURITY_TOKEN
    assert "waiting for the instance to stop" in second.stderr


def test_served_request_keeps_instance_running(instance: Instance) -> None:
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)
    instance.ollama.models[0]["expires_at"] = "2026-12-04T21:07:00Z"

    completed = instance.run()

    assert completed.returncode == 0, completed.stderr
    assert instance.standin.state.stop_calls == []
    assert "Ollama served a request" in completed.stderr
    state = json.loads(instance.state_file.read_text())
    assert time.time() - state["last_activity"] < 60, "activity restarts the idle period"
    assert state["last_busy_reason"] == "Ollama served a request or loaded a model"


def test_new_model_load_counts_as_activity(instance: Instance) -> None:
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5, models=[])

    instance.run()

    assert instance.standin.state.stop_calls == []


def test_short_idle_keeps_instance_running(instance: Instance) -> None:
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 - 60)

    completed = instance.run()

    assert completed.returncode == 0, completed.stderr
    assert instance.standin.state.stop_calls == []


def test_running_bootstrap_keeps_instance_running(instance: Instance) -> None:
    """A driver build and a model download take many minutes without any Ollama request."""
    instance.set_bootstrap_state("running")
    instance.ollama.down = True
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5, models=None)

    instance.run()

    assert instance.standin.state.stop_calls == []


def test_login_session_keeps_instance_running(instance: Instance) -> None:
    instance.sessions = "root     pts/0        2026-12-04 20:00 (203.0.113.7)\n"
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    instance.run()

    assert instance.standin.state.stop_calls == []


def test_first_check_starts_idle_period(instance: Instance) -> None:
    """The state lives under /run, so after a start every check begins a fresh idle period."""
    completed = instance.run()

    assert completed.returncode == 0, completed.stderr
    assert instance.standin.state.stop_calls == []
    assert instance.state_file.exists()


def test_hardened_metadata_mode_used(instance: Instance) -> None:
    instance.standin.state.require_token = True
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    completed = instance.run()

    assert completed.returncode == 0, completed.stderr
    assert len(instance.standin.state.stop_calls) == 1


def test_failed_stop_retried_next_check(instance: Instance) -> None:
    instance.standin.state.ecs_error = (500, "InternalError")
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    failed = instance.run()
    instance.standin.state.ecs_error = None
    retried = instance.run()

    assert failed.returncode == 1
    assert "InternalError" in failed.stderr
    assert retried.returncode == 0, retried.stderr
    assert len(instance.standin.state.stop_calls) == 1


def test_unknown_role_fails_without_stop(instance: Instance) -> None:
    instance.write_config(IDLE_STOP_ROLE="another-role")
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    completed = instance.run()

    assert completed.returncode == 1
    assert "HTTP 404" in completed.stderr
    assert instance.standin.state.stop_calls == []


@pytest.mark.parametrize(("idle_seconds", "expected_stop_calls"), [(25, 1), (15, 0)])
def test_idle_stop_seconds_override(instance: Instance, idle_seconds: int, expected_stop_calls: int) -> None:
    """The boot tests rely on IDLE_STOP_SECONDS replacing the IDLE_STOP_MINUTES period."""
    instance.seed_state(idle_seconds=idle_seconds)

    completed = instance.run(IDLE_STOP_SECONDS="20")

    assert completed.returncode == 0, completed.stderr
    assert len(instance.standin.state.stop_calls) == expected_stop_calls


@pytest.mark.parametrize("value", ["0", "-5", "20s", ""])
def test_invalid_idle_stop_seconds_exit_2(instance: Instance, value: str) -> None:
    instance.seed_state(idle_seconds=IDLE_MINUTES * 60 + 5)

    completed = instance.run(IDLE_STOP_SECONDS=value)

    assert completed.returncode == 2
    assert "IDLE_STOP_SECONDS" in completed.stderr
    assert instance.standin.state.stop_calls == []


def test_missing_config_key_exit_2(instance: Instance) -> None:
    instance.write_config(ECS_API_ENDPOINT="")

    completed = instance.run()

    assert completed.returncode == 2
    assert "ECS_API_ENDPOINT" in completed.stderr
