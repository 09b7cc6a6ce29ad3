"""One output object, encoded straight into the storage's atomic publish stream."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from remote_store_dagster import _formats as formats
from remote_store_dagster import _progress
from remote_store_dagster._errors import RemoteStoreIOError, S3RefusedError, s3_refusal_error
from remote_store_dagster._publishing._metadata import Written

if TYPE_CHECKING:
    from collections.abc import Callable

    from remote_store_dagster._provenance import Provenance
    from remote_store_dagster._storage import Storage
    from remote_store_dagster._targets import Target

__all__ = ["OtherFormats", "WriteSettings", "write_one"]


@dataclass(frozen=True)
class WriteSettings:
    """How outputs are encoded: Parquet writer options and whether other objects may be pickled."""

    parquet: formats.ParquetOptions
    allow_pickle: bool
    #: Folder below which staged writes live (the IO manager's prefix).
    staging_prefix: str
    #: HMAC key pickles are signed with (``_signing``); ``None``: unsigned.
    pickle_signing_key: str | None = None


def write_one(
    storage: Storage,
    target: Target,
    obj: Any,
    settings: WriteSettings,
    *,
    provenance: Provenance,
    log: Callable[[str], None],
    other_formats: Callable[[str], OtherFormats],
) -> Written:
    """Publish ``obj`` at ``target``; on any failure the previous object stays as it was.

    ``other_formats(path)`` says whether the folder may still hold this output in
    another format, and whether that is a recorded materialization (see ``OtherFormats``).
    """
    try:
        fmt = formats.output_format(obj, allow_pickle=settings.allow_pickle)
    except formats.UnsupportedOutput as exc:
        raise RemoteStoreIOError(f"{target.label}: cannot store output: {exc}") from None
    path = target.location.data_path(fmt)
    uri = storage.uri(path)
    progress = _progress.Progress(log, "wrote", target.label, uri, interval=_progress.PROGRESS_INTERVAL_SECONDS)
    other = other_formats(path)
    try:
        with storage.publish(
            path, staging_prefix=settings.staging_prefix, provenance=provenance, on_write=progress.update
        ) as out:
            stats = _encode(out, obj, fmt, settings)
    except formats.UnsupportedOutput as exc:
        raise RemoteStoreIOError(f"{target.label}: cannot store output: {exc}") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RemoteStoreIOError(f"{target.label}: cannot write Parquet: {exc}") from exc
    except S3RefusedError as exc:
        raise RemoteStoreIOError(f"{target.label}: {exc}") from exc
    progress.rows = stats.row_count
    progress.done(stats.stored_bytes)
    if other is not OtherFormats.ABSENT:
        # Only after the new object is published: until then, whatever the folder held in another
        # format is what a reader finds (the instance may not know it: another instance, a wipe).
        _delete_other_formats(storage, target, path, uri)
    return Written(target, path, uri, stats)


class OtherFormats(enum.Enum):
    """What else an output's folder may hold, which decides when its other formats are deleted."""

    #: The last write stored this very path: nothing else is there, nothing to delete.
    ABSENT = "absent"
    #: No materialization on record (first write, wiped, another instance): other formats may
    #: still be there; deleted once the new object is published.
    UNRECORDED = "unrecorded"
    #: The recorded materialization is another format: deleted only once the new one is published,
    #: so a failed write leaves it readable.
    RECORDED = "recorded"


def _encode(out: pa.NativeFile, obj: Any, fmt: str, settings: WriteSettings) -> formats.WriteStats:
    if fmt == "parquet":
        return formats.write_parquet(out, obj, settings.parquet)
    if fmt == "raw":
        return formats.write_raw(out, obj)
    return formats.write_pickle(out, obj, settings.pickle_signing_key)


def _delete_other_formats(storage: Storage, target: Target, path: str, uri: str) -> None:
    stale = [p for p in target.location.candidates() if p != path]
    try:
        storage.delete_quietly(stale)
    except Exception as exc:
        refusal = s3_refusal_error(exc, "DeleteObjects", uri)
        if refusal is not None:
            raise RemoteStoreIOError(f"{target.label}: {refusal}") from exc
        raise
