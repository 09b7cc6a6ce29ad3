"""``build_cleanup_sensor``: the factory, its arguments checked once, at definition time.

No ``from __future__ import annotations`` here: Dagster reads the sensor function's
annotations at run time to bind the ``remote_store`` resource.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from remote_store_dagster._errors import RemoteStoreConfigError
from remote_store_dagster._layout import normalize_prefix
from remote_store_dagster.cleanup.tick import Tick
from remote_store_dagster.resources import RemoteStoreResource

__all__ = ["CleanupConfig", "build_cleanup_sensor"]


@dataclass(frozen=True)
class CleanupConfig:
    """The validated arguments of one cleanup sensor (what every tick of it runs with)."""

    name: str
    store: str
    prefix: str
    leftover_grace: timedelta
    delete_wiped: bool
    delete_orphans: bool
    orphan_grace: timedelta
    keep_last_partitions: Mapping[str, int]
    dry_run: bool
    code_location: str | None
    delete_unstamped_orphans: bool

    @property
    def where(self) -> str:
        """How messages name this sensor."""
        return f"cleanup sensor {self.name!r}"

    @property
    def scope_text(self) -> str:
        """``store 'lake' below warehouse/``: where this sensor works, for tick texts."""
        return f"store {self.store!r} below {self.prefix + '/' if self.prefix else 'its root'}"


def build_cleanup_sensor(
    name: str = "remote_store_cleanup",
    *,
    store: str,
    prefix: str = "",
    leftover_grace: timedelta = timedelta(hours=1),
    delete_wiped: bool = True,
    delete_orphans: bool = False,
    orphan_grace: timedelta = timedelta(days=1),
    keep_last_partitions: Mapping[str, int] | None = None,
    dry_run: bool = False,
    minimum_interval_seconds: int = 300,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    code_location: str | None = None,
    delete_unstamped_orphans: bool = False,
) -> SensorDefinition:
    """A sensor that deletes stored data the Dagster catalog no longer needs.

    Several code locations may share one store and prefix: the sensor never
    deletes data whose provenance names another code location, whatever its
    policies and grace periods.

    Args:
        name: Sensor name.
        store: Store profile of the ``RemoteStoreResource`` bound to resource key ``"remote_store"``.
        prefix: The ``RemoteStoreIOManager``'s prefix; nothing outside ``<store root>/<prefix>/``
            is ever listed or deleted.
        leftover_grace: Minimum age of failed-write leftovers (``_staging`` objects, incomplete
            multipart uploads) before they are deleted; younger ones may be writes in flight.
        delete_wiped: Delete the data of assets (and partitions) wiped in Dagster, decided by the
            run that wrote each object: materialized before the wipe -> deleted (even in the same
            second), after it -> kept, run still running -> decided on a later tick. Objects
            without provenance: deleted when last modified before the wipe's second.
        delete_orphans: Delete asset folders of assets this code location does not define, when
            every data file in them was written by this code location (per its provenance).
            Folders with any file of another code location, or without provenance, are kept.
        orphan_grace: An orphaned folder is deleted only when its newest object is older than this.
        keep_last_partitions: Asset key (``"a/b"``) -> number of newest partitions to keep; older
            partitions are deleted. Time-window partitions are ordered by time, others by
            last-modified time.
        dry_run: Delete nothing; report what would be deleted.
        minimum_interval_seconds: Minimum time between ticks.
        default_status: Whether the sensor starts running when the code location loads.
        code_location: The code location this sensor cleans up for; it must match what the IO
            manager stamps (its ``code_location`` field, else the run's code location). Default:
            the code location the sensor is evaluated in (daemon / ``dagster dev``).
        delete_unstamped_orphans: Also delete orphaned folders whose data has no provenance or
            no code location in it (written before provenance existed, by other tools, or by
            in-process ``materialize``). Risk: such data may belong to another code location or
            tool writing below the same prefix; only enable when this code location alone writes
            there. Data stamped with another code location is never deleted.
    """
    where = f"build_cleanup_sensor({name!r})"
    if not isinstance(store, str) or not store:
        raise RemoteStoreConfigError(f"{where}: store must name a store profile of the RemoteStoreResource")
    if code_location is not None and (not isinstance(code_location, str) or not code_location.strip()):
        raise RemoteStoreConfigError(
            f"{where}: code_location must be a non-empty string or None, got {code_location!r}"
        )
    try:
        clean_prefix = normalize_prefix(prefix)
    except ValueError as exc:
        raise RemoteStoreConfigError(f"{where}: prefix: {exc}") from None
    for field_name, grace in (("leftover_grace", leftover_grace), ("orphan_grace", orphan_grace)):
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise RemoteStoreConfigError(f"{where}: {field_name} must be a non-negative timedelta, got {grace!r}")
    config = CleanupConfig(
        name=name,
        store=store,
        prefix=clean_prefix,
        leftover_grace=leftover_grace,
        delete_wiped=delete_wiped,
        delete_orphans=delete_orphans,
        orphan_grace=orphan_grace,
        keep_last_partitions=_keep_last_partitions(where, keep_last_partitions),
        dry_run=dry_run,
        code_location=code_location,
        delete_unstamped_orphans=delete_unstamped_orphans,
    )

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=_description(config),
    )
    def _cleanup_sensor(context: SensorEvaluationContext, remote_store: RemoteStoreResource) -> SensorResult:
        # Dagster binds the parameter named like the resource key ("remote_store").
        return Tick(config, context, remote_store).run()

    return _cleanup_sensor


def _keep_last_partitions(where: str, keep_last_partitions: Mapping[str, int] | None) -> dict[str, int]:
    """``{"a/b": N}`` normalised to user-string asset keys; a clear error for anything else."""
    keep: dict[str, int] = {}
    for key, count in (keep_last_partitions or {}).items():
        user_key = AssetKey.from_user_string(key).to_user_string() if isinstance(key, str) and key else ""
        if not user_key or any(not part for part in AssetKey.from_user_string(user_key).path):
            raise RemoteStoreConfigError(f"{where}: keep_last_partitions: {key!r} is not an asset key like 'a/b'")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RemoteStoreConfigError(
                f"{where}: keep_last_partitions[{key!r}] must be an int >= 1 (partitions to keep), got {count!r}"
            )
        keep[user_key] = count
    return keep


def _description(config: CleanupConfig) -> str:
    """The sensor's description in the UI: its policies and where it deletes."""
    policies = ["leftovers"] + (["wiped assets"] if config.delete_wiped else [])
    if config.delete_orphans:
        unstamped = " and unstamped orphans" if config.delete_unstamped_orphans else ""
        policies.append("orphans of this code location" + unstamped)
    if config.keep_last_partitions:
        policies.append("keep_last_partitions")
    dry = "[dry run] " if config.dry_run else ""
    below = config.prefix + "/" if config.prefix else "its root"
    return f"{dry}Deletes {', '.join(policies)} from remote-store store {config.store!r} below {below}."
