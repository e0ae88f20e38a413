#!/usr/bin/env python3
"""Forward a local port to the instance's Ollama API over SSH.

With the API port closed to the internet, http://127.0.0.1:LOCAL_PORT then reaches
Ollama on the instance: point Open WebUI, Chatbox or the OpenAI SDK at it. The local
end listens on 127.0.0.1 only. The tunnel reconnects when the SSH session drops, and
runs until Ctrl-C (or for --duration seconds).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

from ops import cli, ssh  # noqa: E402

log = logging.getLogger("tunnel")

EXIT_CODES = {
    cli.EXIT_OK: "stopped by Ctrl-C or after --duration",
    cli.EXIT_FAILED: "the local port could not be opened (in use?)",
    **cli.EXIT_CODES_HELP,
    cli.EXIT_UNREACHABLE: "the host name does not resolve, or the SSH session closed before the tunnel opened",
}


def serve(args: argparse.Namespace, console: Console, stop: threading.Event) -> int:
    target = cli.ssh_target_from_args(args)
    backoff = cli.backoff_from_args(args)
    end = time.monotonic() + args.duration if args.duration > 0 else None
    local_port = args.local_port

    while not stop.is_set():
        client = ssh.connect(target, time.monotonic() + args.timeout, backoff)
        try:
            try:
                tunnel = ssh.Tunnel(client, local_port=local_port, remote_port=args.remote_port)
            except OSError as exc:
                log.error("cannot listen on 127.0.0.1:%d: %s. Pick another port with --local-port.",
                          local_port, exc)
                return cli.EXIT_FAILED
            # Keep the port on reconnects, so clients pointed at it keep working.
            local_port = tunnel.local_port
            with tunnel:
                console.print(f"Ollama API at [bold]{tunnel.url}[/] -> {target.host}:{args.remote_port} "
                              f"(Ctrl-C to stop)", highlight=False)
                transport = client.get_transport()
                while not stop.is_set():
                    if end is not None and time.monotonic() >= end:
                        return cli.EXIT_OK
                    if transport is None or not transport.is_active():
                        log.warning("SSH session to %s closed; reconnecting", target.host)
                        break
                    stop.wait(0.5)
        finally:
            client.close()
    return cli.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__, EXIT_CODES)
    cli.add_ssh_args(parser)
    parser.add_argument("--local-port", metavar="PORT", type=cli.port_number_or_zero, default=11434,
                        help="port to listen on at 127.0.0.1; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--remote-port", metavar="PORT", type=cli.port_number, default=11434,
                        help="Ollama port on the instance (default: %(default)s)")
    parser.add_argument("--timeout", metavar="SECONDS", type=cli.positive_seconds, default=300.0,
                        help="seconds to keep retrying each SSH connect (default: %(default)s)")
    parser.add_argument("--duration", metavar="SECONDS", type=cli.non_negative_seconds, default=0.0,
                        help="seconds to keep the tunnel open; 0 runs until Ctrl-C (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    console = Console()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return cli.run_with_exit_codes(lambda: serve(args, console, stop), log, console,
                                   ssh_error_prefix="SSH failed", timeout_prefix="")


if __name__ == "__main__":
    sys.exit(main())
