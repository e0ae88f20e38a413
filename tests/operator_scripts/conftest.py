"""Real parts for the operator-script tests: an OpenSSH sshd and the stand-in Ollama server.

sshd runs as the test user (root here) on 127.0.0.1 with its own config, host key
and authorized key, so logins work without touching the machine's SSH setup.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "standin"))

import ollama_server as standin  # noqa: E402

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True)
    return path


@dataclasses.dataclass
class Keys:
    client: Path
    host_a: Path
    host_b: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Keys:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server)")
    directory = tmp_path_factory.mktemp("keys")
    return Keys(client=keygen(directory / "client"), host_a=keygen(directory / "host_a"),
                host_b=keygen(directory / "host_b"))


class Sshd:
    """One sshd process on 127.0.0.1:port that accepts the test client key."""

    def __init__(self, workdir: Path, port: int, client_key: Path):
        self.workdir = workdir
        self.port = port
        self.process: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(client_key.with_suffix(".pub"), workdir / "authorized_keys")

    def start(self, host_key: Path) -> "Sshd":
        # sshd re-executes itself and needs its privilege separation directory.
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "sshd_config"
        config.write_text(SSHD_CONFIG.format(port=self.port, host_key=host_key, workdir=self.workdir))
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.workdir / "sshd.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.workdir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def sshd(tmp_path, keys):
    """Return a not-yet-started sshd on a free port; stop it after the test."""
    server = Sshd(tmp_path / "sshd", free_port(), keys.client)
    yield server
    server.stop()


@dataclasses.dataclass
class Remote:
    """Fake instance files that the scripts read over SSH."""

    status: Path
    log: Path


@pytest.fixture
def remote(tmp_path) -> Remote:
    directory = tmp_path / "instance"
    directory.mkdir()
    return Remote(status=directory / "status.json", log=directory / "bootstrap.log")


class Standin:
    """The stand-in Ollama server in a thread, with its base URL."""

    def __init__(self, config: standin.Config):
        self.server = standin.make_server(config)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def start_standin(tmp_path):
    """Start stand-in Ollama servers with Config overrides; stop them after the test."""
    servers: list[Standin] = []

    def _start(**overrides) -> Standin:
        config = standin.Config(host="127.0.0.1", port=0, models_dir=tmp_path / "models",
                                model_size=standin.parse_per_model(None, 100_000),
                                load_seconds=standin.parse_per_model(None, 0.01))
        server = Standin(dataclasses.replace(config, **overrides))
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
