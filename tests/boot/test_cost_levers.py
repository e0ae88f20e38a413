"""Boot tests of the cost levers on the instance: the idle-stop timer and a kept model disk.

The idle-stop timer runs as installed by the user-data, under real systemd. Stand-ins
for the metadata service and the ECS API listen on 127.0.0.1 inside the test's network
namespace (tests/standin/alicloud_api.py) and record every StopInstance call.

The production timer checks once a minute against an idle period of whole minutes. After
the user-data has enabled it, systemd drop-ins make it check every few seconds against an
idle period of IDLE_STOP_SECONDS, so that the busy and idle phases take seconds, not minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import machine
import testbed
from testbed import MODEL

pytestmark = pytest.mark.boot

STANDIN = machine.REPO_ROOT / "tests" / "standin" / "alicloud_api.py"
METADATA_PORT = 8100
ECS_PORT = 8101
INSTANCE_ID = "i-boottestidlestop"
CHECK_INTERVAL_SECONDS = 5
IDLE_LIMIT_SECONDS = 20
# Longer than the idle period, so a busy check that misses requests stops the instance.
BUSY_SECONDS = 45
REQUEST_INTERVAL_SECONDS = 5
# The idle period, plus the check that notices its end, plus the timer's accuracy and slack.
STOP_DEADLINE_SECONDS = 60
# Drop-ins that replace the production timing: the timer fires CHECK_INTERVAL_SECONDS
# after each check, and the check uses an idle period in seconds. The empty
# OnUnitActiveSec= clears the production value instead of adding a second one.
TIMER_DROPIN = f"""\
# Boot test: check every {CHECK_INTERVAL_SECONDS} s instead of every minute.
[Timer]
OnUnitActiveSec=
OnUnitActiveSec={CHECK_INTERVAL_SECONDS}s
AccuracySec=1s
"""
SERVICE_DROPIN = f"""\
# Boot test: an idle period of {IDLE_LIMIT_SECONDS} s instead of IDLE_STOP_MINUTES.
[Service]
Environment=IDLE_STOP_SECONDS={IDLE_LIMIT_SECONDS}
"""


class CloudApiStandin:
    """The metadata and ECS API stand-ins, run as a process in the test's network namespace."""

    def __init__(self, bed: testbed.TestBed, instance_id: str, role: str) -> None:
        self.calls_file = bed.directory / "ecs-calls.jsonl"
        self.log_file = bed.directory / "alicloud-standin.log"
        command = ["ip", "netns", "exec", bed.netns.name, sys.executable, str(STANDIN),
                   "--metadata-port", str(METADATA_PORT), "--ecs-port", str(ECS_PORT),
                   "--calls", str(self.calls_file), "--instance-id", instance_id, "--role", role]
        with self.log_file.open("a") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        bed.stack.callback(self.close)
        probe = ["ip", "netns", "exec", bed.netns.name, "curl", "-sS", "-o", "/dev/null",
                 f"http://127.0.0.1:{METADATA_PORT}/latest/meta-data/instance-id"]
        machine.wait_for(lambda: machine.run(probe, check=False).returncode == 0, 15, "the ECS API stand-in")

    def calls(self) -> list[dict]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line]

    def stop_calls(self) -> list[dict]:
        return [call["params"] for call in self.calls()
                if call["accepted"] and call["params"].get("Action") == "StopInstance"]

    def close(self) -> None:
        machine.stop_process(self.process)


def idle_stop_settings(**overrides):
    return testbed.test_stack_settings(
        idleStopMinutes=1,
        instanceMetadataUrl=f"http://127.0.0.1:{METADATA_PORT}",
        ecsApiEndpoint=f"http://127.0.0.1:{ECS_PORT}",
        **overrides,
    )


def generate(node: machine.Machine) -> None:
    body = json.dumps({"model": MODEL, "prompt": "hello", "stream": False})
    node.shell(f"curl -fsS --max-time 30 -X POST {machine.OLLAMA_API}/api/generate -d '{body}' > /dev/null")


def idle_stop_state(node: machine.Machine) -> dict:
    """Return the idle-stop script's state file, which it rewrites at every check."""
    return json.loads(node.shell("cat /run/ollama-idle-stop/state.json").stdout)


def shorten_idle_stop_timing(node: machine.Machine) -> None:
    """Install the test drop-ins for the idle-stop timer and service, then run the first check.

    The first check starts the timer's OnUnitActiveSec cadence. A restart alone did not:
    under systemd 252 in the boot harness, the restarted timer went to "elapsed" and never
    fired, even with OnActiveSec=1s in its drop-in.
    """
    for unit, text in (("ollama-idle-stop.timer", TIMER_DROPIN), ("ollama-idle-stop.service", SERVICE_DROPIN)):
        dropin = node.file(f"/etc/systemd/system/{unit}.d")
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "90-boot-test-timing.conf").write_text(text)
    node.shell("systemctl daemon-reload && systemctl restart ollama-idle-stop.timer"
               " && systemctl start ollama-idle-stop.service")


def idle_stop_diagnostics(node: machine.Machine) -> str:
    script = ("systemctl list-timers --all --no-pager; systemctl status ollama-idle-stop.service --no-pager; "
              "cat /run/ollama-idle-stop/state.json; journalctl -u ollama-idle-stop.service --no-pager -o cat")
    return node.shell(script, check=False).stdout


@pytest.fixture(scope="module")
def idle_machine(boot_session):
    """One instance with idleStopMinutes=1, booted until the bootstrap is ready.

    Yields the test bed, the machine, the API stand-in, the bootstrap status, and the
    timer's is-enabled and is-active output as the user-data left it, before the test
    drop-ins shorten its timing.
    """
    bed = boot_session.new_testbed("idle-stop")
    try:
        settings = idle_stop_settings()
        standin = CloudApiStandin(bed, INSTANCE_ID, settings.idle_stop_role_name)
        disk = bed.new_disk("bp1idlestop001")
        disk.attach()
        node = bed.launch(settings, disk, instance_id=INSTANCE_ID)
        status = node.wait_for_bootstrap()
        timer_as_installed = {
            "enabled": node.shell("systemctl is-enabled ollama-idle-stop.timer", check=False).stdout.strip(),
            "active": node.shell("systemctl is-active ollama-idle-stop.timer", check=False).stdout.strip(),
        }
        if status["state"] == "ready":
            shorten_idle_stop_timing(node)
        yield bed, node, standin, status, timer_as_installed
    finally:
        bed.close()


@pytest.fixture
def idle(idle_machine, request):
    request.node.boot_testbed = idle_machine[0]
    return idle_machine


def test_idle_timer_installed(idle):
    """The user-data installs, enables and starts the timer, before the test drop-ins change it."""
    _, _, _, status, timer_as_installed = idle

    assert status["state"] == "ready", status
    assert timer_as_installed["enabled"] == "enabled"
    assert timer_as_installed["active"] == "active"


def test_busy_instance_not_stopped(idle):
    """Requests every 5 s keep a 20 s idle period from ever being reached."""
    _, node, standin, _, _ = idle

    deadline = time.monotonic() + BUSY_SECONDS
    while time.monotonic() < deadline:
        generate(node)
        time.sleep(REQUEST_INTERVAL_SECONDS)

    state = idle_stop_state(node)
    assert standin.calls() == [], idle_stop_diagnostics(node)
    assert state["last_busy_reason"] == "Ollama served a request or loaded a model", state
    assert time.time() - state["last_check"] < 4 * CHECK_INTERVAL_SECONDS, "the timer stopped checking"


def test_idle_instance_stopped_once(idle):
    _, node, standin, _, _ = idle

    machine.wait_for(standin.stop_calls, STOP_DEADLINE_SECONDS, "a StopInstance call")
    # The next checks must see the request already made and not repeat it.
    time.sleep(3 * CHECK_INTERVAL_SECONDS)

    calls = standin.stop_calls()
    journal = node.shell("journalctl -u ollama-idle-stop.service --no-pager -o cat").stdout
    assert len(calls) == 1, idle_stop_diagnostics(node)
    assert "waiting for the instance to stop" in journal, "no check ran after the stop request"
    assert calls[0]["InstanceId"] == INSTANCE_ID
    assert calls[0]["StoppedMode"] == "StopCharging"
    assert [call for call in standin.calls() if not call["accepted"]] == []


def test_kept_disk_serves_without_download(bed):
    """A disk kept through `pulumi destroy` serves its models to the next deployment's instance."""
    settings = testbed.test_stack_settings(keepModelDisk=True)
    disk = bed.new_disk("bp1keptdisk001")
    disk.attach()
    old = bed.launch(settings, disk, instance_id="i-boottest-destroyed")
    assert old.wait_for_bootstrap()["state"] == "ready"
    uuid_before = disk.filesystem_uuid()

    # `pulumi destroy`: the instance and its system disk are gone, the kept disk is detached.
    old.poweroff()
    old.close()
    disk.detach()
    disk.attach()
    new = bed.launch(settings, disk, instance_id="i-boottest-next-up")
    status = new.wait_for_bootstrap()

    assert status["state"] == "ready", status
    assert disk.filesystem_uuid() == uuid_before, "the kept disk was formatted again"
    downloads = [entry["path"] for entry in bed.mirror.requests()
                 if entry["time"] >= new.boots[-1] and entry["path"].startswith("/v2/")]
    assert downloads == [], "the models were downloaded again"
    loaded = json.loads(new.shell(f"curl -fsS {machine.OLLAMA_API}/api/ps").stdout)["models"]
    assert MODEL in [model["name"] for model in loaded]
