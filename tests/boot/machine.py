"""Boot harness: run the rendered user-data under real cloud-init and systemd.

A test machine is a systemd-nspawn container booted from a copy-on-write overlay
of the cached Debian image (rootfs.py). It lives in a private network namespace
that holds only a loopback interface, where the local mirror (mirror.py) listens
on 127.0.0.1, so the machine can reach nothing but the mirror. cloud-init reads
its user-data from a NoCloud seed. The data disk is a loop device. A udevd on the
host gives it the by-id name a cloud disk has and keeps the udev database that
lsblk and mount read, and read-only bind mounts show both inside the container.

Every resource here has a close() or a context manager, and HarnessResources
closes whatever is still open in reverse order, also when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
STANDIN_SERVER = TESTS_DIR / "standin" / "ollama_server.py"
DRIVER_INSTALLER_TEMPLATE = Path(__file__).with_name("standin") / "nvidia-installer.run"
FSTAB_GENERATOR = Path(__file__).with_name("image") / "boot-harness-fstab-generator"

WORK_ROOT = Path(os.environ.get("OA_BOOT_WORK", "/var/tmp/ollama-alicloud-boot"))
MIRROR_PORT = 8080
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}"
OLLAMA_API = "http://127.0.0.1:11434"
UDEV_RULES_DIR = Path("/run/udev/rules.d")
UDEVD = Path("/lib/systemd/systemd-udevd")
SESSION_ENV = "OA_BOOT_SESSION"

STATUS_PATH = "var/lib/ollama-bootstrap/status.json"
BOOTSTRAP_LOG_PATH = "var/log/ollama-bootstrap.log"

CLOUD_CFG = """\
# Boot harness: only the NoCloud seed may configure this machine. No network
# datasource is probed, so no metadata address is ever contacted.
datasource_list: [NoCloud, None]
network:
  config: disabled
# The minimal image has no locales package, so cc_locale would fail on every boot.
locale: false
"""

APT_SOURCES = f"""\
# Boot harness: the local apt repository on the test network namespace.
deb [trusted=yes] {MIRROR_URL}/apt ./
"""

# Units that would run apt or scrub disks in the middle of a test boot.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
    "console-getty.service",
)


def run(command: list[str], *, check: bool = True, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a host command, capturing its output, and raise with that output on failure."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} failed with exit code {result.returncode}\n"
            f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
        )
    return result


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a process the harness started, killing it when it ignores SIGTERM."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll PREDICATE until it returns a true value; raise TimeoutError naming WHAT."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def host_prerequisites_missing() -> str | None:
    """Return why boot tests cannot run on this host, or None when they can."""
    if os.geteuid() != 0:
        return "boot tests need root (loop devices, mounts, network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "losetup", "nsenter", "ip", "udevadm", "dpkg-deb", "zstd"):
        if shutil.which(tool) is None:
            return f"boot tests need {tool}; install the packages listed in tests/boot/install_deps.sh"
    if not UDEVD.exists():
        return f"boot tests need {UDEVD} (Debian package udev); run tests/boot/install_deps.sh"
    return None


# --- host udev -------------------------------------------------------------


class HostUdev:
    """A udevd on the host, so loop devices get udev data and /dev/disk links.

    A running udevd is reused. Otherwise one is started here and stopped by close().
    NOTE: while it runs it also handles events of the host's other block devices.
    """

    def __init__(self, log_dir: Path):
        self.process: subprocess.Popen | None = None
        self.log_path = log_dir / "udevd.log"
        self.pid_path = log_dir / "udevd.pid"

    def start(self) -> None:
        if run(["udevadm", "control", "--ping"], check=False, timeout=10).returncode == 0:
            log.info("using the udevd already running on the host")
            return
        UDEV_RULES_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as output:
            self.process = subprocess.Popen([str(UDEVD)], stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        wait_for(lambda: run(["udevadm", "control", "--ping"], check=False, timeout=10).returncode == 0,
                 15, "the host udevd to answer")
        self.pid_path.write_text(f"{self.process.pid}\n")
        log.info("started udevd, pid %d", self.process.pid)

    def settle(self) -> None:
        run(["udevadm", "settle", "--timeout=30"], timeout=40)

    def reload(self) -> None:
        run(["udevadm", "control", "--reload"], timeout=10)

    def close(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        log.info("stopped udevd, pid %d", self.process.pid)
        self.process = None


# --- data disk -------------------------------------------------------------


class DataDisk:
    """A sparse image file that plays a cloud disk with a serial number.

    attach() binds it to a loop device; a udev rule keyed on the image path gives
    that device /dev/disk/by-id/virtio-<serial>, the name a virtio cloud disk gets.
    Detaching and attaching again plays moving the disk to a new instance.
    """

    def __init__(self, image: Path, serial: str, udev: HostUdev, size_mib: int = 1024):
        self.image = image
        self.serial = serial
        self.udev = udev
        self.size_mib = size_mib
        self.device: str | None = None
        self.rule = UDEV_RULES_DIR / f"61-boot-harness-{os.getpid()}-{serial}.rules"

    @property
    def by_id_link(self) -> str:
        return f"/dev/disk/by-id/virtio-{self.serial}"

    def attach(self) -> str:
        if not self.image.exists():
            with self.image.open("wb") as handle:
                handle.truncate(self.size_mib * 1024 * 1024)
        self.rule.write_text(
            "# Boot harness: a loop device backed by this image plays a virtio disk with a serial.\n"
            f'SUBSYSTEM=="block", KERNEL=="loop*", ATTR{{loop/backing_file}}=="{self.image}", '
            f'ENV{{ID_SERIAL}}="{self.serial}", SYMLINK+="disk/by-id/virtio-{self.serial}"\n'
        )
        self.udev.reload()
        self.device = run(["losetup", "--find", "--show", str(self.image)]).stdout.strip()
        name = Path(self.device).name
        run(["udevadm", "trigger", "--action=change", f"/sys/class/block/{name}"])
        self.udev.settle()
        wait_for(lambda: Path(self.by_id_link).exists(), 15, f"{self.by_id_link} to appear")
        log.info("attached %s as %s (serial %s)", self.image, self.device, self.serial)
        return self.device

    def detach(self) -> None:
        if self.device is None:
            return
        run(["losetup", "--detach", self.device], check=False)
        log.info("detached %s from %s", self.image, self.device)
        self.device = None
        self.rule.unlink(missing_ok=True)
        self.udev.reload()
        self.udev.settle()

    def filesystem_uuid(self) -> str:
        """Return the UUID of the file system on the image, read by probing the file."""
        return run(["blkid", "-p", "-s", "UUID", "-o", "value", str(self.image)], check=False).stdout.strip()


# --- network namespace and mirror -------------------------------------------


class NetworkNamespace:
    """A network namespace with only a loopback interface."""

    def __init__(self, name: str):
        self.name = name
        self.path = Path("/run/netns") / name
        self.created = False

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        self.created = True
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def close(self) -> None:
        if self.created:
            run(["ip", "netns", "delete", self.name], check=False)
            self.created = False


@dataclass
class StandinKnobs:
    """Durations and faults of the stand-ins for one boot."""

    driver_install_seconds: float = 0.0
    """Time the driver installer takes, like a DKMS build."""
    driver_install_fail: str = ""
    """When set, the driver installer prints this error and exits 1."""
    nvidia_smi_fail: str = ""
    """When set, the installed nvidia-smi prints this error and exits 9."""
    pull_seconds: float = 0.0
    """Time the mirror takes to send each model's weights; 0 = as fast as it can."""
    model_size: int = 2 * 1024 * 1024
    """Bytes of each model's weights layer."""
    ollama_env: dict[str, str] = field(default_factory=dict)
    """Extra OLLAMA_STANDIN_* settings for the stand-in Ollama server."""


class Mirror:
    """The local mirror process, serving DIR on 127.0.0.1 inside a network namespace."""

    def __init__(self, root: Path, netns: NetworkNamespace, log_dir: Path):
        self.root = root
        self.netns = netns
        self.access_log = log_dir / "mirror-access.jsonl"
        self.output_log = log_dir / "mirror.log"
        self.process: subprocess.Popen | None = None

    def start(self, knobs: StandinKnobs) -> None:
        speed = knobs.model_size / knobs.pull_seconds if knobs.pull_seconds > 0 else 0
        command = [
            "ip", "netns", "exec", self.netns.name,
            sys.executable, str(Path(__file__).with_name("mirror.py")),
            "--root", str(self.root),
            "--port", str(MIRROR_PORT),
            "--access-log", str(self.access_log),
            "--registry-speed", f"{speed:.0f}",
            "--model-size", str(knobs.model_size),
        ]
        with self.output_log.open("a") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        probe = ["ip", "netns", "exec", self.netns.name, "curl", "-fsS", "-o", "/dev/null", "-D", "-",
                 f"{MIRROR_URL}/apt/Release"]
        answer = f"x-boot-mirror-pid: {self.process.pid}"

        def answering() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"mirror exited with code {self.process.returncode}; see {self.output_log}")
            return answer in run(probe, check=False).stdout.lower()

        wait_for(answering, 15, "the mirror to answer")

    def requests(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]

    def close(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None


# --- mirror content ------------------------------------------------------------


def build_headers_package(out_dir: Path, kernel: str) -> Path:
    """Build a dummy linux-headers-KERNEL package, because Debian has none for the host's kernel.

    It carries a Makefile where the driver installer looks for the kernel source tree,
    so a bootstrap that skipped the headers still fails at the driver step.
    """
    tree = out_dir / f"linux-headers-{kernel}"
    (tree / "DEBIAN").mkdir(parents=True)
    source = tree / "usr/src" / f"linux-headers-{kernel}"
    source.mkdir(parents=True)
    (source / "Makefile").write_text(f"# Stand-in kernel headers for {kernel} (boot harness).\n")
    modules = tree / "lib/modules" / kernel
    modules.mkdir(parents=True)
    (modules / "build").symlink_to(f"/usr/src/linux-headers-{kernel}")
    (tree / "DEBIAN/control").write_text(
        f"Package: linux-headers-{kernel}\n"
        "Version: 1.0-boot-harness\n"
        "Architecture: amd64\n"
        "Maintainer: ollama-alicloud boot harness <root@localhost>\n"
        "Section: kernel\n"
        "Priority: optional\n"
        f"Description: Stand-in header files for Linux {kernel}\n"
        " Only the paths that the driver installer stand-in checks.\n"
    )
    package = out_dir / f"linux-headers-{kernel}_1.0-boot-harness_amd64.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(package)])
    shutil.rmtree(tree)
    return package


def build_apt_repository(repo_dir: Path) -> None:
    """Build a flat apt repository with the packages the cached image lacks."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    build_headers_package(repo_dir, os.uname().release)
    packages = run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo_dir).stdout
    (repo_dir / "Packages").write_text(packages)

    lines = [
        "Origin: boot-harness",
        "Label: boot-harness",
        "Suite: stable",
        "Codename: boot-harness",
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}",
        "Architectures: amd64",
        "SHA256:",
    ]
    data = (repo_dir / "Packages").read_bytes()
    # apt accepts an unsigned repository with [trusted=yes] but still checks these sums.
    lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} Packages")
    (repo_dir / "Release").write_text("\n".join(lines) + "\n")


def build_ollama_archive(path: Path) -> None:
    """Package the stand-in Ollama server the way Ollama ships a release: bin/ and lib/ollama/."""
    tree = path.parent / "ollama-tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib/ollama").mkdir(parents=True)
    shutil.copy(STANDIN_SERVER, tree / "bin/ollama")
    (tree / "bin/ollama").chmod(0o755)
    (tree / "lib/ollama/README").write_text("Stand-in release: the GPU libraries of a real release go here.\n")
    tar = subprocess.Popen(["tar", "-c", "--owner=0", "--group=0", "-C", str(tree), "bin", "lib"],
                           stdout=subprocess.PIPE)
    with path.open("wb") as output:
        subprocess.run(["zstd", "-q", "-c"], stdin=tar.stdout, stdout=output, check=True)
    if tar.wait() != 0:
        raise RuntimeError(f"tar failed while packaging {tree}")
    shutil.rmtree(tree)


def write_driver_installer(path: Path, version: str, knobs: StandinKnobs) -> None:
    """Write the driver installer stand-in with this boot's duration and faults filled in."""
    text = DRIVER_INSTALLER_TEMPLATE.read_text()
    replacements = {
        "INSTALL_SECONDS=0": f"INSTALL_SECONDS={knobs.driver_install_seconds:g}",
        'INSTALL_FAIL=""': f"INSTALL_FAIL={shlex.quote(knobs.driver_install_fail)}",
        'SMI_FAIL=""': f"SMI_FAIL={shlex.quote(knobs.nvidia_smi_fail)}",
        'DRIVER_VERSION="550.127.08"': f"DRIVER_VERSION={shlex.quote(version)}",
    }
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"{DRIVER_INSTALLER_TEMPLATE}: knob line {old!r} not found")
        text = text.replace(old, new, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def stage_mirror(root: Path, shared: Path, ollama_version: str, driver_version: str, knobs: StandinKnobs) -> None:
    """Lay out the mirror's files for one test: shared apt repo and archive, this test's installer."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "apt").symlink_to(shared / "apt")
    archive_dir = root / "ollama" / f"v{ollama_version}"
    archive_dir.mkdir(parents=True)
    (archive_dir / "ollama-linux-amd64.tar.zst").symlink_to(shared / "ollama-linux-amd64.tar.zst")
    write_driver_installer(root / "nvidia" / driver_version / f"NVIDIA-Linux-x86_64-{driver_version}.run",
                           driver_version, knobs)


# --- the machine --------------------------------------------------------------


class Machine:
    """One test machine: an overlay root booted with systemd-nspawn.

    The root survives reboots (stop() and boot() again); a replaced instance is a
    new Machine with a new root.
    """

    def __init__(self, name: str, lower: Path, work_dir: Path, netns: NetworkNamespace):
        self.name = name
        self.lower = lower
        self.work_dir = work_dir
        self.netns = netns
        self.root = work_dir / "merged"
        self.console_log = work_dir / "console.log"
        self.mounted = False
        self.process: subprocess.Popen | None = None
        self.leader: int | None = None
        self.boots: list[float] = []

    # Root file system ----------------------------------------------------

    def create_root(self, user_data: str, instance_id: str, standin_env: dict[str, str]) -> None:
        for part in ("upper", "work", "merged"):
            (self.work_dir / part).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={self.work_dir / 'upper'},workdir={self.work_dir / 'work'}",
             str(self.root)])
        self.mounted = True
        self._configure_image()
        self._write_seed(user_data, instance_id)
        self._write_standin_env(standin_env)

    def _configure_image(self) -> None:
        root = self.root
        (root / "etc/cloud/cloud.cfg.d/90-boot-harness.cfg").write_text(CLOUD_CFG)
        for sources in (root / "etc/apt/sources.list.d").glob("*"):
            sources.unlink()
        (root / "etc/apt/sources.list").write_text(APT_SOURCES)
        for unit in MASKED_UNITS:
            link = root / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        generators = root / "etc/systemd/system-generators"
        generators.mkdir(parents=True, exist_ok=True)
        shutil.copy(FSTAB_GENERATOR, generators / FSTAB_GENERATOR.name)
        (generators / FSTAB_GENERATOR.name).chmod(0o755)
        (root / "etc/hostname").write_text(f"{self.name}\n")
        # An empty machine-id makes systemd generate one on first boot, as on a new instance.
        (root / "etc/machine-id").write_text("")

    def _write_seed(self, user_data: str, instance_id: str) -> None:
        seed = self.root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "user-data").write_text(user_data)
        (seed / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: {self.name}\n")

    def _write_standin_env(self, standin_env: dict[str, str]) -> None:
        if not standin_env:
            return
        dropin = self.root / "etc/systemd/system/ollama.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        lines = ["# Boot harness: knobs of the stand-in Ollama server.", "[Service]"]
        lines += [f'Environment="{key}={value}"' for key, value in standin_env.items()]
        (dropin / "90-boot-harness-standin.conf").write_text("\n".join(lines) + "\n")

    def file(self, path: str) -> Path:
        """Return the host path of PATH on the machine's root file system."""
        return self.root / path.lstrip("/")

    def status(self) -> dict | None:
        try:
            return json.loads(self.file(STATUS_PATH).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # Boot and shutdown ---------------------------------------------------

    def boot(self, disk: DataDisk | None) -> None:
        command = [
            "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
            f"--directory={self.root}",
            f"--machine={self.name}",
            f"--network-namespace-path={self.netns.path}",
            "--bind-ro=/run/udev",
            # Marks the container's init so that a later session can find it if this one dies.
            f"--setenv={SESSION_ENV}={os.getpid()}",
        ]
        if disk is not None and disk.device is not None:
            command += [f"--bind={disk.device}", "--bind-ro=/dev/disk"]
        self.boots.append(time.time())
        with self.console_log.open("a") as console:
            console.write(f"\n===== boot {len(self.boots)} at {time.strftime('%H:%M:%S')} =====\n")
            console.flush()
            self.process = subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.leader = wait_for(self._find_leader, 30, f"{self.name}'s init to start")
        log.info("booted %s, init pid %d", self.name, self.leader)

    def _find_leader(self) -> int | None:
        """Return the PID of the container's systemd.

        It is a child of systemd-nspawn, or a grandchild when nspawn keeps an
        intermediate process (as it does when it joins a network namespace).
        """
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited early; see {self.console_log}")
        for child in _children(self.process.pid):
            for candidate in [child, *_children(child)]:
                try:
                    if Path(f"/proc/{candidate}/comm").read_text().strip() == "systemd":
                        return candidate
                except FileNotFoundError:
                    continue
        return None

    def shell(self, script: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell script inside the machine, in all of its namespaces."""
        if self.leader is None:
            raise RuntimeError(f"{self.name} is not running")
        return run(["nsenter", "-t", str(self.leader), "-a", "--", "/bin/sh", "-c", script],
                   check=check, timeout=timeout)

    def wait_until_running(self, timeout: float = 60) -> None:
        def settled() -> bool:
            state = self.shell("systemctl is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(settled, timeout, f"{self.name} to finish booting", interval=0.5)

    def wait_for_bootstrap(self, timeout: float = 180) -> dict:
        """Wait until this boot's bootstrap run ends; return its final status."""
        boot_time = self.boots[-1]

        def finished() -> dict | None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} stopped while the bootstrap ran; see {self.console_log}")
            status = self.status()
            if status and status["started_at"] >= boot_time and status["state"] in ("ready", "failed"):
                return status
            return None

        return wait_for(finished, timeout, f"the bootstrap on {self.name} to finish", interval=0.5)

    def reboot(self, disk: DataDisk | None, timeout: float = 60) -> None:
        self.shell("systemctl reboot", check=False)
        self._wait_exit(timeout)
        self.boot(disk)

    def poweroff(self, timeout: float = 60) -> None:
        if self.process is None:
            return
        if self.process.poll() is None and self.leader is None:
            # Init never came up, so nothing inside can shut the machine down.
            self._kill()
            self.process = None
            return
        if self.process.poll() is None:
            self.shell("systemctl poweroff", check=False)
        self._wait_exit(timeout)

    def _wait_exit(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            self._kill()
        self.process = None
        self.leader = None

    def _kill(self) -> None:
        """Kill the container's init, which ends its PID namespace, then systemd-nspawn.

        Killing only systemd-nspawn would leave the container's processes running,
        holding the overlay root and the loop device.
        """
        leader = self.leader
        if leader is None:
            with contextlib.suppress(RuntimeError):
                leader = self._find_leader()
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        try:
            self.poweroff(timeout=30)
        finally:
            if self.mounted:
                run(["umount", "--recursive", str(self.root)], check=False)
                if run(["mountpoint", "-q", str(self.root)], check=False).returncode == 0:
                    run(["umount", "--lazy", str(self.root)], check=False)
                self.mounted = False


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return children


# --- cleanup of earlier, interrupted sessions ---------------------------------------


def _kill_containers_of_session(session_pid: int) -> None:
    """Kill the init of every container that a dead session booted, ending its PID namespace."""
    marker = f"{SESSION_ENV}={session_pid}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment:
            log.warning("killing container init %s left by boot session %d", proc.name, session_pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _kill_processes_of_session(session: Path) -> None:
    """Kill the mirrors and the udevd that a dead session started."""
    udevd_pid_file = session / "udevd.pid"
    udevd_pid = udevd_pid_file.read_text().strip() if udevd_pid_file.exists() else None
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command_line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        is_mirror = "mirror.py" in command_line and str(session) in command_line
        is_udevd = proc.name == udevd_pid and "systemd-udevd" in command_line
        if is_mirror or is_udevd:
            log.warning("killing %s (pid %s) left by %s", command_line.split()[0], proc.name, session)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def clean_stale_sessions() -> None:
    """Undo what an interrupted session left: overlay mounts, loop devices, namespaces, rules.

    Only resources under WORK_ROOT or named by this harness whose session PID is
    gone are touched.
    """
    if not WORK_ROOT.exists():
        return
    for session in WORK_ROOT.glob("session-*"):
        pid = int(session.name.split("-")[1])
        if Path(f"/proc/{pid}").exists():
            continue
        log.info("cleaning up stale boot session %s", session)
        _kill_containers_of_session(pid)
        _kill_processes_of_session(session)
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mount_point = line.split()[1]
            if mount_point.startswith(str(session)):
                run(["umount", "--lazy", mount_point], check=False)
        listing = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], check=False).stdout
        for entry in listing.splitlines():
            parts = entry.split(None, 1)
            if len(parts) == 2 and parts[1].startswith(str(session)):
                run(["losetup", "--detach", parts[0]], check=False)
        for netns in Path("/run/netns").glob(f"oa-boot-{pid}-*"):
            run(["ip", "netns", "delete", netns.name], check=False)
        shutil.rmtree(session, ignore_errors=True)
        for rule in UDEV_RULES_DIR.glob(f"61-boot-harness-{pid}-*.rules"):
            rule.unlink(missing_ok=True)


