"""Atomic publish: a failed write never leaves a torn object where readers look.

The trap: PyArrow's S3 output stream has no ``abort()``; closing it after an
error (or its C++ destructor doing so) *completes* the multipart upload, so a
truncated object replaces the good one.

The protocol, per backend:

* **s3-pyarrow**, output within ``SMALL_OBJECT_BYTES``: buffered in memory and
  published with one PutObject (atomic; a failure before it sends nothing).
* **s3-pyarrow**, larger output (zero copy): PyArrow opens a multipart upload straight at the
  final key; S3 shows the new object only when the upload completes, and the
  old object stays readable until then. We note which upload is ours (listing
  uploads for that exact key before and after opening the stream, through the
  s3fs control path). On any failure we first *abort* that upload, and only
  then let PyArrow close the stream: its completion call then fails with
  ``NoSuchUpload`` instead of publishing. A killed writer or server never
  completes the upload; the cleanup sensor aborts such stale uploads.
  If our upload cannot be identified, the write is refused before any byte is
  sent. Cost: two ``ListMultipartUploads`` calls per streamed write.
* **every other backend**: write the whole file under a reserved staging name
  (``<prefix>/_staging/<uuid>.<name>``), then ``Store.move`` it over the final
  name (``os.replace`` on local disk; a single server-side copy elsewhere).
  Leftovers only ever live under ``_staging``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._layout import staging_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow.fs as pafs
    from remote_store import Store

log = logging.getLogger(__name__)

#: Streams whose upload could not be aborted (server unreachable). Closing them
#: could complete a torn upload once the server is back, so they are kept
#: referenced (never destroyed) for the life of the process instead.
_QUARANTINED_STREAMS: list[Any] = []

#: Each attempt already includes s3fs's own retries; two bound a dead server's wait.
_ABORT_ATTEMPTS = 2

#: Outputs up to this size are buffered and published with a single PutObject.
SMALL_OBJECT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class DataPath:
    """A PyArrow view of a store: the filesystem and how store paths map onto it."""

    store: Store
    filesystem: pafs.FileSystem
    kind: str  # "s3-pyarrow", "local" or "store"

    def native(self, path: str) -> str:
        """The filesystem path of a store-relative ``path``."""
        if self.kind == "store":
            return path
        return self.store.native_path(path)


def data_path_for(store: Store) -> DataPath:
    """The fastest PyArrow filesystem that reaches ``store``'s objects."""
    import pyarrow.fs as pafs

    backend_type = adapter.store_backend(store).name
    if backend_type == adapter.S3_PYARROW:
        return DataPath(store, adapter.pyarrow_filesystem(store), adapter.S3_PYARROW)
    if backend_type == "local":
        return DataPath(store, pafs.LocalFileSystem(), "local")
    from remote_store.ext.arrow import pyarrow_fs

    return DataPath(store, pyarrow_fs(store), "store")


@contextlib.contextmanager
def open_publish_stream(data_path: DataPath, path: str, *, staging_prefix: str = "") -> Iterator[pa.NativeFile]:
    """Yield a PyArrow output stream whose bytes appear at ``path`` only on clean exit.

    On an exception inside the block, ``path`` keeps its previous content and
    the exception propagates.
    """
    if data_path.kind == adapter.S3_PYARROW:
        with _s3_multipart_publish(data_path, path) as out:
            yield out
    else:
        with _staged_publish(data_path, path, staging_prefix) as out:
            yield out


def _uploads_for_key(s3: Any, bucket: str, key: str) -> set[str]:
    ids: set[str] = set()
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    while True:
        response = s3.call_s3("list_multipart_uploads", **kwargs)
        ids.update(u["UploadId"] for u in response.get("Uploads", []) if u.get("Key") == key)
        if not response.get("IsTruncated"):
            return ids
        kwargs["KeyMarker"] = response.get("NextKeyMarker")
        kwargs["UploadIdMarker"] = response.get("NextUploadIdMarker")


def _abort_uploads(s3: Any, bucket: str, key: str, upload_ids: set[str]) -> bool:
    """Abort ``upload_ids``; True when none of them can complete any more."""
    pending = set(upload_ids)
    for attempt in range(_ABORT_ATTEMPTS):
        for upload_id in sorted(pending):
            try:
                s3.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
                pending.discard(upload_id)
            except FileNotFoundError:
                pending.discard(upload_id)  # already gone: cannot complete
            except Exception as exc:
                log.warning("abort of multipart upload for %s failed (attempt %d): %s", key, attempt + 1, exc)
        if not pending:
            return True
        time.sleep(0.5 * (attempt + 1))
    return False


@dataclass
class _MultipartUpload:
    """A PyArrow multipart upload at the final key whose upload id we know, so we can abort it."""

    out: Any
    s3: Any
    bucket: str
    key: str
    upload_ids: set[str]

    @classmethod
    def start(cls, data_path: DataPath, path: str) -> _MultipartUpload:
        store = data_path.store
        s3 = adapter.s3fs_filesystem(store)
        bucket = adapter.backend_bucket(store)
        native = data_path.native(path)
        key = native[len(bucket) + 1 :]
        before = _uploads_for_key(s3, bucket, key)
        out = data_path.filesystem.open_output_stream(native)
        try:
            ours = _uploads_for_key(s3, bucket, key) - before
        except BaseException:
            _quarantine(out)
            raise
        if not ours:
            # We could not see our upload, so could not abort it on failure: never
            # close this stream (that would complete it), and refuse to stream.
            _quarantine(out)
            raise RuntimeError(f"cannot identify the multipart upload PyArrow opened for {native}; nothing written")
        return cls(out, s3, bucket, key, ours)

    def abort(self) -> None:
        """Abort *before* close: otherwise close() completes a truncated upload.

        Concurrent writers of the same key that opened in our listing window are
        aborted too: they then fail cleanly instead of racing us.
        """
        if _abort_uploads(self.s3, self.bucket, self.key, self.upload_ids):
            with contextlib.suppress(Exception):
                self.out.close()
        else:
            _quarantine(self.out)

    def complete(self) -> None:
        try:
            self.out.close()
        except BaseException:
            # The completion (or the last part) failed: abort, so nothing is left to reclaim.
            with contextlib.suppress(Exception):
                _abort_uploads(self.s3, self.bucket, self.key, self.upload_ids)
            raise


class _SmallFirstSink(io.RawIOBase):
    """Keeps the first ``SMALL_OBJECT_BYTES`` in memory, then streams to a multipart upload.

    An output that ends below the threshold is published with one PutObject
    (atomic, and 1 request instead of 5); a larger one streams with bounded memory.
    """

    def __init__(self, start_upload: Callable[[], _MultipartUpload]) -> None:
        super().__init__()
        self._start_upload = start_upload
        self.buffer = bytearray()
        self.upload: _MultipartUpload | None = None
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.upload is None:
            self.buffer += data
            if len(self.buffer) > SMALL_OBJECT_BYTES:
                self.upload = self._start_upload()
                self.upload.out.write(pa.py_buffer(self.buffer))
                self.buffer = bytearray()
        else:
            self.upload.out.write(data)
        self._written += size
        return size

    def tell(self) -> int:
        return self._written


@contextlib.contextmanager
def _s3_multipart_publish(data_path: DataPath, path: str) -> Iterator[pa.NativeFile]:
    sink = _SmallFirstSink(lambda: _MultipartUpload.start(data_path, path))
    try:
        yield pa.PythonFile(sink, mode="w")
    except BaseException:
        if sink.upload is not None:
            sink.upload.abort()
        raise
    if sink.upload is not None:
        sink.upload.complete()
        return
    single_put = adapter.single_put_filesystem(data_path.store) or data_path.filesystem
    with single_put.open_output_stream(data_path.native(path)) as out:
        out.write(pa.py_buffer(sink.buffer))


def _quarantine(stream: Any) -> None:
    _QUARANTINED_STREAMS.append(stream)


@contextlib.contextmanager
def _staged_publish(data_path: DataPath, path: str, staging_prefix: str) -> Iterator[pa.NativeFile]:
    store = data_path.store
    staged = staging_path(staging_prefix, uuid.uuid4().hex, path)
    if data_path.kind == "local":
        # LocalFileSystem does not create parents.
        import os

        os.makedirs(os.path.dirname(data_path.native(staged)), exist_ok=True)
    out = data_path.filesystem.open_output_stream(data_path.native(staged))
    try:
        yield out
    except BaseException:
        # Closing may flush the partial file, but only to the reserved staging name.
        with contextlib.suppress(Exception):
            out.close()
        with contextlib.suppress(Exception):
            store.delete(staged, missing_ok=True)
        raise
    out.close()
    try:
        store.move(staged, path, overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete(staged, missing_ok=True)
        raise


__all__ = ["DataPath", "data_path_for", "open_publish_stream"]
