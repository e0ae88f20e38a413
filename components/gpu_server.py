"""The GPU server: SSH key pair, model disk, instance and the disk attachment."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_alicloud import ecs

from components.lifecycle import NO_SPOT, KeptDisk, model_disk_name
from components.settings import Settings
from components.userdata import render_user_data


@dataclass
class GpuServerArgs:
    """Inputs of the GpuServer component."""

    settings: Settings
    """Validated stack settings."""
    zone: str
    """Zone of the instance and its model disk."""
    image_id: str
    """System image."""
    vswitch_id: pulumi.Input[str]
    """vSwitch in `zone`."""
    security_group_id: pulumi.Input[str]
    """Security group admitting the API and SSH."""
    spot_strategy: str = NO_SPOT
    """SpotAsPriceGo for a spot instance, NoSpot for pay-as-you-go."""
    auto_release_time: pulumi.Input[str | None] = None
    """UTC time at which ECS releases the instance, or None for never."""
    kept_disk: KeptDisk | None = None
    """A model disk kept by an earlier deployment, adopted instead of creating one."""


class GpuServer(pulumi.ComponentResource):
    """An instance that runs Ollama, and a model disk that outlives instance replacements.

    A change to the models, the driver or the Ollama version changes the user-data, and
    that replaces the instance: cloud-init runs only on an instance's first boot, and a
    fresh system disk is the one state certain to match the settings. The models live
    on a separate disk that is re-attached to the new instance, so a replacement costs
    a driver build but no model download.
    """

    instance_id: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    data_disk_id: pulumi.Output[str]
    user_data: pulumi.Output[str]

    def __init__(self, name: str, args: GpuServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ollama-alicloud:index:GpuServer", name, None, opts)
        settings = args.settings
        tags = {"project": settings.project, "stack": settings.stack}

        key_pair = ecs.EcsKeyPair(
            f"{name}-key",
            key_pair_name=settings.resource_prefix,
            public_key=settings.ssh_public_key,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

        disk = self._model_disk(name, args, tags)

        # The guest sees the disk under /dev/disk/by-id with its ID, minus "d-", as serial.
        self.user_data = disk.id.apply(lambda disk_id: render_user_data(settings, disk_id.removeprefix("d-")))

        # delete_before_replace: a GPU quota often allows one instance, and two would bill twice.
        instance = ecs.Instance(
            f"{name}-instance",
            instance_name=settings.resource_prefix,
            host_name=settings.resource_prefix,
            instance_type=settings.instance_type,
            image_id=args.image_id,
            availability_zone=args.zone,
            vswitch_id=args.vswitch_id,
            security_groups=[args.security_group_id],
            instance_charge_type="PostPaid",
            system_disk_category="cloud_essd",
            system_disk_size=settings.system_disk_size,
            internet_charge_type="PayByTraffic",
            internet_max_bandwidth_out=settings.internet_bandwidth_out,
            key_name=key_pair.key_pair_name,
            user_data=self.user_data,
            spot_strategy=args.spot_strategy,
            spot_interruption_behavior=(settings.spot_interruption_behavior
                                        if args.spot_strategy != NO_SPOT else None),
            auto_release_time=args.auto_release_time,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                replace_on_changes=["userData"],
                delete_before_replace=True,
                ignore_changes=_instance_ignore_changes(settings),
            ),
        )

        # Replaced with the instance; the old attachment must go first to free the disk.
        ecs.EcsDiskAttachment(
            f"{name}-models-attachment",
            disk_id=disk.id,
            instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        self.instance_id = instance.id
        self.public_ip = instance.public_ip
        self.data_disk_id = disk.id
        self.register_outputs(
            {"instanceId": self.instance_id, "publicIp": self.public_ip, "dataDiskId": self.data_disk_id}
        )

    def _model_disk(self, name: str, args: GpuServerArgs, tags: dict[str, str]) -> ecs.EcsDisk:
        """Declare the model disk: new, restored from a snapshot, or a kept one adopted again.

        Deleted with the stack but not with the instance, unless keepModelDisk retains it.
        A kept disk is imported with its own size, category and zone, because an import
        fails when the declared inputs differ from the disk.
        """
        settings = args.settings
        kept = args.kept_disk
        if settings.keep_model_disk:
            pulumi.log.info(f"keepModelDisk: the model disk {model_disk_name(settings)} is kept when the stack is "
                            f"destroyed, and billed until you delete it")

        # ignore_changes: a later zone choice or snapshot setting must not replace a disk full of models.
        options = pulumi.ResourceOptions(
            parent=self,
            ignore_changes=["zoneId", "snapshotId"],
            retain_on_delete=settings.keep_model_disk,
            import_=kept.id if kept is not None else None,
        )
        return ecs.EcsDisk(
            f"{name}-models",
            disk_name=model_disk_name(settings),
            description="Ollama models; survives instance replacement",
            zone_id=kept.zone if kept is not None else args.zone,
            size=kept.size if kept is not None else settings.data_disk_size,
            category=kept.category if kept is not None else settings.data_disk_category,
            snapshot_id=kept.snapshot_id if kept is not None else settings.data_disk_snapshot_id,
            payment_type="PayAsYouGo",
            tags=tags,
            opts=options,
        )


def _instance_ignore_changes(settings: Settings) -> list[str]:
    """Return the instance properties whose later changes must not replace a running server.

    A newer image or another in-stock zone must not. With spotFallback, neither must spot
    stock that comes back: the spot strategy is fixed when the instance is created.
    """
    ignored = ["imageId", "availabilityZone"]
    if settings.spot_fallback:
        ignored.append("spotStrategy")
    return ignored
