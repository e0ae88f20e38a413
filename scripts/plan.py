#!/usr/bin/env python3
"""Show what `pulumi up` would create, offline: no credentials, no network, no Pulumi CLI.

Runs the project's own __main__.py under Pulumi's mock engine with a stack's config
(Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then --set overrides), prints every
resource with its key inputs and the exports, and writes the rendered user-data and
the files it puts on the instance to --out for review.

Exit codes: 0 plan shown, 2 invalid settings or arguments.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import logging
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "ollama-alicloud"
MOCK_PUBLIC_IP = "203.0.113.10"
MOCK_ZONES = ("cn-hangzhou-i", "cn-hangzhou-j")
MOCK_IMAGE_ID = "m-mockalinux3image"
MOCK_ACCOUNT_ID = "1234567890123456"
# Hourly prices the mocked look-up quotes, as strings like the real data source.
MOCK_PRICE = "11.26"
MOCK_SPOT_PRICE = "2.25"
# Outputs of each stack's last mock run in this process: what a StackReference to the
# stack reads, as the backend would return it after a `pulumi up`.
MOCK_STACK_OUTPUTS: dict[str, dict[str, Any]] = {}
# File under the --out directory that keeps a plan's outputs for the next plan.
OUTPUTS_FILE = "stack-outputs.json"
# Keys the plan treats as `pulumi config set --secret` values.
SECRET_KEYS = {f"{PROJECT}:apiKey"}
# Stands in for an encrypted value from a stack file, which the plan cannot decrypt.
SECRET_PLACEHOLDER = "plan-placeholder-for-an-encrypted-secret-value-0000"

logger = logging.getLogger("plan")


@dataclass
class PlannedResource:
    """One resource the program declared."""

    type: str
    name: str
    inputs: dict[str, Any]
    id: str


@dataclass
class PlanResult:
    """Everything a mock run of the program produced."""

    resources: list[PlannedResource] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[PlannedResource]:
        """Return the resources of one type token, in declaration order."""
        return [resource for resource in self.resources if resource.type == type_token]


def _import_pulumi() -> Any:
    import pulumi  # noqa: PLC0415 - imported late so --help works without the SDK

    return pulumi


class PlanMocks:
    """Pulumi mocks that stand in for the Alibaba Cloud API and record every call.

    `zones` is what the zone look-up returns (an empty list means "sold out
    everywhere"); `images` likewise for the image look-up.
    """

    def __init__(self, result: PlanResult, zones: tuple[str, ...] = MOCK_ZONES,
                 images: tuple[str, ...] = (MOCK_IMAGE_ID,), spot_zones: tuple[str, ...] | None = None,
                 kept_disks: tuple[dict[str, Any], ...] = (), stack_outputs: dict[str, Any] | None = None) -> None:
        self.result = result
        self.zones = zones
        self.images = images
        self.spot_zones = zones if spot_zones is None else spot_zones
        self.kept_disks = kept_disks
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        digest = hashlib.sha256(args.name.encode()).hexdigest()[:16]
        prefix = {
            "alicloud:ecs/instance:Instance": "i-",
            "alicloud:ecs/ecsDisk:EcsDisk": "d-",
            "alicloud:vpc/network:Network": "vpc-",
            "alicloud:vpc/switch:Switch": "vsw-",
            "alicloud:ecs/securityGroup:SecurityGroup": "sg-",
        }.get(args.typ, "")
        # An imported resource keeps its ID, as `pulumi up` does with the import option.
        resource_id = args.resource_id or f"{prefix}{digest}"
        state = dict(args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            state = {"name": args.inputs.get("name"), "outputs": self.stack_outputs, "secretOutputNames": []}
        if args.typ == "alicloud:ecs/instance:Instance":
            state["publicIp"] = MOCK_PUBLIC_IP
        self.result.resources.append(PlannedResource(args.typ, args.name, dict(args.inputs), resource_id))
        return resource_id, state

    def call(self, args: Any) -> dict[str, Any]:
        self.result.invokes.append((args.token, dict(args.args)))
        if args.token == "alicloud:index/getZones:getZones":
            zones = self._zones(args.args)
            return {"ids": zones, "zones": [{"id": zone} for zone in zones]}
        if args.token == "alicloud:ecs/getImages:getImages":
            return {"ids": list(self.images), "images": [{"id": image} for image in self.images]}
        if args.token == "alicloud:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": MOCK_ACCOUNT_ID, "arn": f"acs:ram::{MOCK_ACCOUNT_ID}:root", "id": MOCK_ACCOUNT_ID,
                    "identityType": "Account"}
        if args.token == "alicloud:ecs/getInstanceTypes:getInstanceTypes":
            price = MOCK_SPOT_PRICE if args.args.get("spotStrategy") == "SpotAsPriceGo" else MOCK_PRICE
            instance_type = args.args.get("instanceType", "")
            return {"ids": [instance_type], "instanceTypes": [{"id": instance_type, "price": price}]}
        if args.token == "alicloud:ecs/getEcsDisks:getEcsDisks":
            return {"ids": [disk["id"] for disk in self.kept_disks], "disks": list(self.kept_disks)}
        return {}

    def _zones(self, args: Any) -> list[str]:
        return list(self.spot_zones if args.get("spotStrategy") == "SpotAsPriceGo" else self.zones)


# The example stacks leave out the user's own network and key, so that `pulumi up`
# fails on them; the offline plan fills in these documentation values instead.
PLAN_PLACEHOLDERS: dict[str, Any] = {
    f"{PROJECT}:allowedCidrs": ["203.0.113.0/24"],
    f"{PROJECT}:sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanPlaceholderNotAKey000000000000000000 plan",
}


def load_stack_config(stack: str, overrides: dict[str, Any] | None = None,
                      root: Path = ROOT) -> dict[str, Any]:
    """Return the stack's config as `pulumi config` would see it: namespaced keys to values.

    Keys in PLAN_PLACEHOLDERS that neither the stack file nor the overrides set get
    their placeholder value.
    """
    config: dict[str, Any] = {}
    stack_file = root / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        config.update((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})
    for key, value in (overrides or {}).items():
        config[key if ":" in key else f"{PROJECT}:{key}"] = value
    for key, value in PLAN_PLACEHOLDERS.items():
        if key not in config:
            logger.info("%s is not set in Pulumi.%s.yaml; the plan uses %s", key, stack, value)
            config[key] = value
    return config


def run_program(config: dict[str, Any], stack: str = "dev", zones: tuple[str, ...] = MOCK_ZONES,
                images: tuple[str, ...] = (MOCK_IMAGE_ID,), program: Path = ROOT / "__main__.py",
                spot_zones: tuple[str, ...] | None = None, kept_disks: tuple[dict[str, Any], ...] = (),
                stack_outputs: dict[str, Any] | None = None) -> PlanResult:
    """Run the Pulumi program under mocks and return what it declared and exported.

    `stack_outputs` is what a StackReference to the stack itself reads; None means the
    exports of this stack's last run in this process, the way a backend returns the
    outputs of the last `pulumi up`. `spot_zones` is what the spot stock look-up
    returns (None: the same as `zones`), `kept_disks` what the kept-disk look-up returns.

    Raises whatever the program raises, e.g. pulumi.RunError for invalid settings.
    """
    pulumi = _import_pulumi()
    from pulumi.runtime import settings as runtime_settings  # noqa: PLC0415
    from pulumi.runtime.config import set_all_config  # noqa: PLC0415
    from pulumi.runtime.mocks import set_mocks  # noqa: PLC0415
    from pulumi.runtime.sync_await import _sync_await  # noqa: PLC0415
    from pulumi.runtime.stack import run_pulumi_func  # noqa: PLC0415

    result = PlanResult()
    secret_keys = set(SECRET_KEYS)
    strings = {}
    for key, value in config.items():
        if isinstance(value, dict) and "secure" in value:
            value = SECRET_PLACEHOLDER
            secret_keys.add(key)
        # Pulumi stores config values as strings; lists and maps as JSON.
        strings[key] = value if isinstance(value, str) else json.dumps(value)
    set_all_config(strings, sorted(secret_keys))
    previous = MOCK_STACK_OUTPUTS.get(stack, {}) if stack_outputs is None else stack_outputs
    mocks = PlanMocks(result, zones, images, spot_zones=spot_zones, kept_disks=kept_disks, stack_outputs=previous)
    set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    runtime_settings.SETTINGS.rpc_manager.clear()

    exported: dict[str, Any] = {}

    def record_export(name: str, value: Any) -> None:
        exported[name] = value

    def program_body() -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        with mock.patch.object(pulumi, "export", record_export):
            runpy.run_path(str(program), run_name="__main__")

    _sync_await(run_pulumi_func(program_body))

    async def resolve_exports() -> dict[str, Any]:
        resolved = {}
        for name, value in exported.items():
            resolved[name] = await pulumi.Output.from_input(value).future()
        return resolved

    result.exports = _sync_await(resolve_exports())
    MOCK_STACK_OUTPUTS[stack] = dict(result.exports)
    return result


def plan_stack(stack: str = "dev", mock_zones: tuple[str, ...] = MOCK_ZONES,
               mock_spot_zones: tuple[str, ...] | None = None, mock_kept_disks: tuple[dict[str, Any], ...] = (),
               **overrides: Any) -> PlanResult:
    """Run the program under mocks with a stack's config plus overrides (project-namespace keys)."""
    return run_program(load_stack_config(stack, overrides), stack=stack, zones=mock_zones,
                       spot_zones=mock_spot_zones, kept_disks=mock_kept_disks)


def decode_write_files(user_data: str) -> dict[str, str]:
    """Return the files a #cloud-config writes, decoded, by path."""
    document = yaml.safe_load(user_data)
    files = {}
    for entry in document.get("write_files", []):
        content = entry.get("content", "")
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode()
        files[entry["path"]] = content
    return files


# Inputs worth showing per resource type; everything else is in the full inputs.
KEY_INPUTS = {
    "alicloud:ecs/instance:Instance": ("instanceType", "availabilityZone", "imageId", "systemDiskSize",
                                       "internetMaxBandwidthOut", "instanceChargeType", "spotStrategy",
                                       "spotInterruptionBehavior", "autoReleaseTime"),
    "alicloud:ecs/ecsDisk:EcsDisk": ("size", "category", "zoneId", "snapshotId"),
    "alicloud:ram/role:Role": ("roleName",),
    "alicloud:ram/policy:Policy": ("policyName", "policyDocument"),
    "alicloud:ecs/ramRoleAttachment:RamRoleAttachment": ("ramRoleName",),
    "alicloud:ecs/securityGroupRule:SecurityGroupRule": ("type", "ipProtocol", "portRange", "cidrIp"),
    "alicloud:vpc/network:Network": ("cidrBlock",),
    "alicloud:vpc/switch:Switch": ("cidrBlock", "zoneId"),
    "alicloud:ecs/ecsKeyPair:EcsKeyPair": ("keyPairName",),
}


def print_plan(result: PlanResult) -> None:
    """Print the resources and exports as tables."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    table = Table(title="Resources `pulumi up` would create")
    table.add_column("type")
    table.add_column("name")
    table.add_column("key inputs")
    for resource in result.resources:
        keys = KEY_INPUTS.get(resource.type, ())
        shown = "\n".join(f"{key}={_format_value(resource.inputs[key])}" for key in keys if key in resource.inputs)
        table.add_row(resource.type.split(":")[-1], resource.name, shown)
    console.print(table)

    exports = Table(title="Exports")
    exports.add_column("name")
    exports.add_column("value")
    for name, value in result.exports.items():
        exports.add_row(name, json.dumps(value) if not isinstance(value, str) else value)
    console.print(exports)


def _format_value(value: Any) -> str:
    # The engine passes every number as a float.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_review_files(result: PlanResult, out_dir: Path) -> Path:
    """Write user-data.yaml and the decoded instance files under out_dir; return its path."""
    instances = result.of_type("alicloud:ecs/instance:Instance")
    user_data = instances[0].inputs["userData"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "user-data.yaml").write_text(user_data)
    for path, content in decode_write_files(user_data).items():
        target = out_dir / "files" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return out_dir / "user-data.yaml"


def parse_set(values: list[str]) -> dict[str, Any]:
    """Parse --set KEY=VALUE pairs; VALUE is read as YAML, so lists and numbers work."""
    overrides = {}
    for item in values:
        key, separator, raw = item.partition("=")
        if not separator or not key:
            raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(raw) if raw else ""
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml to read (default: dev)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set 'models=[qwen3:8b]' (repeatable)")
    parser.add_argument("--zones", default=",".join(MOCK_ZONES),
                        help="comma-separated zones the mocked stock look-up returns; empty means sold out")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the rendered user-data (default: plan/<stack>)")
    parser.add_argument("--spot-zones", default=None,
                        help="comma-separated zones the mocked spot stock look-up returns (default: --zones)")
    parser.add_argument("--fresh", action="store_true",
                        help=f"plan as for a stack never deployed: ignore the outputs in <out>/{OUTPUTS_FILE}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    pulumi = _import_pulumi()
    try:
        overrides = parse_set(args.set)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    zones = tuple(zone for zone in args.zones.split(",") if zone)

    spot_zones = None if args.spot_zones is None else tuple(zone for zone in args.spot_zones.split(",") if zone)
    out_dir = args.out or ROOT / "plan" / args.stack
    # The outputs of the previous plan stand in for the backend's, so a second plan shows
    # what a second `pulumi up` would do (the auto-release time, for one, stays the same).
    outputs_file = out_dir / OUTPUTS_FILE
    previous = {} if args.fresh or not outputs_file.exists() else json.loads(outputs_file.read_text())

    try:
        with contextlib.redirect_stderr(sys.stderr):
            result = run_program(load_stack_config(args.stack, overrides), stack=args.stack, zones=zones,
                                 spot_zones=spot_zones, stack_outputs=previous)
    except pulumi.RunError as error:
        logger.error("%s", error)
        return 2

    print_plan(result)
    logger.info("zones, image, prices, resource IDs and the public IP above come from mocks, not from Alibaba Cloud")
    written = write_review_files(result, out_dir)
    outputs_file.write_text(json.dumps(result.exports, indent=2, default=str) + "\n")
    size = len(written.read_bytes())
    logger.info("user-data written to %s (%d bytes); instance files under %s", written, size,
                written.parent / "files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
