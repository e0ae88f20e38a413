"""Cost and lifecycle under mocks: spot, time-to-live, idle-stop role, kept disk, price."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components import gpu_server, lifecycle
from components.lifecycle import resolve_auto_release_time
from scripts.plan import MOCK_ACCOUNT_ID, MOCK_PRICE, MOCK_SPOT_PRICE, MOCK_STACK_OUTPUTS, decode_write_files
from scripts import plan as plan_cli
from scripts.plan import plan_stack as plan

INSTANCE = "alicloud:ecs/instance:Instance"
DISK = "alicloud:ecs/ecsDisk:EcsDisk"
ATTACHMENT = "alicloud:ecs/ecsDiskAttachment:EcsDiskAttachment"
ROLE = "alicloud:ram/role:Role"
POLICY = "alicloud:ram/policy:Policy"
ROLE_POLICY_ATTACHMENT = "alicloud:ram/rolePolicyAttachment:RolePolicyAttachment"
INSTANCE_ROLE = "alicloud:ecs/ramRoleAttachment:RamRoleAttachment"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
GET_ZONES = "alicloud:index/getZones:getZones"
GET_INSTANCE_TYPES = "alicloud:ecs/getInstanceTypes:getInstanceTypes"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KEPT_DISK = {"id": "d-bp1keptmodels", "zoneId": "cn-hangzhou-j", "size": 120, "category": "cloud_essd",
             "snapshotId": "", "status": "Available", "diskName": "ollama-alicloud-dev-models"}
# ECS rejects user-data above 32 KB before Base64 encoding.
ECS_USER_DATA_MAX_BYTES = 32 * 1024
# The acceptance settings of the cost levers.
COST_LEVERS = {"spot": True, "ttlHours": 8, "idleStopMinutes": 30, "keepModelDisk": True}


@pytest.fixture(autouse=True)
def fresh_backend() -> None:
    """Start every test from a stack that was never deployed."""
    MOCK_STACK_OUTPUTS.clear()


def instance_of(result: Any) -> Any:
    [instance] = result.of_type(INSTANCE)
    return instance


def capture_options(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> dict[str, pulumi.ResourceOptions]:
    """Record the resource options of every `module.ecs.<name>` the program declares."""
    captured: dict[str, pulumi.ResourceOptions] = {}
    real = getattr(module.ecs, name)

    def capture(resource_name: str, **kwargs: Any) -> Any:
        captured[resource_name] = kwargs["opts"]
        return real(resource_name, **kwargs)

    monkeypatch.setattr(module.ecs, name, capture)
    return captured


def parse_utc(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --- spot -----------------------------------------------------------------


def test_spot_instance_arguments() -> None:
    result = plan("dev", spot=True)
    inputs = instance_of(result).inputs
    assert inputs["spotStrategy"] == "SpotAsPriceGo"
    assert inputs["spotInterruptionBehavior"] == "Stop"
    assert inputs["instanceChargeType"] == "PostPaid", "spot is a pay-as-you-go variant"
    assert result.exports["spotStrategy"] == "SpotAsPriceGo"


def test_spot_interruption_terminate() -> None:
    inputs = instance_of(plan("dev", spot=True, spotInterruptionBehavior="Terminate")).inputs
    assert inputs["spotInterruptionBehavior"] == "Terminate"


def test_pay_as_you_go_without_spot_arguments() -> None:
    inputs = instance_of(plan("dev")).inputs
    assert inputs["spotStrategy"] == "NoSpot"
    assert "spotInterruptionBehavior" not in inputs


def test_spot_zone_from_spot_stock() -> None:
    result = plan("dev", spot=True, mock_spot_zones=("cn-hangzhou-k",))
    spot_calls = [args for token, args in result.invokes if token == GET_ZONES]
    assert [call.get("spotStrategy") for call in spot_calls] == ["SpotAsPriceGo"]
    assert spot_calls[0]["availableInstanceType"] == "ecs.gn7i-c16g1.4xlarge"
    assert instance_of(result).inputs["availabilityZone"] == "cn-hangzhou-k"
    assert result.exports["zone"] == "cn-hangzhou-k"


def test_no_spot_stock_fails_clearly() -> None:
    with pytest.raises(pulumi.RunError, match=r"no spot stock for ecs.gn7i-c16g1.4xlarge in any zone") as raised:
        plan("dev", spot=True, mock_spot_zones=())
    assert "pulumi config set spotFallback true" in str(raised.value)


def test_pinned_zone_without_spot_stock_fails() -> None:
    with pytest.raises(pulumi.RunError, match=r"no spot stock .* in zone cn-beijing-i"):
        plan("prod", spot=True, mock_spot_zones=("cn-beijing-h",))


def test_no_spot_stock_falls_back_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(lifecycle.pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    captured = capture_options(monkeypatch, gpu_server, "Instance")

    result = plan("dev", spot=True, spotFallback=True, mock_spot_zones=())

    inputs = instance_of(result).inputs
    assert inputs["spotStrategy"] == "NoSpot"
    assert "spotInterruptionBehavior" not in inputs
    assert any("spotFallback is true" in warning and "pay-as-you-go" in warning for warning in warnings), warnings
    [opts] = captured.values()
    assert "spotStrategy" in opts.ignore_changes, "returning spot stock must not replace the fallback instance"


# --- time-to-live ---------------------------------------------------------


def test_ttl_auto_release_format_and_lead() -> None:
    before = datetime.now(timezone.utc)
    result = plan("dev", ttlHours=8)
    value = instance_of(result).inputs["autoReleaseTime"]
    assert ISO_UTC.match(value), value
    lead = parse_utc(value) - before
    assert timedelta(hours=8) - timedelta(seconds=2) <= lead <= timedelta(hours=8, minutes=2), lead
    assert lead >= lifecycle.MIN_RELEASE_LEAD
    assert result.exports["autoReleaseTime"] == value


def test_ttl_stable_across_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against a release time recomputed, and so extended, on every `pulumi up`."""
    first = instance_of(plan("dev", ttlHours=8)).inputs["autoReleaseTime"]

    # The second `pulumi up` runs an hour later.
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    monkeypatch.setattr(lifecycle, "utc_now", lambda: later)
    second = plan("dev", ttlHours=8)

    assert instance_of(second).inputs["autoReleaseTime"] == first
    assert second.exports["ttl"] == {"hours": 8, "renewedAt": None, "expiresAt": first}


def test_ttl_reads_own_stack_outputs() -> None:
    result = plan("dev", ttlHours=8)
    [reference] = result.of_type(STACK_REFERENCE)
    assert reference.inputs["name"] == "organization/ollama-alicloud/dev"


def test_ttl_hours_change_recomputes() -> None:
    first = instance_of(plan("dev", ttlHours=8)).inputs["autoReleaseTime"]
    second = instance_of(plan("dev", ttlHours=12)).inputs["autoReleaseTime"]
    assert parse_utc(second) - parse_utc(first) >= timedelta(hours=4) - timedelta(seconds=5)


def test_ttl_renewal_restarts_from_now(monkeypatch: pytest.MonkeyPatch) -> None:
    first = instance_of(plan("dev", ttlHours=8)).inputs["autoReleaseTime"]
    later = datetime.now(timezone.utc) + timedelta(hours=3)
    monkeypatch.setattr(lifecycle, "utc_now", lambda: later)

    renewed = instance_of(plan("dev", ttlHours=8, ttlRenewedAt="2026-12-04T23:00:00Z")).inputs["autoReleaseTime"]

    assert parse_utc(renewed) - parse_utc(first) >= timedelta(hours=3) - timedelta(seconds=5)


def test_ttl_zero_never_releases() -> None:
    result = plan("prod")
    assert "autoReleaseTime" not in instance_of(result).inputs
    assert not result.of_type(STACK_REFERENCE), "no stack read without a time-to-live"
    assert result.exports["autoReleaseTime"] is None


def test_dev_stack_sets_ttl() -> None:
    assert "autoReleaseTime" in instance_of(plan("dev")).inputs


@pytest.mark.parametrize(("previous", "expected"), [
    (None, "2026-01-01T08:00:00Z"),
    ({"hours": 8, "renewedAt": None, "expiresAt": "2026-01-01T05:00:00Z"}, "2026-01-01T05:00:00Z"),
    ({"hours": 4, "renewedAt": None, "expiresAt": "2026-01-01T05:00:00Z"}, "2026-01-01T08:00:00Z"),
    ({"hours": 8, "renewedAt": "2025-12-31T20:00:00Z", "expiresAt": "2026-01-01T04:00:00Z"}, "2026-01-01T08:00:00Z"),
    ({"hours": 8, "renewedAt": None, "expiresAt": "not a time"}, "2026-01-01T08:00:00Z"),
])
def test_resolve_auto_release_time_table(previous: Any, expected: str) -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    assert resolve_auto_release_time(8, None, previous, now) == expected


# --- idle stop: the RAM role ----------------------------------------------


def test_idle_stop_policy_least_privilege() -> None:
    """The role may stop this one instance and do nothing else."""
    result = plan("dev", idleStopMinutes=30)
    instance = instance_of(result)
    [policy] = result.of_type(POLICY)

    document = json.loads(policy.inputs["policyDocument"])
    [statement] = document["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["ecs:StopInstance"]
    assert statement["Resource"] == [f"acs:ecs:cn-hangzhou:{MOCK_ACCOUNT_ID}:instance/{instance.id}"]
    assert "Condition" not in statement
    assert "*" not in policy.inputs["policyDocument"]


def test_idle_stop_role_trusts_ecs_only() -> None:
    result = plan("dev", idleStopMinutes=30)
    [role] = result.of_type(ROLE)
    [statement] = json.loads(role.inputs["assumeRolePolicyDocument"])["Statement"]
    assert statement == {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": ["ecs.aliyuncs.com"]}}


def test_idle_stop_role_wiring() -> None:
    result = plan("dev", idleStopMinutes=30)
    instance = instance_of(result)
    [role] = result.of_type(ROLE)
    [policy] = result.of_type(POLICY)
    [attachment] = result.of_type(ROLE_POLICY_ATTACHMENT)
    [instance_role] = result.of_type(INSTANCE_ROLE)
    assert role.inputs["roleName"] == "ollama-alicloud-dev-idle-stop"
    assert attachment.inputs == {"roleName": role.inputs["roleName"], "policyName": policy.inputs["policyName"],
                                 "policyType": "Custom"}
    assert instance_role.inputs == {"instanceId": instance.id, "ramRoleName": role.inputs["roleName"]}

    files = decode_write_files(instance.inputs["userData"])
    env = files["/etc/ollama-bootstrap/bootstrap.env"]
    assert 'IDLE_STOP_MINUTES="30"' in env
    assert f'IDLE_STOP_ROLE="{role.inputs["roleName"]}"' in env
    assert 'ECS_API_ENDPOINT="https://ecs.cn-hangzhou.aliyuncs.com"' in env
    assert "/opt/ollama-bootstrap/ollama-idle-stop.py" in files
    assert "/etc/systemd/system/ollama-idle-stop.timer" in files
    runcmd = yaml.safe_load(instance.inputs["userData"])["runcmd"]
    assert ["systemctl", "enable", "--now", "ollama-idle-stop.timer"] in runcmd


def test_user_data_size_with_idle_stop() -> None:
    # NOTE: the idle-stop script adds about 6 KB, so this user-data (about 20 KB) is over
    # the 16 KB margin USER_DATA_LIMIT_BYTES keeps for the default stacks; ECS accepts 32 KB.
    size = len(instance_of(plan("prod", idleStopMinutes=30, ttlHours=8)).inputs["userData"].encode())
    assert size <= ECS_USER_DATA_MAX_BYTES, f"user-data is {size} bytes"


def test_no_role_without_idle_stop() -> None:
    result = plan("dev")
    assert not result.of_type(ROLE)
    assert not result.of_type(POLICY)
    assert not result.of_type(INSTANCE_ROLE)
    assert "/etc/systemd/system/ollama-idle-stop.timer" not in decode_write_files(instance_of(result).inputs["userData"])


# --- the model disk -------------------------------------------------------


def test_kept_disk_retained_on_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = capture_options(monkeypatch, gpu_server, "EcsDisk")
    plan("dev", keepModelDisk=True)
    [opts] = captured.values()
    assert opts.retain_on_delete is True
    assert opts.import_ is None, "no kept disk waits, so a new one is created"


def test_disk_deleted_with_stack_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = capture_options(monkeypatch, gpu_server, "EcsDisk")
    plan("dev")
    [opts] = captured.values()
    assert not opts.retain_on_delete


def test_kept_disk_adopted_on_next_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against a second model disk (and a second download) after destroy and up."""
    captured = capture_options(monkeypatch, gpu_server, "EcsDisk")
    result = plan("dev", keepModelDisk=True, mock_kept_disks=(KEPT_DISK,))

    [opts] = captured.values()
    assert opts.import_ == "d-bp1keptmodels"
    assert opts.retain_on_delete is True
    [disk] = result.of_type(DISK)
    assert disk.id == "d-bp1keptmodels"
    assert disk.inputs["zoneId"] == "cn-hangzhou-j"
    assert disk.inputs["size"] == 120, "an import must declare the disk's own size"
    instance = instance_of(result)
    assert instance.inputs["availabilityZone"] == "cn-hangzhou-j", "a disk attaches only in its own zone"
    [attachment] = result.of_type(ATTACHMENT)
    assert attachment.inputs["diskId"] == "d-bp1keptmodels"
    env = decode_write_files(instance.inputs["userData"])["/etc/ollama-bootstrap/bootstrap.env"]
    assert 'DATA_DISK_SERIAL="bp1keptmodels"' in env


def test_kept_disk_lookup_only_with_keep() -> None:
    result = plan("dev", mock_kept_disks=(KEPT_DISK,))
    assert "alicloud:ecs/getEcsDisks:getEcsDisks" not in [token for token, _ in result.invokes]
    assert result.of_type(DISK)[0].id != "d-bp1keptmodels"


def test_kept_disk_in_other_zone_than_pinned_fails() -> None:
    with pytest.raises(pulumi.RunError, match=r"kept model disk d-bp1keptmodels is in zone cn-hangzhou-j"):
        plan("dev", keepModelDisk=True, zone="cn-hangzhou-i", mock_kept_disks=(KEPT_DISK,))


def test_two_kept_disks_fail() -> None:
    second = {**KEPT_DISK, "id": "d-bp1another"}
    with pytest.raises(pulumi.RunError, match=r"2 kept model disks"):
        plan("dev", keepModelDisk=True, mock_kept_disks=(KEPT_DISK, second))


def test_snapshot_restores_model_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = capture_options(monkeypatch, gpu_server, "EcsDisk")
    result = plan("dev", dataDiskSnapshotId="s-bp1models")
    [disk] = result.of_type(DISK)
    assert disk.inputs["snapshotId"] == "s-bp1models"
    [opts] = captured.values()
    assert "snapshotId" in opts.ignore_changes, "a later snapshot setting must not replace a full disk"


# --- hourly price ---------------------------------------------------------


def test_hourly_price_export() -> None:
    result = plan("dev")
    [call] = [args for token, args in result.invokes if token == GET_INSTANCE_TYPES]
    assert call["sortedBy"] == "Price"
    assert call["instanceType"] == "ecs.gn7i-c16g1.4xlarge"
    assert call["availabilityZone"] == result.exports["zone"]
    assert call["spotStrategy"] == "NoSpot"
    assert result.exports["hourlyPrice"]["amount"] == float(MOCK_PRICE)
    assert result.exports["hourlyPrice"]["currency"] == "CNY"
    assert result.exports["hourlyPrice"]["unit"] == "hour"


def test_hourly_price_spot() -> None:
    result = plan("dev", spot=True)
    assert result.exports["hourlyPrice"]["amount"] == float(MOCK_SPOT_PRICE)
    assert result.exports["hourlyPrice"]["spotStrategy"] == "SpotAsPriceGo"


def test_hourly_price_currency_outside_mainland() -> None:
    assert lifecycle.billing_currency("ap-southeast-1") == "USD"


# --- all levers together ----------------------------------------------------


def test_cost_levers_together(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = capture_options(monkeypatch, gpu_server, "EcsDisk")
    first = plan("dev", **COST_LEVERS)
    second = plan("dev", **COST_LEVERS)

    assert instance_of(first).inputs["spotStrategy"] == "SpotAsPriceGo"
    assert instance_of(second).inputs["autoReleaseTime"] == instance_of(first).inputs["autoReleaseTime"]
    assert len(first.of_type(POLICY)) == 1
    assert all(opts.retain_on_delete for opts in captured.values())


def test_plan_cli_keeps_release_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two offline plans in separate runs show what two `pulumi up` runs would do."""
    args = ["--stack", "dev", "--set", "ttlHours=8", "--out", str(tmp_path)]
    assert plan_cli.main(args) == 0
    first = json.loads((tmp_path / plan_cli.OUTPUTS_FILE).read_text())["autoReleaseTime"]

    later = datetime.now(timezone.utc) + timedelta(hours=1)
    monkeypatch.setattr(lifecycle, "utc_now", lambda: later)
    assert plan_cli.main(args) == 0
    second = json.loads((tmp_path / plan_cli.OUTPUTS_FILE).read_text())["autoReleaseTime"]
    assert plan_cli.main([*args, "--fresh"]) == 0
    fresh = json.loads((tmp_path / plan_cli.OUTPUTS_FILE).read_text())["autoReleaseTime"]

    assert second == first
    assert parse_utc(fresh) - parse_utc(first) >= timedelta(minutes=59)
