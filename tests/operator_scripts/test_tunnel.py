"""tunnel.py through a real sshd to the stand-in server, and --help of every script."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import tunnel
from ops import cli, ssh

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tunnel_argv(sshd, keys, tmp_path, local_port, remote_port):
    return ["--host", "127.0.0.1", "--port", str(sshd.port), "--identity", str(keys.client),
            "--known-hosts", str(tmp_path / "known_hosts"), "--local-port", str(local_port),
            "--remote-port", str(remote_port), "--timeout", "10", "--retry-initial", "0.1"]


def test_forwards_api_over_ssh(start_standin, sshd, keys, tmp_path):
    server = start_standin(version="1.2.3")
    sshd.start(keys.host_a)
    local_port = free_port()
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(
        tunnel.main(tunnel_argv(sshd, keys, tmp_path, local_port, server.port), stop=stop)))
    runner.start()

    try:
        assert ssh.wait_for_port("127.0.0.1", local_port, timeout=10), "tunnel did not listen"
        version = httpx.get(f"http://127.0.0.1:{local_port}/api/version").json()
        tags = [httpx.get(f"http://127.0.0.1:{local_port}/api/tags").status_code for _ in range(3)]
    finally:
        stop.set()
        runner.join(timeout=10)

    assert version == {"version": "1.2.3"}
    assert tags == [200, 200, 200]
    assert result == [cli.EXIT_OK]


def session_processes(sshd) -> list[int]:
    """Return the PIDs of the per-connection children of this test's sshd."""
    pid = sshd.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_reconnects_after_session_drop(start_standin, sshd, keys, tmp_path):
    """A dropped SSH session must not leave a dead local port: the tunnel reconnects on it."""
    server = start_standin(version="1.2.3")
    sshd.start(keys.host_a)
    local_port = free_port()
    stop = threading.Event()
    runner = threading.Thread(target=tunnel.main, args=(tunnel_argv(sshd, keys, tmp_path, local_port, server.port),),
                              kwargs={"stop": stop})
    runner.start()

    try:
        assert ssh.wait_for_port("127.0.0.1", local_port, timeout=10), "tunnel did not listen"
        before = httpx.get(f"http://127.0.0.1:{local_port}/api/version").status_code
        dropped = session_processes(sshd)
        for pid in dropped:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                after = httpx.get(f"http://127.0.0.1:{local_port}/api/version", timeout=2).json()
                break
            except (httpx.TransportError, ValueError):
                assert time.monotonic() < deadline, "tunnel did not come back within 10 s"
                time.sleep(0.2)
    finally:
        stop.set()
        runner.join(timeout=10)

    assert before == 200
    assert dropped, "expected an sshd session process to kill"
    assert after == {"version": "1.2.3"}


def test_local_port_in_use_fails(start_standin, sshd, keys, tmp_path):
    server = start_standin()
    sshd.start(keys.host_a)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        code = tunnel.main(tunnel_argv(sshd, keys, tmp_path, port, server.port), stop=threading.Event())

    assert code == cli.EXIT_FAILED


def test_duration_ends_tunnel(start_standin, sshd, keys, tmp_path):
    server = start_standin()
    sshd.start(keys.host_a)

    code = tunnel.main([*tunnel_argv(sshd, keys, tmp_path, 0, server.port), "--duration", "0.5"],
                       stop=threading.Event())

    assert code == cli.EXIT_OK


HELP_RUNNER = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    print(f"== {script} exit {code}")
    print(out.getvalue())
"""


def test_script_help_runs():
    """Every script must print its help (with units and exit codes) without a stack or network.

    One interpreter runs all four, as `python SCRIPT --help` would, to save three startups.
    """
    scripts = [str(ROOT / "scripts" / name) for name in ("wait_ready.py", "smoke_test.py", "bench.py", "tunnel.py")]

    result = subprocess.run([sys.executable, "-c", HELP_RUNNER, *scripts], capture_output=True, text=True,
                            timeout=60, check=False, cwd="/")
    sections = result.stdout.split("== ")[1:]

    assert result.returncode == 0, result.stderr
    assert len(sections) == 4, result.stdout
    for section in sections:
        assert " exit 0\n" in section, section[:200]
        assert "exit codes:" in section, section[:200]
        assert "seconds" in section, section[:200]
