"""Cost levers decided before any resource exists: spot capacity, the hourly price, the
time-to-live, and the kept model disk that a new deployment picks up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pulumi
import pulumi_alicloud as alicloud
from pulumi_alicloud import ecs

from components.placement import PlacementError, choose_zone
from components.settings import Settings

SPOT = "SpotAsPriceGo"
NO_SPOT = "NoSpot"

# ECS rejects an auto-release time less than 30 minutes ahead.
MIN_RELEASE_LEAD = timedelta(minutes=30)
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Capacity:
    """Where the instance runs and how it is billed."""

    zone: str
    """Zone of the instance, its vSwitch and its model disk."""
    spot_strategy: str
    """SpotAsPriceGo for a spot instance, NoSpot for pay-as-you-go."""


@dataclass(frozen=True)
class KeptDisk:
    """A model disk kept by an earlier deployment (keepModelDisk) and not attached to anything."""

    id: str
    zone: str
    size: int
    category: str
    snapshot_id: str | None


@dataclass(frozen=True)
class HourlyPrice:
    """The instance type's list price per hour, as ECS quotes it for this account."""

    amount: float
    currency: str
    instance_type: str
    zone: str
    spot_strategy: str

    def as_export(self) -> dict[str, Any]:
        """Return the stack output: amount, currency and what was priced."""
        return {
            "amount": self.amount,
            "currency": self.currency,
            "unit": "hour",
            "instanceType": self.instance_type,
            "zone": self.zone,
            "spotStrategy": self.spot_strategy,
        }


def model_disk_name(settings: Settings) -> str:
    """Return the model disk's name, which is also how a kept disk is found again."""
    return f"{settings.resource_prefix}-models"


def find_kept_disk(settings: Settings) -> KeptDisk | None:
    """Return this stack's kept model disk when one waits unattached, else None.

    Only an "Available" (unattached) disk counts: while the stack's own instance uses the
    disk it is "In_use", and the stack state already holds it.
    """
    if not settings.keep_model_disk:
        return None

    result = ecs.get_ecs_disks(
        disk_name=model_disk_name(settings),
        tags={"project": settings.project, "stack": settings.stack},
        status="Available",
    )
    disks = list(result.disks or [])
    if not disks:
        return None
    if len(disks) > 1:
        ids = ", ".join(sorted(disk.id for disk in disks))
        raise PlacementError(
            f"{len(disks)} kept model disks named {model_disk_name(settings)} are unattached ({ids}); keep one "
            f"and delete the others (aliyun ecs DeleteDisk --DiskId d-...) before pulumi up"
        )

    disk = disks[0]
    pulumi.log.info(f"re-using kept model disk {disk.id} in zone {disk.zone_id}: the models on it are not "
                    f"downloaded again")
    return KeptDisk(id=disk.id, zone=disk.zone_id, size=int(disk.size), category=disk.category,
                    snapshot_id=disk.snapshot_id or None)


def choose_capacity(settings: Settings, kept_disk: KeptDisk | None = None) -> Capacity:
    """Return the zone and spot strategy, or raise PlacementError.

    With `spot`, only zones with spot stock count. When none has any, spotFallback
    decides between pay-as-you-go (with a warning) and a clear failure. A kept disk
    pins the zone, because a disk attaches only to an instance in its own zone.
    """
    required_zone = _required_zone(settings, kept_disk)

    if settings.spot:
        spot_zones = _zones_in_stock(settings, SPOT)
        candidates = [zone for zone in spot_zones if required_zone in (None, zone)]
        if candidates:
            pulumi.log.info(f"spot zone {candidates[0]} chosen for {settings.instance_type} "
                            f"(spot stock in: {', '.join(spot_zones) or 'none'})")
            return Capacity(zone=candidates[0], spot_strategy=SPOT)

        where = f"zone {required_zone}" if required_zone else f"any zone of region {settings.region}"
        if not settings.spot_fallback:
            raise PlacementError(
                f"no spot stock for {settings.instance_type} in {where}; deploy pay-as-you-go instead "
                f"(pulumi config set spotFallback true), or try another region or instance type"
            )
        pulumi.log.warn(f"no spot stock for {settings.instance_type} in {where}; spotFallback is true, so the "
                        f"instance is pay-as-you-go at the full hourly price")

    if required_zone is None:
        return Capacity(zone=choose_zone(settings), spot_strategy=NO_SPOT)
    if kept_disk is not None and required_zone not in _zones_in_stock(settings, NO_SPOT):
        raise PlacementError(
            f"the kept model disk {kept_disk.id} is in zone {required_zone}, where {settings.instance_type} is "
            f"not in stock; retry later, or snapshot the disk and restore it elsewhere "
            f"(pulumi config set dataDiskSnapshotId s-...)"
        )
    return Capacity(zone=required_zone, spot_strategy=NO_SPOT)


def _required_zone(settings: Settings, kept_disk: KeptDisk | None) -> str | None:
    if kept_disk is None:
        return settings.zone
    if settings.zone and settings.zone != kept_disk.zone:
        raise PlacementError(
            f"zone is {settings.zone}, but the kept model disk {kept_disk.id} is in zone {kept_disk.zone}; "
            f"pulumi config set zone {kept_disk.zone}"
        )
    return kept_disk.zone


def _zones_in_stock(settings: Settings, spot_strategy: str) -> list[str]:
    result = alicloud.get_zones(
        available_instance_type=settings.instance_type,
        available_disk_category=settings.data_disk_category,
        available_resource_creation="Instance",
        instance_charge_type="PostPaid",
        spot_strategy=spot_strategy,
    )
    return sorted(result.ids or [])


def look_up_hourly_price(settings: Settings, capacity: Capacity) -> HourlyPrice | None:
    """Return the instance type's hourly price in the chosen zone, or None when ECS quotes none.

    The price is informational, so a failed look-up logs a warning and the deployment
    goes on.
    """
    try:
        result = ecs.get_instance_types(
            instance_type=settings.instance_type,
            availability_zone=capacity.zone,
            instance_charge_type="PostPaid",
            spot_strategy=capacity.spot_strategy,
            sorted_by="Price",
        )
    # The invoke raises a plain Exception for API errors, and no price must stop a deployment.
    except Exception as error:  # noqa: BLE001
        pulumi.log.warn(f"hourly price of {settings.instance_type} not available: {error}")
        return None

    prices = [item.price for item in result.instance_types or [] if item.id == settings.instance_type and item.price]
    if not prices:
        pulumi.log.warn(f"hourly price of {settings.instance_type} not available: ECS returned no price "
                        f"for zone {capacity.zone}")
        return None

    price = HourlyPrice(
        amount=float(prices[0]),
        currency=billing_currency(settings.region),
        instance_type=settings.instance_type,
        zone=capacity.zone,
        spot_strategy=capacity.spot_strategy,
    )
    kind = "spot price, changes with demand" if capacity.spot_strategy == SPOT else "pay-as-you-go"
    pulumi.log.info(f"hourly price of {price.instance_type} in {price.zone}: {price.amount:g} {price.currency} "
                    f"({kind}); disks and traffic are billed on top")
    return price


def billing_currency(region: str) -> str:
    """Return the currency ECS prices are assumed to be quoted in for a region.

    NOTE: the instance-type look-up returns a price without its currency. ECS quotes in
    the account's billing currency: CNY for accounts of the China site, USD for the
    international site. This guesses the site from the region, which is wrong for an
    international account deploying to a mainland region.
    """
    return "CNY" if region.startswith("cn-") else "USD"


def resolve_auto_release_time(hours: int, renewed_at: str | None, previous: Any, now: datetime) -> str | None:
    """Return the instance's auto-release time, or None when ttlHours is 0.

    `previous` is the `ttl` output of this stack's last deployment. Its time is kept
    while ttlHours and ttlRenewedAt are unchanged, so repeated `pulumi up` runs neither
    change nor silently extend it. A new ttlHours, or a new ttlRenewedAt from
    scripts/extend_ttl.py, counts ttlHours again from now.
    """
    if hours <= 0:
        return None

    if (isinstance(previous, dict) and previous.get("hours") == hours
            and previous.get("renewedAt") == renewed_at and _parse_utc(previous.get("expiresAt")) is not None):
        return previous["expiresAt"]

    return (now.astimezone(timezone.utc).replace(microsecond=0) + timedelta(hours=hours)).strftime(UTC_FORMAT)


def utc_now() -> datetime:
    """Return the current time in UTC; tests replace it to simulate a later run."""
    return datetime.now(timezone.utc)


def _parse_utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, UTC_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


class TimeToLive:
    """The auto-release time, read back from this stack's own last outputs.

    Pulumi keeps no value between runs that a program can compute once, so the program
    exports the time it chose (`ttl`) and reads it back through a StackReference to its
    own stack on the next run. Alternatives considered: `ignore_changes` on the instance
    would also ignore a changed ttlHours, and a time stored in stack config would need
    an extra command before the first deployment.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.previous: pulumi.Output[Any] = pulumi.Output.from_input(None)
        if settings.ttl_hours > 0:
            # NOTE: reading a stack's own outputs relies on the backend returning empty
            # outputs for a stack that was never deployed; checked under mocks only.
            organization = pulumi.get_organization() or "organization"
            reference = pulumi.StackReference(f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}")
            self.previous = reference.get_output("ttl")

        self.auto_release_time: pulumi.Output[str | None] = self.previous.apply(self._resolve)
        self.export: pulumi.Output[Any] = self.auto_release_time.apply(self._as_export)

    def _resolve(self, previous: Any) -> str | None:
        settings = self.settings
        now = utc_now()
        value = resolve_auto_release_time(settings.ttl_hours, settings.ttl_renewed_at, previous, now)
        if value is None:
            return None

        expires = _parse_utc(value)
        if expires is not None and expires - now < MIN_RELEASE_LEAD:
            pulumi.log.warn(f"auto-release time {value} is less than 30 minutes away or past; ECS rejects it for "
                            f"a new instance. Extend it: python scripts/extend_ttl.py --stack {settings.stack}")
        else:
            pulumi.log.info(f"ECS releases the instance at {value} (ttlHours {settings.ttl_hours}); extend it "
                            f"with: python scripts/extend_ttl.py --stack {settings.stack}")
        return value

    def _as_export(self, value: str | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {"hours": self.settings.ttl_hours, "renewedAt": self.settings.ttl_renewed_at, "expiresAt": value}
