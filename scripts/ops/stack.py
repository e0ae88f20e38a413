"""Read the Pulumi stack's outputs and config through the `pulumi` CLI."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The Pulumi project (Pulumi.yaml) sits at the repository root, one level above scripts/.
PROJECT_DIR = Path(__file__).resolve().parents[2]

# Output names that __main__.py exports, tried in order; keep them in step with it.
PUBLIC_IP_KEYS = ("publicIp",)
OLLAMA_URL_KEYS = ("endpoint",)
MODELS_KEYS = ("models",)


class StackError(Exception):
    """The pulumi CLI failed or the stack lacks an expected output."""


def _pulumi(args: list[str], stack: str | None) -> str:
    command = ["pulumi", *args, *(["--stack", stack] if stack else [])]
    try:
        result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True,
                                timeout=120, check=False)
    except FileNotFoundError:
        raise StackError("the pulumi CLI was not found on PATH; install it or pass --host/--url") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"`{' '.join(command[:3])}` timed out after 120 s") from None
    if result.returncode != 0:
        raise StackError(f"`{' '.join(command[:3])}` failed (exit {result.returncode}): "
                         f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def outputs(stack: str | None) -> dict[str, Any]:
    """Return the stack's outputs (secrets stay masked)."""
    text = _pulumi(["stack", "output", "--json"], stack)
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise StackError(f"`pulumi stack output --json` printed invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StackError("`pulumi stack output --json` did not print a JSON object")
    return data


def stack_name(stack: str | None) -> str:
    """Return the given stack name, or the currently selected one."""
    if stack:
        return stack
    return _pulumi(["stack", "--show-name"], None).strip()


def pick(data: dict[str, Any], keys: tuple[str, ...], what: str) -> Any:
    """Return the first of `keys` present in the outputs, or raise naming all of them."""
    for key in keys:
        if data.get(key) not in (None, ""):
            return data[key]
    raise StackError(f"the stack has no {what} output (looked for {', '.join(keys)}); "
                     f"run `pulumi up` first, or pass it on the command line")


def config_secret(key: str, stack: str | None) -> str | None:
    """Return a config value in plain text (`pulumi config get` decrypts secrets), None when unset.

    Never log the value.
    """
    try:
        return _pulumi(["config", "get", key], stack).rstrip("\n") or None
    except StackError as exc:
        # pulumi prints "configuration key 'KEY' not found for stack 'NAME'" for an unset key.
        if "configuration key" in str(exc) and "not found" in str(exc):
            return None
        raise
