"""Where the instance goes: the zone that sells the GPU type, and the OS image."""

from __future__ import annotations

import pulumi
import pulumi_alicloud as alicloud
from pulumi_alicloud import ecs

from components.settings import Settings

# Alibaba Cloud Linux 3 system images; anchored, because container-optimized and other
# variants share the prefix.
ALINUX3_IMAGE_REGEX = "^aliyun_3_x64_20G_alibase_"


class PlacementError(RuntimeError):
    """Raised when no zone or image fits the settings."""


def choose_zone(settings: Settings) -> str:
    """Return the configured zone, or the first zone that has the instance type in stock.

    The look-up omits sold-out zones. The choice is sorted so it stays the same while
    stock stays the same; the resources ignore later zone changes (see gpu_server).
    """
    if settings.zone:
        return settings.zone

    result = alicloud.get_zones(
        available_instance_type=settings.instance_type,
        available_disk_category=settings.data_disk_category,
        available_resource_creation="Instance",
        instance_charge_type="PostPaid",
    )
    zones = sorted(result.ids or [])
    if not zones:
        raise PlacementError(
            f"no zone in region {settings.region} has {settings.instance_type} with "
            f"{settings.data_disk_category} disks in stock for pay-as-you-go; try another region "
            f"(pulumi config set alicloud:region ...) or instance type (pulumi config set instanceType ...)"
        )

    pulumi.log.info(
        f"zone {zones[0]} chosen for {settings.instance_type} (in stock: {', '.join(zones)}); "
        f"pin it with: pulumi config set zone {zones[0]}"
    )
    return zones[0]


def choose_image(settings: Settings) -> str:
    """Return the configured image, or the newest Alibaba Cloud Linux 3 image."""
    if settings.image_id:
        return settings.image_id

    result = ecs.get_images(name_regex=ALINUX3_IMAGE_REGEX, owners="system", most_recent=True)
    images = list(result.ids or [])
    if not images:
        raise PlacementError(
            f"no Alibaba Cloud Linux 3 image matching {ALINUX3_IMAGE_REGEX} in region {settings.region}; "
            f"set one with: pulumi config set imageId m-..."
        )
    return images[0]
