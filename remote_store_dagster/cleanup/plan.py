"""What the cleanup sensor may delete: pure policies over a listing (no I/O).

Every object below ``<prefix>/`` is placed in the layout of ``_layout``:

* ``_staging/...`` (and any other top-level reserved name) is bookkeeping;
* otherwise the leading folders that are neither Hive partition segments
  (``dim=key``, the only segments that contain a literal ``=``, since
  ``encode_segment`` escapes it) nor reserved names form the **asset key**;
  the ``dim=key`` folders after them form the **partition**.

An asset folder *owns* its files, its partition folders and its reserved
sub-folders, never the folder of another asset nested below it (asset
``["a"]`` never owns ``a/b/...``, which belongs to asset ``["a", "b"]``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from remote_store_dagster._layout import (
    FORMAT_EXTENSIONS,
    STAGING_DIR,
    data_file_name,
    decode_segment,
    is_reserved,
    join,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from remote_store_dagster._provenance import Provenance

DATA_FILE_NAMES = frozenset(data_file_name(fmt) for fmt in FORMAT_EXTENSIONS)


class Policy(Enum):
    """Why an object is deleted; the value is the name shown in tick texts and observations."""

    LEFTOVER = "leftover"
    WIPED = "wiped"
    ORPHAN = "orphan"
    RETENTION = "retention"


class Ownership(Enum):
    """Whose data an object is, per its provenance and the sensor's code location."""

    OURS = "ours"
    FOREIGN = "foreign"  # written by another code location (or for another asset)
    UNSTAMPED = "unstamped"  # no provenance, or no code location in it: cannot be proven ours


class Decision(Enum):
    """What a wipe means for one object."""

    DELETE = "delete"
    KEEP = "keep"
    WAIT = "wait"  # its run is still running: decided on a later tick


AssetPath = tuple[str, ...]
Partition = tuple[tuple[str, str], ...]


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class StoredObject:
    path: str  # store-relative
    size: int
    modified: datetime  # aware, UTC


@dataclass(frozen=True)
class Upload:
    """An incomplete multipart upload (s3-pyarrow only)."""

    path: str  # store-relative key the upload would create
    upload_id: str
    initiated: datetime
    size: int = 0  # bytes in its uploaded parts
    last_part: datetime | None = None  # when its newest part arrived

    @property
    def last_activity(self) -> datetime:
        return max(self.initiated, self.last_part) if self.last_part else self.initiated


@dataclass(frozen=True)
class Located:
    obj: StoredObject
    top_reserved: bool  # below a reserved top-level folder such as _staging
    asset: AssetPath | None  # decoded asset key path (None: not in the layout)
    partition: Partition  # decoded (dimension, key) pairs, outermost first
    partition_folder: str | None  # store-relative folder of the partition
    is_data_file: bool

    @property
    def partition_key(self) -> str:
        """The Dagster partition key (multi-partition keys joined with ``|``, dims sorted by name)."""
        return "|".join(key for _, key in self.partition)


def locate(prefix: str, obj: StoredObject) -> Located:
    rel = obj.path[len(prefix) + 1 :] if prefix else obj.path
    segments = rel.split("/")
    dirs, name = segments[:-1], segments[-1]
    if not dirs:
        return Located(obj, is_reserved(name), None, (), None, False)
    if is_reserved(dirs[0]):
        return Located(obj, True, None, (), None, False)
    asset: list[str] = []
    partition: list[tuple[str, str]] = []
    index = 0
    while index < len(dirs) and "=" not in dirs[index] and not is_reserved(dirs[index]):
        asset.append(decode_segment(dirs[index]))
        index += 1
    part_start = index
    while index < len(dirs) and "=" in dirs[index]:
        dim, _, key = dirs[index].partition("=")
        partition.append((decode_segment(dim), decode_segment(key)))
        index += 1
    rest = dirs[index:]
    if rest and not is_reserved(rest[0]):
        # e.g. a/x=1/b/data.parquet: not a layout this integration writes.
        return Located(obj, False, None, (), None, False)
    partition_folder = join(prefix, *dirs[: part_start + len(partition)]) if partition else None
    return Located(
        obj,
        False,
        tuple(asset),
        tuple(partition),
        partition_folder,
        is_data_file=not rest and name in DATA_FILE_NAMES,
    )


@dataclass(frozen=True)
class Deletion:
    obj: StoredObject
    policy: Policy
    asset: AssetPath | None


@dataclass(frozen=True)
class Abort:
    upload: Upload
    asset: AssetPath | None


@dataclass(frozen=True)
class Wipe:
    """The latest ``ASSET_WIPED`` event of one asset after the cursor."""

    asset: AssetPath
    storage_id: int
    timestamp: float  # seconds since the epoch
    partition_keys: frozenset[str] | None  # None: the whole asset


@dataclass
class Plan:
    deletions: dict[str, Deletion] = field(default_factory=dict)
    aborts: list[Abort] = field(default_factory=list)
    #: Why objects or folders a policy looked at were kept (reported in the tick text).
    kept: Counter[str] = field(default_factory=Counter)

    def add(self, located: Located, policy: Policy) -> None:
        self.deletions.setdefault(located.obj.path, Deletion(located.obj, policy, located.asset))


def leftovers(
    plan: Plan,
    prefix: str,
    located: Iterable[Located],
    uploads: Iterable[Upload],
    now: datetime,
    grace: timedelta,
) -> None:
    """Staging objects and incomplete multipart uploads older than ``grace``.

    An upload's age counts from its newest part (a writer still streaming
    parts is alive however long ago it started).
    """
    for item in located:
        if is_leftover(prefix, item, now, grace):
            plan.add(item, Policy.LEFTOVER)
    for upload in uploads:
        if now - upload.last_activity > grace:
            asset = locate(prefix, StoredObject(upload.path, 0, upload.initiated)).asset
            plan.aborts.append(Abort(upload, asset or None))


def is_leftover(prefix: str, item: Located, now: datetime, grace: timedelta) -> bool:
    """A ``_staging`` object older than ``grace``: decided without seeing the rest of the listing."""
    return item.obj.path.startswith(join(prefix, STAGING_DIR) + "/") and now - item.obj.modified > grace


def _by_asset(located: Iterable[Located]) -> dict[AssetPath, list[Located]]:
    groups: dict[AssetPath, list[Located]] = defaultdict(list)
    for item in located:
        if item.asset:
            groups[item.asset].append(item)
    return groups


def wipes_by_asset(wipes: Iterable[Wipe]) -> dict[AssetPath, list[Wipe]]:
    groups: dict[AssetPath, list[Wipe]] = defaultdict(list)
    for wipe in sorted(wipes, key=lambda w: w.storage_id):
        groups[wipe.asset].append(wipe)
    return groups


def covering_wipe(wipes: Sequence[Wipe], item: Located) -> Wipe | None:
    """The latest of ``wipes`` (oldest first) that covers ``item``'s asset folder or partition.

    The latest one decides: data from before it is wiped, data from after it
    is newer than every earlier wipe too.
    """
    for wipe in reversed(wipes):
        if wipe.partition_keys is None or (item.partition and item.partition_key in wipe.partition_keys):
            return wipe
    return None


def wiped_by_time(item: Located, wipe: Wipe, kept_paths: set[str]) -> Decision:
    """The rule for objects without provenance: written before the wipe's second.

    Kept: objects written at or after the second of the wipe (S3 times have
    one-second resolution) and objects that a materialization recorded after
    the wipe points to (``kept_paths``).
    """
    wipe_second = datetime.fromtimestamp(int(wipe.timestamp), tz=UTC)
    kept = item.obj.modified >= wipe_second or item.obj.path in kept_paths
    return Decision.KEEP if kept else Decision.DELETE


@dataclass(frozen=True)
class RunFacts:
    """What the instance knows about the run that wrote an object."""

    finished: bool
    end_time: float | None
    #: (asset path, partition key or None) -> timestamp of the run's latest materialization of it
    materialized: Mapping[tuple[AssetPath, str | None], float]


def ownership(provenance: Provenance | None, location: str | None, asset: AssetPath) -> Ownership:
    """``OURS`` only when the provenance names this code location and this asset."""
    if provenance is None or provenance.code_location is None:
        return Ownership.UNSTAMPED
    if location is None or provenance.code_location != location:
        return Ownership.FOREIGN
    if provenance.asset_key is not None and provenance.asset_key != "/".join(asset):
        return Ownership.FOREIGN
    return Ownership.OURS


def wiped_by_run(
    asset: AssetPath,
    provenance: Provenance,
    wipe: Wipe,
    run: RunFacts | None,
    location: str | None,
) -> Decision | None:
    """Delete, keep or wait, by the run that wrote the object; ``None``: use ``wiped_by_time``.

    * another code location's data (or another asset's): kept;
    * the run materialized this asset (partition) before the wipe: deleted,
      after it: kept (float timestamps, no one-second rounding);
    * no materialization yet and the run is still running: wait;
    * the run ended without materializing it: deleted if it ended before the wipe;
    * the run is unknown to this instance (deleted, or another deployment's):
      the timestamp rule if the object is stamped with this code location, kept otherwise.
    """
    if provenance.code_location is not None and provenance.code_location != location:
        return Decision.KEEP
    if provenance.asset_key is not None and provenance.asset_key != "/".join(asset):
        return Decision.KEEP
    if run is None:
        return None if provenance.code_location is not None else Decision.KEEP
    materialized = run.materialized.get((asset, provenance.partition_key))
    if materialized is not None:
        return Decision.DELETE if materialized < wipe.timestamp else Decision.KEEP
    if not run.finished:
        return Decision.WAIT
    ended_before = run.end_time is not None and run.end_time < wipe.timestamp
    return Decision.DELETE if ended_before else Decision.KEEP


def orphan_candidates(
    located: Iterable[Located],
    defined: set[AssetPath],
    now: datetime,
    grace: timedelta,
) -> dict[AssetPath, list[Located]]:
    """Asset folders (with at least one data file) of assets this code location does not define,
    whose newest object is older than ``grace``: orphans if their provenance says they are ours."""
    found = {}
    for asset, items in _by_asset(located).items():
        if asset in defined or not any(item.is_data_file for item in items):
            continue
        if now - max(item.obj.modified for item in items) > grace:
            found[asset] = items
    return found


def retention(
    plan: Plan,
    located: Iterable[Located],
    keep_last: Mapping[AssetPath, int],
    sort_key: Callable[[AssetPath, Partition, datetime], datetime],
) -> None:
    """For each asset in ``keep_last``: every partition folder except the newest N.

    A partition is a partition folder holding a data file; ``sort_key`` gives
    its age (its time window's start, or its data file's last-modified time).
    """
    groups = _by_asset(located)
    for asset, keep in keep_last.items():
        partitions: dict[Partition, list[Located]] = defaultdict(list)
        for item in groups.get(asset, []):
            if item.partition:
                partitions[item.partition].append(item)
        ranked: list[tuple[datetime, datetime, Partition]] = []
        for partition, items in partitions.items():
            data = [item for item in items if item.is_data_file]
            if not data:
                continue
            modified = max(item.obj.modified for item in data)
            ranked.append((sort_key(asset, partition, modified), modified, partition))
        ranked.sort(reverse=True)
        for _, _, partition in ranked[keep:]:
            for item in partitions[partition]:
                plan.add(item, Policy.RETENTION)
