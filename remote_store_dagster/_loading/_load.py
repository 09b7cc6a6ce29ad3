"""A load from start to end: find the object(s), handle what is missing, read, report.

One object (unpartitioned, an op output, or one partition) is found with one
HEAD per likely format and never listed; several partitions are found by one
listing of the asset folder. What is missing is an error naming the asset and
partition, ``None`` for ``Optional`` inputs, or skipped with
``allow_missing_partitions``. S3 refusing any of it is an error naming the
operation and the IAM permission (``_refusal``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from remote_store_dagster import _progress
from remote_store_dagster._errors import RemoteStoreIOError
from remote_store_dagster._loading import _locate
from remote_store_dagster._loading._loaders import type_name
from remote_store_dagster._loading._locate import ANY_FORMATS
from remote_store_dagster._loading._partitions import Partitions
from remote_store_dagster._loading._refusal import named_refusals
from remote_store_dagster._signing import SignatureError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from remote_store_dagster._loading._loaders import Loader
    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._loading._router import Request
    from remote_store_dagster._targets import Target

__all__ = ["RunLog", "load"]

_log = logging.getLogger(__name__)


class RunLog(Protocol):
    """Where a load reports: Dagster's ``context.log``."""

    def info(self, msg: str) -> None: ...

    def debug(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


def load(dp: DataPath, targets: Sequence[Target], request: Request, log: RunLog) -> Any:
    """The input's value: one object as its annotation asks, or several partitions combined.

    ``targets`` are what the input covers, in partition order: one unpartitioned asset
    or op output, or one or more partitions of one asset. One partition loads as the
    value itself unless the input is a ``dict[...]``, as in Dagster.
    """
    if len(targets) == 1 and not (request.as_dict and targets[0].partition is not None):
        return load_one(dp, targets[0], request, log)
    return load_many(dp, targets, request, log)


def load_one(dp: DataPath, target: Target, request: Request, log: RunLog) -> Any:
    """One stored object: one HEAD per likely format finds it, then the loader reads it."""
    loader = request.loader
    location = target.location
    with named_refusals(target.label, "HeadObject", dp.uri(location.data_path(loader.formats[0]))):
        found = _locate.find_one(dp, location, loader.formats)
        if found is None:
            if request.optional:
                log.debug(f"{target.label}: nothing stored; the input is Optional, so it loads None")
                return None
            others = [f for f in ANY_FORMATS if f not in loader.formats]
            other = _locate.find_one(dp, location, others) if others else None
            if other is not None:
                raise _cannot_load_as(dp, target, other, loader)
            raise RemoteStoreIOError(
                f"{target.label}: no stored data under {dp.uri(location.folder)}/ (not materialized yet, or wiped)"
            )
    uri = dp.uri(found.path)
    progress = _progress.Progress(
        safe_info(log), "loaded", target.label, uri, interval=_progress.PROGRESS_INTERVAL_SECONDS
    )
    try:
        with named_refusals(target.label, "GetObject", uri):
            return loader.read(dp, target, found, request.columns, progress)
    except (OSError, pa.ArrowException, KeyError, TypeError, SignatureError) as exc:
        raise RemoteStoreIOError(f"{target.label}: cannot load {uri}: {exc}") from exc


def _cannot_load_as(dp: DataPath, target: Target, other: Stored, loader: Loader) -> RemoteStoreIOError:
    return RemoteStoreIOError(
        f"{target.label}: stored as {other.fmt} at {dp.uri(other.path)}, which cannot be loaded as {loader.name}"
    )


def load_many(dp: DataPath, targets: Sequence[Target], request: Request, log: RunLog) -> Any:
    """Several partitions: one listing, concurrent fetches, partition order kept."""
    owner = targets[0].asset_label
    if request.item is None and not request.loader.several:
        raise RemoteStoreIOError(
            f"{owner}: {len(targets)} partitions can only be loaded as one table/frame/batch stream or "
            f"as a dict[str, ...]; the input is annotated {type_name(request.annotation)}"
        )
    reader = request.item or request.loader
    span = f"{owner} partitions {targets[0].partition!r}..{targets[-1].partition!r}"
    with named_refusals(span, "ListObjectsV2", dp.uri(targets[0].folder) + "/"):
        listed = _locate.find_many(dp, targets)
    stored: dict[str, Stored] = {}
    missing: list[Target] = []
    for target in targets:
        key = str(target.partition)
        found = _locate.pick(listed[key], reader.formats)
        if found is not None:
            stored[key] = found
            continue
        other = _locate.pick(listed[key], ANY_FORMATS)
        if other is not None:
            raise _cannot_load_as(dp, target, other, reader)
        missing.append(target)
    _check_missing(dp, missing, request, log)
    if not stored and request.optional:
        log.debug(f"{owner}: no requested partition has stored data; the input is Optional, so None")
        return None
    parts = Partitions(dp, list(targets), stored, request.columns, safe_info(log), request.item_optional)
    if request.item is not None:
        return parts.as_dict(request.item)
    return request.loader.load_many(parts)


def _check_missing(dp: DataPath, missing: list[Target], request: Request, log: RunLog) -> None:
    """Partitions without data: an error, unless the input allows them (then a warning, or silence)."""
    if not missing or request.optional or request.item_optional:
        return
    if not request.allow_missing:
        others = [m.partition for m in missing[1:6]]
        more = f"; {len(missing) - 1} more partition(s) missing too: {others}" if len(missing) > 1 else ""
        raise RemoteStoreIOError(
            f"{missing[0].label}: no stored data under {dp.uri(missing[0].location.folder)}/ "
            f"(not materialized yet, or wiped){more}; set input metadata allow_missing_partitions=True "
            "to skip missing partitions"
        )
    log.warning(
        f"{missing[0].asset_label}: skipping {len(missing)} partition(s) with no stored data "
        f"(allow_missing_partitions): {[m.partition for m in missing[:10]]}"
    )


def safe_info(log: RunLog) -> Callable[[str], None]:
    """INFO lines to the run log that never fail a load.

    A batch stream can outlive its step (a consumer may keep the reader); its
    closing line then cannot reach the run's event log and goes to this
    module's logger instead.
    """

    def info(message: str) -> None:
        try:
            log.info(message)
        except Exception:  # the step (and its event log) may be gone; progress is best effort
            _log.info(message)

    return info
