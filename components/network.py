"""Network: VPC and vSwitch (new or existing) and the security group in front of the API."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
from pulumi_alicloud import ecs, vpc

from components.settings import Settings

OLLAMA_PORT = 11434
SSH_PORT = 22
VPC_CIDR = "10.42.0.0/16"
VSWITCH_CIDR = "10.42.1.0/24"


@dataclass
class NetworkArgs:
    """Inputs of the Network component."""

    settings: Settings
    """Validated stack settings."""
    zone: str
    """Zone for a new vSwitch; the instance and disk use the same zone."""


class Network(pulumi.ComponentResource):
    """A VPC, a vSwitch and a security group that admits only 11434 and 22.

    11434 is open to allowedCidrs; 22 only to the entries narrower than /8, unless
    allowPublicSsh is set.
    """

    vpc_id: pulumi.Output[str]
    vswitch_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ollama-alicloud:index:Network", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        tags = {"project": settings.project, "stack": settings.stack}

        if settings.vpc_id and settings.vswitch_id:
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.vswitch_id = pulumi.Output.from_input(settings.vswitch_id)
        else:
            network = vpc.Network(
                f"{name}-vpc",
                vpc_name=settings.resource_prefix,
                cidr_block=VPC_CIDR,
                tags=tags,
                opts=child,
            )

            # A later change of the chosen zone must not replace the vSwitch under a running instance.
            vswitch = vpc.Switch(
                f"{name}-vswitch",
                vswitch_name=settings.resource_prefix,
                vpc_id=network.id,
                cidr_block=VSWITCH_CIDR,
                zone_id=args.zone,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["zoneId"]),
            )
            self.vpc_id = network.id
            self.vswitch_id = vswitch.id

        # In a VPC, a new security group allows all egress and no ingress: the rules
        # below are the only way in.
        group = ecs.SecurityGroup(
            f"{name}-sg",
            security_group_name=settings.resource_prefix,
            description="Ollama API and SSH from allowedCidrs only",
            vpc_id=self.vpc_id,
            tags=tags,
            opts=child,
        )
        self.security_group_id = group.id

        rules = [(OLLAMA_PORT, "ollama", cidr) for cidr in settings.allowed_cidrs]
        rules += [(SSH_PORT, "ssh", cidr) for cidr in settings.ssh_cidrs]
        for port, purpose, cidr in rules:
            ecs.SecurityGroupRule(
                f"{name}-{purpose}-{_slug(cidr)}",
                security_group_id=group.id,
                type="ingress",
                ip_protocol="tcp",
                port_range=f"{port}/{port}",
                cidr_ip=cidr,
                nic_type="intranet",
                policy="accept",
                priority=1,
                description=f"{purpose} from {cidr}",
                opts=child,
            )

        self.register_outputs(
            {"vpcId": self.vpc_id, "vswitchId": self.vswitch_id, "securityGroupId": self.security_group_id}
        )


def _slug(cidr: str) -> str:
    """Turn a CIDR into a resource-name fragment; names stay stable when other CIDRs change."""
    return re.sub(r"[./]", "-", cidr)
