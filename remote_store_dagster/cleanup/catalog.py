"""What a tick reads from Dagster: its cursor, the wipes, the runs, the definitions.

Everything the policies need from the instance or the code location's
definitions goes through ``Catalog``, so the cost of a tick against the
instance is visible in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    EventRecordsFilter,
    MultiPartitionsDefinition,
    RunShardedEventsCursor,
    TimeWindowPartitionsDefinition,
)

from remote_store_dagster._errors import RemoteStoreConfigError
from remote_store_dagster.cleanup.plan import AssetPath, Partition, RunFacts, Wipe, utc

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dagster import DagsterInstance, SensorEvaluationContext

    from remote_store_dagster.cleanup.config import CleanupConfig

__all__ = [
    "CURSOR_VERSION",
    "MAX_PENDING_WIPES",
    "WIPE_EVENTS_PER_TICK",
    "Catalog",
    "WipeCursor",
    "next_cursor",
    "retention_sort_key",
]

#: New ``ASSET_WIPED`` events taken per tick; the rest wait for the next tick.
WIPE_EVENTS_PER_TICK = 1000
#: Undecided wipes the cursor carries at most; beyond that it stops advancing (never skips one).
MAX_PENDING_WIPES = 1000
CURSOR_VERSION = 2


@dataclass(frozen=True)
class WipeCursor:
    """Every wipe up to ``after`` (an event storage id) was read; ``pending`` are still undecided."""

    after: int | None = None
    pending: tuple[int, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "wiped_after": self.after, "pending_wipes": list(self.pending)})


def next_cursor(high: int | None, undecided: list[int]) -> WipeCursor:
    """Cursor after a tick: the high-water mark and the undecided wipes below it, bounded.

    With more than ``MAX_PENDING_WIPES`` undecided wipes the high-water mark
    falls back to just below the first one that does not fit, so that one and
    every later wipe is read again next tick: the cursor never skips a wipe.
    """
    if len(undecided) <= MAX_PENDING_WIPES:
        return WipeCursor(high, tuple(undecided))
    return WipeCursor(undecided[MAX_PENDING_WIPES] - 1, tuple(undecided[:MAX_PENDING_WIPES]))


class Catalog:
    """The sensor context's instance and definitions, read the way the policies need them."""

    def __init__(self, config: CleanupConfig, context: SensorEvaluationContext) -> None:
        self.config = config
        self.context = context
        self.instance: DagsterInstance = context.instance
        self.where = config.where

    # -- the cursor

    def cursor(self) -> WipeCursor:
        """The stored cursor; an unreadable one is reported and read as empty (wipes are re-read)."""
        raw = self.context.cursor
        if not raw:
            return WipeCursor()
        try:
            data = json.loads(raw)
            after = data["wiped_after"]
            pending = tuple(int(i) for i in data.get("pending_wipes", []))
            return WipeCursor(int(after) if after is not None else None, pending)
        except (ValueError, KeyError, TypeError, AttributeError):
            self.context.log.warning(f"{self.where}: ignoring unreadable cursor {raw!r}")
            return WipeCursor()

    # -- the definitions

    @property
    def location(self) -> str | None:
        """The code location this sensor cleans up for (configured, else where it is evaluated)."""
        if self.config.code_location:
            return self.config.code_location
        origin = self.context.code_location_origin
        name = getattr(origin, "location_name", None) if origin is not None else None
        return str(name) if name else None

    def defined_assets(self) -> dict[AssetPath, Any]:
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

    def keep_last(self, defined: Mapping[AssetPath, Any]) -> dict[AssetPath, int]:
        """``keep_last_partitions`` by asset path; each must be a partitioned asset defined here."""
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

    # -- wipes

    def wipes(self, cursor: WipeCursor) -> tuple[list[Wipe], int | None]:
        """The pending wipes and up to WIPE_EVENTS_PER_TICK new ones; the new high-water mark."""
        after, pending = cursor.after, cursor.pending
        low = min([*pending, (after or 0) + 1]) - 1 if pending else after
        # Run-sharded SQLite (the default local instance) rejects a plain int cursor and ignores
        # the id of a RunShardedEventsCursor; other storages filter by its id. Filtering again
        # here makes both behave the same; the limit is applied after that filter.
        event_cursor = RunShardedEventsCursor(id=low, run_updated_after=datetime(1970, 1, 1)) if low else None
        wanted = set(pending)
        records = sorted(
            (
                record
                for record in self.instance.get_event_records(
                    EventRecordsFilter(event_type=DagsterEventType.ASSET_WIPED, after_cursor=event_cursor),
                    ascending=True,
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

    def kept_after_wipe(self, wipe: Wipe) -> set[str]:
        """Store paths that materializations recorded after ``wipe`` point to."""
        kept: set[str] = set()
        cursor: str | None = None
        while True:
            result = self.instance.fetch_materializations(
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

    def run_facts(self, run_id: str) -> RunFacts | None:
        """Status first, then events: a run seen running with no event yet means 'wait'."""
        record = self.instance.get_run_record_by_id(run_id)
        if record is None:
            return None
        finished = record.dagster_run.is_finished
        materialized: dict[tuple[AssetPath, str | None], float] = {}
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            if event is None or event.asset_key is None:
                continue
            key = (tuple(event.asset_key.path), event.partition)
            materialized[key] = max(materialized.get(key, 0.0), entry.timestamp)
        return RunFacts(finished=finished, end_time=record.end_time, materialized=materialized)


def retention_sort_key(defined: Mapping[AssetPath, Any]) -> Callable[[AssetPath, Partition, datetime], datetime]:
    """How retention ages a partition: its time window's start when the definition has one, else ``modified``."""

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
                return utc(time_def.time_window_for_partition_key(key).start)
            except Exception:
                pass
        return modified

    return sort_key
