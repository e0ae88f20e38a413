"""Cloud-init user-data: the bootstrap files from components/bootstrap plus the settings.

The shell lives in .sh files that shellcheck reads; Python only passes values through
bootstrap.env, one KEY="value" per line, which systemd and bash both parse the same way
because every value is checked against a safe character set first.
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.settings import Settings

BOOTSTRAP_DIR = Path(__file__).parent / "bootstrap"

# ECS rejects user-data over 32 KB (before Base64). The example stacks stay under
# USER_DATA_LIMIT_BYTES, a margin that tests check.
ECS_USER_DATA_MAX_BYTES = 32 * 1024
USER_DATA_LIMIT_BYTES = 16 * 1024
# Disk IDs are "d-" and 20 lowercase letters and digits, so a serial this long sizes the
# user-data before the disk exists.
PLACEHOLDER_DISK_SERIAL = "0" * 20

BOOTSTRAP_SCRIPT_PATH = "/opt/ollama-bootstrap/bootstrap.sh"
BOOTSTRAP_ENV_PATH = "/etc/ollama-bootstrap/bootstrap.env"
IDLE_STOP_SCRIPT_PATH = "/opt/ollama-bootstrap/ollama-idle-stop.py"

# Characters that mean the same inside double quotes to bash and to systemd.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9 ._:/@+=,%~*-]*$")

# Without an API key Ollama serves the API port itself; with one, nginx takes the port
# and Ollama moves to a loopback-only port behind it.
PUBLIC_BIND = "0.0.0.0:11434"
LOOPBACK_BIND = "127.0.0.1:11435"


@dataclass(frozen=True)
class InstanceFile:
    """A file that cloud-init writes on the instance."""

    path: str
    content: str
    permissions: str
    compress: bool = False


def read_bootstrap_file(name: str) -> str:
    """Return a file from components/bootstrap, failing loudly when it is missing."""
    path = BOOTSTRAP_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"bootstrap file missing from the repository: {path}")
    return path.read_text()


def bootstrap_env(settings: Settings, data_disk_serial: str) -> str:
    """Render bootstrap.env: the settings that bootstrap.sh reads."""
    values = {
        "OLLAMA_VERSION": settings.ollama_version,
        "OLLAMA_BASE_URL": settings.ollama_base_url,
        "DRIVER_VERSION": settings.nvidia_driver_version,
        "DRIVER_BASE_URL": settings.driver_base_url,
        "MODELS": " ".join(settings.models),
        "MODEL_REGISTRY": settings.model_registry or "",
        "MODEL_REGISTRY_INSECURE": "true" if settings.model_registry_insecure else "false",
        "DATA_DISK_SERIAL": data_disk_serial,
        "DATA_DISK_WAIT_SECONDS": str(settings.data_disk_wait_seconds),
        "OLLAMA_BIND": LOOPBACK_BIND if settings.api_key_sha256 else PUBLIC_BIND,
        "OLLAMA_KEEP_ALIVE": settings.keep_alive,
        "PULL_STALL_SECONDS": str(settings.pull_stall_seconds),
        "PULL_RETRIES": str(settings.pull_retries),
        "IDLE_STOP_MINUTES": str(settings.idle_stop_minutes),
        "IDLE_STOP_ROLE": settings.idle_stop_role_name,
        "ECS_API_ENDPOINT": settings.ecs_api_endpoint,
        "INSTANCE_METADATA_URL": settings.instance_metadata_url,
        "API_KEY_SHA256": settings.api_key_sha256 or "",
        "ALLOW_MODEL_MANAGEMENT": "true" if settings.allow_model_management else "false",
        "ALLOWED_ORIGINS": ",".join(settings.allowed_origins),
    }
    lines = ["# Written by cloud-init from the Pulumi stack settings; read by bootstrap.sh."]
    for key, value in values.items():
        if not SAFE_VALUE.fullmatch(value):
            raise ValueError(f"bootstrap.env: {key} has characters that are unsafe in a shell: {value!r}")
        lines.append(f'{key}="{value}"')
    return "\n".join(lines) + "\n"


def instance_files(settings: Settings, data_disk_serial: str) -> list[InstanceFile]:
    """List the files the user-data writes, in the order cloud-init writes them."""
    return [
        InstanceFile(BOOTSTRAP_ENV_PATH, bootstrap_env(settings, data_disk_serial), "0600"),
        InstanceFile(BOOTSTRAP_SCRIPT_PATH, read_bootstrap_file("bootstrap.sh"), "0755", compress=True),
        InstanceFile("/opt/ollama-bootstrap/ollama-auth.py", read_bootstrap_file("ollama-auth.py"), "0755",
                     compress=True),
        InstanceFile("/etc/systemd/system/ollama.service", read_bootstrap_file("ollama.service"), "0644"),
        InstanceFile("/etc/systemd/system/ollama-auth.service", read_bootstrap_file("ollama-auth.service"), "0644"),
        InstanceFile(
            "/etc/systemd/system/ollama-bootstrap.service",
            read_bootstrap_file("ollama-bootstrap.service"),
            "0644",
        ),
    ] + idle_stop_files(settings)


def idle_stop_files(settings: Settings) -> list[InstanceFile]:
    """List the idle-stop script and its timer, or nothing when idleStopMinutes is 0."""
    if settings.idle_stop_minutes <= 0:
        return []
    return [
        InstanceFile(IDLE_STOP_SCRIPT_PATH, read_bootstrap_file("ollama-idle-stop.py"), "0755", compress=True),
        InstanceFile("/etc/systemd/system/ollama-idle-stop.service",
                     read_bootstrap_file("ollama-idle-stop.service"), "0644"),
        InstanceFile("/etc/systemd/system/ollama-idle-stop.timer",
                     read_bootstrap_file("ollama-idle-stop.timer"), "0644"),
    ]


def idle_stop_commands(settings: Settings) -> list[list[str]]:
    """Return the runcmd entries that start the idle-stop timer; enabling it keeps it on after a reboot."""
    if settings.idle_stop_minutes <= 0:
        return []
    return [["systemctl", "enable", "--now", "ollama-idle-stop.timer"]]


class UserDataTooLarge(ValueError):
    """Raised when the rendered user-data would exceed what ECS accepts."""


def check_user_data_size(settings: Settings) -> int:
    """Return the rendered user-data's size in bytes, or raise UserDataTooLarge over the ECS limit.

    Call it before declaring resources: ECS would reject the instance only after the
    VPC and the disk exist.
    """
    size = len(render_user_data(settings, PLACEHOLDER_DISK_SERIAL).encode())
    if size > ECS_USER_DATA_MAX_BYTES:
        raise UserDataTooLarge(
            f"the rendered user-data is {size} bytes, over the {ECS_USER_DATA_MAX_BYTES} bytes ECS accepts; "
            f"configure fewer models (pulumi config set --path 'models[N]' ...) or turn off idleStopMinutes"
        )
    return size


def render_user_data(settings: Settings, data_disk_serial: str) -> str:
    """Render the #cloud-config user-data for one instance.

    The script is gzipped because user-data is size-limited; the other files stay
    readable in the console. The bootstrap runs as a systemd service rather than from
    runcmd so that it runs again on every boot and does not hold up cloud-init.
    """
    if not re.fullmatch(r"[a-z0-9]+", data_disk_serial):
        raise ValueError(f"data disk serial must be the disk ID without 'd-', got {data_disk_serial!r}")

    write_files = []
    for item in instance_files(settings, data_disk_serial):
        entry: dict[str, str] = {"path": item.path, "permissions": item.permissions, "owner": "root:root"}
        if item.compress:
            entry["encoding"] = "gz+b64"
            entry["content"] = base64.b64encode(gzip.compress(item.content.encode(), mtime=0)).decode()
        else:
            entry["content"] = item.content
        write_files.append(entry)

    document = {
        # Key pairs only: no SSH password login, whatever the image's default.
        "ssh_pwauth": False,
        "write_files": write_files,
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "ollama-bootstrap.service"],
            ["systemctl", "start", "--no-block", "ollama-bootstrap.service"],
        ] + idle_stop_commands(settings),
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=1000)


class _LiteralDumper(yaml.SafeDumper):
    """YAML dumper that writes multi-line strings as literal blocks, for review."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)
