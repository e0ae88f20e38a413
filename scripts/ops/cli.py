"""Command-line pieces shared by the scripts: logging, SSH and endpoint options, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.logging import RichHandler

from . import ssh, stack
from .api import Endpoint

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse uses 2 for invalid arguments
EXIT_TIMEOUT = 3
EXIT_HOST_KEY = 4
EXIT_AUTH = 5
EXIT_STACK = 6
EXIT_UNREACHABLE = 7

EXIT_CODES_HELP = {
    EXIT_USAGE: "invalid command-line arguments",
    EXIT_TIMEOUT: "timed out (see --timeout)",
    EXIT_HOST_KEY: "the host key differs from the one recorded for this stack (rejected)",
    EXIT_AUTH: "SSH authentication failed (wrong --identity)",
    EXIT_STACK: "stack outputs or config could not be read (pulumi CLI error, output missing)",
    EXIT_UNREACHABLE: "the Ollama API or SSH could not be reached",
}

DEFAULT_API_KEY_ENV = "OLLAMA_API_KEY"
DEFAULT_API_KEY_CONFIG = "apiKey"


def exit_codes_epilog(codes: dict[int, str]) -> str:
    lines = ["exit codes:"] + [f"  {code}  {text}" for code, text in sorted(codes.items())]
    return "\n".join(lines)


def setup_logging(verbose: bool) -> None:
    """Log to stderr through rich; add the handler once, so repeated calls in one process are safe."""
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # paramiko logs every failed handshake at ERROR while sshd starts; the retry messages cover it.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--stack", help="Pulumi stack to read outputs from (default: the selected stack)")


def add_ssh_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SSH")
    group.add_argument("--host", metavar="ADDRESS", help="instance address (default: the stack's publicIp output)")
    group.add_argument("--port", metavar="PORT", type=int, default=22, help="SSH port (default: %(default)s)")
    group.add_argument("--user", default="root", help="SSH user (default: %(default)s)")
    group.add_argument("--identity", metavar="FILE", type=Path,
                       help="private key file (default: the SSH agent, then ~/.ssh/id_*)")
    group.add_argument("--known-hosts", metavar="FILE", type=Path,
                       help="file of host keys trusted for this stack, written on first use "
                            "(default: ~/.config/ollama-alicloud/known_hosts/STACK)")
    group.add_argument("--connect-timeout", metavar="SECONDS", type=float, default=10.0,
                       help="seconds to wait for each TCP connect, SSH banner and login (default: %(default)s)")
    group.add_argument("--retry-initial", metavar="SECONDS", type=float, default=2.0,
                       help="seconds before the first SSH retry, doubled per retry (default: %(default)s)")
    group.add_argument("--retry-max", metavar="SECONDS", type=float, default=30.0,
                       help="maximum seconds between SSH retries (default: %(default)s)")


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument("--url", help="Ollama base URL, e.g. http://127.0.0.1:11434 "
                                     "(default: the stack's endpoint output)")
    group.add_argument("--tunnel", action="store_true",
                       help="reach the API through an SSH tunnel to the instance's port 11434, "
                            "for a stack whose API port is closed to the internet")
    group.add_argument("--remote-port", metavar="PORT", type=int, default=11434,
                       help="Ollama port on the instance, used with --tunnel (default: %(default)s)")
    group.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV, metavar="NAME",
                       help="environment variable that holds the API key, sent as a Bearer token; "
                            "ignored when unset (default: %(default)s)")
    group.add_argument("--api-key-config", default=DEFAULT_API_KEY_CONFIG, metavar="KEY",
                       help="when the environment variable is unset and --url is not given, read the "
                            "API key with `pulumi config get KEY`; empty disables (default: %(default)s)")


def backoff_from_args(args: argparse.Namespace) -> ssh.Backoff:
    return ssh.Backoff(initial=args.retry_initial, maximum=args.retry_max,
                       connect_timeout=args.connect_timeout)


def ssh_target_from_args(args: argparse.Namespace) -> ssh.SSHTarget:
    """Build the SSH target from the options, filling the host from the stack when missing.

    Raises stack.StackError when the stack must be read and cannot be.
    """
    host = args.host
    if not host:
        host = str(stack.pick(stack.outputs(args.stack), stack.PUBLIC_IP_KEYS, "public IP"))
    known_hosts = args.known_hosts
    if known_hosts is None:
        name = stack.stack_name(args.stack) if not args.host or args.stack else f"host-{host}"
        known_hosts = ssh.default_known_hosts(name)
    return ssh.SSHTarget(host=host, port=args.port, user=args.user, identity=args.identity,
                         known_hosts=known_hosts)


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """Return the API key from the environment, else from the stack's config, else None.

    The stack is asked only when the endpoint comes from it, so --url, or --tunnel with
    --host, never runs pulumi.
    """
    from_env = os.environ.get(args.api_key_env)
    if from_env:
        return from_env
    endpoint_from_stack = not args.url and not (args.tunnel and args.host)
    if not endpoint_from_stack or not args.api_key_config:
        return None
    return stack.config_secret(args.api_key_config, args.stack)


@contextlib.contextmanager
def open_endpoint(args: argparse.Namespace, timeout: float) -> Iterator[Endpoint]:
    """Yield the Ollama endpoint the options select, opening an SSH tunnel for --tunnel.

    Raises stack.StackError and the ssh module's errors; `timeout` bounds the SSH connect.
    """
    api_key = api_key_from_args(args)
    if not args.tunnel:
        url = args.url
        if not url:
            data = stack.outputs(args.stack)
            url = str(stack.pick(data, stack.OLLAMA_URL_KEYS, "Ollama URL"))
        yield Endpoint(url=url.rstrip("/"), api_key=api_key)
        return

    target = ssh_target_from_args(args)
    client = ssh.connect(target, time.monotonic() + timeout, backoff_from_args(args))
    try:
        with ssh.Tunnel(client, remote_port=args.remote_port) as tunnel:
            yield Endpoint(url=tunnel.url, api_key=api_key)
    finally:
        client.close()
