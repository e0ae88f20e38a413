"""The instance RAM role that lets the idle-stop timer stop its own instance, and nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass
import pulumi
import pulumi_alicloud as alicloud
from pulumi_alicloud import ecs, ram

from components.settings import Settings

# The one API action the idle-stop script calls.
STOP_ACTION = "ecs:StopInstance"


def trust_policy() -> str:
    """Return the trust policy that lets ECS instances, and only them, assume the role."""
    return json.dumps({
        "Version": "1",
        "Statement": [{
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Principal": {"Service": ["ecs.aliyuncs.com"]},
        }],
    })


def stop_policy(region: str, account_id: str, instance_id: str) -> str:
    """Return the policy that allows StopInstance on one instance of one account."""
    return json.dumps({
        "Version": "1",
        "Statement": [{
            "Effect": "Allow",
            "Action": [STOP_ACTION],
            "Resource": [f"acs:ecs:{region}:{account_id}:instance/{instance_id}"],
        }],
    })


@dataclass
class IdleStopArgs:
    """Inputs of the IdleStopRole component."""

    settings: Settings
    """Validated stack settings."""
    instance_id: pulumi.Input[str]
    """The instance that may stop itself."""


class IdleStopRole(pulumi.ComponentResource):
    """A RAM role for the instance whose policy allows only stopping that instance.

    The idle-stop script on the instance reads the role's temporary credentials from
    the metadata service, so no access key is stored on the instance.
    """

    role_name: pulumi.Output[str]
    policy_document: pulumi.Output[str]

    def __init__(self, name: str, args: IdleStopArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ollama-alicloud:index:IdleStopRole", name, None, opts)
        settings = args.settings
        tags = {"project": settings.project, "stack": settings.stack}
        account_id = alicloud.get_caller_identity().account_id

        role = ram.Role(
            f"{name}-role",
            role_name=settings.idle_stop_role_name,
            assume_role_policy_document=trust_policy(),
            description="Lets the Ollama instance stop itself when idle",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.policy_document = pulumi.Output.from_input(args.instance_id).apply(
            lambda instance_id: stop_policy(settings.region, account_id, instance_id)
        )
        policy = ram.Policy(
            f"{name}-policy",
            policy_name=settings.idle_stop_role_name,
            policy_document=self.policy_document,
            description="StopInstance on the Ollama instance only",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

        ram.RolePolicyAttachment(
            f"{name}-policy-attachment",
            role_name=role.role_name,
            policy_name=policy.policy_name,
            policy_type="Custom",
            opts=pulumi.ResourceOptions(parent=self),
        )

        # The provider deprecates Instance.role_name in favour of this resource.
        ecs.RamRoleAttachment(
            f"{name}-instance-role",
            instance_id=args.instance_id,
            ram_role_name=role.role_name,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.role_name = role.role_name
        self.register_outputs({"roleName": self.role_name, "policyDocument": self.policy_document})

