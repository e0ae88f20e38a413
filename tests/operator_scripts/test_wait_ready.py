"""wait_ready.py against a real OpenSSH sshd on 127.0.0.1 and fake bootstrap files."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time

import pytest

import wait_ready
from ops import cli, ssh


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # rich wraps at the terminal width; a wide one keeps messages on one line for the asserts.
    monkeypatch.setenv("COLUMNS", "400")


def write_status(path, state="running", phase="pull", error=None, started_at=None, **extra):
    now = time.time()
    status = {
        "state": state, "phase": phase, "error": error,
        "started_at": started_at if started_at is not None else now - 90, "updated_at": now,
        "bytes_pulled": 0, "bytes_total": 0, "models": ["deepseek-r1:32b"],
        "phases": {"packages": {"state": "done", "start": now - 90, "end": now - 60}},
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(path)


def argv(sshd, keys, remote, known_hosts, timeout=20.0):
    return [
        "--host", "127.0.0.1", "--port", str(sshd.port), "--identity", str(keys.client),
        "--known-hosts", str(known_hosts), "--status-path", str(remote.status), "--log-path", str(remote.log),
        "--timeout", str(timeout), "--poll-interval", "0.1", "--retry-initial", "0.1", "--retry-max", "0.4",
        "--connect-timeout", "2",
    ]


def test_retries_until_sshd_listens(sshd, keys, remote, tmp_path, caplog, capsys):
    """sshd is down for the first seconds of a new instance; wait_ready must retry, not fail."""
    write_status(remote.status, state="ready", phase="ready")
    known_hosts = tmp_path / "known_hosts"
    starter = threading.Timer(0.5, sshd.start, args=(keys.host_a,))
    starter.start()
    caplog.set_level(logging.INFO)

    try:
        code = wait_ready.main(argv(sshd, keys, remote, known_hosts))
    finally:
        starter.join()
    out = capsys.readouterr().out

    assert code == cli.EXIT_OK
    assert "Ready" in out
    assert any("not ready" in r.getMessage() for r in caplog.records), "expected logged retries"
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in known_hosts.read_text()


def test_progress_until_ready(sshd, keys, remote, tmp_path, caplog, capsys, monkeypatch):
    """Each poll must reach the display with phase and bytes, and phase changes must be logged."""
    write_status(remote.status, bytes_pulled=1_000, bytes_total=20_000,
                 phases={"pull": {"state": "running", "start": time.time() - 5, "end": None}})
    sshd.start(keys.host_a)
    caplog.set_level(logging.INFO)
    shown: list[tuple[str, int, int]] = []
    first_poll = threading.Event()
    original_show = wait_ready.Display.show

    def record_show(self, description, snapshot):
        status = (snapshot.status if snapshot else None) or {}
        shown.append((description, status.get("bytes_pulled", 0), status.get("bytes_total", 0)))
        first_poll.set()
        original_show(self, description, snapshot)

    def finish():
        first_poll.wait(timeout=10)
        write_status(remote.status, state="ready", phase="ready", bytes_pulled=20_000, bytes_total=20_000,
                     phases={"pull": {"state": "done", "start": time.time() - 5, "end": time.time()}})

    monkeypatch.setattr(wait_ready.Display, "show", record_show)
    updater = threading.Thread(target=finish)
    updater.start()
    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts"))
    updater.join()
    out = capsys.readouterr().out
    messages = [r.getMessage() for r in caplog.records]

    assert code == cli.EXIT_OK
    assert any(m.startswith("pull: 0.00 of 0.00 GB pulled (5%)") for m in messages), "plain-output progress line"
    assert ("pull", 1_000, 20_000) in shown
    assert ("ready", 20_000, 20_000) in shown
    assert "Ready after" in out
    assert "deepseek-r1:32b" in out
    assert "phase pull: running" in messages
    assert any(m.startswith("phase pull: done after") for m in messages)


def test_failed_status_prints_log_tail(sshd, keys, remote, tmp_path, capsys):
    write_status(remote.status, state="failed", phase="driver", error="nvidia-smi failed (exit 9)",
                 phases={"driver": {"state": "failed", "start": time.time() - 30, "end": time.time()}})
    remote.log.write_text("".join(f"log line {i}\n" for i in range(1, 51)))
    sshd.start(keys.host_a)

    code = wait_ready.main([*argv(sshd, keys, remote, tmp_path / "known_hosts"), "--log-lines", "5"])
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "Bootstrap failed in phase driver: nvidia-smi failed (exit 9)" in out
    assert "log line 50" in out
    assert "log line 46" in out
    assert "log line 45\n" not in out


def test_changed_host_key_rejected_with_hint(sshd, keys, remote, tmp_path, capsys):
    """A replaced key must be rejected (never re-trusted silently), and the hint must fix it."""
    write_status(remote.status, state="ready", phase="ready")
    known_hosts = tmp_path / "known_hosts"
    sshd.start(keys.host_a)
    assert wait_ready.main(argv(sshd, keys, remote, known_hosts)) == cli.EXIT_OK
    recorded = known_hosts.read_text()
    sshd.stop()
    sshd.start(keys.host_b)
    capsys.readouterr()

    code = wait_ready.main(argv(sshd, keys, remote, known_hosts))
    out = capsys.readouterr().out
    reset = subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{sshd.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True, check=False)
    after_reset = wait_ready.main(argv(sshd, keys, remote, known_hosts))

    assert code == cli.EXIT_HOST_KEY
    assert "Host key rejected" in out
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known_hosts}" in out
    assert "instance was replaced" in out
    assert reset.returncode == 0
    assert after_reset == cli.EXIT_OK


def test_changed_key_not_rerecorded(sshd, keys, remote, tmp_path):
    write_status(remote.status, state="ready", phase="ready")
    known_hosts = tmp_path / "known_hosts"
    sshd.start(keys.host_a)
    wait_ready.main(argv(sshd, keys, remote, known_hosts))
    recorded = known_hosts.read_text()
    sshd.stop()
    sshd.start(keys.host_b)

    wait_ready.main(argv(sshd, keys, remote, known_hosts))

    assert known_hosts.read_text() == recorded


def test_timeout_when_sshd_never_starts(sshd, keys, remote, tmp_path):
    started = time.monotonic()

    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts", timeout=0.5))

    assert code == cli.EXIT_TIMEOUT
    assert time.monotonic() - started < 5


def test_status_from_earlier_boot_is_not_ready(sshd, keys, remote, tmp_path, capsys, caplog):
    """A "ready" left by the previous boot must not end the wait after a reboot."""
    caplog.set_level(logging.INFO)
    write_status(remote.status, state="ready", phase="ready", started_at=1_000_000.0)
    sshd.start(keys.host_a)

    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts", timeout=0.8))

    assert code == cli.EXIT_TIMEOUT
    assert "Ready" not in capsys.readouterr().out
    assert any("from an earlier boot" in r.getMessage() for r in caplog.records)


def test_missing_status_file_keeps_waiting(sshd, keys, remote, tmp_path):
    sshd.start(keys.host_a)
    writer = threading.Timer(0.3, write_status, args=(remote.status,), kwargs={"state": "ready", "phase": "ready"})
    writer.start()

    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts", timeout=10))
    writer.join()

    assert code == cli.EXIT_OK


def test_wrong_identity_is_auth_error(sshd, keys, remote, tmp_path):
    write_status(remote.status, state="ready", phase="ready")
    sshd.start(keys.host_a)
    args = argv(sshd, keys, remote, tmp_path / "known_hosts")
    args[args.index("--identity") + 1] = str(keys.host_b)

    assert wait_ready.main(args) == cli.EXIT_AUTH


@pytest.mark.parametrize(("output", "status"), [
    ("1700000100 1700000000\n", None),
    ("1700000100 1700000000\n{\"state\": \"ru", None),
    ("1700000100 1700000000\n{\"state\": \"ready\"}\n", {"state": "ready"}),
])
def test_parse_poll_cases(output, status):
    snapshot = wait_ready.parse_poll(output)

    assert snapshot.remote_now == 1700000100
    assert snapshot.boot_time == 1700000000
    assert snapshot.status == status


@pytest.mark.parametrize(("fields", "reason"), [
    ({"phases": [{"pull": "running"}]}, "phases must be an object"),
    ({"phases": {"pull": "running"}}, "phases.pull must be an object"),
    ({"started_at": "yesterday"}, "started_at must be a finite number"),
    ({"started_at": 1e400}, "started_at must be a finite number"),
    ({"updated_at": 1e400}, "updated_at must be a finite number"),
    ({"phases": {"pull": {"state": "done", "start": 1.0, "end": 1e400}}}, "phases.pull.end must be a finite number"),
    ({"models": [1, 2]}, "models must be a list of strings"),
    ({"bytes_total": -5}, "bytes_total must be a finite number, 0 or more"),
    ({"error": {"code": 9}}, "error must be a string"),
])
def test_parse_poll_rejects_malformed_status(fields, reason):
    """A status file of the wrong shape crashed wait_ready with TypeError, AttributeError or OverflowError."""
    document = {"state": "running", "phase": "pull", "started_at": 1700000050, **fields}
    # json.dumps writes float("inf") as Infinity; the bootstrap would write the number 1e400.
    text = json.dumps(document).replace("Infinity", "1e400")

    snapshot = wait_ready.parse_poll(f"1700000100 1700000000\n{text}\n")

    assert snapshot.status is None
    assert reason in snapshot.invalid_reason


def test_malformed_status_keeps_waiting(sshd, keys, remote, tmp_path, caplog):
    """A malformed status file must be logged once and polled again, not end wait_ready with a traceback."""
    caplog.set_level(logging.INFO)
    remote.status.write_text(json.dumps({"state": "running", "phase": "pull", "started_at": time.time(),
                                         "phases": {"pull": "running"}}))
    sshd.start(keys.host_a)
    writer = threading.Timer(0.5, write_status, args=(remote.status,), kwargs={"state": "ready", "phase": "ready"})
    writer.start()

    try:
        code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts", timeout=10))
    finally:
        writer.join()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert code == cli.EXIT_OK
    assert len([m for m in warnings if "is malformed, phases.pull must be an object" in m]) == 1, warnings


def test_malformed_status_timeout_names_problem(sshd, keys, remote, tmp_path, capsys):
    """A status file that stays malformed must end in a timeout that says what is wrong with it."""
    remote.status.write_text(json.dumps({"state": "running", "started_at": time.time(), "models": [1, 2]}))
    sshd.start(keys.host_a)

    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts", timeout=0.5))
    out = capsys.readouterr().out

    assert code == cli.EXIT_TIMEOUT
    assert "with a malformed status file (models must be a list of strings" in out


def test_control_characters_escaped(sshd, keys, remote, tmp_path, capsys):
    """ANSI escapes and other control characters in the status error and the log reached the terminal raw."""
    write_status(remote.status, state="failed", phase="dri\x1b[2Jver", error="bad\x1b[31m red\x07\r\nsecond line",
                 phases={"dri\x1b[2Jver": {"state": "fail\x1b[0med", "start": time.time() - 3, "end": time.time()}})
    remote.log.write_text("log \x1b]0;new title\x07line\n\tindented \x9b31m\n")
    sshd.start(keys.host_a)

    code = wait_ready.main(argv(sshd, keys, remote, tmp_path / "known_hosts"))
    out = capsys.readouterr().out

    assert code == cli.EXIT_FAILED
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\x9b" not in out
    assert "\r" not in out
    assert "Bootstrap failed in phase dri\\x1b[2Jver: bad\\x1b[31m red\\x07\\x0d\nsecond line" in out
    assert "log \\x1b]0;new title\\x07line\n" in out
    assert "indented \\x9b31m" in out  # rich expands the tab before it


def test_auth_failure_message_one_period(sshd, keys, remote, tmp_path, caplog, monkeypatch):
    """paramiko's "Authentication failed." was followed by a second period in the logged error."""
    monkeypatch.setattr(ssh, "AUTH_FAILURES_BEFORE_GIVING_UP", 1)
    write_status(remote.status, state="ready", phase="ready")
    sshd.start(keys.host_a)
    args = argv(sshd, keys, remote, tmp_path / "known_hosts")
    args[args.index("--identity") + 1] = str(keys.host_b)

    code = wait_ready.main(args)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    assert code == cli.EXIT_AUTH
    assert any("Authentication failed. Pass the private key" in m for m in errors), errors
    assert not any(".." in m for m in errors), errors
