"""Shared fixtures: a valid stack config and a mock run of the Pulumi program."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.plan import PlanResult, load_stack_config, run_program

VALID_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtestkeyonlyfortests0000000000000000000 test@example"


@pytest.fixture
def valid_config() -> dict[str, Any]:
    """Raw settings values that pass validation, as read_config returns them."""
    return {
        "region": "cn-hangzhou",
        "allowedCidrs": ["203.0.113.0/24"],
        "sshPublicKey": VALID_SSH_KEY,
    }


def plan(stack: str = "dev", **overrides: Any) -> PlanResult:
    """Run the program under mocks with a stack's config plus overrides."""
    zones = overrides.pop("mock_zones", ("cn-hangzhou-i", "cn-hangzhou-j"))
    return run_program(load_stack_config(stack, overrides), stack=stack, zones=zones)
