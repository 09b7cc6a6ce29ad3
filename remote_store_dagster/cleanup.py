"""``build_cleanup_sensor``: stored data follows the Dagster catalog.

A sensor that, on each tick, lists everything below ``<store root>/<prefix>/``
once and deletes what its policies select:

* **leftovers** of failed writes: objects under ``<prefix>/_staging/`` and (on
  s3-pyarrow) incomplete multipart uploads, older than ``leftover_grace``;
* **wiped** assets: data of assets wiped in Dagster (``ASSET_WIPED`` events
  after the cursor), except what was written or materialized after the wipe;
* **orphans** (opt-in): asset folders of assets this code location does not
  define, untouched for ``orphan_grace``;
* **retention** (``keep_last_partitions``): all but the newest N partitions.

On s3-pyarrow the control path is s3fs: one flat paginated ``ListObjectsV2``,
bulk ``DeleteObjects`` (1000 keys a request), ``AbortMultipartUpload``. Other
backends go through the ``Store`` API.
"""

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    EventRecordsFilter,
    MetadataValue,
    MultiPartitionsDefinition,
    RunShardedEventsCursor,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    TimeWindowPartitionsDefinition,
    sensor,
)
from remote_store import Capability, RemoteStoreError, Store

from remote_store_dagster import _cleanup_plan as plan_mod
from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._cleanup_plan import AssetPath, Located, Partition, Plan, StoredObject, Upload, Wipe
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._layout import STAGING_DIR, join, normalize_prefix
from remote_store_dagster.resources import RemoteStoreResource

__all__ = ["build_cleanup_sensor"]

RESOURCE_KEY = "remote_store"
#: Paths shown in the tick text and per asset in an observation.
SAMPLE_IN_TEXT = 10
SAMPLE_IN_OBSERVATION = 50
#: Paths written to the tick's debug log.
DEBUG_PATHS = 2000
#: ``ASSET_WIPED`` events handled per tick; the rest wait for the next tick.
WIPE_EVENTS_PER_TICK = 1000
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class _Config:
    name: str
    store: str
    prefix: str
    leftover_grace: timedelta
    delete_wiped: bool
    delete_orphans: bool
    orphan_grace: timedelta
    keep_last_partitions: Mapping[str, int]
    dry_run: bool


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
) -> SensorDefinition:
    """A sensor that deletes stored data the Dagster catalog no longer needs.

    Args:
        name: Sensor name.
        store: Store profile of the ``RemoteStoreResource`` bound to resource key ``"remote_store"``.
        prefix: The ``RemoteStoreIOManager``'s prefix; nothing outside ``<store root>/<prefix>/``
            is ever listed or deleted.
        leftover_grace: Minimum age of failed-write leftovers (``_staging`` objects, incomplete
            multipart uploads) before they are deleted; younger ones may be writes in flight.
        delete_wiped: Delete the data of assets wiped in Dagster, except what was written or
            materialized after the wipe.
        delete_orphans: Delete asset folders of assets this code location does not define (only
            enable when this code location alone writes below ``prefix``).
        orphan_grace: An orphaned folder is deleted only when its newest object is older than this.
        keep_last_partitions: Asset key (``"a/b"``) -> number of newest partitions to keep; older
            partitions are deleted. Time-window partitions are ordered by time, others by
            last-modified time.
        dry_run: Delete nothing; report what would be deleted.
        minimum_interval_seconds: Minimum time between ticks.
        default_status: Whether the sensor starts running when the code location loads.
    """
    where = f"build_cleanup_sensor({name!r})"
    if not isinstance(store, str) or not store:
        raise RemoteStoreConfigError(f"{where}: store must name a store profile of the RemoteStoreResource")
    try:
        clean_prefix = normalize_prefix(prefix)
    except ValueError as exc:
        raise RemoteStoreConfigError(f"{where}: prefix: {exc}") from None
    for field_name, grace in (("leftover_grace", leftover_grace), ("orphan_grace", orphan_grace)):
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise RemoteStoreConfigError(f"{where}: {field_name} must be a non-negative timedelta, got {grace!r}")
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
    config = _Config(
        name=name,
        store=store,
        prefix=clean_prefix,
        leftover_grace=leftover_grace,
        delete_wiped=delete_wiped,
        delete_orphans=delete_orphans,
        orphan_grace=orphan_grace,
        keep_last_partitions=keep,
        dry_run=dry_run,
    )
    policies = ["leftovers"] + (["wiped assets"] if delete_wiped else [])
    policies += (["orphans"] if delete_orphans else []) + (["keep_last_partitions"] if keep else [])
    description = (
        f"{'[dry run] ' if dry_run else ''}Deletes {', '.join(policies)} from remote-store store {store!r}"
        f" below {clean_prefix + '/' if clean_prefix else 'its root'}."
    )

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=description,
    )
    def _cleanup_sensor(context: SensorEvaluationContext, remote_store: RemoteStoreResource) -> SensorResult:
        # Dagster binds the parameter named like the resource key ("remote_store").
        return _Tick(config, context, remote_store).run()

    return _cleanup_sensor


# --- one tick ------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    delete_requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Tick:
    def __init__(self, config: _Config, context: SensorEvaluationContext, resource: object) -> None:
        self.config = config
        self.context = context
        self.resource = resource
        self.where = f"cleanup sensor {config.name!r}"

    # -- setup and validation

    def _store(self) -> Store:
        resource = self.resource
        if not isinstance(resource, RemoteStoreResource):
            found = "nothing" if resource is None else type(resource).__name__
            raise RemoteStoreConfigError(
                f"{self.where}: needs a RemoteStoreResource bound to resource key {RESOURCE_KEY!r}, found {found}"
            )
        try:
            store = resource.get_store(self.config.store)
        except RemoteStoreConfigError as exc:
            raise RemoteStoreConfigError(f"{self.where}: store: {exc}") from None
        missing = [cap.value for cap in (Capability.LIST, Capability.DELETE) if not store.supports(cap)]
        if missing:
            raise RemoteStoreConfigError(
                f"{self.where}: store {self.config.store!r} cannot {' or '.join(missing)}; "
                "the cleanup sensor needs both"
            )
        return store

    def _defined_assets(self) -> dict[AssetPath, Any]:
        """Asset key path -> partitions definition of every asset this code location defines."""
        repo = self.context.repository_def
        if repo is None:
            if self.config.delete_orphans or self.config.keep_last_partitions:
                raise RemoteStoreConfigError(
                    f"{self.where}: needs the code location's definitions (orphans, keep_last_partitions); "
                    "evaluate it with build_sensor_context(definitions=...)"
                )
            return {}
        graph = repo.asset_graph
        return {tuple(key.path): graph.get(key).partitions_def for key in graph.get_all_asset_keys()}

    def _keep_last(self, defined: Mapping[AssetPath, Any]) -> dict[AssetPath, int]:
        keep: dict[AssetPath, int] = {}
        for user_key, count in self.config.keep_last_partitions.items():
            path = tuple(AssetKey.from_user_string(user_key).path)
            if path not in defined:
                known = ", ".join(sorted("/".join(p) for p in defined)[:20]) or "(none)"
                raise RemoteStoreConfigError(
                    f"{self.where}: keep_last_partitions names asset {user_key!r}, which this code location "
                    f"does not define; defined assets: {known}"
                )
            if defined[path] is None:
                raise RemoteStoreConfigError(
                    f"{self.where}: keep_last_partitions names asset {user_key!r}, which is not partitioned"
                )
            keep[path] = count
        return keep

    # -- listing

    def _list(self, store: Store, now: datetime) -> tuple[list[StoredObject], list[Upload]]:
        prefix = self.config.prefix
        if adapter.is_s3_pyarrow(store):
            objects = [
                StoredObject(path, size, plan_mod.utc(modified))
                for path, size, modified in adapter.s3_list_objects(store, prefix)
            ]
            uploads = []
            try:
                pending = list(adapter.s3_list_multipart_uploads(store, prefix))
            except Exception as exc:
                # Some S3-compatible services do not implement ListMultipartUploads: clean objects anyway.
                self.context.log.warning(f"{self.where}: cannot list incomplete multipart uploads: {exc}")
                pending = []
            for path, upload_id, initiated in pending:
                size, last_part = adapter.s3_multipart_upload_parts(store, path, upload_id)
                uploads.append(
                    Upload(
                        path, upload_id, plan_mod.utc(initiated), size, plan_mod.utc(last_part) if last_part else None
                    )
                )
            return objects, uploads
        objects = []
        try:
            infos = list(store.list_files(prefix, recursive=True))
        except RemoteStoreError as exc:
            if type(exc).__name__ == "NotFound":
                return [], []
            raise
        for info in infos:
            modified = plan_mod.utc(info.modified_at)
            if modified.year <= 1:
                modified = now  # unknown time: never old enough to delete by age
            objects.append(StoredObject(str(info.path), int(info.size), modified))
        return objects, []

    # -- wipes

    def _cursor(self) -> int | None:
        raw = self.context.cursor
        if not raw:
            return None
        try:
            value = json.loads(raw)["wiped_after"]
        except (ValueError, KeyError, TypeError):
            self.context.log.warning(f"{self.where}: ignoring unreadable cursor {raw!r}")
            return None
        return int(value) if value is not None else None

    def _wipes(self, instance: DagsterInstance, after: int | None) -> tuple[list[Wipe], int | None]:
        # Run-sharded SQLite (the default local instance) rejects a plain int cursor and ignores
        # the id of a RunShardedEventsCursor; other storages filter by its id. Filtering again
        # here makes both behave the same; the limit is applied after that filter.
        cursor = RunShardedEventsCursor(id=after, run_updated_after=datetime(1970, 1, 1)) if after else None
        records = [
            record
            for record in instance.get_event_records(
                EventRecordsFilter(event_type=DagsterEventType.ASSET_WIPED, after_cursor=cursor), ascending=True
            )
            if after is None or record.storage_id > after
        ]
        records.sort(key=lambda record: record.storage_id)
        latest: dict[AssetPath, Wipe] = {}
        last_id = after
        for record in records[:WIPE_EVENTS_PER_TICK]:
            last_id = record.storage_id
            event = record.event_log_entry.dagster_event
            data = event.event_specific_data if event else None
            key = getattr(data, "asset_key", None) or record.asset_key
            if key is None:
                continue
            partitions = getattr(data, "partition_keys", None)
            latest[tuple(key.path)] = Wipe(
                tuple(key.path),
                record.storage_id,
                record.timestamp,
                frozenset(partitions) if partitions is not None else None,
            )
        return list(latest.values()), last_id

    def _kept_after_wipe(self, instance: DagsterInstance, wipe: Wipe) -> set[str]:
        """Store paths that materializations recorded after ``wipe`` point to."""
        kept: set[str] = set()
        cursor: str | None = None
        while True:
            result = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(list(wipe.asset)), after_storage_id=wipe.storage_id),
                limit=1000,
                cursor=cursor,
                ascending=True,
            )
            for record in result.records:
                materialization = record.asset_materialization
                if materialization is None:
                    continue
                value = materialization.metadata.get("remote_store/path")
                path = getattr(value, "value", value)
                if isinstance(path, str) and path:
                    kept.add(path.strip("/"))
            if not result.has_more:
                return kept
            cursor = result.cursor

    # -- retention ordering

    @staticmethod
    def _retention_sort_key(defined: Mapping[AssetPath, Any]) -> Any:
        def sort_key(asset: AssetPath, partition: Partition, modified: datetime) -> datetime:
            pdef = defined.get(asset)
            key: str | None = None
            time_def: TimeWindowPartitionsDefinition | None = None
            if isinstance(pdef, TimeWindowPartitionsDefinition) and len(partition) == 1:
                time_def, key = pdef, partition[0][1]
            elif isinstance(pdef, MultiPartitionsDefinition):
                for dimension in pdef.partitions_defs:
                    if isinstance(dimension.partitions_def, TimeWindowPartitionsDefinition):
                        keys = dict(partition)
                        if dimension.name in keys:
                            time_def, key = dimension.partitions_def, keys[dimension.name]
                        break
            if time_def is not None and key is not None:
                try:
                    return plan_mod.utc(time_def.time_window_for_partition_key(key).start)
                except Exception:
                    pass
            return modified

        return sort_key

    # -- deletion

    def _delete(self, store: Store, plan: Plan) -> _Outcome:
        outcome = _Outcome()
        started = time.perf_counter()
        paths = sorted(plan.deletions)
        if adapter.is_s3_pyarrow(store):
            outcome.delete_requests, outcome.errors = adapter.s3_delete_objects(store, paths)
            for abort in plan.aborts:
                try:
                    adapter.s3_abort_multipart_upload(store, abort.upload.path, abort.upload.upload_id)
                except Exception as exc:
                    outcome.errors.append(f"abort {abort.upload.path} ({abort.upload.upload_id}): {exc}")
        else:
            for path in paths:
                try:
                    store.delete(path, missing_ok=True)
                    outcome.delete_requests += 1
                except Exception as exc:
                    outcome.errors.append(f"{path}: {exc}")
            self._prune_empty_folders(store, paths)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _prune_empty_folders(self, store: Store, paths: list[str]) -> None:
        """Remove folders the deletions emptied (local disk keeps empty directories)."""
        stop = {self.config.prefix, join(self.config.prefix, STAGING_DIR)}
        folders: set[str] = set()
        for path in paths:
            parts = path.split("/")[:-1]
            while parts and "/".join(parts) not in stop:
                folders.add("/".join(parts))
                parts.pop()
        for folder in sorted(folders, key=lambda f: (-f.count("/"), f)):
            try:
                store.delete_folder(folder, recursive=False, missing_ok=True)
            except Exception:
                continue

    # -- the tick

    def run(self) -> SensorResult:
        config = self.config
        store = self._store()
        defined = self._defined_assets()
        keep_last = self._keep_last(defined)
        instance = self.context.instance
        now = datetime.now(UTC)

        cursor = self._cursor()
        wipes: list[Wipe] = []
        last_wipe_id = cursor
        if config.delete_wiped:
            wipes, last_wipe_id = self._wipes(instance, cursor)

        objects, uploads = self._list(store, now)
        located = [plan_mod.locate(config.prefix, obj) for obj in objects]
        plan = Plan()
        plan_mod.leftovers(plan, config.prefix, located, uploads, now, config.leftover_grace)
        if wipes:
            plan_mod.wiped(plan, located, wipes, lambda wipe: self._kept_after_wipe(instance, wipe))
        if config.delete_orphans:
            plan_mod.orphans(plan, located, set(defined), now, config.orphan_grace)
        if keep_last:
            plan_mod.retention(plan, located, keep_last, self._retention_sort_key(defined))

        escaped = plan_mod.outside_scope(
            config.prefix, [*plan.deletions, *(abort.upload.path for abort in plan.aborts)]
        )
        if escaped:  # a bug, never a reason to delete: stop before touching anything
            raise RemoteStoreIOError(f"{self.where}: refusing to delete outside {config.prefix!r}: {escaped[:5]}")

        outcome = _Outcome()
        if not config.dry_run and (plan.deletions or plan.aborts):
            outcome = self._delete(store, plan)
            if outcome.errors:
                # The cursor does not move: the next tick retries (deleting is idempotent).
                raise RemoteStoreIOError(
                    f"{self.where}: {len(outcome.errors)} deletion(s) failed, e.g. {'; '.join(outcome.errors[:5])}"
                )

        text = self._summary(plan, len(objects), outcome)
        self.context.log.info(text)
        if plan.deletions:
            listed = sorted(plan.deletions)
            more = f" (+{len(listed) - DEBUG_PATHS} more)" if len(listed) > DEBUG_PATHS else ""
            self.context.log.debug(f"{self.where}: paths: {', '.join(listed[:DEBUG_PATHS])}{more}")
        new_cursor = cursor if config.dry_run else last_wipe_id
        return SensorResult(
            skip_reason=text,
            cursor=json.dumps({"v": _CURSOR_VERSION, "wiped_after": new_cursor}),
            asset_events=self._observations(plan, set(defined), outcome),
        )

    # -- reporting

    def _summary(self, plan: Plan, listed: int, outcome: _Outcome) -> str:
        config = self.config
        scope = f"store {config.store!r} below {config.prefix + '/' if config.prefix else 'its root'}"
        if not plan.deletions and not plan.aborts:
            dry = "[dry run] " if config.dry_run else ""
            return f"{dry}Nothing to clean up in {scope} ({_count(listed, 'object')} listed)."
        deletions = list(plan.deletions.values())
        total = sum(d.obj.size for d in deletions)
        verb = "Would delete" if config.dry_run else "Deleted"
        head = f"{'[dry run] ' if config.dry_run else ''}{verb} {_count(len(deletions), 'object')} ({_bytes(total)})"
        if plan.aborts:
            verb_uploads = "would abort" if config.dry_run else "aborted"
            upload_bytes = sum(a.upload.size for a in plan.aborts)
            aborted = _count(len(plan.aborts), "incomplete multipart upload")
            head += f" and {verb_uploads} {aborted} ({_bytes(upload_bytes)})"
        parts = []
        for policy in plan_mod.POLICIES:
            chosen = [d for d in deletions if d.policy == policy]
            uploads = len(plan.aborts) if policy == plan_mod.LEFTOVER else 0
            if not chosen and not uploads:
                continue
            assets = sorted({"/".join(d.asset) for d in chosen if d.asset})
            part = f"{policy}: {_count(len(chosen), 'object')} ({_bytes(sum(d.obj.size for d in chosen))})"
            if uploads:
                part += f" + {_count(uploads, 'upload')}"
            if assets:
                part += f" [assets: {', '.join(assets[:10])}{', ...' if len(assets) > 10 else ''}]"
            parts.append(part)
        sample = sorted(plan.deletions)[:SAMPLE_IN_TEXT] + [a.upload.path for a in plan.aborts][:SAMPLE_IN_TEXT]
        more = len(plan.deletions) + len(plan.aborts) - len(sample)
        text = f"{head} in {scope}; {'; '.join(parts)}. Paths: {', '.join(sample)}"
        if more > 0:
            text += f" (+{more} more)"
        if not config.dry_run:
            text += f". {_count(outcome.delete_requests, 'delete request')} in {outcome.seconds:.2f}s"
        return text + "."

    def _observations(self, plan: Plan, defined: set[AssetPath], outcome: _Outcome) -> list[AssetObservation]:
        """One observation per affected asset that this code location defines.

        Assets it does not define (orphans, wiped assets removed from code) get
        none: an observation would bring them back into the asset catalog.
        """
        by_asset: dict[AssetPath, list[plan_mod.Deletion]] = defaultdict(list)
        for deletion in plan.deletions.values():
            if deletion.asset in defined:
                by_asset[deletion.asset].append(deletion)
        aborts_by_asset: dict[AssetPath, list[plan_mod.Abort]] = defaultdict(list)
        for abort in plan.aborts:
            if abort.asset in defined:
                aborts_by_asset[abort.asset].append(abort)
        observations = []
        for asset in sorted(set(by_asset) | set(aborts_by_asset)):
            deletions = sorted(by_asset.get(asset, []), key=lambda d: d.obj.path)
            aborts = aborts_by_asset.get(asset, [])
            policies = Counter(d.policy for d in deletions)
            partitions = sorted({_located_partition_key(self.config.prefix, d) for d in deletions} - {""})
            size = sum(d.obj.size for d in deletions)
            verb = "would delete" if self.config.dry_run else "deleted"
            metadata: dict[str, Any] = {
                "remote_store/cleanup_sensor": self.config.name,
                "remote_store/store": self.config.store,
                "remote_store/dry_run": self.config.dry_run,
                "remote_store/deleted_objects": len(deletions),
                "remote_store/deleted_bytes": size,
                "remote_store/aborted_uploads": len(aborts),
                "remote_store/aborted_upload_bytes": sum(a.upload.size for a in aborts),
                "remote_store/policies": ", ".join(f"{p}: {n}" for p, n in sorted(policies.items()))
                or plan_mod.LEFTOVER,
                "remote_store/deleted_paths": MetadataValue.json(
                    [d.obj.path for d in deletions[:SAMPLE_IN_OBSERVATION]]
                    + [a.upload.path for a in aborts[:SAMPLE_IN_OBSERVATION]]
                ),
            }
            if partitions:
                metadata["remote_store/deleted_partitions"] = MetadataValue.json(partitions[:SAMPLE_IN_OBSERVATION])
            observations.append(
                AssetObservation(
                    asset_key=AssetKey(list(asset)),
                    description=(
                        f"Cleanup sensor {self.config.name!r} {verb} "
                        f"{_count(len(deletions), 'object')} ({_bytes(size)})"
                        + (f" and {_count(len(aborts), 'incomplete upload')}" if aborts else "")
                        + (" [dry run]" if self.config.dry_run else "")
                    ),
                    metadata=metadata,
                )
            )
        return observations


def _located_partition_key(prefix: str, deletion: plan_mod.Deletion) -> str:
    located: Located = plan_mod.locate(prefix, deletion.obj)
    return located.partition_key if located.partition else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    exponent = min(int(math.log(count, 1024)), 4)
    return f"{count / 1024**exponent:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][exponent]}"
