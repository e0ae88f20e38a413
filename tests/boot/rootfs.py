"""Build and cache the Debian bookworm root filesystem that boot tests run in.

The tree contains what a fresh cloud image contains: systemd as init, cloud-init, dbus,
udev and openssh-server, plus the packages the bootstrap installs. Building it
takes a few minutes, so it is cached outside the repository, keyed by the package
lists, and each test boots a copy-on-write overlay of it that machine.py
configures for the harness.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ROOT = Path(os.environ.get("OA_BOOT_CACHE", "/var/cache/ollama-alicloud-boot"))
SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("OA_BOOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# debootstrap resolves virtual packages poorly (cloud-init's python3-cryptography
# needs python3-cffi-backend-api-*), so it installs only the init system and apt
# installs the rest inside the new tree.
DEBOOTSTRAP_INCLUDE = ("systemd", "systemd-sysv", "dbus", "udev")

# Everything a fresh cloud image would have, plus every package the bootstrap
# installs with apt except the kernel headers. Debian has no headers package for
# the host's kernel, so the harness's local apt repository serves a stand-in.
IMAGE_PACKAGES = (
    "cloud-init",
    "openssh-server",
    "python3",
    "ca-certificates",
    "curl",
    "zstd",
    "tar",
    "jq",
    "e2fsprogs",
    "util-linux",
    "iproute2",
    "kmod",
    "pciutils",
    "procps",
    "build-essential",
    "dkms",
    "passwd",
    # The API-key proxy; the bootstrap installs it only when apiKey is set.
    "nginx",
)

BUILDER_VERSION = "1"


def cache_key() -> str:
    """Return a digest of everything that decides the image's contents."""
    parts = [BUILDER_VERSION, SUITE, " ".join(DEBOOTSTRAP_INCLUDE), " ".join(IMAGE_PACKAGES)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cached_rootfs_path() -> Path:
    return CACHE_ROOT / f"rootfs-{SUITE}-{cache_key()}"


def _run(command: list[str], log_file: Path) -> None:
    log.info("running %s", " ".join(command))
    with log_file.open("a") as output:
        output.write(f"$ {' '.join(command)}\n")
        output.flush()
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed with exit code {result.returncode}; see {log_file}"
        )


def build_rootfs(target: Path, log_file: Path) -> None:
    """Build the image into TARGET with debootstrap and apt."""
    work = target.with_name(target.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    started = time.monotonic()

    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
            SUITE,
            str(work),
            DEBIAN_MIRROR,
        ],
        log_file,
    )

    # systemd-nspawn gives apt's maintainer scripts a real /proc, /dev and /sys;
    # the host network is shared so apt reaches the Debian mirror.
    _run(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            f"--directory={work}",
            "--setenv=DEBIAN_FRONTEND=noninteractive",
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q --no-install-recommends "
            + " ".join(IMAGE_PACKAGES)
            + " && apt-get clean",
        ],
        log_file,
    )

    work.rename(target)
    log.info("built %s in %.0f s", target, time.monotonic() - started)


@contextlib.contextmanager
def _build_lock():
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_rootfs() -> Path:
    """Return the cached image, building it first when it is missing."""
    target = cached_rootfs_path()
    with _build_lock():
        if target.is_dir():
            return target
        log_file = CACHE_ROOT / f"{target.name}.build.log"
        log_file.write_text("")
        build_rootfs(target, log_file)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-path", action="store_true", help="print the cache path and exit")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if arguments.print_path:
        print(cached_rootfs_path())
        return 0
    print(ensure_rootfs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
