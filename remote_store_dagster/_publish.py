"""Atomic publish: a failed write never leaves a torn object where readers look.

The protocol, per backend:

* **s3-pyarrow**: PyArrow encodes (Parquet) into our Python sink, and we drive the
  S3 upload ourselves through the s3fs client (``_s3_upload``; PyArrow's stream
  cannot set user metadata and hides its upload id).

  - Output that ends within ``SMALL_OBJECT_BYTES`` (8 MiB): buffered, then one
    PutObject carrying the provenance as user metadata (atomic; a failure before
    it sends nothing).
  - Larger output: CreateMultipartUpload (with the provenance) at the final key;
    its answer is the upload id. Parts (16 MiB, doubling every 1000 parts) are
    uploaded by two background threads while encoding goes on, so memory holds
    at most three parts. CompleteMultipartUpload is sent only on clean exit; S3
    shows the new object only then, and the old one stays readable until then.
    On any failure (the producer raises, a part or the completion fails,
    KeyboardInterrupt) we AbortMultipartUpload (bounded retries) and re-raise:
    nothing ever completes a torn upload. A killed writer or server leaves an
    incomplete upload, invisible to readers, that the cleanup sensor aborts.
    No ListMultipartUploads is needed (s3rver, IAM policies without it work).

* **every other backend**: write the whole file under a reserved staging name
  (``<prefix>/_staging/<uuid>.<name>``), then ``Store.move`` it over the final
  name (``os.replace`` on local disk; a single server-side copy elsewhere).
  Leftovers only ever live under ``_staging``. The provenance goes into the
  ``_provenance.json`` sidecar next to the data, written after the data is published.
"""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster import _s3_upload
from remote_store_dagster._layout import staging_path
from remote_store_dagster._provenance import Provenance, sidecar_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow.fs as pafs
    from remote_store import Store

log = logging.getLogger(__name__)

#: Outputs up to this size are buffered and published with a single PutObject.
SMALL_OBJECT_BYTES = _s3_upload.SMALL_OBJECT_BYTES


@dataclass(frozen=True)
class DataPath:
    """A PyArrow view of a store: the filesystem and how store paths map onto it."""

    store: Store
    filesystem: pafs.FileSystem
    kind: str  # "s3-pyarrow", "local" or "store"
    #: Where loaded tables are decoded (``None``: Arrow's default pool); see ``_loading.memory_pool_for``.
    memory_pool: pa.MemoryPool | None = None

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
def open_publish_stream(
    data_path: DataPath,
    path: str,
    *,
    staging_prefix: str = "",
    provenance: Provenance | None = None,
    on_write: Callable[[int], None] | None = None,
) -> Iterator[pa.NativeFile]:
    """Yield a PyArrow output stream whose bytes appear at ``path`` only on clean exit.

    On an exception inside the block, ``path`` keeps its previous content and
    the exception propagates. ``provenance`` is stored as S3 user metadata
    (s3-pyarrow) or in the sidecar (other backends); ``on_write(nbytes)`` sees
    every write (progress).
    """
    if data_path.kind == adapter.S3_PYARROW:
        metadata = provenance.to_metadata() if provenance is not None else {}
        upload = adapter.s3_upload(data_path.store, path, metadata, on_write)
        with _s3_upload.guarded(upload):
            yield pa.PythonFile(upload, mode="w")
        return
    with _staged_publish(data_path, path, staging_prefix, on_write) as out:
        yield out
    if provenance is not None:
        data_path.store.write(sidecar_path(path), provenance.to_json(), overwrite=True)


class _Counting(io.RawIOBase):
    """Forwards writes to a PyArrow stream and reports their sizes (progress on staged writes)."""

    def __init__(self, out: pa.NativeFile, on_write: Callable[[int], None]) -> None:
        super().__init__()
        self._out = out
        self._on_write = on_write

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._out.write(data)
        self._on_write(size)
        return size

    def tell(self) -> int:
        return int(self._out.tell())


@contextlib.contextmanager
def _staged_publish(
    data_path: DataPath, path: str, staging_prefix: str, on_write: Callable[[int], None] | None
) -> Iterator[pa.NativeFile]:
    store = data_path.store
    staged = staging_path(staging_prefix, uuid.uuid4().hex, path)
    if data_path.kind == "local":
        # LocalFileSystem does not create parents.
        import os

        os.makedirs(os.path.dirname(data_path.native(staged)), exist_ok=True)
    out = data_path.filesystem.open_output_stream(data_path.native(staged))
    try:
        yield out if on_write is None else pa.PythonFile(_Counting(out, on_write), mode="w")
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
