#!/usr/bin/env python3
"""Wait until the instance's bootstrap reports "ready", showing its progress live.

Connects over SSH (retrying while the instance boots), then polls the bootstrap's
status file: the running phase, bytes of the model download, and time since the
bootstrap started. On failure it prints the failed phase, the error and the end of
the bootstrap log.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn,  # noqa: E402
                           TransferSpeedColumn)
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from ops import cli, ssh  # noqa: E402

log = logging.getLogger("wait_ready")

STATUS_PATH = "/var/lib/ollama-bootstrap/status.json"
LOG_PATH = "/var/log/ollama-bootstrap.log"
PHASE_ORDER = ("packages", "driver", "disk", "ollama", "pull", "gpu", "preload")

# One round trip per poll: the instance's clock and boot time, then the status file.
# The boot time separates a status file left by an earlier boot from this boot's run.
POLL_COMMAND = ("printf '%s %s\\n' \"$(date +%s)\" \"$(awk '/^btime/ {{print $2}}' /proc/stat)\"; "
                "cat {status} 2>/dev/null || true")
LOG_TAIL_COMMAND = "tail -n {lines} {log} 2>&1"

# Without a terminal (CI logs, pipes) rich draws no live bar, so progress is logged this often (seconds).
PLAIN_PROGRESS_SECONDS = 30.0

# The bootstrap records started_at after the clock is set; allow this much skew (seconds)
# before calling a status file older than the boot.
BOOT_TIME_SLACK = 5.0

EXIT_CODES = {
    cli.EXIT_OK: "the bootstrap reported ready",
    cli.EXIT_FAILED: "the bootstrap reported failed (phase, error and log tail are printed)",
    **cli.EXIT_CODES_HELP,
    cli.EXIT_UNREACHABLE: "the host name does not resolve, so SSH cannot be reached",
}


@dataclass
class Snapshot:
    """One poll of the instance: its clock, its boot time and the parsed status file."""

    remote_now: float
    boot_time: float
    status: dict | None
    invalid_reason: str | None = None
    """Why the status file was rejected as malformed; status is None then."""

    @property
    def from_earlier_boot(self) -> bool:
        started = (self.status or {}).get("started_at") or 0
        return started + BOOT_TIME_SLACK < self.boot_time


def parse_poll(output: str) -> Snapshot:
    """Parse POLL_COMMAND's output.

    A missing or half-written status file gives status None. So does a malformed one,
    with the reason in invalid_reason.
    """
    first, _, rest = output.partition("\n")
    numbers = first.split()
    if len(numbers) != 2:
        raise ValueError(f"unexpected output from the status command: {first!r}")
    remote_now, boot_time = float(numbers[0]), float(numbers[1])
    if not (math.isfinite(remote_now) and math.isfinite(boot_time)):
        raise ValueError(f"unexpected output from the status command: {first!r}")
    if not rest.strip():
        return Snapshot(remote_now=remote_now, boot_time=boot_time, status=None)
    try:
        status = json.loads(rest)
    except json.JSONDecodeError:
        log.debug("status file is not valid JSON yet: %r", rest[:200])
        return Snapshot(remote_now=remote_now, boot_time=boot_time, status=None)
    except (ValueError, RecursionError) as exc:
        # An integer of more than 4300 digits, or arrays nested thousands deep.
        return Snapshot(remote_now=remote_now, boot_time=boot_time, status=None,
                        invalid_reason=f"cannot parse it: {exc}")
    problem = status_problem(status)
    if problem is not None:
        return Snapshot(remote_now=remote_now, boot_time=boot_time, status=None,
                        invalid_reason=cli.escape_control_characters(problem))
    return Snapshot(remote_now=remote_now, boot_time=boot_time, status=escape_status_text(status))


def status_problem(status: object) -> str | None:
    """Return what makes a parsed status file unusable, or None when its shape is valid.

    Every field may be missing or null. A present field must have the type that the
    bootstrap's write_status writes, and times and byte counts must be finite numbers,
    because JSON numbers such as 1e400 parse as infinity.
    """
    if not isinstance(status, dict):
        return f"expected a JSON object, got {type(status).__name__}"
    for key in ("state", "phase", "error"):
        if status.get(key) is not None and not isinstance(status[key], str):
            return f"{key} must be a string, got {status[key]!r:.60}"
    for key in ("started_at", "updated_at"):
        if status.get(key) is not None and not is_finite_number(status[key]):
            return f"{key} must be a finite number, got {status[key]!r:.60}"
    for key in ("bytes_pulled", "bytes_total"):
        if status.get(key) is not None and not (is_finite_number(status[key]) and status[key] >= 0):
            return f"{key} must be a finite number, 0 or more, got {status[key]!r:.60}"
    models = status.get("models")
    if models is not None and not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
        return f"models must be a list of strings, got {models!r:.60}"
    phases = status.get("phases")
    if phases is None:
        return None
    if not isinstance(phases, dict):
        return f"phases must be an object of phase name to phase, got {phases!r:.60}"
    for name, info in phases.items():
        if info is None:
            continue
        if not isinstance(info, dict):
            return f"phases.{name} must be an object with state, start and end, got {info!r:.60}"
        if info.get("state") is not None and not isinstance(info["state"], str):
            return f"phases.{name}.state must be a string, got {info['state']!r:.60}"
        for key in ("start", "end"):
            if info.get(key) is not None and not is_finite_number(info[key]):
                return f"phases.{name}.{key} must be a finite number, got {info[key]!r:.60}"
    return None


def escape_status_text(status: dict) -> dict:
    """Return a copy of a valid status whose strings carry no terminal control characters.

    The error keeps its line breaks and tabs. Everything else prints on one line.
    """
    clean = cli.escape_control_characters
    result = dict(status)
    for key in ("state", "phase"):
        if isinstance(result.get(key), str):
            result[key] = clean(result[key])
    if isinstance(result.get("error"), str):
        result["error"] = clean(result["error"], keep="\n\t")
    if result.get("models"):
        result["models"] = [clean(model) for model in result["models"]]
    if result.get("phases"):
        phases = {}
        for name, info in result["phases"].items():
            if info and isinstance(info.get("state"), str):
                info = {**info, "state": clean(info["state"])}
            phases[clean(name)] = info
        result["phases"] = phases
    return result


def is_finite_number(value: object) -> bool:
    # bool is an int subclass, but true/false in a time field is a writer bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def phase_names(phases: dict) -> list[str]:
    """Return phase names in the order they started; phases not started yet go last, in PHASE_ORDER."""
    def key(name: str) -> tuple[float, int]:
        start = (phases[name] or {}).get("start") or float("inf")
        return (start, PHASE_ORDER.index(name) if name in PHASE_ORDER else len(PHASE_ORDER))
    return sorted(phases, key=key)


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):  # the difference of two huge finite times
        return "?"
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class PhaseLog:
    """Logs each phase's state change once, so the log reads as a timeline."""

    seen: dict[str, str] = field(default_factory=dict)

    def update(self, phases: dict) -> None:
        for name in phase_names(phases):
            info = phases[name] or {}
            state = info.get("state", "?")
            if self.seen.get(name) == state:
                continue
            self.seen[name] = state
            if info.get("end") and info.get("start"):
                log.info("phase %s: %s after %s", name, state, format_seconds(info["end"] - info["start"]))
            else:
                log.info("phase %s: %s", name, state)


def phase_table(status: dict) -> Table:
    table = Table(title="Bootstrap phases")
    table.add_column("phase")
    table.add_column("state")
    table.add_column("duration", justify="right")
    phases = status.get("phases") or {}
    for name in phase_names(phases):
        info = phases[name] or {}
        duration = ""
        if info.get("start") and info.get("end"):
            duration = format_seconds(info["end"] - info["start"])
        # Text cells, because rich would parse markup such as "[red]" in remote text.
        table.add_row(Text(name), Text(str(info.get("state", ""))), duration)
    return table


def failed_phase(status: dict) -> str:
    if status.get("phase") and status.get("phase") != "ready":
        return str(status["phase"])
    failed = [n for n, info in (status.get("phases") or {}).items() if (info or {}).get("state") == "failed"]
    return failed[0] if failed else "unknown"


def report_failure(client, status: dict, args: argparse.Namespace, console: Console) -> None:
    error = escape(str(status.get("error") or "no error text recorded"))
    console.print(f"[bold red]Bootstrap failed[/] in phase [bold]{escape(failed_phase(status))}[/]: {error}")
    try:
        result = ssh.run(client, LOG_TAIL_COMMAND.format(lines=int(args.log_lines), log=ssh.quote(args.log_path)))
        tail = cli.escape_control_characters(result.stdout.rstrip("\n"), keep="\n\t")
    except ssh.SSHError as exc:
        tail = f"(could not read the log: {exc})"
    console.print(f"Last {args.log_lines} lines of {args.log_path} on {args.host_resolved}:")
    console.print(tail, markup=False, highlight=False)


WAITING_STATES = {
    "starting": "connected; the bootstrap has not written its status file yet",
    "invalid": "the status file is malformed; waiting for the bootstrap to rewrite it",
    "rebooting": "the status file is from an earlier boot; waiting for this boot's bootstrap",
}


class Display:
    """Live progress of the bootstrap: phase, model bytes pulled of total, elapsed time."""

    def __init__(self, console: Console):
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("elapsed {task.fields[elapsed]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("connecting", total=None, elapsed="-")
        self.plain = not console.is_terminal
        self.last_description = ""
        self.last_logged = 0.0

    def show(self, description: str, snapshot: Snapshot | None) -> None:
        status = (snapshot.status if snapshot else None) or {}
        total = status.get("bytes_total") or None
        pulled = status.get("bytes_pulled") or 0
        elapsed = "-"
        if snapshot and status.get("started_at"):
            elapsed = format_seconds(snapshot.remote_now - status["started_at"])
        # The description column renders markup, and phase names come from the instance.
        self.progress.update(self.task, description=escape(description), total=total, completed=pulled,
                             elapsed=elapsed)

        if description != self.last_description and description in WAITING_STATES:
            log.info("%s", WAITING_STATES[description])
        now = time.monotonic()
        if self.plain and total and now - self.last_logged >= PLAIN_PROGRESS_SECONDS:
            log.info("%s: %.2f of %.2f GB pulled (%.0f%%), elapsed %s",
                     description, pulled / 1e9, total / 1e9, 100.0 * pulled / total, elapsed)
            self.last_logged = now
        self.last_description = description


def ready_after(status: dict, snapshot: Snapshot) -> str:
    """Return " after 5m02s", the bootstrap's run time, or "" when the status has no start time."""
    started = status.get("started_at")
    if started is None:
        return ""
    return f" after {format_seconds((status.get('updated_at') or snapshot.remote_now) - started)}"


def wait(args: argparse.Namespace, console: Console) -> int:
    target = cli.ssh_target_from_args(args)
    args.host_resolved = target.host
    deadline = time.monotonic() + args.timeout
    backoff = cli.backoff_from_args(args)
    poll_command = POLL_COMMAND.format(status=ssh.quote(args.status_path))
    phases = PhaseLog()
    display = Display(console)
    invalid_reason: str | None = None
    log.info("waiting for %s@%s:%d (timeout %s)", target.user, target.host, target.port,
             format_seconds(args.timeout))

    with display.progress:
        client = ssh.connect(target, deadline, backoff)
        try:
            while True:
                try:
                    result = ssh.run(client, poll_command, timeout=max(5.0, args.connect_timeout))
                    snapshot = parse_poll(result.stdout)
                except (ssh.SSHError, ValueError) as exc:
                    log.warning("reading the status failed (%s); reconnecting", exc)
                    client.close()
                    client = ssh.connect(target, deadline, backoff)
                    continue

                status = snapshot.status
                if snapshot.invalid_reason is not None:
                    if snapshot.invalid_reason != invalid_reason:
                        log.warning("status file %s is malformed, %s; still waiting",
                                    args.status_path, snapshot.invalid_reason)
                    display.show("invalid", snapshot)
                elif status is None:
                    display.show("starting", snapshot)
                elif snapshot.from_earlier_boot:
                    display.show("rebooting", None)
                else:
                    phases.update(status.get("phases") or {})
                    display.show(str(status.get("phase", "?")), snapshot)
                    if status.get("state") == "ready":
                        display.progress.stop()
                        console.print(phase_table(status))
                        console.print(f"[bold green]Ready[/]{ready_after(status, snapshot)}; "
                                      f"models: {escape(', '.join(status.get('models') or []) or 'none')}")
                        return cli.EXIT_OK
                    if status.get("state") == "failed":
                        display.progress.stop()
                        report_failure(client, status, args, console)
                        return cli.EXIT_FAILED

                invalid_reason = snapshot.invalid_reason
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    display.progress.stop()
                    if invalid_reason is not None:
                        where = f"with a malformed status file ({escape(invalid_reason)})"
                    elif status:
                        where = f"phase {escape(str(status.get('phase')))}"
                    else:
                        where = "before the bootstrap wrote its status"
                    console.print(f"[bold red]Timed out[/] after {format_seconds(args.timeout)} in {where}. "
                                  f"Run again to keep waiting, or read {args.log_path} on the instance.")
                    return cli.EXIT_TIMEOUT
                time.sleep(min(args.poll_interval, remaining))
        finally:
            client.close()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__, EXIT_CODES)
    cli.add_ssh_args(parser)
    parser.add_argument("--timeout", metavar="SECONDS", type=cli.positive_seconds, default=3600.0,
                        help="seconds to wait in total, SSH retries included (default: %(default)s)")
    parser.add_argument("--poll-interval", metavar="SECONDS", type=cli.positive_seconds, default=5.0,
                        help="seconds between reads of the status file (default: %(default)s)")
    parser.add_argument("--status-path", metavar="PATH", default=STATUS_PATH,
                        help="bootstrap status file on the instance (default: %(default)s)")
    parser.add_argument("--log-path", metavar="PATH", default=LOG_PATH,
                        help="bootstrap log on the instance (default: %(default)s)")
    parser.add_argument("--log-lines", metavar="N", type=cli.positive_int, default=40,
                        help="lines of the bootstrap log to print on failure (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    console = Console()
    return cli.run_with_exit_codes(lambda: wait(args, console), log, console, ssh_error_prefix="SSH failed",
                                   timeout_prefix=f"timed out after {format_seconds(args.timeout)}")


if __name__ == "__main__":
    sys.exit(main())
