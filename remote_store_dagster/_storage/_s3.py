"""``S3PyArrowStorage``: PyArrow's C++ S3 filesystem reads, our upload publishes, s3fs controls.

* **Reads** go through PyArrow (ranged GETs, Parquet fragments with a known size).
  Finding one object opens it: PyArrow's S3 file sends the HEAD and the open file
  serves the read.
* **Publish** (``_s3_upload``): output up to 8 MiB is buffered and sent with one
  PutObject carrying the provenance as user metadata; larger output is a multipart
  upload created at the final key and completed only on clean exit, aborted on any
  failure. S3 shows the new object only when it completes, so readers never see a
  torn object and the previous one stays readable until then.
* **Control path** (``_s3_control``, s3fs's client): flat paginated listings, bulk
  ``DeleteObjects``, ``HeadObject`` for provenance, multipart upload housekeeping.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pyarrow as pa

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._provenance import Provenance
from remote_store_dagster._storage import _s3_upload
from remote_store_dagster._storage._base import Located, ObjectInfo, PendingUpload
from remote_store_dagster._storage._s3_control import DELETE_BATCH, HEAD_PARALLELISM, S3BulkDeleter, S3Control

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import pyarrow.fs as pafs
    from remote_store import Store

__all__ = ["S3PyArrowStorage"]


class S3PyArrowStorage:
    """A store on remote-store's hybrid ``s3-pyarrow`` backend."""

    kind = adapter.S3_PYARROW

    def __init__(self, store: Store) -> None:
        self.store = store
        self.bucket = adapter.backend_bucket(store)
        self.root = adapter.store_root(store)
        self.filesystem: pafs.FileSystem = adapter.pyarrow_filesystem(store)
        self._control: S3Control | None = None

    @property
    def control(self) -> S3Control:
        """The s3fs client, built on first use (it costs ~0.8 s of imports and setup once a process)."""
        if self._control is None:
            self._control = S3Control(adapter.s3fs_filesystem(self.store), self.bucket, self.root)
        return self._control

    def native(self, path: str) -> str:
        return self.store.native_path(path)

    def uri(self, path: str) -> str:
        return f"s3://{self.native(path)}"

    def warm_up(self) -> None:
        import pyarrow.dataset
        import pyarrow.parquet  # noqa: F401

        self.control.fs.connect()

    # -- reads

    def locate(self, path: str) -> Located | None:
        try:
            handle = self.filesystem.open_input_file(self.native(path))
        except FileNotFoundError:
            return None
        return Located(path, handle.size(), opened=handle)

    def list_objects(self, folder: str, *, narrow_to: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        if narrow_to.startswith(prefix) and len(narrow_to) > len(prefix):
            prefix = narrow_to
        for path, size, modified in self.control.list_keys(prefix, start_after=start_after):
            yield ObjectInfo(path, size, modified)

    # -- writes

    @contextlib.contextmanager
    def publish(
        self,
        path: str,
        *,
        staging_prefix: str = "",
        provenance: Provenance | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> Iterator[pa.NativeFile]:
        metadata = provenance.to_metadata() if provenance is not None else {}
        control = self.control
        upload = _s3_upload.S3Upload(
            control.upload_client(), self.bucket, control.key(path), metadata, on_write=on_write
        )
        with _s3_upload.guarded(upload):
            yield pa.PythonFile(upload, mode="w")

    def delete_quietly(self, paths: Sequence[str]) -> None:
        """One ``DeleteObjects`` per 1000 paths; absent keys are a no-op, not a HEAD + DELETE each."""
        errors: list[str] = []
        for start in range(0, len(paths), DELETE_BATCH):
            errors.extend(self.control.delete_batch(paths[start : start + DELETE_BATCH]))
        if paths:
            self.control.fs.invalidate_cache()
        if errors:
            # AWS denies DeleteObjects per key (200 with AccessDenied entries): say so, so that
            # _errors.s3_refusal_error names the missing permission.
            denied = any(" AccessDenied" in error for error in errors)
            raise (PermissionError if denied else OSError)(f"could not delete {'; '.join(errors)}")

    # -- provenance and cleanup

    def provenance_source(self, listed: Mapping[str, ObjectInfo]) -> _MetadataProvenance:
        return _MetadataProvenance(self.control)

    def bulk_deleter(self, keep_folders: frozenset[str]) -> S3BulkDeleter:
        return S3BulkDeleter(self.control)  # S3 has no folders to prune

    def pending_uploads(self, folder: str) -> Iterator[PendingUpload]:
        control = self.control
        for path, upload_id, initiated in list(control.multipart_uploads(folder)):
            size, last_part = control.upload_parts(path, upload_id)
            yield PendingUpload(path, upload_id, initiated, size, last_part)

    def abort_upload(self, path: str, upload_id: str) -> None:
        self.control.abort(path, upload_id)

    def missing_cleanup_capabilities(self) -> list[str]:
        return []


class _MetadataProvenance:
    """Provenance from each object's S3 user metadata: one ``HeadObject`` per data file."""

    parallelism = HEAD_PARALLELISM

    def __init__(self, control: S3Control) -> None:
        self._control = control

    def read(self, path: str) -> Provenance | None:
        return Provenance.from_metadata(self._control.head_metadata(path))
