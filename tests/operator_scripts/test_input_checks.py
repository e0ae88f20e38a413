"""Option checks and fail-fast errors shared by the operator scripts, and their exit codes."""

from __future__ import annotations

import logging
import time

import pytest
from rich.console import Console

import bench
import smoke_test
import tunnel
import wait_ready
from ops import cli, ssh, stack


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")


@pytest.mark.parametrize(("module", "option", "value"), [
    (wait_ready, "--timeout", "nan"),
    (wait_ready, "--timeout", "inf"),
    (wait_ready, "--timeout", "-1"),
    (wait_ready, "--timeout", "0"),
    (wait_ready, "--poll-interval", "0"),
    (wait_ready, "--poll-interval", "nan"),
    (wait_ready, "--connect-timeout", "-5"),
    (wait_ready, "--retry-initial", "inf"),
    (wait_ready, "--retry-max", "nan"),
    (wait_ready, "--log-lines", "-3"),
    (smoke_test, "--timeout", "nan"),
    (bench, "--timeout", "0"),
    (bench, "--bandwidth", "inf"),
    (bench, "--unload-threshold", "-1"),
    (tunnel, "--timeout", "nan"),
    (tunnel, "--duration", "-1"),
    (tunnel, "--duration", "inf"),
])
def test_invalid_number_rejected(module, option, value, capsys):
    """NaN, infinite, negative or zero seconds ended in a ValueError traceback or a busy loop, not a usage error."""
    with pytest.raises(SystemExit) as exited:
        module.build_parser().parse_args([option, value])
    err = capsys.readouterr().err

    assert exited.value.code == cli.EXIT_USAGE
    assert f"argument {option}: invalid value {value!r}" in err


@pytest.mark.parametrize(("module", "option", "value"), [
    (wait_ready, "--port", "99999"),
    (wait_ready, "--port", "0"),
    (wait_ready, "--port", "22x"),
    (tunnel, "--local-port", "70000"),
    (tunnel, "--local-port", "-1"),
    (tunnel, "--remote-port", "0"),
    (smoke_test, "--remote-port", "65536"),
    (smoke_test, "--url", "http://127.0.0.1:99999999"),
    (smoke_test, "--url", "http://127.0.0.1:0"),
    (bench, "--url", "127.0.0.1:11434"),
])
def test_invalid_port_rejected(module, option, value, capsys):
    """Ports outside 1 to 65535 wrapped around (99999 became 34463) or ended in an OverflowError traceback."""
    with pytest.raises(SystemExit) as exited:
        module.build_parser().parse_args([option, value])
    err = capsys.readouterr().err

    assert exited.value.code == cli.EXIT_USAGE
    assert f"argument {option}: invalid" in err


def test_port_limits_accepted():
    args = tunnel.build_parser().parse_args(["--local-port", "0", "--remote-port", "65535", "--port", "1"])

    assert (args.local_port, args.remote_port, args.port) == (0, 65535, 1)


def fast_fail_argv(tmp_path, host="127.0.0.1", identity=None):
    """Return SSH options for a host where no sshd listens, with a 3 s deadline that a retry loop would run into."""
    return ["--host", host, "--port", "9", "--known-hosts", str(tmp_path / "known_hosts"),
            "--identity", str(identity or tmp_path / "missing_key"), "--retry-initial", "0.1",
            "--retry-max", "0.2", "--connect-timeout", "1", "--timeout", "3"]


@pytest.mark.parametrize("key_name", ["missing_key", "key.pub", "not_a_key"])
def test_unusable_identity_fails_fast(key_name, tmp_path, caplog):
    """A missing or invalid --identity file was retried as "sshd not ready" until --timeout."""
    identity = tmp_path / key_name
    if key_name == "key.pub":
        identity.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtestkeyonlyfortests00000000000000000000 test\n")
    elif key_name == "not_a_key":
        identity.write_text("hello\n")
    started = time.monotonic()

    code = wait_ready.main(fast_fail_argv(tmp_path, identity=identity))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    assert code == cli.EXIT_AUTH
    assert time.monotonic() - started < 1.5
    assert any(str(identity) in m and "--identity" in m for m in errors), errors


@pytest.mark.parametrize(("main", "extra", "prefix"), [
    (wait_ready.main, [], "SSH failed"),
    (tunnel.main, [], "SSH failed"),
    (smoke_test.main, ["--tunnel"], "SSH tunnel failed"),
])
def test_unresolvable_host_fails_fast(main, extra, prefix, keys, tmp_path, caplog):
    """A host name that does not resolve was retried as "sshd not ready" until --timeout."""
    started = time.monotonic()

    code = main([*fast_fail_argv(tmp_path, host="nonexistent.invalid", identity=keys.client), *extra])
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    assert code == cli.EXIT_UNREACHABLE
    assert time.monotonic() - started < 1.5
    assert any(m.startswith(f"{prefix}: cannot resolve the host name 'nonexistent.invalid'") for m in errors), errors


def raise_error(error: Exception):
    def action() -> int:
        raise error
    return action


# Errors are built when the test runs, so a missing error class fails one case, not the module.
@pytest.mark.parametrize(("make_error", "timeout_prefix", "code", "message"), [
    (lambda: stack.StackError("no output"), None, cli.EXIT_STACK, "no output"),
    (lambda: ssh.SSHAuthFailed("rejected"), None, cli.EXIT_AUTH, "rejected"),
    (lambda: ssh.IdentityUnusable("cannot read"), "", cli.EXIT_AUTH, "cannot read"),
    (lambda: ssh.SSHTimeout("no session"), None, cli.EXIT_UNREACHABLE, "SSH tunnel failed: no session"),
    (lambda: ssh.SSHTimeout("no session"), "", cli.EXIT_TIMEOUT, "no session"),
    (lambda: ssh.SSHTimeout("no session"), "timed out after 1m00s", cli.EXIT_TIMEOUT,
     "timed out after 1m00s: no session"),
    (lambda: ssh.HostNotFound("cannot resolve"), "", cli.EXIT_UNREACHABLE, "SSH tunnel failed: cannot resolve"),
])
def test_exit_codes_for_errors(make_error, timeout_prefix, code, message, caplog):
    """Each script repeated this mapping of errors to exit codes; the shared one must keep their codes."""
    logger = logging.getLogger("test_exit_codes")

    result = cli.run_with_exit_codes(raise_error(make_error()), logger, Console(),
                                     ssh_error_prefix="SSH tunnel failed", timeout_prefix=timeout_prefix)

    assert result == code
    assert [r.getMessage() for r in caplog.records if r.name == "test_exit_codes"] == [message]


def test_host_key_error_printed(capsys):
    result = cli.run_with_exit_codes(raise_error(ssh.HostKeyChanged("key [x] changed")), logging.getLogger("t"),
                                     Console(), ssh_error_prefix="SSH failed")
    out = capsys.readouterr().out

    assert result == cli.EXIT_HOST_KEY
    assert "Host key rejected." in out
    assert "key [x] changed" in out


def test_escape_control_characters():
    text = "a\x1b[31mb\x07c\rd\ne\tf\u202eg\x9bh"

    assert cli.escape_control_characters(text) == "a\\x1b[31mb\\x07c\\x0dd\\x0ae\\x09f\\u202eg\\x9bh"
    assert cli.escape_control_characters(text, keep="\n\t") == "a\\x1b[31mb\\x07c\\x0dd\ne\tf\\u202eg\\x9bh"


@pytest.mark.parametrize(("option", "value"), [
    ("--timeout", "nan"),
    ("--timeout", "-1"),
    ("--interval", "0"),
    ("--port", "99999"),
])
def test_wake_invalid_option_rejected(option, value, capsys, monkeypatch):
    """wake.py never timed out with --timeout nan, polled without pause at --interval 0 and crashed on port 99999."""
    from scripts import wake

    # Without an access key, wake.py stops before it reads the stack or calls the ECS API.
    for name in ("ALICLOUD_ACCESS_KEY", "ALIBABA_CLOUD_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        wake.main([option, value])
    err = capsys.readouterr().err

    assert exited.value.code == cli.EXIT_USAGE
    assert f"argument {option}: invalid" in err
