"""ollama-alicloud: an Ollama server on an Alibaba Cloud GPU instance."""

import pulumi

from components.gpu_server import GpuServer, GpuServerArgs
from components.network import OLLAMA_PORT, Network, NetworkArgs
from components.idle_stop import IdleStopArgs, IdleStopRole
from components.lifecycle import TimeToLive, choose_capacity, find_kept_disk, look_up_hourly_price
from components.placement import PlacementError, choose_image
from components.settings import SettingsError, build_settings, read_config
from components.userdata import UserDataTooLarge, check_user_data_size

try:
    settings = build_settings(
        read_config(pulumi.Config(), pulumi.Config("alicloud")),
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
    )
    check_user_data_size(settings)
    kept_disk = find_kept_disk(settings)
    capacity = choose_capacity(settings, kept_disk)
    zone = capacity.zone
    image_id = choose_image(settings)
except (SettingsError, UserDataTooLarge, PlacementError) as error:
    # RunError prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

if settings.is_public and not settings.api_key_sha256:
    pulumi.log.warn("allowPublicUnauthenticated is true: the Ollama API is open to the internet without "
                    "authentication; anyone can use the GPU")
if settings.is_public and not settings.ssh_cidrs:
    pulumi.log.warn("SSH is closed: allowedCidrs has only public entries and allowPublicSsh is false; use "
                    "the serial console, or add your network to allowedCidrs")

ttl = TimeToLive(settings)
network = Network("net", NetworkArgs(settings=settings, zone=zone))
server = GpuServer(
    "ollama",
    GpuServerArgs(
        settings=settings,
        zone=zone,
        image_id=image_id,
        vswitch_id=network.vswitch_id,
        security_group_id=network.security_group_id,
        spot_strategy=capacity.spot_strategy,
        auto_release_time=ttl.auto_release_time,
        kept_disk=kept_disk,
    ),
)
if settings.idle_stop_minutes > 0:
    IdleStopRole("idle-stop", IdleStopArgs(settings=settings, instance_id=server.instance_id))
price = look_up_hourly_price(settings, capacity)

pulumi.export("endpoint", server.public_ip.apply(lambda ip: f"http://{ip}:{OLLAMA_PORT}"))
pulumi.export("openaiBaseUrl", server.public_ip.apply(lambda ip: f"http://{ip}:{OLLAMA_PORT}/v1"))
pulumi.export("publicIp", server.public_ip)
pulumi.export("instanceId", server.instance_id)
pulumi.export("dataDiskId", server.data_disk_id)
pulumi.export("zone", zone)
pulumi.export("models", list(settings.models))
pulumi.export("sshCommand", server.public_ip.apply(lambda ip: f"ssh root@{ip}"))
pulumi.export("spotStrategy", capacity.spot_strategy)
pulumi.export("hourlyPrice", price.as_export() if price else None)
# Read back by TimeToLive on the next run, so the release time stays as it is.
pulumi.export("ttl", ttl.export)
pulumi.export("autoReleaseTime", ttl.auto_release_time)
pulumi.export("keepModelDisk", settings.keep_model_disk)
