#!/usr/bin/env python3
"""Restart the instance's time-to-live: the next `pulumi up` sets the release time to now + ttlHours.

The program keeps the auto-release time of its last deployment while ttlHours and
ttlRenewedAt stay the same, so nothing extends it by accident. This script sets
ttlRenewedAt to the current UTC time (and ttlHours, with --hours), which makes the next
`pulumi up` count ttlHours again from the moment it runs.

Exit codes: 0 config updated, 1 the pulumi CLI failed, 2 invalid arguments.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Matches MAX_TTL_HOURS in components/settings.py: ECS releases at most 3 years ahead.
MAX_TTL_HOURS = 3 * 365 * 24
EXIT_OK, EXIT_PULUMI_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("extend_ttl")


def pulumi_config_set(key: str, value: str, stack: str | None) -> None:
    """Run `pulumi config set KEY VALUE`; raise CalledProcessError with its output on failure."""
    command = ["pulumi", "config", "set", key, value, *(["--stack", stack] if stack else [])]
    log.info("running: %s", " ".join(command))
    subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="Pulumi stack (default: the selected stack)")
    parser.add_argument("--hours", type=int, help=f"also set ttlHours, in hours from 1 to {MAX_TTL_HOURS}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.hours is not None and not 1 <= args.hours <= MAX_TTL_HOURS:
        parser.error(f"--hours must be from 1 to {MAX_TTL_HOURS}, got {args.hours}")

    renewed_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        if args.hours is not None:
            pulumi_config_set("ttlHours", str(args.hours), args.stack)
        pulumi_config_set("ttlRenewedAt", renewed_at, args.stack)
    except FileNotFoundError:
        log.error("the pulumi CLI was not found on PATH")
        return EXIT_PULUMI_FAILED
    except subprocess.CalledProcessError as error:
        log.error("pulumi config set failed (exit %d): %s", error.returncode,
                  (error.stderr or error.stdout or "").strip())
        return EXIT_PULUMI_FAILED
    except subprocess.TimeoutExpired:
        log.error("pulumi config set timed out after 120 s")
        return EXIT_PULUMI_FAILED

    log.info("ttlRenewedAt set to %s; run `pulumi up` to move the release time to ttlHours from then", renewed_at)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
