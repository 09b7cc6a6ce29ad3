"""``build_cleanup_sensor``: stored data follows the Dagster catalog.

A sensor that, on each tick, lists what its policies need below
``<store root>/<prefix>/`` (everything when orphans are on; otherwise only
``_staging`` and the folders of newly wiped and retained assets) and deletes
what its policies select:

* **leftovers** of failed writes: objects under ``<prefix>/_staging/`` and (on
  s3-pyarrow) incomplete multipart uploads, older than ``leftover_grace``;
* **wiped** assets: data of assets wiped in Dagster (``ASSET_WIPED`` events),
  decided by the run that wrote each object: materialized before the wipe ->
  deleted, after it -> kept, run still running -> decided on a later tick;
* **orphans** (opt-in): asset folders of assets this code location does not
  define, untouched for ``orphan_grace``, whose data this code location wrote
  (per the provenance the IO manager stamps on every object);
* **retention** (``keep_last_partitions``): all but the newest N partitions.

On s3-pyarrow the control path is s3fs: one flat paginated ``ListObjectsV2``,
bulk ``DeleteObjects`` (1000 keys a request, sent while the listing is still
paging for leftovers), ``HeadObject`` for the provenance of candidate objects
only, ``AbortMultipartUpload``. Other backends go through the ``Store`` API
(provenance from the ``_provenance.json`` sidecars).
"""

import json
import math
import posixpath
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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

from remote_store_dagster import _cleanup_plan as plan_mod
from remote_store_dagster._cleanup_plan import (
    AssetPath,
    Located,
    Partition,
    Plan,
    RunFacts,
    StoredObject,
    Upload,
    Wipe,
)
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._layout import STAGING_DIR, asset_folder, join, normalize_prefix
from remote_store_dagster._provenance import SIDECAR_NAME, Provenance
from remote_store_dagster._storage import ObjectInfo, Storage, storage_for
from remote_store_dagster.resources import RemoteStoreResource

__all__ = ["build_cleanup_sensor"]

RESOURCE_KEY = "remote_store"
#: Paths shown in the tick text and per asset in an observation.
SAMPLE_IN_TEXT = 10
SAMPLE_IN_OBSERVATION = 50
#: Paths written to the tick's debug log.
DEBUG_PATHS = 2000
#: New ``ASSET_WIPED`` events taken per tick; the rest wait for the next tick.
WIPE_EVENTS_PER_TICK = 1000
#: Undecided wipes the cursor carries at most; beyond that it stops advancing (never skips one).
MAX_PENDING_WIPES = 1000
_CURSOR_VERSION = 2


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
    code_location: str | None
    delete_unstamped_orphans: bool


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
        code_location=code_location,
        delete_unstamped_orphans=delete_unstamped_orphans,
    )
    policies = ["leftovers"] + (["wiped assets"] if delete_wiped else [])
    orphan_policy = "orphans of this code location" + (" and unstamped orphans" if delete_unstamped_orphans else "")
    policies += ([orphan_policy] if delete_orphans else []) + (["keep_last_partitions"] if keep else [])
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
    lookups: int = 0  # provenance reads (HeadObject / sidecar GET)


def _next_cursor(high: int | None, undecided: list[int]) -> tuple[int | None, list[int]]:
    """Cursor after a tick: the high-water mark and the undecided wipes below it, bounded.

    With more than ``MAX_PENDING_WIPES`` undecided wipes the high-water mark
    falls back to just below the first one that does not fit, so that one and
    every later wipe is read again next tick: the cursor never skips a wipe.
    """
    if len(undecided) <= MAX_PENDING_WIPES:
        return high, undecided
    return undecided[MAX_PENDING_WIPES] - 1, undecided[:MAX_PENDING_WIPES]


class _ProvenanceReader:
    """Provenance of data files, read only when a policy asks, each at most once a tick.

    Where it lives is the storage's business (S3 user metadata, read ``parallelism``
    ``HeadObject`` at once; sidecar files elsewhere).
    """

    def __init__(self, storage: Storage, listed: Mapping[str, ObjectInfo]) -> None:
        self.source = storage.provenance_source(listed)
        self.parallelism = self.source.parallelism
        self.lookups = 0
        self._cache: dict[str, Provenance | None] = {}

    def get_many(self, items: Sequence[Located]) -> list[Provenance | None]:
        missing = list(dict.fromkeys(item.obj.path for item in items if item.obj.path not in self._cache))
        self.lookups += len(missing)
        if len(missing) > 1 and self.parallelism > 1:
            with ThreadPoolExecutor(max_workers=min(self.parallelism, len(missing))) as pool:
                for path, provenance in zip(missing, pool.map(self.source.read, missing), strict=True):
                    self._cache[path] = provenance
        else:
            for path in missing:
                self._cache[path] = self.source.read(path)
        return [self._cache[item.obj.path] for item in items]


class _Deleter:
    """Deletes as paths come in (the storage's bulk deleter), nothing in a dry run; one scope guard."""

    def __init__(self, tick: "_Tick", storage: Storage) -> None:
        self.prefix = tick.config.prefix
        self.where = tick.where
        self.dry_run = tick.config.dry_run
        self.storage = storage
        keep = frozenset({self.prefix, join(self.prefix, STAGING_DIR)})
        self.bulk = None if self.dry_run else storage.bulk_deleter(keep)
        self.outcome = _Outcome()
        self.started = time.perf_counter()

    def add(self, path: str) -> None:
        escaped = plan_mod.outside_scope(self.prefix, [path])
        if escaped:  # a bug, never a reason to delete: stop before touching anything more
            raise RemoteStoreIOError(f"{self.where}: refusing to delete outside {self.prefix!r}: {escaped[:5]}")
        if self.bulk is not None:
            self.bulk.add(path)

    def discard_unsent(self) -> None:
        """Forget deletions not yet sent (the tick is failing): ``close`` then only waits."""
        if self.bulk is not None:
            self.bulk.discard_unsent()

    def abort_uploads(self, aborts: Sequence[plan_mod.Abort]) -> None:
        for abort in aborts:
            try:
                self.storage.abort_upload(abort.upload.path, abort.upload.upload_id)
            except Exception as exc:
                self.outcome.errors.append(f"abort {abort.upload.path} ({abort.upload.upload_id}): {exc}")

    def close(self) -> _Outcome:
        outcome = self.outcome
        if self.bulk is not None:
            requests, errors = self.bulk.close()
            outcome.delete_requests += requests
            outcome.errors.extend(errors)
        outcome.seconds = time.perf_counter() - self.started
        return outcome


class _Tick:
    def __init__(self, config: _Config, context: SensorEvaluationContext, resource: object) -> None:
        self.config = config
        self.context = context
        self.resource = resource
        self.where = f"cleanup sensor {config.name!r}"

    # -- setup and validation

    def _storage(self) -> Storage:
        resource = self.resource
        if not isinstance(resource, RemoteStoreResource):
            found = "nothing" if resource is None else type(resource).__name__
            raise RemoteStoreConfigError(
                f"{self.where}: needs a RemoteStoreResource bound to resource key {RESOURCE_KEY!r}, found {found}"
            )
        try:
            storage = storage_for(resource.get_store(self.config.store))
        except RemoteStoreConfigError as exc:
            raise RemoteStoreConfigError(f"{self.where}: store: {exc}") from None
        missing = storage.missing_cleanup_capabilities()
        if missing:
            raise RemoteStoreConfigError(
                f"{self.where}: store {self.config.store!r} cannot {' or '.join(missing)}; "
                "the cleanup sensor needs both"
            )
        return storage

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

    def _scopes(self, wipes: Sequence[Wipe], keep_last: Mapping[AssetPath, int]) -> list[str]:
        """The folders this tick must list: only what its policies look at.

        Orphans need everything below the prefix. Otherwise: ``_staging`` (leftovers),
        the folders of assets wiped since the cursor and of ``keep_last_partitions``
        assets, so a steady-state tick costs requests in proportion to in-flight
        writes and new wipes, not to the number of stored objects.
        """
        prefix = self.config.prefix
        if self.config.delete_orphans:
            return [prefix]
        wanted = {join(prefix, STAGING_DIR)}
        wanted.update(asset_folder(prefix, wipe.asset) for wipe in wipes)
        wanted.update(asset_folder(prefix, asset) for asset in keep_last)
        scopes: list[str] = []
        for scope in sorted(wanted):  # a parent sorts before its children: list it once
            if not any(scope.startswith(kept + "/") for kept in scopes):
                scopes.append(scope)
        return scopes

    def _iter_objects(self, storage: Storage, scope: str, now: datetime) -> Iterator[StoredObject]:
        """Every object below folder ``scope``, page by page (the caller acts before the next page)."""
        for info in storage.list_objects(scope):
            # Unknown time: never old enough to delete by age.
            modified = plan_mod.utc(info.modified) if info.modified is not None else now
            yield StoredObject(info.path, info.size, modified)

    def _uploads(self, storage: Storage) -> list[Upload]:
        try:
            pending = list(storage.pending_uploads(self.config.prefix))
        except Exception as exc:
            # Servers without ListMultipartUploads (s3rver) and IAM policies without
            # s3:ListBucketMultipartUploads: clean objects anyway, say what is not seen.
            self.context.log.warning(
                f"{self.where}: cannot list incomplete multipart uploads (needs s3:ListBucketMultipartUploads; "
                f"abort them with a bucket lifecycle rule instead): {exc}"
            )
            return []
        return [
            Upload(
                u.path,
                u.upload_id,
                plan_mod.utc(u.initiated),
                u.size,
                plan_mod.utc(u.last_part) if u.last_part else None,
            )
            for u in pending
        ]

    # -- whose data is this

    @property
    def location(self) -> str | None:
        """The code location this sensor cleans up for (configured, else where it is evaluated)."""
        if self.config.code_location:
            return self.config.code_location
        origin = self.context.code_location_origin
        name = getattr(origin, "location_name", None) if origin is not None else None
        return str(name) if name else None

    def _orphans(
        self, plan: Plan, reader: "_ProvenanceReader", located: list[Located], defined: set[AssetPath], now: datetime
    ) -> None:
        """Orphan folders whose every data file this code location wrote (stop at the first that it did not)."""
        config = self.config
        candidates = plan_mod.orphan_candidates(located, defined, now, config.orphan_grace)
        if not candidates:
            return
        location = self.location
        if location is None and not config.delete_unstamped_orphans:
            plan.kept["orphan folders (this sensor's code location is unknown)"] += len(candidates)
            self.context.log.warning(
                f"{self.where}: cannot tell which code location it cleans up for, so it keeps every "
                f"orphaned folder ({len(candidates)}); pass build_cleanup_sensor(code_location=...) "
                "or run it in a code location (dagster dev / the daemon)"
            )
            return
        accepted = {plan_mod.OURS} | ({plan_mod.UNSTAMPED} if config.delete_unstamped_orphans else set())
        for asset, items in sorted(candidates.items()):
            data = sorted((item for item in items if item.is_data_file), key=lambda item: item.obj.path)
            verdict = plan_mod.OURS
            # One lookup first (a foreign folder costs one request), then bounded parallel chunks.
            for start, stop in [
                (0, 1),
                *((i, i + reader.parallelism) for i in range(1, len(data), reader.parallelism)),
            ]:
                chunk = data[start:stop]
                verdicts = {plan_mod.ownership(p, location, asset) for p in reader.get_many(chunk)}
                bad = verdicts - accepted
                if bad:
                    verdict = plan_mod.FOREIGN if plan_mod.FOREIGN in bad else plan_mod.UNSTAMPED
                    break
            if verdict == plan_mod.OURS:
                for item in items:
                    plan.add(item, plan_mod.ORPHAN)
            elif verdict == plan_mod.FOREIGN:
                plan.kept["orphan folders of another code location"] += 1
            else:
                plan.kept["orphan folders without provenance (see delete_unstamped_orphans)"] += 1

    # -- wipes

    def _cursor(self) -> tuple[int | None, list[int]]:
        """(every wipe up to this storage id was seen, undecided wipes at or below it)."""
        raw = self.context.cursor
        if not raw:
            return None, []
        try:
            data = json.loads(raw)
            after = data["wiped_after"]
            pending = [int(i) for i in data.get("pending_wipes", [])]
            return (int(after) if after is not None else None), pending
        except (ValueError, KeyError, TypeError, AttributeError):
            self.context.log.warning(f"{self.where}: ignoring unreadable cursor {raw!r}")
            return None, []

    def _wipes(self, instance: DagsterInstance, after: int | None, pending: list[int]) -> tuple[list[Wipe], int | None]:
        """The pending wipes and up to WIPE_EVENTS_PER_TICK new ones; the new high-water mark."""
        low = min([*pending, (after or 0) + 1]) - 1 if pending else after
        # Run-sharded SQLite (the default local instance) rejects a plain int cursor and ignores
        # the id of a RunShardedEventsCursor; other storages filter by its id. Filtering again
        # here makes both behave the same; the limit is applied after that filter.
        cursor = RunShardedEventsCursor(id=low, run_updated_after=datetime(1970, 1, 1)) if low else None
        wanted = set(pending)
        records = sorted(
            (
                record
                for record in instance.get_event_records(
                    EventRecordsFilter(event_type=DagsterEventType.ASSET_WIPED, after_cursor=cursor), ascending=True
                )
                if record.storage_id in wanted or after is None or record.storage_id > after
            ),
            key=lambda record: record.storage_id,
        )
        old = [r for r in records if after is not None and r.storage_id <= after]
        new = [r for r in records if after is None or r.storage_id > after][:WIPE_EVENTS_PER_TICK]
        high = new[-1].storage_id if new else after
        wipes = []
        for record in [*old, *new]:
            event = record.event_log_entry.dagster_event
            data = event.event_specific_data if event else None
            key = getattr(data, "asset_key", None) or record.asset_key
            if key is None:
                continue
            partitions = getattr(data, "partition_keys", None)
            wipes.append(
                Wipe(
                    tuple(key.path),
                    record.storage_id,
                    record.timestamp,
                    frozenset(partitions) if partitions is not None else None,
                )
            )
        return wipes, high

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

    def _run_facts(self, instance: DagsterInstance, run_id: str) -> RunFacts | None:
        """Status first, then events: a run seen running with no event yet means 'wait'."""
        record = instance.get_run_record_by_id(run_id)
        if record is None:
            return None
        finished = record.dagster_run.is_finished
        materialized: dict[tuple[AssetPath, str | None], float] = {}
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            if event is None or event.asset_key is None:
                continue
            key = (tuple(event.asset_key.path), event.partition)
            materialized[key] = max(materialized.get(key, 0.0), entry.timestamp)
        return RunFacts(finished=finished, end_time=record.end_time, materialized=materialized)

    def _apply_wipes(
        self,
        plan: Plan,
        reader: "_ProvenanceReader",
        located: list[Located],
        wipes: list[Wipe],
        instance: DagsterInstance,
    ) -> set[int]:
        """Add wiped objects to ``plan``; returns the storage ids of wipes still undecided."""
        by_asset = plan_mod.wipes_by_asset(wipes)
        covered: list[tuple[Located, Wipe]] = []
        for item in located:
            if item.asset in by_asset:
                wipe = plan_mod.covering_wipe(by_asset[item.asset], item)
                if wipe is not None:
                    covered.append((item, wipe))
        if not covered:
            return set()
        location = self.location
        runs: dict[str, RunFacts | None] = {}
        kept_paths: dict[int, set[str]] = {}

        def by_time(item: Located, wipe: Wipe) -> str:
            if wipe.storage_id not in kept_paths:
                kept_paths[wipe.storage_id] = self._kept_after_wipe(instance, wipe)
            return plan_mod.wiped_by_time(item, wipe, kept_paths[wipe.storage_id])

        data = [(item, wipe) for item, wipe in covered if item.is_data_file]
        provenances = reader.get_many([item for item, _ in data])
        decisions: dict[str, str] = {}
        undecided: set[int] = set()
        for (item, wipe), provenance in zip(data, provenances, strict=True):
            decision: str | None = None
            if provenance is not None:
                if provenance.run_id not in runs:
                    runs[provenance.run_id] = self._run_facts(instance, provenance.run_id)
                assert item.asset is not None
                decision = plan_mod.wiped_by_run(item.asset, provenance, wipe, runs[provenance.run_id], location)
            if decision is None:
                decision = by_time(item, wipe)
            decisions[item.obj.path] = decision
        by_folder: dict[str, list[str]] = defaultdict(list)
        for path, decision in decisions.items():
            by_folder[posixpath.dirname(path)].append(decision)
        for item, wipe in covered:
            path = item.obj.path
            if item.is_data_file:
                decision = decisions[path]
            elif posixpath.basename(path) == SIDECAR_NAME and by_folder.get(posixpath.dirname(path)):
                # The sidecar follows the data it describes.
                folder = by_folder[posixpath.dirname(path)]
                decision = (
                    plan_mod.WAIT
                    if plan_mod.WAIT in folder
                    else plan_mod.KEEP
                    if plan_mod.KEEP in folder
                    else plan_mod.DELETE
                )
            else:
                decision = by_time(item, wipe)
            if decision == plan_mod.DELETE:
                plan.add(item, plan_mod.WIPED)
            elif decision == plan_mod.WAIT:
                undecided.add(wipe.storage_id)
                plan.kept["wiped objects of runs still running (decided on a later tick)"] += 1
        return undecided

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

    # -- the tick

    def run(self) -> SensorResult:
        config = self.config
        storage = self._storage()
        defined = self._defined_assets()
        keep_last = self._keep_last(defined)
        instance = self.context.instance
        now = datetime.now(UTC)

        after, pending = self._cursor()
        wipes: list[Wipe] = []
        high = after
        if config.delete_wiped:
            wipes, high = self._wipes(instance, after, pending)

        plan = Plan()
        deleter = _Deleter(self, storage)
        undecided: set[int] = set()
        listed = 0
        reader: _ProvenanceReader | None = None
        try:
            # Leftovers need no other page: their deletes go out while the listing is still paging.
            located: list[Located] = []
            objects = (
                obj for scope in self._scopes(wipes, keep_last) for obj in self._iter_objects(storage, scope, now)
            )
            for obj in objects:
                listed += 1
                item = plan_mod.locate(config.prefix, obj)
                if plan_mod.is_leftover(config.prefix, item, now, config.leftover_grace):
                    plan.add(item, plan_mod.LEFTOVER)
                    deleter.add(obj.path)
                elif not item.top_reserved:
                    located.append(item)
            plan_mod.leftovers(plan, config.prefix, [], self._uploads(storage), now, config.leftover_grace)
            # The other policies need the whole listing (newest object of a folder, partition ranks).
            listed_objects = {
                item.obj.path: ObjectInfo(item.obj.path, item.obj.size, item.obj.modified) for item in located
            }
            reader = _ProvenanceReader(storage, listed_objects)
            if wipes:
                undecided = self._apply_wipes(plan, reader, located, wipes, instance)
            if config.delete_orphans:
                self._orphans(plan, reader, located, set(defined), now)
            if keep_last:
                plan_mod.retention(plan, located, keep_last, self._retention_sort_key(defined))
            escaped = plan_mod.outside_scope(
                config.prefix, [*plan.deletions, *(abort.upload.path for abort in plan.aborts)]
            )
            if escaped:  # a bug in a policy, never a reason to delete: send nothing more
                raise RemoteStoreIOError(f"{self.where}: refusing to delete outside {config.prefix!r}: {escaped[:5]}")
            for path, deletion in plan.deletions.items():
                if deletion.policy != plan_mod.LEFTOVER:
                    deleter.add(path)
            escaped = plan_mod.outside_scope(config.prefix, [abort.upload.path for abort in plan.aborts])
            if escaped:
                raise RemoteStoreIOError(f"{self.where}: refusing to delete outside {config.prefix!r}: {escaped[:5]}")
            if not config.dry_run:
                deleter.abort_uploads(plan.aborts)
        except BaseException:
            deleter.discard_unsent()  # only bulk requests already sent (1000 keys each) can have run
            raise
        finally:
            outcome = deleter.close()
        outcome.lookups = reader.lookups if reader is not None else 0
        if outcome.errors:
            # The cursor does not move: the next tick retries (deleting is idempotent).
            raise RemoteStoreIOError(
                f"{self.where}: {len(outcome.errors)} deletion(s) failed, e.g. {'; '.join(outcome.errors[:5])}"
            )

        text = self._summary(plan, listed, outcome)
        self.context.log.info(text)
        if plan.deletions:
            paths = sorted(plan.deletions)
            more = f" (+{len(paths) - DEBUG_PATHS} more)" if len(paths) > DEBUG_PATHS else ""
            self.context.log.debug(f"{self.where}: paths: {', '.join(paths[:DEBUG_PATHS])}{more}")
        if config.dry_run:
            new_after, new_pending = after, pending
        else:
            new_after, new_pending = _next_cursor(high, sorted(undecided))
        return SensorResult(
            skip_reason=text,
            cursor=json.dumps({"v": _CURSOR_VERSION, "wiped_after": new_after, "pending_wipes": new_pending}),
            asset_events=self._observations(plan, set(defined), outcome),
        )

    # -- reporting

    def _summary(self, plan: Plan, listed: int, outcome: _Outcome) -> str:
        config = self.config
        scope = f"store {config.store!r} below {config.prefix + '/' if config.prefix else 'its root'}"
        kept = "; ".join(f"{n} {reason}" for reason, n in sorted(plan.kept.items()))
        tail = (f" Kept: {kept}." if kept else "") + (
            f" {_count(outcome.lookups, 'provenance lookup')}." if outcome.lookups else ""
        )
        if not plan.deletions and not plan.aborts:
            dry = "[dry run] " if config.dry_run else ""
            return f"{dry}Nothing to clean up in {scope} ({_count(listed, 'object')} listed).{tail}"
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
        return text + "." + tail

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
