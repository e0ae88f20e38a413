"""Shared fixtures: a valid stack config."""

from __future__ import annotations

from typing import Any

import pytest


VALID_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtestkeyonlyfortests0000000000000000000 test@example"


@pytest.fixture
def valid_config() -> dict[str, Any]:
    """Raw settings values that pass validation, as read_config returns them."""
    return {
        "region": "cn-hangzhou",
        "allowedCidrs": ["203.0.113.0/24"],
        "sshPublicKey": VALID_SSH_KEY,
    }

