"""Stack settings: read once from Pulumi config, validated before any resource exists.

Every key here is declared in Pulumi.yaml with the same default; a test keeps the two
in step. Validation collects every problem at once so a user fixes them in one pass,
and each message names the key, the bad value and the `pulumi config set` that fixes it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

PROJECT = "ollama-alicloud"

# Defaults of the project-namespace keys, mirrored in Pulumi.yaml.
DEFAULTS: dict[str, Any] = {
    "instanceType": "ecs.gn7i-c16g1.4xlarge",
    "zone": "",
    "imageId": "",
    "systemDiskSize": 40,
    "dataDiskSize": 500,
    "dataDiskCategory": "cloud_essd",
    "models": ["deepseek-r1:32b"],
    "ollamaVersion": "0.32.15",
    "nvidiaDriverVersion": "550.127.08",
    "allowedCidrs": [],
    "sshPublicKey": "",
    "internetBandwidthOut": 100,
    "allowPublicUnauthenticated": False,
    "apiKey": "",
    "allowModelManagement": False,
    "allowPublicSsh": False,
    "allowedOrigins": [],
    "vpcId": "",
    "vswitchId": "",
    "keepAlive": "1h",
    "driverBaseUrl": "https://us.download.nvidia.com/tesla",
    "ollamaBaseUrl": "https://github.com/ollama/ollama/releases/download",
    "modelRegistry": "",
    "modelRegistryInsecure": False,
    "pullStallSeconds": 300,
    "pullRetries": 5,
    "dataDiskWaitSeconds": 600,
    "spot": False,
    "spotInterruptionBehavior": "Stop",
    "spotFallback": False,
    "ttlHours": 0,
    "ttlRenewedAt": "",
    "idleStopMinutes": 0,
    "keepModelDisk": False,
    "dataDiskSnapshotId": "",
    "ecsApiEndpoint": "",
    "instanceMetadataUrl": "http://100.100.100.200",
}

# Download sizes in GB (Q4_K_M) from the Ollama library pages; the disk check adds
# headroom on top. Models not listed here are not size-checked.
MODEL_DOWNLOAD_GB: dict[str, float] = {
    "deepseek-r1:7b": 4.7,
    "deepseek-r1:14b": 9.0,
    "deepseek-r1:32b": 20.0,
    "deepseek-r1:70b": 43.0,
}

# Room for blobs of re-pulled tags and partial downloads beside the models themselves.
DISK_HEADROOM_FACTOR = 1.5
DISK_HEADROOM_GIB = 10

# Ollama releases below each version carry the named vulnerability.
OLLAMA_VULNERABLE_BELOW: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((0, 1, 34), "CVE-2024-37032"),
    ((0, 17, 1), "CVE-2026-7482"),
    ((0, 20, 3), "CVE-2026-7020"),
)

# Ollama needs driver 550 or newer for its CUDA 12 build; 470 leaves it on the CPU.
MIN_DRIVER_MAJOR = 550

DISK_CATEGORIES = ("cloud_essd", "cloud_auto", "cloud_essd_entry", "cloud_ssd", "cloud_efficiency")

# GPU families: gn* (whole GPUs), vgn*/sgn* (GPU slices), ebmgn*/sccgn* (bare metal).
GPU_INSTANCE_TYPE = re.compile(r"^ecs\.(?:ebm|scc)?[vs]?gn\d+[a-z]*(?:-[a-z0-9]+)?\.[a-z0-9]+$")
INSTANCE_TYPE = re.compile(r"^ecs\.[a-z0-9-]+\.[a-z0-9]+$")
ZONE = re.compile(r"^[a-z]{2}-[a-z0-9-]+$")
REGION = re.compile(r"^[a-z]{2}-[a-z0-9-]+$")
IMAGE_ID = re.compile(r"^m-[a-z0-9]+$")
VPC_ID = re.compile(r"^vpc-[a-z0-9]+$")
VSWITCH_ID = re.compile(r"^vsw-[a-z0-9]+$")
# [registry/][namespace/]name[:tag], as Ollama accepts it; hf.co repositories use capitals.
MODEL_NAME = re.compile(
    r"^(?:[a-z0-9][a-z0-9.-]*(?::\d{1,5})?/)?(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$"
)
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
DRIVER_VERSION = re.compile(r"^(\d{3})\.\d{1,3}(?:\.\d{1,3})?$")
KEEP_ALIVE = re.compile(r"^(?:-1|0|\d+(?:ms|s|m|h)|(?:\d+h)?(?:\d+m)?(?:\d+s)?)$")
SSH_PUBLIC_KEY = re.compile(
    r"^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,3}(?: [^\"'\n]*)?$"
)
BASE_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~%/-]*)?$")
REGISTRY_HOST = re.compile(r"^[a-z0-9][a-z0-9.-]*(?::\d{1,5})?$")

# API keys are checked by hash on the instance, and the hash is readable in the
# user-data, so a key must be long and random enough that the hash cannot be reversed.
MIN_API_KEY_LENGTH = 32
API_KEY = re.compile(r"^[\x21-\x7e]+$")
ORIGIN = re.compile(r"^(?:\*|https?://[A-Za-z0-9.-]+(?::\d{1,5})?)$")
API_KEY_FIX = 'pulumi config set --secret apiKey "$(openssl rand -hex 32)"'

# Spot interruption: Stop keeps the instance and its disks (economical mode), Terminate releases it.
SPOT_INTERRUPTION_BEHAVIORS = ("Stop", "Terminate")
# ECS accepts an auto-release time from 30 minutes to 3 years ahead.
MAX_TTL_HOURS = 3 * 365 * 24
MAX_IDLE_STOP_MINUTES = 7 * 24 * 60
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SNAPSHOT_ID = re.compile(r"^s-[a-z0-9]+$")

# A CIDR shorter than /8 covers so much of the internet that it counts as public.
PUBLIC_PREFIX_MAX = 8


@dataclass(frozen=True)
class Settings:
    """Validated stack settings, the one input of every component."""

    project: str
    """Pulumi project name, used in resource names and tags."""
    stack: str
    """Pulumi stack name: one stack per environment."""
    region: str
    """Alibaba Cloud region (`alicloud:region`)."""
    instance_type: str
    """ECS instance type; a GPU family."""
    zone: str | None
    """Availability zone, or None to pick one that sells the instance type."""
    image_id: str | None
    """Image ID, or None for the newest Alibaba Cloud Linux 3."""
    system_disk_size: int
    """System disk size in GiB."""
    data_disk_size: int
    """Model disk size in GiB."""
    data_disk_category: str
    """Model disk category, e.g. cloud_essd."""
    models: tuple[str, ...]
    """Ollama models to pull; the first is preloaded."""
    ollama_version: str
    """Ollama release, without the leading v."""
    nvidia_driver_version: str
    """NVIDIA driver version of the .run installer."""
    allowed_cidrs: tuple[str, ...]
    """IPv4 networks allowed to reach the Ollama API port and SSH."""
    ssh_public_key: str
    """OpenSSH public key installed for root."""
    internet_bandwidth_out: int
    """Outbound public bandwidth in Mbit/s."""
    allow_public_unauthenticated: bool
    """Opt-in to an unauthenticated API port open to the whole internet."""
    api_key_sha256: str | None
    """SHA-256 (hex) of the API key, or None for no authentication; the key itself is not kept."""
    allow_model_management: bool
    """Let authenticated clients pull, push, create, copy and delete models."""
    allow_public_ssh: bool
    """Opt-in to SSH open to the whole internet."""
    allowed_origins: tuple[str, ...]
    """Browser origins allowed to call the API (CORS)."""
    vpc_id: str | None
    """Existing VPC to use, or None to create one."""
    vswitch_id: str | None
    """Existing vSwitch to use, or None to create one."""
    keep_alive: str
    """How long Ollama keeps a model loaded after a request (Ollama duration)."""
    driver_base_url: str
    """Base URL that contains `<version>/NVIDIA-Linux-x86_64-<version>.run`."""
    ollama_base_url: str
    """Base URL that contains `v<version>/ollama-linux-amd64.tar.zst`."""
    model_registry: str | None
    """Registry host that mirrors the Ollama library, or None for Ollama's own."""
    model_registry_insecure: bool
    """Pull from the model registry over plain HTTP."""
    pull_stall_seconds: int
    """Seconds without download progress before a pull attempt is abandoned."""
    pull_retries: int
    """Extra attempts per model after a failed or stalled pull."""
    data_disk_wait_seconds: int
    """Seconds the bootstrap waits for the model disk to be attached."""
    spot: bool
    """Run the instance as a spot instance (SpotAsPriceGo)."""
    spot_interruption_behavior: str
    """What ECS does to a reclaimed spot instance: Stop or Terminate."""
    spot_fallback: bool
    """Fall back to pay-as-you-go when no zone has spot stock."""
    ttl_hours: int
    """Hours from the first deployment until ECS releases the instance; 0 for never."""
    ttl_renewed_at: str | None
    """UTC time of the last `scripts/extend_ttl.py`; a new value restarts the time-to-live."""
    idle_stop_minutes: int
    """Idle minutes after which the instance stops itself in economical mode; 0 for never."""
    keep_model_disk: bool
    """Keep the model disk when the stack is destroyed, and re-attach it on the next deployment."""
    data_disk_snapshot_id: str | None
    """Snapshot to create the model disk from, or None for an empty disk."""
    ecs_api_endpoint: str
    """ECS API base URL the idle-stop script calls."""
    instance_metadata_url: str
    """Instance metadata service base URL the idle-stop script reads credentials from."""

    @property
    def is_public(self) -> bool:
        """Whether any allowed CIDR covers a large part of the internet."""
        return any(ipaddress.ip_network(cidr).prefixlen < PUBLIC_PREFIX_MAX for cidr in self.allowed_cidrs)

    @property
    def ssh_cidrs(self) -> tuple[str, ...]:
        """Networks allowed to reach SSH: the public ones only with allowPublicSsh."""
        if self.allow_public_ssh:
            return self.allowed_cidrs
        return tuple(cidr for cidr in self.allowed_cidrs
                     if ipaddress.ip_network(cidr).prefixlen >= PUBLIC_PREFIX_MAX)

    @property
    def resource_prefix(self) -> str:
        """Prefix for cloud resource names, unique per project and stack."""
        return f"{self.project}-{self.stack}"

    @property
    def idle_stop_role_name(self) -> str:
        """RAM role of the instance; the idle-stop script asks the metadata service for its credentials."""
        return f"{self.resource_prefix}-idle-stop"


@dataclass(frozen=True)
class Problem:
    """One invalid setting."""

    key: str
    value: Any
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.reason}\n    Fix: {self.fix}"


class SettingsError(ValueError):
    """Raised when stack settings are invalid; lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"invalid stack configuration ({len(problems)} problem(s)):"]
        lines += [f"  - {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def read_config(config: Any, provider_config: Any) -> dict[str, Any]:
    """Read every key with Pulumi's typed getters, falling back to DEFAULTS.

    `config` is `pulumi.Config()` (project namespace), `provider_config` is
    `pulumi.Config("alicloud")`. Type errors (a word where a number belongs) are raised
    by Pulumi itself, with the key in the message.
    """
    values: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if isinstance(default, bool):
            value = config.get_bool(key)
        elif isinstance(default, int):
            value = config.get_int(key)
        elif isinstance(default, list):
            value = config.get_object(key)
        else:
            value = config.get(key)
        values[key] = default if value is None else value

    values["region"] = provider_config.get("region") or os.environ.get("ALICLOUD_REGION", "")
    values["apiKeyIsSecret"] = bool(values["apiKey"]) and _is_config_secret(config, "apiKey")
    return values


def _is_config_secret(config: Any, key: str) -> bool:
    from pulumi.runtime.config import is_config_secret  # noqa: PLC0415

    return is_config_secret(config.full_key(key))


def build_settings(values: Mapping[str, Any], *, project: str = PROJECT, stack: str = "dev") -> Settings:
    """Validate raw config values and return Settings, or raise SettingsError."""
    merged = {**DEFAULTS, **values}
    problems: list[Problem] = []

    def problem(key: str, reason: str, fix: str, shown_value: Any = None) -> None:
        value = merged.get(key) if shown_value is None else shown_value
        problems.append(Problem(key, value, reason, fix))

    region = str(merged.get("region") or "")
    if not region:
        problems.append(
            Problem("alicloud:region", "", "missing", "pulumi config set alicloud:region cn-hangzhou")
        )
    elif not REGION.fullmatch(region):
        problems.append(Problem("alicloud:region", region, "not a region ID such as cn-hangzhou",
                                "pulumi config set alicloud:region cn-hangzhou"))
        region = ""

    instance_type = merged["instanceType"]
    if not isinstance(instance_type, str) or not INSTANCE_TYPE.fullmatch(instance_type):
        problem("instanceType", "not an ECS instance type such as ecs.gn7i-c16g1.4xlarge",
                "pulumi config set instanceType ecs.gn7i-c16g1.4xlarge")
    elif not GPU_INSTANCE_TYPE.fullmatch(instance_type):
        problem("instanceType", "not a GPU instance type (gn, vgn, sgn, ebmgn families); "
                "Ollama would run the model on the CPU",
                "pulumi config set instanceType ecs.gn7i-c16g1.4xlarge")

    zone = merged["zone"] or None
    if zone is not None:
        if not isinstance(zone, str) or not ZONE.fullmatch(zone):
            problem("zone", "not a zone ID such as cn-hangzhou-i", "pulumi config rm zone   # pick a zone automatically")
        elif region and not zone.startswith(region):
            problem("zone", f"not a zone of region {region}", "pulumi config rm zone   # pick a zone automatically")

    image_id = merged["imageId"] or None
    if image_id is not None and (not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id)):
        problem("imageId", "not an image ID such as m-bp1...", "pulumi config rm imageId   # use the newest Alibaba Cloud Linux 3")

    system_disk_size = merged["systemDiskSize"]
    if not _is_int(system_disk_size) or not 20 <= system_disk_size <= 2048:
        problem("systemDiskSize", "must be a whole number of GiB from 20 to 2048; the driver and "
                "Ollama's CUDA libraries need several GiB", "pulumi config set systemDiskSize 40")

    models = _check_models(merged["models"], problem)

    data_disk_size = merged["dataDiskSize"]
    required_gib = required_data_disk_gib(models)
    if not _is_int(data_disk_size) or not 20 <= data_disk_size <= 32768:
        problem("dataDiskSize", "must be a whole number of GiB from 20 to 32768", "pulumi config set dataDiskSize 500")
    elif data_disk_size < required_gib:
        problem("dataDiskSize", f"too small for the configured models ({_describe_sizes(models)}); "
                f"at least {required_gib} GiB is needed", f"pulumi config set dataDiskSize {required_gib}")

    if merged["dataDiskCategory"] not in DISK_CATEGORIES:
        problem("dataDiskCategory", f"must be one of {', '.join(DISK_CATEGORIES)}",
                "pulumi config set dataDiskCategory cloud_essd")

    ollama_version = _check_ollama_version(merged["ollamaVersion"], problem)

    driver = merged["nvidiaDriverVersion"]
    driver_match = DRIVER_VERSION.fullmatch(driver) if isinstance(driver, str) else None
    if driver_match is None:
        problem("nvidiaDriverVersion", "not an NVIDIA driver version such as 550.127.08",
                f"pulumi config set nvidiaDriverVersion {DEFAULTS['nvidiaDriverVersion']}")
    elif int(driver_match.group(1)) < MIN_DRIVER_MAJOR:
        problem("nvidiaDriverVersion", f"driver {driver} is older than {MIN_DRIVER_MAJOR}; current Ollama "
                "needs 550 or newer and would run the model on the CPU",
                f"pulumi config set nvidiaDriverVersion {DEFAULTS['nvidiaDriverVersion']}")

    allowed_cidrs = _check_cidrs(merged, problem)

    ssh_key = merged["sshPublicKey"]
    _check_ssh_key(ssh_key, problem)

    bandwidth = merged["internetBandwidthOut"]
    if not _is_int(bandwidth) or not 1 <= bandwidth <= 100:
        problem("internetBandwidthOut", "must be a whole number of Mbit/s from 1 to 100",
                "pulumi config set internetBandwidthOut 100")

    vpc_id = merged["vpcId"] or None
    vswitch_id = merged["vswitchId"] or None
    if vpc_id is not None and not VPC_ID.fullmatch(str(vpc_id)):
        problem("vpcId", "not a VPC ID such as vpc-bp1...", "pulumi config rm vpcId   # create a new VPC")
    if vswitch_id is not None:
        if not VSWITCH_ID.fullmatch(str(vswitch_id)):
            problem("vswitchId", "not a vSwitch ID such as vsw-bp1...", "pulumi config rm vswitchId")
        elif vpc_id is None:
            problem("vswitchId", "set without vpcId; the security group needs the vSwitch's VPC",
                    "pulumi config set vpcId vpc-...")
        elif zone is None:
            problem("vswitchId", "set without zone; the disk and instance must be in the vSwitch's zone",
                    "pulumi config set zone <the vSwitch's zone>")
    elif vpc_id is not None:
        problem("vpcId", "set without vswitchId; an existing VPC needs an existing vSwitch",
                "pulumi config set vswitchId vsw-...")

    keep_alive = merged["keepAlive"]
    if not isinstance(keep_alive, str) or not keep_alive or not KEEP_ALIVE.fullmatch(keep_alive):
        problem("keepAlive", "not an Ollama duration such as 30m, 1h or -1 (forever)", "pulumi config set keepAlive 1h")

    for key in ("driverBaseUrl", "ollamaBaseUrl"):
        if not isinstance(merged[key], str) or not BASE_URL.fullmatch(merged[key]):
            problem(key, "not an http(s) URL without spaces or quotes", f"pulumi config set {key} {DEFAULTS[key]}")

    registry = merged["modelRegistry"] or None
    if registry is not None and (not isinstance(registry, str) or not REGISTRY_HOST.fullmatch(registry)):
        problem("modelRegistry", "not a registry host such as registry.example.com or host:port",
                "pulumi config rm modelRegistry   # use Ollama's own registry")

    for key, low, high in (("pullStallSeconds", 1, 3600), ("pullRetries", 0, 20), ("dataDiskWaitSeconds", 1, 3600)):
        if not _is_int(merged[key]) or not low <= merged[key] <= high:
            problem(key, f"must be a whole number from {low} to {high}", f"pulumi config set {key} {DEFAULTS[key]}")

    api_key = merged["apiKey"] or None
    _check_api_key(api_key, merged.get("apiKeyIsSecret", True), problem)

    origins = merged["allowedOrigins"]
    if not isinstance(origins, list) or not all(isinstance(o, str) and ORIGIN.fullmatch(o) for o in origins):
        problem("allowedOrigins", "must be a list of origins such as https://chat.example.com, or *",
                "pulumi config set --path 'allowedOrigins[0]' https://chat.example.com")
    elif "*" in origins and api_key is None:
        problem("allowedOrigins", "* lets every web page call the API; it is allowed only with an API key",
                API_KEY_FIX)

    for key in ("allowPublicUnauthenticated", "modelRegistryInsecure", "allowModelManagement", "allowPublicSsh"):
        if not isinstance(merged[key], bool):
            problem(key, "must be true or false", f"pulumi config set {key} false")

    _check_lifecycle(merged, problem)

    if problems:
        raise SettingsError(problems)

    return Settings(
        project=project,
        stack=stack,
        region=region,
        instance_type=instance_type,
        zone=zone,
        image_id=image_id,
        system_disk_size=system_disk_size,
        data_disk_size=data_disk_size,
        data_disk_category=merged["dataDiskCategory"],
        models=models,
        ollama_version=ollama_version,
        nvidia_driver_version=driver,
        allowed_cidrs=allowed_cidrs,
        ssh_public_key=ssh_key.strip(),
        internet_bandwidth_out=bandwidth,
        allow_public_unauthenticated=merged["allowPublicUnauthenticated"],
        api_key_sha256=hashlib.sha256(api_key.encode()).hexdigest() if api_key else None,
        allow_model_management=merged["allowModelManagement"],
        allow_public_ssh=merged["allowPublicSsh"],
        allowed_origins=tuple(origins),
        vpc_id=vpc_id,
        vswitch_id=vswitch_id,
        keep_alive=keep_alive,
        driver_base_url=merged["driverBaseUrl"].rstrip("/"),
        ollama_base_url=merged["ollamaBaseUrl"].rstrip("/"),
        model_registry=registry,
        model_registry_insecure=merged["modelRegistryInsecure"],
        pull_stall_seconds=merged["pullStallSeconds"],
        pull_retries=merged["pullRetries"],
        data_disk_wait_seconds=merged["dataDiskWaitSeconds"],
        spot=merged["spot"],
        spot_interruption_behavior=merged["spotInterruptionBehavior"],
        spot_fallback=merged["spotFallback"],
        ttl_hours=merged["ttlHours"],
        ttl_renewed_at=merged["ttlRenewedAt"] or None,
        idle_stop_minutes=merged["idleStopMinutes"],
        keep_model_disk=merged["keepModelDisk"],
        data_disk_snapshot_id=merged["dataDiskSnapshotId"] or None,
        ecs_api_endpoint=(merged["ecsApiEndpoint"] or f"https://ecs.{region}.aliyuncs.com").rstrip("/"),
        instance_metadata_url=merged["instanceMetadataUrl"].rstrip("/"),
    )


def required_data_disk_gib(models: tuple[str, ...]) -> int:
    """Return the smallest data disk in GiB that fits the known model sizes with headroom."""
    known_gb = sum(MODEL_DOWNLOAD_GB.get(normalize_model(model), 0.0) for model in models)
    if known_gb == 0:
        return 20
    gib = known_gb * 1e9 / 2**30
    return max(20, math.ceil(gib * DISK_HEADROOM_FACTOR) + DISK_HEADROOM_GIB)


def normalize_model(model: str) -> str:
    """Return the name Ollama lists a model under: `latest` is the tag when none is given."""
    last = model.rsplit("/", 1)[-1]
    return model if ":" in last else f"{model}:latest"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe_sizes(models: tuple[str, ...]) -> str:
    sizes = [f"{model} ~{MODEL_DOWNLOAD_GB[normalize_model(model)]:g} GB"
             for model in models if normalize_model(model) in MODEL_DOWNLOAD_GB]
    return ", ".join(sizes)


def _check_models(raw: Any, problem: Any) -> tuple[str, ...]:
    fix = "pulumi config set --path 'models[0]' deepseek-r1:32b"
    if not isinstance(raw, list) or not raw:
        problem("models", "must be a non-empty list of Ollama model names", fix)
        return ()

    models: list[str] = []
    for index, model in enumerate(raw):
        if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
            problem("models", f"entry {index} ({model!r}) is not an Ollama model name such as deepseek-r1:32b",
                    f"pulumi config set --path 'models[{index}]' deepseek-r1:32b")
            continue
        if normalize_model(model) in (normalize_model(seen) for seen in models):
            problem("models", f"entry {index} ({model!r}) is listed twice",
                    f"pulumi config rm --path 'models[{index}]'")
            continue
        models.append(model)
    return tuple(models)


def _check_ollama_version(version: Any, problem: Any) -> str:
    fix = f"pulumi config set ollamaVersion {DEFAULTS['ollamaVersion']}"
    match = SEMVER.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        problem("ollamaVersion", "not a release version such as 0.32.15 (no leading v, no -rc)", fix)
        return str(version)

    parsed = tuple(int(part) for part in match.groups())
    for fixed_in, cve in OLLAMA_VULNERABLE_BELOW:
        if parsed < fixed_in:
            problem("ollamaVersion", f"affected by {cve}, fixed in {'.'.join(map(str, fixed_in))}", fix)
            break
    return version


def _check_cidrs(merged: Mapping[str, Any], problem: Any) -> tuple[str, ...]:
    raw = merged["allowedCidrs"]
    fix = "pulumi config set --path 'allowedCidrs[0]' 203.0.113.7/32   # your own public IP"
    if not isinstance(raw, list) or not raw:
        problem("allowedCidrs", "must list at least one IPv4 network allowed to reach ports 11434 and 22", fix)
        return ()

    cidrs: list[str] = []
    for index, cidr in enumerate(raw):
        entry_fix = f"pulumi config set --path 'allowedCidrs[{index}]' 203.0.113.7/32"
        try:
            network = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError as error:
            hint = ""
            try:
                hint = f"; did you mean {ipaddress.ip_network(str(cidr), strict=False)}?"
            except ValueError:
                pass
            problem("allowedCidrs", f"entry {index} ({cidr!r}) is not a valid CIDR: {error}{hint}", entry_fix)
            continue
        if network.version != 4:
            problem("allowedCidrs", f"entry {index} ({cidr!r}) is IPv6; the security group rules take IPv4",
                    entry_fix)
            continue
        if str(network) in cidrs:
            problem("allowedCidrs", f"entry {index} ({cidr!r}) is listed twice",
                    f"pulumi config rm --path 'allowedCidrs[{index}]'")
            continue
        cidrs.append(str(network))

    public = [cidr for cidr in cidrs if ipaddress.ip_network(cidr).prefixlen < PUBLIC_PREFIX_MAX]
    if public and merged["allowPublicUnauthenticated"] is not True and not merged["apiKey"]:
        problem("allowedCidrs", f"{', '.join(public)} opens the unauthenticated Ollama API and SSH to the "
                "internet; anyone could use the GPU and pull or delete models",
                "restrict it to your network (pulumi config set --path 'allowedCidrs[0]' 203.0.113.7/32), "
                f"set an API key ({API_KEY_FIX}), "
                "or accept the risk: pulumi config set allowPublicUnauthenticated true")
    return tuple(cidrs)


def _check_api_key(api_key: Any, is_secret: bool, problem: Any) -> None:
    hidden = "<not shown>"
    if api_key is None:
        return
    if not isinstance(api_key, str) or not API_KEY.fullmatch(api_key):
        problem("apiKey", "must be printable ASCII without spaces", API_KEY_FIX, shown_value=hidden)
    elif len(api_key) < MIN_API_KEY_LENGTH:
        problem("apiKey", f"is {len(api_key)} characters; at least {MIN_API_KEY_LENGTH} random characters "
                "are needed because its hash is readable in the user-data", API_KEY_FIX, shown_value=hidden)
    if not is_secret:
        problem("apiKey", "is stored in plain text in the stack file; store it encrypted", API_KEY_FIX,
                shown_value=hidden)


def _check_lifecycle(merged: Mapping[str, Any], problem: Any) -> None:
    """Check the cost and lifecycle keys: spot, time-to-live, idle stop and the kept disk."""
    for key in ("spot", "spotFallback", "keepModelDisk"):
        if not isinstance(merged[key], bool):
            problem(key, "must be true or false", f"pulumi config set {key} false")

    if merged["spotInterruptionBehavior"] not in SPOT_INTERRUPTION_BEHAVIORS:
        problem("spotInterruptionBehavior", f"must be one of {', '.join(SPOT_INTERRUPTION_BEHAVIORS)}",
                "pulumi config set spotInterruptionBehavior Stop")

    ttl_hours = merged["ttlHours"]
    if not _is_int(ttl_hours) or not 0 <= ttl_hours <= MAX_TTL_HOURS:
        problem("ttlHours", f"must be a whole number of hours from 1 to {MAX_TTL_HOURS} (3 years), "
                "or 0 to never release the instance automatically", "pulumi config set ttlHours 8")

    renewed_at = merged["ttlRenewedAt"]
    if renewed_at and (not isinstance(renewed_at, str) or not UTC_TIMESTAMP.fullmatch(renewed_at)):
        problem("ttlRenewedAt", "not a UTC time such as 2026-01-31T08:00:00Z",
                "python scripts/extend_ttl.py   # or: pulumi config rm ttlRenewedAt")

    idle_minutes = merged["idleStopMinutes"]
    if not _is_int(idle_minutes) or not 0 <= idle_minutes <= MAX_IDLE_STOP_MINUTES:
        problem("idleStopMinutes", f"must be a whole number of minutes from 1 to {MAX_IDLE_STOP_MINUTES}, "
                "or 0 to never stop an idle instance", "pulumi config set idleStopMinutes 30")

    snapshot = merged["dataDiskSnapshotId"]
    if snapshot and (not isinstance(snapshot, str) or not SNAPSHOT_ID.fullmatch(snapshot)):
        problem("dataDiskSnapshotId", "not a snapshot ID such as s-bp1...",
                "pulumi config rm dataDiskSnapshotId   # start with an empty model disk")

    endpoint = merged["ecsApiEndpoint"]
    if endpoint and (not isinstance(endpoint, str) or not BASE_URL.fullmatch(endpoint)):
        problem("ecsApiEndpoint", "not an http(s) URL such as https://ecs.cn-hangzhou.aliyuncs.com",
                "pulumi config rm ecsApiEndpoint   # use the region's public endpoint")

    metadata = merged["instanceMetadataUrl"]
    if not isinstance(metadata, str) or not BASE_URL.fullmatch(metadata):
        problem("instanceMetadataUrl", "not an http(s) URL such as http://100.100.100.200",
                f"pulumi config set instanceMetadataUrl {DEFAULTS['instanceMetadataUrl']}")


def _check_ssh_key(key: Any, problem: Any) -> None:
    fix = 'pulumi config set sshPublicKey -- "$(cat ~/.ssh/id_ed25519.pub)"'
    if not isinstance(key, str) or not key.strip():
        problem("sshPublicKey", "missing; the operator scripts and you need SSH to reach the instance", fix)
    elif "PRIVATE KEY" in key:
        problem("sshPublicKey", "this is a PRIVATE key; remove it from the stack config and use the "
                "matching .pub file", fix, shown_value="<private key, not shown>")
    elif key.strip().endswith(".pub") and " " not in key.strip():
        problem("sshPublicKey", "a file path, not the key itself", fix)
    elif not SSH_PUBLIC_KEY.fullmatch(key.strip()):
        problem("sshPublicKey", "not an OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa-sha2-*)", fix)
