"""The Pulumi program under mocks: resources, rules, placement and exports."""

from __future__ import annotations

import pulumi
import pytest

from components.settings import DEFAULTS
from scripts.plan import plan_stack
from tests.stack_plans import cached_plan as plan

INSTANCE = "alicloud:ecs/instance:Instance"
DISK = "alicloud:ecs/ecsDisk:EcsDisk"
ATTACHMENT = "alicloud:ecs/ecsDiskAttachment:EcsDiskAttachment"
RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"
SWITCH = "alicloud:vpc/switch:Switch"
GET_ZONES = "alicloud:index/getZones:getZones"
GET_IMAGES = "alicloud:ecs/getImages:getImages"


def test_instance_key_inputs() -> None:
    result = plan("dev")
    [instance] = result.of_type(INSTANCE)
    inputs = instance.inputs
    assert inputs["instanceType"] == DEFAULTS["instanceType"], instance.name
    assert inputs["availabilityZone"] == "cn-hangzhou-i"
    assert inputs["systemDiskSize"] == 40
    assert inputs["systemDiskCategory"] == "cloud_essd"
    assert inputs["internetMaxBandwidthOut"] == 100
    assert inputs["instanceChargeType"] == "PostPaid"
    assert inputs["keyName"] == "ollama-alicloud-dev"
    assert inputs["tags"] == {"project": "ollama-alicloud", "stack": "dev"}
    assert inputs["userData"].startswith("#cloud-config\n")


def test_model_disk_inputs() -> None:
    result = plan("prod")
    [disk] = result.of_type(DISK)
    [instance] = result.of_type(INSTANCE)
    [attachment] = result.of_type(ATTACHMENT)
    assert disk.inputs["size"] == 500
    assert disk.inputs["category"] == "cloud_essd"
    assert disk.inputs["zoneId"] == instance.inputs["availabilityZone"] == "cn-beijing-i"
    assert attachment.inputs["diskId"] == disk.id
    assert attachment.inputs["instanceId"] == instance.id


def test_security_group_rules() -> None:
    result = plan("prod", allowedCidrs=["198.51.100.0/24", "192.0.2.10/32"])
    rules = {(rule.inputs["type"], rule.inputs["ipProtocol"], rule.inputs["portRange"], rule.inputs["cidrIp"])
             for rule in result.of_type(RULE)}
    expected = {("ingress", "tcp", port, cidr)
                for port in ("11434/11434", "22/22")
                for cidr in ("198.51.100.0/24", "192.0.2.10/32")}
    assert rules == expected
    assert len(result.of_type(RULE)) == len(expected), "no duplicate or extra rules"


def test_zone_picked_from_stock_lookup() -> None:
    result = plan("dev", mock_zones=("cn-hangzhou-k", "cn-hangzhou-h"))
    [call] = [args for token, args in result.invokes if token == GET_ZONES]
    assert call["availableInstanceType"] == DEFAULTS["instanceType"]
    assert call["instanceChargeType"] == "PostPaid"
    assert call["availableResourceCreation"] == "Instance"
    zones = {result.of_type(INSTANCE)[0].inputs["availabilityZone"], result.of_type(DISK)[0].inputs["zoneId"],
             result.of_type(SWITCH)[0].inputs["zoneId"]}
    assert zones == {"cn-hangzhou-h"}, "vSwitch, disk and instance share the first zone in stock"
    assert result.exports["zone"] == "cn-hangzhou-h"


def test_configured_zone_skips_lookup() -> None:
    result = plan("prod")
    assert GET_ZONES not in [token for token, _ in result.invokes]


def test_no_zone_in_stock_fails() -> None:
    with pytest.raises(pulumi.RunError, match=r"no zone in region cn-hangzhou has ecs.gn7i-c16g1.4xlarge"):
        plan("dev", mock_zones=())


def test_image_lookup_anchored_alinux3() -> None:
    result = plan("dev")
    [call] = [args for token, args in result.invokes if token == GET_IMAGES]
    assert call["nameRegex"] == "^aliyun_3_x64_20G_alibase_"
    assert call["owners"] == "system"
    assert call["mostRecent"] is True
    assert result.of_type(INSTANCE)[0].inputs["imageId"] == "m-mockalinux3image"


def test_configured_image_skips_lookup() -> None:
    result = plan("dev", imageId="m-bp1customimage")
    assert GET_IMAGES not in [token for token, _ in result.invokes]
    assert result.of_type(INSTANCE)[0].inputs["imageId"] == "m-bp1customimage"


def test_exports_built_from_public_ip() -> None:
    result = plan("dev")
    [instance] = result.of_type(INSTANCE)
    assert result.exports["publicIp"] == "203.0.113.10"
    assert result.exports["endpoint"] == "http://203.0.113.10:11434"
    assert result.exports["openaiBaseUrl"] == "http://203.0.113.10:11434/v1"
    assert result.exports["instanceId"] == instance.id
    assert result.exports["models"] == ["deepseek-r1:14b"]
    assert result.exports["sshCommand"] == "ssh root@203.0.113.10"


def test_existing_network_reused() -> None:
    result = plan("prod", vpcId="vpc-bp1existing", vswitchId="vsw-bp1existing")
    assert not result.of_type(SWITCH)
    assert not result.of_type("alicloud:vpc/network:Network")
    assert result.of_type(INSTANCE)[0].inputs["vswitchId"] == "vsw-bp1existing"
    assert result.of_type("alicloud:ecs/securityGroup:SecurityGroup")[0].inputs["vpcId"] == "vpc-bp1existing"


def test_invalid_settings_declare_nothing() -> None:
    with pytest.raises(pulumi.RunError, match=r"nvidiaDriverVersion = '470.82.01'") as raised:
        plan("dev", nvidiaDriverVersion="470.82.01")
    assert "pulumi config set nvidiaDriverVersion" in str(raised.value)


def test_instance_replaced_on_user_data_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against in-place user-data updates, which reboot the server without re-running cloud-init."""
    from components import gpu_server

    captured = {}
    real_instance = gpu_server.ecs.Instance

    def capture(name: str, **kwargs: object) -> object:
        captured[name] = kwargs["opts"]
        return real_instance(name, **kwargs)

    monkeypatch.setattr(gpu_server.ecs, "Instance", capture)
    plan_stack("dev")
    [opts] = captured.values()
    assert opts.replace_on_changes == ["userData"]
    assert opts.delete_before_replace is True
    assert set(opts.ignore_changes) == {"imageId", "availabilityZone"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stack_needs_own_network_and_key(stack: str) -> None:
    """Guards against deploying an example stack as shipped, to a server nobody can reach."""
    from components.settings import SettingsError, build_settings
    from scripts.plan import ROOT

    import yaml

    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("ollama-alicloud:")}
    values["region"] = config["alicloud:region"]
    with pytest.raises(SettingsError) as raised:
        build_settings(values, stack=stack)
    assert {problem.key for problem in raised.value.problems} == {"allowedCidrs", "sshPublicKey"}
