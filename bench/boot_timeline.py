#!/usr/bin/env python3
"""Boot one test machine with fixed stand-in durations and print the bootstrap's phase timeline.

The bootstrap builds the NVIDIA driver in the background while it mounts the data
disk, installs Ollama and pulls the models. The overlap ratio, the sum of the
phase durations divided by the wall-clock time from the start of the bootstrap
run to "ready", shows how much that parallelism saves: 1.0 means none.

Needs what the boot tests need: root, systemd-nspawn and tests/boot/install_deps.sh.

    sudo python bench/boot_timeline.py --driver-seconds 8 --pull-seconds 8
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "boot"))
import machine  # noqa: E402 - the boot harness lives under tests/boot
import testbed  # noqa: E402

log = logging.getLogger("boot_timeline")

BAR_WIDTH = 50


def print_timeline(status: dict, boot_started: float) -> tuple[float, float]:
    """Print one row per phase; return (sum of phase durations, bootstrap wall-clock seconds)."""
    origin = status["started_at"]
    ready_at = max(phase["end"] for phase in status["phases"].values())
    wall = ready_at - origin
    scale = BAR_WIDTH / wall if wall > 0 else 0

    print(f"machine start to bootstrap start: {origin - boot_started:6.2f} s (systemd and cloud-init)")
    print(f"{'phase':10} {'start s':>8} {'end s':>8} {'took s':>8}  timeline (bootstrap start to ready)")
    total = 0.0
    for name, phase in sorted(status["phases"].items(), key=lambda item: item[1]["start"]):
        start = phase["start"] - origin
        end = phase["end"] - origin
        took = end - start
        total += took
        bar = " " * round(start * scale) + "#" * max(1, round(took * scale))
        print(f"{name:10} {start:8.2f} {end:8.2f} {took:8.2f}  |{bar:<{BAR_WIDTH}}|")
    return total, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver-seconds", type=float, default=8.0,
                        help="time the driver installer stand-in takes, in seconds (default 8)")
    parser.add_argument("--pull-seconds", type=float, default=8.0,
                        help="time the mirror takes to send the model's weights, in seconds (default 8)")
    parser.add_argument("--model-mib", type=int, default=16,
                        help="size of the model's weights layer in MiB (default 16)")
    parser.add_argument("--min-ratio", type=float, default=1.5,
                        help="exit with code 1 when the overlap ratio is below this (default 1.5)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    reason = machine.host_prerequisites_missing()
    if reason is not None:
        log.error("cannot boot a test machine: %s", reason)
        return 2

    knobs = machine.StandinKnobs(
        driver_install_seconds=arguments.driver_seconds,
        pull_seconds=arguments.pull_seconds,
        model_size=arguments.model_mib * 1024 * 1024,
    )
    session = testbed.BootSession()
    try:
        session.open()
        bed = session.new_testbed("boot-timeline")
        try:
            disk = bed.new_disk("bp1timeline001")
            disk.attach()
            node = bed.launch(testbed.test_stack_settings(), disk, knobs=knobs)
            status = node.wait_for_bootstrap(timeout=300)
            boot_started = node.boots[-1]
        finally:
            bed.close()
    finally:
        session.close()

    if status["state"] != "ready":
        log.error("bootstrap ended %s in phase %s: %s", status["state"], status["phase"], status["error"])
        return 1

    print(f"stand-in durations: driver {arguments.driver_seconds:g} s, model pull {arguments.pull_seconds:g} s "
          f"({arguments.model_mib} MiB)")
    total, wall = print_timeline(status, boot_started)
    ready_since_boot = max(phase["end"] for phase in status["phases"].values()) - boot_started
    ratio = total / wall
    print(f"sum of phase durations:              {total:6.2f} s")
    print(f"bootstrap start to ready:            {wall:6.2f} s")
    print(f"machine start to ready:              {ready_since_boot:6.2f} s")
    print(f"overlap ratio (sum / bootstrap wall-clock): {ratio:.2f}")
    print(f"sum / machine start to ready:               {total / ready_since_boot:.2f}")
    if ratio < arguments.min_ratio:
        log.error("overlap ratio %.2f is below %.2f", ratio, arguments.min_ratio)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
