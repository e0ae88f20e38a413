"""SSH to the instance with paramiko: retries while sshd starts, and per-stack host keys.

A new instance refuses connections, drops them or stalls before the SSH banner for
about a minute while it boots, so `connect` retries those errors with backoff under
one deadline. Host keys are trusted on first use and recorded in a file per stack. A
key that differs from the record is rejected and never replaced silently.
"""

from __future__ import annotations

import logging
import select
import shlex
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)

# Authentication can fail for a few seconds on a new instance, until cloud-init has
# written the key pair's public key. After this many failures the key is wrong.
AUTH_FAILURES_BEFORE_GIVING_UP = 3


class SSHError(Exception):
    """Connecting or running a command over SSH failed."""


class SSHTimeout(SSHError):
    """The instance did not accept an SSH session before the deadline."""


class SSHAuthFailed(SSHError):
    """sshd rejected the private key."""


class IdentityUnusable(SSHAuthFailed):
    """The private key file given with --identity is missing, unreadable or not a private key."""


class HostNotFound(SSHError):
    """The host name does not resolve to an address."""


class HostKeyChanged(SSHError):
    """The host presented a key that differs from the one recorded for this stack."""


@dataclass(frozen=True)
class SSHTarget:
    """SSH login details: address, user, key and the host-key record."""

    host: str
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    """Private key file; None uses the SSH agent and ~/.ssh/id_* keys."""
    known_hosts: Path = field(default_factory=lambda: default_known_hosts("manual"))
    """File of host keys trusted for this stack."""


@dataclass(frozen=True)
class Backoff:
    """Retry timing for connection attempts, in seconds."""

    initial: float = 2.0
    maximum: float = 30.0
    connect_timeout: float = 10.0

    def delay(self, attempt: int) -> float:
        return min(self.maximum, self.initial * (2 ** attempt))


def default_known_hosts(stack: str) -> Path:
    """Return the per-stack file of recorded host keys under ~/.config/ollama-alicloud."""
    return Path.home() / ".config" / "ollama-alicloud" / "known_hosts" / stack


def host_key_name(host: str, port: int) -> str:
    """Return the host name as OpenSSH and paramiko write it in known_hosts files."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:...", the form `ssh-keygen -l` prints


def reset_hint(target: SSHTarget) -> str:
    name = host_key_name(target.host, target.port)
    return (f"If the instance was replaced (for example `pulumi up` recreated it, or its "
            f"disk was re-imaged), the new host key is expected: remove the old one with\n"
            f"    ssh-keygen -R '{name}' -f {target.known_hosts}\n"
            f"and run again to trust the new key. If the instance was not replaced, do not "
            f"connect: someone may be intercepting the connection.")


class RecordFirstHostKey(paramiko.MissingHostKeyPolicy):
    """Trust a host's first key and record it, but reject any host that already has a record.

    paramiko calls this policy only when no key of the offered type is known, so a host
    with a recorded key of another type reaches it too: that case is a changed key.
    """

    def __init__(self, target: SSHTarget):
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        recorded = client.get_host_keys().lookup(hostname)
        if recorded:
            old = ", ".join(f"{name} {fingerprint(k)}" for name, k in recorded.items())
            raise HostKeyChanged(
                f"host key of {hostname} changed: recorded {old}, offered {key.get_name()} "
                f"{fingerprint(key)}.\n{reset_hint(self.target)}")
        path = self.target.known_hosts
        path.parent.mkdir(parents=True, exist_ok=True)
        client.get_host_keys().add(hostname, key.get_name(), key)
        client.save_host_keys(str(path))
        log.warning("trusting %s on first use: %s key %s, recorded in %s",
                    hostname, key.get_name(), fingerprint(key), path)


def _open_client(target: SSHTarget, backoff: Backoff) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if target.known_hosts.is_file():
        client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(RecordFirstHostKey(target))
    use_default_keys = target.identity is None
    client.connect(
        target.host,
        port=target.port,
        username=target.user,
        key_filename=str(target.identity) if target.identity else None,
        look_for_keys=use_default_keys,
        allow_agent=use_default_keys,
        timeout=backoff.connect_timeout,
        banner_timeout=backoff.connect_timeout,
        auth_timeout=backoff.connect_timeout,
    )
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(30)
    return client


def check_identity(path: Path) -> None:
    """Raise IdentityUnusable unless `path` is a private key that paramiko can load without a passphrase."""
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # cryptography raises TypeError "Key is password-protected, but password was not provided."
        raise IdentityUnusable(f"cannot load the private key {path} without a passphrase ({exc}); pass an "
                               f"unencrypted key with --identity, or omit --identity to use the SSH agent") from None
    except OSError as exc:
        raise IdentityUnusable(f"cannot read the private key {path}: {exc.strerror or exc}; pass the "
                               f"private key that matches the stack's sshPublicKey with --identity") from None
    except (paramiko.SSHException, ValueError) as exc:
        raise IdentityUnusable(f"{path} is not a usable private key ({exc}); pass the private key, "
                               f"not the .pub file, with --identity") from None


def connect(target: SSHTarget, deadline: float, backoff: Backoff = Backoff()) -> paramiko.SSHClient:
    """Open an SSH session, retrying while sshd is not up yet, until `deadline` (time.monotonic()).

    Raises IdentityUnusable and HostNotFound before connecting, HostKeyChanged at once,
    SSHAuthFailed after repeated authentication failures, and SSHTimeout when the
    deadline passes.
    """
    if target.identity is not None:
        check_identity(target.identity)
    attempt = 0
    auth_failures = 0
    while True:
        try:
            return _open_client(target, backoff)
        except socket.gaierror as exc:
            # Waiting for sshd does not make a host name resolve, so this is not retried.
            raise HostNotFound(f"cannot resolve the host name {target.host!r}: {exc.strerror or exc}; "
                               f"check --host") from None
        except paramiko.BadHostKeyException as exc:
            raise HostKeyChanged(
                f"host key of {exc.hostname} changed: recorded {exc.expected_key.get_name()} "
                f"{fingerprint(exc.expected_key)}, offered {exc.key.get_name()} {fingerprint(exc.key)}.\n"
                f"{reset_hint(target)}") from None
        except paramiko.AuthenticationException as exc:
            auth_failures += 1
            if auth_failures >= AUTH_FAILURES_BEFORE_GIVING_UP:
                key = target.identity or "the SSH agent and ~/.ssh/id_* keys"
                raise SSHAuthFailed(
                    # paramiko's message ends with a period: "Authentication failed."
                    f"{target.user}@{target.host}:{target.port} rejected {key}: {str(exc).rstrip('.')}. "
                    f"Pass the private key that matches the stack's sshPublicKey with --identity.") from None
            reason = f"authentication failed ({exc})"
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Refused, reset, timed out or no banner yet: sshd is still starting.
            reason = f"{type(exc).__name__}: {exc}"

        delay = backoff.delay(attempt)
        attempt += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SSHTimeout(f"no SSH session with {target.host}:{target.port} after {attempt} attempts; "
                             f"last error: {reason}")
        log.info("SSH to %s:%d not ready (%s); retry %d in %.1f s",
                 target.host, target.port, reason, attempt, min(delay, remaining))
        time.sleep(min(delay, remaining))


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


def run(client: paramiko.SSHClient, command: str, timeout: float = 30.0) -> CommandResult:
    """Run a shell command on the instance and wait for it; raise SSHError on a transport error."""
    try:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"running {command.split()[0]!r} over SSH failed: {exc}") from exc
    return CommandResult(status, out, err)


def quote(path: str) -> str:
    return shlex.quote(path)


# --- local port forwarding ----------------------------------------------


class _ForwardHandler(socketserver.BaseRequestHandler):
    """Copies one local TCP connection to a direct-tcpip channel and back."""

    transport: paramiko.Transport
    remote: tuple[str, int]

    def handle(self) -> None:
        try:
            channel = self.transport.open_channel("direct-tcpip", self.remote, self.request.getpeername())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.error("tunnel: opening a channel to %s:%d failed: %s", *self.remote, exc)
            return
        try:
            while True:
                readable, _, _ = select.select([self.request, channel], [], [], 60)
                if self.request in readable:
                    data = self.request.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    self.request.sendall(data)
        except OSError as exc:
            log.debug("tunnel connection ended: %s", exc)
        finally:
            channel.close()


class _ForwardServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Tunnel:
    """Forward 127.0.0.1:local_port to remote_host:remote_port as seen from the instance.

    The listener binds to loopback only, so the tunnel does not expose the API to the
    local network. Use as a context manager; local_port 0 picks a free port.
    """

    def __init__(self, client: paramiko.SSHClient, local_port: int = 0,
                 remote_host: str = "127.0.0.1", remote_port: int = 11434):
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError("cannot open a tunnel: the SSH session is closed")
        handler = type("BoundForwardHandler", (_ForwardHandler,),
                       {"transport": transport, "remote": (remote_host, remote_port)})
        self.server = _ForwardServer(("127.0.0.1", local_port), handler)
        self.local_port = self.server.server_address[1]
        self.remote = (remote_host, remote_port)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def __enter__(self) -> "Tunnel":
        self._thread.start()
        log.info("tunnel 127.0.0.1:%d -> %s:%d on the instance", self.local_port, *self.remote)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Return True once host:port accepts TCP connections, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False
