"""The API-key proxy for real: nginx with the bootstrap's config, ollama-auth.py, and the
stand-in Ollama server, all on 127.0.0.1 high ports."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ollama
import pytest

from components.settings import build_settings
from components.userdata import bootstrap_env
from tests.test_userdata import require_tool

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "components" / "bootstrap" / "bootstrap.sh"
AUTH_HELPER = ROOT / "components" / "bootstrap" / "ollama-auth.py"
STANDIN = ROOT / "tests" / "standin" / "ollama_server.py"
API_KEY = "proxy-test-key-0123456789abcdef0123456789abcdef"
MODEL = "tiny:1b"
MANAGEMENT_PATHS = ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/sha256:00",
                    "/api/me", "/api/signout", "/api/user/keys/abc", "/api/experimental/web_search")


@dataclass
class Proxy:
    """A running proxy and the address of the Ollama stand-in behind it."""

    port: int
    ollama_port: int
    allow_management: bool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def render_nginx_config(env_file: Path) -> str:
    """Return the nginx config that bootstrap.sh writes for this env file."""
    completed = subprocess.run(
        ["bash", "-c", f'source "{BOOTSTRAP}" && write_nginx_config'],
        env={**os.environ, "BOOTSTRAP_CONFIG": str(env_file)},
        capture_output=True, text=True, check=True,
    )
    return completed.stdout


def start_proxy(tmp_path: Path, allow_management: bool, processes: list[subprocess.Popen]) -> Proxy:
    nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin") or require_tool("nginx")
    ollama_port, auth_port, proxy_port = free_port(), free_port(), free_port()

    settings = build_settings({
        "region": "cn-hangzhou",
        "allowedCidrs": ["0.0.0.0/0"],
        "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtestkey test",
        "apiKey": API_KEY,
        "allowModelManagement": allow_management,
    })
    env_file = tmp_path / "bootstrap.env"
    env_file.write_text(bootstrap_env(settings, "testserial")
                        + f'OLLAMA_BIND="127.0.0.1:{ollama_port}"\nPROXY_PORT="{proxy_port}"\nAUTH_PORT="{auth_port}"\n')

    standin = subprocess.Popen(
        [sys.executable, str(STANDIN), "serve"],
        env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{ollama_port}", "OLLAMA_MODELS": str(tmp_path / "models"),
             "OLLAMA_STANDIN_TOKEN_DELAY": "0.05", "OLLAMA_STANDIN_GPU": "on", "OLLAMA_STANDIN_EVAL_COUNT": "20"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes.append(standin)

    hash_file = tmp_path / "api-key.sha256"
    hash_file.write_text(hashlib.sha256(API_KEY.encode()).hexdigest() + "\n")
    auth = subprocess.Popen(
        [sys.executable, str(AUTH_HELPER), "--hash-file", str(hash_file), "--listen", f"127.0.0.1:{auth_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes.append(auth)

    (tmp_path / "ollama.conf").write_text(render_nginx_config(env_file))
    (tmp_path / "nginx.conf").write_text(f"""
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/ollama.conf;
}}
""")
    server = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(server)

    for port, process in ((ollama_port, standin), (auth_port, auth), (proxy_port, server)):
        wait_for_port(port, process)
    ollama.Client(host=f"http://127.0.0.1:{ollama_port}").pull(MODEL)
    return Proxy(proxy_port, ollama_port, allow_management)


@pytest.fixture(params=[False, True], ids=["inference-only", "management-allowed"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proxy]:
    processes: list[subprocess.Popen] = []
    try:
        yield start_proxy(tmp_path, request.param, processes)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=10)


def request(proxy: Proxy, method: str, path: str, key: str | None = None, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    connection.request(method, path, body=body, headers=all_headers)
    return connection.getresponse()


def test_proxy_rejects_missing_key(proxy: Proxy) -> None:
    response = request(proxy, "GET", "/api/tags")
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")


def test_proxy_rejects_wrong_key(proxy: Proxy) -> None:
    assert request(proxy, "GET", "/api/tags", key=API_KEY + "x").status == 401
    assert request(proxy, "GET", "/api/tags", key="").status == 401


def test_proxy_streams_chat_with_key(proxy: Proxy) -> None:
    client = ollama.Client(host=f"http://127.0.0.1:{proxy.port}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert MODEL in [model.model for model in client.list().models]

    started = time.monotonic()
    arrivals = []
    for _ in client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 10, "a streamed chat arrives in several chunks"
    # 20 tokens 0.05 s apart: a proxy that held the response back would deliver them all at the end.
    assert arrivals[0] < arrivals[-1] / 2, f"first chunk at {arrivals[0]:.2f} s of {arrivals[-1]:.2f} s"


def test_proxy_passes_public_host_name(proxy: Proxy) -> None:
    """Guards against Ollama's 403 for a public Host header when it listens on loopback."""
    response = request(proxy, "GET", "/api/tags", key=API_KEY, headers={"Host": "47.96.1.2:11434"})
    assert response.status == 200


def test_proxy_openai_endpoint_with_key(proxy: Proxy) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    response = request(proxy, "POST", "/v1/chat/completions", key=API_KEY, body=body,
                       headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert json.loads(response.read())["choices"][0]["message"]["content"]


def test_proxy_accepts_large_body(proxy: Proxy) -> None:
    # nginx rejects bodies over 1 MiB unless the config raises the limit.
    content = "x" * (8 * 1024 * 1024)
    body = json.dumps({"model": MODEL, "stream": False, "messages": [{"role": "user", "content": content}]})
    response = request(proxy, "POST", "/api/chat", key=API_KEY, body=body.encode())
    assert response.status == 200


def test_proxy_management_endpoints(proxy: Proxy) -> None:
    for path in MANAGEMENT_PATHS:
        status = request(proxy, "POST", path, key=API_KEY, body=b"{}").status
        if proxy.allow_management:
            assert status != 403, f"{path} must reach Ollama when allowModelManagement is true"
        else:
            assert status == 403, f"{path} answered {status}"
    if proxy.allow_management:
        assert request(proxy, "POST", "/api/pull", body=b"{}").status == 401, "management still needs the key"


def test_proxy_lets_cors_preflight_through(proxy: Proxy) -> None:
    response = request(proxy, "OPTIONS", "/api/chat", headers={"Origin": "https://chat.example.com",
                                                                "Access-Control-Request-Method": "POST"})
    assert response.status != 401

