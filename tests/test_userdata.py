"""Rendered user-data: size, cloud-config validity, content, and the shell it carries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import DEFAULTS, build_settings
from components.userdata import (
    BOOTSTRAP_DIR,
    USER_DATA_LIMIT_BYTES,
    bootstrap_env,
    render_user_data,
)
from tests.stack_plans import cached_plan as plan
from scripts.plan import decode_write_files

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "prod")
# Top-level keys this user-data may use; cloud-init 22.4's schema accepts misspelled ones.
ALLOWED_TOP_LEVEL_KEYS = {"ssh_pwauth", "write_files", "runcmd"}


def require_tool(name: str) -> str:
    """Return the tool's path; skip locally when it is missing, but fail in CI, which installs it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


def user_data_of(stack: str, **overrides: Any) -> str:
    [instance] = plan(stack, **overrides).of_type("alicloud:ecs/instance:Instance")
    return instance.inputs["userData"]


@pytest.mark.parametrize("stack", STACKS)
def test_user_data_size_limit(stack: str) -> None:
    size = len(user_data_of(stack).encode())
    assert size <= USER_DATA_LIMIT_BYTES, f"{stack}: user-data is {size} bytes"


@pytest.mark.parametrize("stack", STACKS)
def test_user_data_passes_cloud_init_schema(stack: str, tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    path = tmp_path / "user-data.yaml"
    path.write_text(user_data_of(stack))
    completed = subprocess.run([cloud_init, "schema", "--config-file", str(path)],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_user_data_top_level_keys(stack: str) -> None:
    document = yaml.safe_load(user_data_of(stack))
    assert set(document) <= ALLOWED_TOP_LEVEL_KEYS


@pytest.mark.parametrize(("stack", "models"), [("dev", "deepseek-r1:14b"), ("prod", "deepseek-r1:32b deepseek-r1:14b")])
def test_user_data_names_models_and_driver(stack: str, models: str) -> None:
    files = decode_write_files(user_data_of(stack))
    env = files["/etc/ollama-bootstrap/bootstrap.env"]
    assert f'MODELS="{models}"' in env
    assert f'DRIVER_VERSION="{DEFAULTS["nvidiaDriverVersion"]}"' in env
    assert f'OLLAMA_VERSION="{DEFAULTS["ollamaVersion"]}"' in env


def test_user_data_carries_disk_serial() -> None:
    result = plan("dev")
    [disk] = result.of_type("alicloud:ecs/ecsDisk:EcsDisk")
    env = decode_write_files(result.of_type("alicloud:ecs/instance:Instance")[0].inputs["userData"])[
        "/etc/ollama-bootstrap/bootstrap.env"]
    assert f'DATA_DISK_SERIAL="{disk.id.removeprefix("d-")}"' in env


def test_user_data_files_and_modes() -> None:
    document = yaml.safe_load(user_data_of("dev"))
    modes = {entry["path"]: entry["permissions"] for entry in document["write_files"]}
    assert modes == {
        "/etc/ollama-bootstrap/bootstrap.env": "0600",
        "/opt/ollama-bootstrap/bootstrap.sh": "0755",
        "/opt/ollama-bootstrap/ollama-auth.py": "0755",
        "/etc/systemd/system/ollama.service": "0644",
        "/etc/systemd/system/ollama-auth.service": "0644",
        "/etc/systemd/system/ollama-bootstrap.service": "0644",
    }
    files = decode_write_files(user_data_of("dev"))
    assert files["/opt/ollama-bootstrap/bootstrap.sh"] == (BOOTSTRAP_DIR / "bootstrap.sh").read_text()
    assert ["systemctl", "start", "--no-block", "ollama-bootstrap.service"] in document["runcmd"]


def test_bootstrap_env_rejects_unsafe_value(valid_config: dict[str, Any]) -> None:
    settings = build_settings(valid_config)
    with pytest.raises(ValueError, match="DATA_DISK_SERIAL"):
        bootstrap_env(settings, 'x"; reboot; "')


def test_render_rejects_disk_id_with_prefix(valid_config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="without 'd-'"):
        render_user_data(build_settings(valid_config), "d-bp1abc")


def test_bootstrap_unit_runs_every_boot() -> None:
    unit = (BOOTSTRAP_DIR / "ollama-bootstrap.service").read_text()
    assert "WantedBy=multi-user.target" in unit
    assert "Type=oneshot" in unit


@pytest.mark.parametrize("script", sorted(path.name for path in BOOTSTRAP_DIR.glob("*.sh")))
def test_bootstrap_shellcheck(script: str) -> None:
    shellcheck = require_tool("shellcheck")
    completed = subprocess.run([shellcheck, "--severity=style", str(BOOTSTRAP_DIR / script)],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout


def test_pulumi_yaml_declares_every_key_with_its_default() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        assert declared[key].get("default") == default, key
        assert declared[key].get("description"), key


def test_oversized_user_data_fails_before_resources() -> None:
    """Guards against ECS rejecting the instance after the VPC and disk already exist."""
    import pulumi

    from scripts.plan import plan_stack

    models = [f"hf.co/example-organization/very-long-model-repository-name-{index}-GGUF:Q4_K_M"
              for index in range(400)]
    with pytest.raises(pulumi.RunError, match=r"over the 32768 bytes ECS accepts"):
        plan_stack("dev", models=models)
