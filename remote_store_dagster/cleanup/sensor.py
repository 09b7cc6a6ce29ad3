"""``build_cleanup_sensor``: the factory, its arguments checked once, at definition time.

No ``from __future__ import annotations`` here: Dagster reads the sensor function's
annotations at run time to bind the ``remote_store`` resource.
"""

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

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
from remote_store_dagster.cleanup.config import CleanupConfig
from remote_store_dagster.cleanup.tick import Tick

if TYPE_CHECKING:
    from remote_store_dagster.io_manager import RemoteStoreIOManager

__all__ = ["build_cleanup_sensor"]


def build_cleanup_sensor(
    name: str = "remote_store_cleanup",
    *,
    store: str | None = None,
    prefix: str | None = None,
    io_manager: "RemoteStoreIOManager | None" = None,
    resource_key: str = "remote_store",
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
        store: Store profile of the resource bound to ``resource_key`` (a ``RemoteStoreResource``;
            unused with an ``S3PyArrowResource``).
        io_manager: The ``RemoteStoreIOManager`` whose data this sensor keeps clean: ``store``,
            ``prefix``, ``code_location`` and the resource come from it (arguments given here win).
        resource_key: Resource key of the store resource, when no ``io_manager`` is given.
        prefix: The ``RemoteStoreIOManager``'s prefix; nothing outside ``<store root>/<prefix>/``
            is ever listed or deleted.
        leftover_grace: Minimum age of failed-write leftovers (``_staging`` objects, incomplete
            multipart uploads) before they are deleted; younger ones may be writes in flight.
        delete_wiped: Delete the data of assets (partitions) wiped in Dagster, decided by the run
            that wrote each object: before the wipe -> deleted, after -> kept, still running -> later.
        delete_orphans: Delete folders of assets this code location does not define, when every
            data file in them was written by this code location (per its provenance).
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
        delete_unstamped_orphans: Also delete orphaned folders whose data carries no code location
            (other tools, in-process ``materialize``); only when this code location alone writes there.
    """
    where = f"build_cleanup_sensor({name!r})"
    if io_manager is not None:
        store = io_manager.store if store is None else store
        prefix = io_manager.prefix if prefix is None else prefix
        code_location = io_manager.code_location if code_location is None else code_location
    elif not isinstance(store, str) or not store:
        raise RemoteStoreConfigError(
            f"{where}: store must name a store profile of the RemoteStoreResource (or pass io_manager=...)"
        )
    prefix = prefix or ""
    clean_prefix = _checked(where, code_location, prefix, leftover_grace, orphan_grace)
    config = CleanupConfig(
        name=name,
        store=store or "",
        prefix=clean_prefix,
        leftover_grace=leftover_grace,
        delete_wiped=delete_wiped,
        delete_orphans=delete_orphans,
        orphan_grace=orphan_grace,
        keep_last_partitions=_keep_last_partitions(where, keep_last_partitions),
        dry_run=dry_run,
        code_location=code_location,
        delete_unstamped_orphans=delete_unstamped_orphans,
        resource_key=resource_key,
    )
    return _sensor(config, minimum_interval_seconds, default_status, io_manager)


def _sensor(
    config: CleanupConfig,
    minimum_interval_seconds: int,
    default_status: DefaultSensorStatus,
    io_manager: "RemoteStoreIOManager | None",
) -> SensorDefinition:
    """The sensor: the IO manager's own store resource, or the one bound to ``resource_key``."""
    required = set() if io_manager is not None else {config.resource_key}

    @sensor(
        name=config.name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=_description(config),
        required_resource_keys=required,
    )
    def _cleanup_sensor(context: SensorEvaluationContext, **resources: object) -> SensorResult:
        # Called directly, Dagster hands the required resource in by its key (configurable, hence
        # **resources); evaluated by the daemon, it is on the context.
        bound = None
        if required:
            bound = resources.get(config.resource_key) or getattr(context.resources, config.resource_key, None)
        resource = bound if bound is not None else (io_manager.remote_store if io_manager is not None else None)
        return Tick(config, context, resource).run()

    return _cleanup_sensor


def _checked(
    where: str, code_location: str | None, prefix: str, leftover_grace: timedelta, orphan_grace: timedelta
) -> str:
    """The normalised prefix, once the arguments that need no Dagster context are checked."""
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
    return clean_prefix


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
