"""Test stack and per-test resources for boot tests and the boot benchmark.

BootSession holds what every boot shares (the cached image, the host udevd, the
apt repository and the Ollama archive). TestBed holds one test's network
namespace, mirror, disks and machines, and closes them all, in reverse order,
even when the test fails. A namespace per test keeps a test's mirror and machines
apart from those of a module fixture that is still running.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import machine
import rootfs
from machine import DataDisk, HostUdev, Machine, Mirror, NetworkNamespace, StandinKnobs

sys.path.insert(0, str(machine.REPO_ROOT))
import components.userdata  # noqa: E402 - needs the repository on sys.path
from components.settings import Settings, build_settings  # noqa: E402
from components.userdata import render_user_data  # noqa: E402

# Render the user-data from a modified copy of components/bootstrap, to check that
# breaking a bootstrap step makes the matching boot test fail.
if os.environ.get("OA_BOOT_BOOTSTRAP_DIR"):
    components.userdata.BOOTSTRAP_DIR = Path(os.environ["OA_BOOT_BOOTSTRAP_DIR"])

log = logging.getLogger(__name__)

MODEL = "qwen3:0.6b"
LOCK_PATH = Path("/run/lock/ollama-alicloud-boot.lock")

# The test stack: every download points at the local mirror, and the timeouts are
# short so that fault tests end in seconds. Tests override single keys.
TEST_STACK: dict[str, Any] = {
    "region": "cn-hangzhou",
    "models": [MODEL],
    "allowedCidrs": ["127.0.0.1/32"],
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBootHarnessTestKeyNotUsedForLogin000000 boot-harness",
    "ollamaBaseUrl": f"{machine.MIRROR_URL}/ollama",
    "driverBaseUrl": f"{machine.MIRROR_URL}/nvidia",
    "modelRegistry": f"127.0.0.1:{machine.MIRROR_PORT}",
    "modelRegistryInsecure": True,
    "pullStallSeconds": 3,
    "pullRetries": 1,
    "dataDiskWaitSeconds": 5,
}


def test_stack_settings(**overrides: Any) -> Settings:
    """Build the test stack's Settings through the program's own validation."""
    return build_settings({**TEST_STACK, **overrides}, stack="boottest")


class BootSession:
    """Resources shared by all boots of one process; close() releases them."""

    def __init__(self) -> None:
        self.directory = machine.WORK_ROOT / f"session-{os.getpid()}"
        self.stack = contextlib.ExitStack()
        self.rootfs: Path | None = None
        self.udev: HostUdev | None = None
        self.shared_mirror = self.directory / "shared-mirror"
        self.test_count = 0

    def open(self) -> "BootSession":
        self._lock_host()
        machine.clean_stale_sessions()
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.environ.get("OA_BOOT_KEEP"):
            self.stack.callback(shutil.rmtree, self.directory, ignore_errors=True)

        started = time.monotonic()
        self.rootfs = rootfs.ensure_rootfs()
        log.info("image ready in %.0f s: %s", time.monotonic() - started, self.rootfs)

        self.udev = HostUdev(self.directory)
        self.stack.callback(self.udev.close)
        self.udev.start()

        machine.build_apt_repository(self.shared_mirror / "apt")
        machine.build_ollama_archive(self.shared_mirror / "ollama-linux-amd64.tar.zst")
        return self

    def _lock_host(self) -> None:
        """Wait until no other boot session runs on this host.

        Sessions share the host's udevd, which the session that started it stops
        at its end, so two at once would pull it from under each other.
        """
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        lock = LOCK_PATH.open("a+")
        self.stack.callback(lock.close)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for the boot session that holds %s to end", LOCK_PATH)
            fcntl.flock(lock, fcntl.LOCK_EX)

    def close(self) -> None:
        self.stack.close()

    def new_testbed(self, name: str) -> "TestBed":
        self.test_count += 1
        directory = self.directory / f"{self.test_count:02d}-{name}"
        directory.mkdir(parents=True)
        return TestBed(self, directory)


class TestBed:
    """One test's mirror, data disks and machines."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, session: BootSession, directory: Path):
        self.session = session
        self.directory = directory
        self.stack = contextlib.ExitStack()
        self.netns = NetworkNamespace(f"oa-boot-{os.getpid()}-{session.test_count}")
        self.stack.callback(self.netns.close)
        self.netns.create()
        self.mirror: Mirror | None = None
        self.machines: list[Machine] = []
        self.disks: list[DataDisk] = []

    def start_mirror(self, settings: Settings, knobs: StandinKnobs) -> Mirror:
        """Start this test's mirror, serving the installer and archive the settings ask for."""
        if self.mirror is not None:
            self.mirror.close()
        root = self.directory / f"mirror-{len(self.machines)}"
        machine.stage_mirror(root, self.session.shared_mirror, settings.ollama_version,
                             settings.nvidia_driver_version, knobs)
        self.mirror = Mirror(root, self.netns, self.directory)
        self.stack.callback(self._close_mirror)
        self.mirror.start(knobs)
        return self.mirror

    def _close_mirror(self) -> None:
        if self.mirror is not None:
            self.mirror.close()

    def new_disk(self, serial: str) -> DataDisk:
        disk = DataDisk(self.directory / f"disk-{serial}.img", serial, self.session.udev)
        self.disks.append(disk)
        self.stack.callback(disk.detach)
        return disk

    def launch(self, settings: Settings, disk: DataDisk | None, *, knobs: StandinKnobs | None = None,
               instance_id: str | None = None, serial: str | None = None) -> Machine:
        """Create a new instance (new system disk) with this user-data and boot it."""
        knobs = knobs or StandinKnobs()
        self.start_mirror(settings, knobs)
        disk_serial = serial or (disk.serial if disk else "bp1missingdisk0")
        user_data = render_user_data(settings, disk_serial)
        number = len(self.machines) + 1
        name = f"oa-{os.getpid() % 100000}-{self.session.test_count}-{number}"
        node = Machine(name, self.session.rootfs, self.directory / f"machine-{number}", self.netns)
        self.machines.append(node)
        self.stack.callback(node.close)
        node.create_root(user_data, instance_id or f"i-boottest{self.session.test_count:02d}{number}",
                         knobs.ollama_env)
        node.boot(disk)
        return node

    def close(self) -> None:
        self.stack.close()

    def diagnostics(self) -> str:
        """Return the logs a reader needs to see why a boot went wrong."""
        parts: list[str] = []
        for node in self.machines:
            for label, path in (("status.json", node.file(machine.STATUS_PATH)),
                                ("bootstrap log", node.file(machine.BOOTSTRAP_LOG_PATH)),
                                ("console", node.console_log)):
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                parts.append(f"--- {node.name} {label} (last 60 lines) ---")
                parts.extend(text.splitlines()[-60:])
        return "\n".join(parts)
