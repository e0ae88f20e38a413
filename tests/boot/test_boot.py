"""Boot the rendered user-data under real cloud-init and systemd, faults included.

Each test boots one or more containers from the cached Debian image, seeded with
the user-data that components.userdata renders for the test stack. It reads the
result the way an operator would: status.json, systemctl and the Ollama API. The
mirror's access log shows what each boot downloaded.
"""

from __future__ import annotations

import json

import pytest

import machine
import testbed
from machine import StandinKnobs
from testbed import MODEL

# The first test that runs also builds the cached image when it is missing (about
# two minutes from Debian's mirror), so these tests get more than the default timeout.
pytestmark = [pytest.mark.boot, pytest.mark.timeout(600)]

PHASES = ("disk", "packages", "driver", "ollama", "proxy", "pull", "gpu", "preload")
SECOND_MODEL = "smollm2:135m"


def model_downloads(requests: list[dict], since: float = 0.0) -> list[str]:
    """Return the registry paths (manifests and blobs) requested at or after SINCE."""
    return [entry["path"] for entry in requests if entry["time"] >= since and entry["path"].startswith("/v2/")]


def release_downloads(requests: list[dict], since: float = 0.0) -> list[str]:
    """Return the driver installer and Ollama archive requests at or after SINCE."""
    return [entry["path"] for entry in requests
            if entry["time"] >= since and entry["path"].startswith(("/nvidia/", "/ollama/"))]


def api(node: machine.Machine, path: str) -> dict:
    """GET an Ollama API path on the machine's loopback."""
    return json.loads(node.shell(f"curl -fsS --max-time 10 {machine.OLLAMA_API}{path}").stdout)


def marker_path() -> str:
    return "/data/boot-harness-marker"


@pytest.fixture(scope="module")
def first_boot(boot_session):
    """One fresh instance with an empty data disk, booted until the bootstrap ends."""
    bed = boot_session.new_testbed("first-boot")
    try:
        disk = bed.new_disk("bp1firstboot01")
        disk.attach()
        node = bed.launch(testbed.test_stack_settings(), disk)
        status = node.wait_for_bootstrap()
        yield bed, node, disk, status
    finally:
        bed.close()


@pytest.fixture
def booted(first_boot, request):
    request.node.boot_testbed = first_boot[0]
    return first_boot


def test_first_boot_reaches_ready(booted):
    _, _, _, status = booted

    assert status["state"] == "ready", status
    assert status["phase"] == "ready"
    assert status["error"] is None
    assert status["models"] == [MODEL]
    for phase in PHASES:
        assert phase in status["phases"], f"phase {phase} missing from {sorted(status['phases'])}"
    for name, phase in status["phases"].items():
        assert phase["state"] == "done", f"phase {name}: {phase}"
        assert phase["start"] >= status["started_at"], f"phase {name} starts before the run"
        assert phase["end"] is not None and phase["end"] >= phase["start"], f"phase {name}: {phase}"


def test_data_disk_mounted_by_uuid(booted):
    _, node, disk, _ = booted

    source = node.shell("findmnt -n -o SOURCE /data").stdout.strip()
    uuid = disk.filesystem_uuid()
    fstab = [line.split() for line in node.file("/etc/fstab").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    data_entries = [fields for fields in fstab if fields[1] == "/data"]
    owner = node.shell("stat -c %U /data/ollama/models").stdout.strip()

    assert source == disk.device
    assert uuid, "the data disk has no file system"
    assert len(data_entries) == 1, data_entries
    assert data_entries[0][0] == f"UUID={uuid}"
    assert "nofail" in data_entries[0][3].split(",")
    assert owner == "ollama"


def test_ollama_dropin_and_preloaded_model(booted):
    _, node, _, _ = booted

    environment = node.shell("systemctl show ollama -p Environment").stdout
    active = node.shell("systemctl is-active ollama", check=False).stdout.strip()
    tags = [model["name"] for model in api(node, "/api/tags")["models"]]
    loaded = {model["name"]: model for model in api(node, "/api/ps")["models"]}

    assert "OLLAMA_MODELS=/data/ollama/models" in environment
    assert "OLLAMA_HOST=0.0.0.0:11434" in environment
    assert "OLLAMA_KEEP_ALIVE=1h" in environment
    assert active == "active"
    assert MODEL in tags
    assert MODEL in loaded, f"{MODEL} not preloaded; loaded: {sorted(loaded)}"
    assert loaded[MODEL]["size_vram"] == loaded[MODEL]["size"]


def test_cloud_init_used_only_nocloud_seed(booted):
    """Guards against cloud-init probing a metadata service instead of the test seed."""
    _, node, _, _ = booted

    instance_data = json.loads(node.shell("cat /run/cloud-init/instance-data.json").stdout)
    routes = node.shell("ip -o route show table all").stdout
    links = node.shell("ip -o link show").stdout.splitlines()

    assert instance_data["v1"]["platform"] == "nocloud"
    assert instance_data["v1"]["instance_id"].startswith("i-boottest")
    assert "default" not in routes
    assert len(links) == 1, f"expected only the loopback interface: {links}"
    assert ": lo:" in links[0]


def test_reboot_keeps_disk_and_skips_downloads(bed):
    disk = bed.new_disk("bp1reboot00001")
    disk.attach()
    node = bed.launch(testbed.test_stack_settings(), disk)
    first = node.wait_for_bootstrap()
    assert first["state"] == "ready", first
    uuid_before = disk.filesystem_uuid()
    node.shell(f"echo kept > {marker_path()}")

    node.reboot(disk)
    rebooted_at = node.boots[-1]
    second = node.wait_for_bootstrap()

    assert second["state"] == "ready", second
    assert second["started_at"] > first["started_at"]
    assert disk.filesystem_uuid() == uuid_before
    assert node.shell(f"cat {marker_path()}").stdout.strip() == "kept"
    assert node.shell("systemctl is-active ollama", check=False).stdout.strip() == "active"
    assert MODEL in [model["name"] for model in api(node, "/api/tags")["models"]]
    assert model_downloads(bed.mirror.requests(), rebooted_at) == []
    assert release_downloads(bed.mirror.requests(), rebooted_at) == []


def test_replaced_instance_reuses_disk(bed):
    settings = testbed.test_stack_settings()
    disk = bed.new_disk("bp1replaced001")
    disk.attach()
    old = bed.launch(settings, disk, instance_id="i-boottest-old")
    assert old.wait_for_bootstrap()["state"] == "ready"
    uuid_before = disk.filesystem_uuid()
    old.shell(f"echo from-old-instance > {marker_path()}")
    old.poweroff()
    disk.detach()

    disk.attach()
    new = bed.launch(settings, disk, instance_id="i-boottest-new")
    status = new.wait_for_bootstrap()

    assert status["state"] == "ready", status
    assert new.shell("cloud-init query instance_id").stdout.strip() == "i-boottest-new"
    assert disk.filesystem_uuid() == uuid_before, "the data disk was formatted again"
    assert new.shell(f"cat {marker_path()}").stdout.strip() == "from-old-instance"
    assert MODEL in [model["name"] for model in api(new, "/api/tags")["models"]]
    assert model_downloads(bed.mirror.requests(), new.boots[-1]) == []


def test_missing_disk_fails_without_writing_models(bed):
    node = bed.launch(testbed.test_stack_settings(dataDiskWaitSeconds=3), None)
    status = node.wait_for_bootstrap()
    node.wait_until_running()
    system_state = node.shell("systemctl is-system-running", check=False).stdout.strip()
    model_files = node.shell("find / -xdev -path '*/models/*' -path '*ollama*' -print -quit").stdout.strip()

    assert status["state"] == "failed", status
    assert status["phase"] == "disk"
    assert "data disk missing" in status["error"]
    assert system_state in ("running", "degraded")
    assert model_files == "", f"model files on the root file system: {model_files}"
    assert not node.file("/data/ollama").exists()
    assert model_downloads(bed.mirror.requests()) == []


def test_stalled_pull_fails_after_retries(bed):
    disk = bed.new_disk("bp1stalled0001")
    disk.attach()
    settings = testbed.test_stack_settings(pullStallSeconds=2, pullRetries=1)
    knobs = StandinKnobs(ollama_env={"OLLAMA_STANDIN_PULL_STALL_SECONDS": "forever"})
    node = bed.launch(settings, disk, knobs=knobs)
    status = node.wait_for_bootstrap()
    log_text = node.file(machine.BOOTSTRAP_LOG_PATH).read_text()
    manifests = [path for path in model_downloads(bed.mirror.requests()) if "/manifests/" in path]

    assert status["state"] == "failed", status
    assert status["phase"] == "pull"
    assert "no progress for 2 s" in status["error"]
    assert "after 2 attempt(s)" in status["error"]
    assert "retry 1 of 1" in log_text
    assert len(manifests) == 2, manifests
    assert "preload" not in status["phases"]


def test_driver_failure_names_driver_phase(bed):
    disk = bed.new_disk("bp1driverfail1")
    disk.attach()
    knobs = StandinKnobs(driver_install_fail="Unable to load the kernel module 'nvidia.ko'")
    node = bed.launch(testbed.test_stack_settings(), disk, knobs=knobs)
    status = node.wait_for_bootstrap()

    assert status["state"] == "failed", status
    assert status["phase"] == "driver"
    assert "driver" in status["error"].lower()
    assert status["phases"]["driver"]["state"] == "failed"
    assert "preload" not in status["phases"]


def test_model_change_replaces_instance_pulls_only_new(bed):
    disk = bed.new_disk("bp1modelchange")
    old_settings = testbed.test_stack_settings()
    new_settings = testbed.test_stack_settings(models=[MODEL, SECOND_MODEL])
    # The program replaces the instance when its user-data changes, so a model
    # change must change the user-data for the same disk.
    assert testbed.render_user_data(old_settings, disk.serial) != testbed.render_user_data(new_settings, disk.serial)

    disk.attach()
    old = bed.launch(old_settings, disk, instance_id="i-boottest-models-1")
    assert old.wait_for_bootstrap()["state"] == "ready"
    old.poweroff()
    disk.detach()

    disk.attach()
    new = bed.launch(new_settings, disk, instance_id="i-boottest-models-2")
    replaced_at = new.boots[-1]
    status = new.wait_for_bootstrap()
    tags = [model["name"] for model in api(new, "/api/tags")["models"]]
    downloads = model_downloads(bed.mirror.requests(), replaced_at)
    first_name, first_tag = MODEL.split(":")

    assert status["state"] == "ready", status
    assert status["models"] == [MODEL, SECOND_MODEL]
    assert MODEL in tags
    assert SECOND_MODEL in tags
    assert downloads, "the new model was not downloaded"
    assert all("/smollm2/" in path for path in downloads), downloads
    assert f"/v2/library/{first_name}/manifests/{first_tag}" not in downloads
