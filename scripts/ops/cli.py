"""Command-line pieces shared by the scripts: logging, SSH and endpoint options, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterator

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
    EXIT_AUTH: "SSH authentication failed (wrong --identity, or its key file is missing or unreadable)",
    EXIT_STACK: "stack outputs or config could not be read (pulumi CLI error, output missing or invalid)",
    EXIT_UNREACHABLE: "the Ollama API or SSH could not be reached",
}

DEFAULT_API_KEY_ENV = "OLLAMA_API_KEY"
DEFAULT_API_KEY_CONFIG = "apiKey"


MAX_PORT = 65535


def port_number(text: str) -> int:
    """Parse a TCP port from 1 to 65535, for argparse `type=`."""
    return _port_in_range(text, minimum=1)


def port_number_or_zero(text: str) -> int:
    """Parse a TCP port from 0 to 65535, where 0 lets the system pick a free port, for argparse `type=`."""
    return _port_in_range(text, minimum=0)


def _port_in_range(text: str, minimum: int) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a whole number") from None
    if not minimum <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected {minimum} to {MAX_PORT}")
    return port


def positive_int(text: str) -> int:
    """Parse a whole number greater than 0, for argparse `type=`."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number greater than 0")
    return number


def positive_seconds(text: str) -> float:
    """Parse a finite number of seconds greater than 0, for argparse `type=`."""
    seconds = _finite_float(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected seconds greater than 0")
    return seconds


def non_negative_seconds(text: str) -> float:
    """Parse a finite number of seconds, 0 or more, for argparse `type=`."""
    seconds = _finite_float(text)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected seconds, 0 or more")
    return seconds


def positive_number(text: str) -> float:
    """Parse a finite number greater than 0, for argparse `type=`."""
    number = _finite_float(text)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number greater than 0")
    return number


def _finite_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a finite number")
    return number


def endpoint_url(text: str) -> str:
    """Parse an http(s) base URL with a host and a port from 1 to 65535, for argparse `type=`."""
    try:
        return check_endpoint_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_endpoint_url(url: str) -> str:
    """Return `url` without a trailing slash; raise ValueError naming the problem unless it is usable."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # such as "Invalid IPv6 URL"
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    try:
        port = parts.port  # raises ValueError outside 0 to 65535 and for a port that is not a number
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"invalid URL {url!r}: expected a port from 1 to {MAX_PORT}")
    return url.rstrip("/")


# Control characters would move the cursor, recolor or retitle the terminal when
# printed. Text from the instance (status file, log) goes through this before printing.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control_characters(text: str, keep: str = "") -> str:
    """Replace control characters (ANSI escapes, CR, BEL, bidi overrides) with \\xNN or \\uNNNN.

    Characters in `keep`, such as "\\n\\t" for a multi-line log, pass through.
    """
    def replace(match: re.Match[str]) -> str:
        char = match.group()
        if char in keep:
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _CONTROL_CHARACTER.sub(replace, text)


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


def new_parser(doc: str, exit_codes: dict[int, str]) -> argparse.ArgumentParser:
    """Create a script's parser: the docstring's first paragraph, its exit codes and --verbose."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=exit_codes_epilog(exit_codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser)
    return parser


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--stack", help="Pulumi stack to read outputs from (default: the selected stack)")


def add_ssh_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SSH")
    group.add_argument("--host", metavar="ADDRESS", help="instance address (default: the stack's publicIp output)")
    group.add_argument("--port", metavar="PORT", type=port_number, default=22, help="SSH port (default: %(default)s)")
    group.add_argument("--user", default="root", help="SSH user (default: %(default)s)")
    group.add_argument("--identity", metavar="FILE", type=Path,
                       help="private key file (default: the SSH agent, then ~/.ssh/id_*)")
    group.add_argument("--known-hosts", metavar="FILE", type=Path,
                       help="file of host keys trusted for this stack, written on first use "
                            "(default: ~/.config/ollama-alicloud/known_hosts/STACK)")
    group.add_argument("--connect-timeout", metavar="SECONDS", type=positive_seconds, default=10.0,
                       help="seconds to wait for each TCP connect, SSH banner and login (default: %(default)s)")
    group.add_argument("--retry-initial", metavar="SECONDS", type=positive_seconds, default=2.0,
                       help="seconds before the first SSH retry, doubled per retry (default: %(default)s)")
    group.add_argument("--retry-max", metavar="SECONDS", type=positive_seconds, default=30.0,
                       help="maximum seconds between SSH retries (default: %(default)s)")


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument("--url", type=endpoint_url, help="Ollama base URL, e.g. http://127.0.0.1:11434 "
                                     "(default: the stack's endpoint output)")
    group.add_argument("--tunnel", action="store_true",
                       help="reach the API through an SSH tunnel to the instance's port 11434, "
                            "for a stack whose API port is closed to the internet")
    group.add_argument("--remote-port", metavar="PORT", type=port_number, default=11434,
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


def endpoint_url_from_stack(stack_name: str | None) -> str:
    """Return the stack's Ollama URL output; raise stack.StackError when it is missing or invalid."""
    url = str(stack.pick(stack.outputs(stack_name), stack.OLLAMA_URL_KEYS, "Ollama URL"))
    try:
        return check_endpoint_url(url)
    except ValueError as exc:
        raise stack.StackError(f"the stack's Ollama URL output is invalid: {exc}; run `pulumi up` "
                               f"to update it, or pass --url") from None


@contextlib.contextmanager
def open_endpoint(args: argparse.Namespace, timeout: float) -> Iterator[Endpoint]:
    """Yield the Ollama endpoint the options select, opening an SSH tunnel for --tunnel.

    Raises stack.StackError and the ssh module's errors; `timeout` bounds the SSH connect.
    """
    api_key = api_key_from_args(args)
    if not args.tunnel:
        url = args.url or endpoint_url_from_stack(args.stack)
        yield Endpoint(url=url.rstrip("/"), api_key=api_key)
        return

    target = ssh_target_from_args(args)
    client = ssh.connect(target, time.monotonic() + timeout, backoff_from_args(args))
    try:
        with ssh.Tunnel(client, remote_port=args.remote_port) as tunnel:
            yield Endpoint(url=tunnel.url, api_key=api_key)
    finally:
        client.close()


def run_with_exit_codes(action: Callable[[], int], logger: logging.Logger, console: Console, *,
                        ssh_error_prefix: str, timeout_prefix: str | None = None) -> int:
    """Run a script's `action` and return its exit code, mapping stack and SSH errors to exit codes.

    Each error is logged, or printed for a changed host key. SSHTimeout returns
    EXIT_TIMEOUT when `timeout_prefix` is given, and an empty prefix logs the error alone.
    Without a prefix, a timeout is logged like any other SSHError, with `ssh_error_prefix`
    before it, and returns EXIT_UNREACHABLE.
    """
    try:
        return action()
    except stack.StackError as exc:
        logger.error("%s", exc)
        return EXIT_STACK
    except ssh.HostKeyChanged as exc:
        console.print("[bold red]Host key rejected.[/]")
        console.print(str(exc), markup=False, highlight=False)
        return EXIT_HOST_KEY
    except ssh.SSHAuthFailed as exc:
        logger.error("%s", exc)
        return EXIT_AUTH
    except ssh.SSHTimeout as exc:
        if timeout_prefix is None:
            logger.error("%s: %s", ssh_error_prefix, exc)
            return EXIT_UNREACHABLE
        if timeout_prefix:
            logger.error("%s: %s", timeout_prefix, exc)
        else:
            logger.error("%s", exc)
        return EXIT_TIMEOUT
    except ssh.SSHError as exc:
        logger.error("%s: %s", ssh_error_prefix, exc)
        return EXIT_UNREACHABLE
