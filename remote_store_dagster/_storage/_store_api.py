"""``StoreApiStorage``: every remote-store backend other than ``s3-pyarrow``, through the ``Store`` API.

* **Reads** go through a PyArrow filesystem: the local one on local disk (native
  paths), remote-store's own PyArrow adapter elsewhere.
* **Publish**: the whole file is written under a reserved staging name
  (``<prefix>/_staging/<uuid>.<name>``), then ``Store.move`` puts it over the final
  name (``os.replace`` on local disk; one server-side copy elsewhere). Leftovers
  only ever live under ``_staging``. Provenance goes into the ``_provenance.json``
  sidecar next to the data, written after the data is published.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
from remote_store import Capability, RemoteStoreError

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._layout import join, staging_path
from remote_store_dagster._provenance import Provenance, sidecar_path
from remote_store_dagster._storage._base import Located, ObjectInfo, PendingUpload

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from remote_store import Store

__all__ = ["StoreApiStorage", "generic_storage", "local_storage", "plain_s3_storage"]


def local_storage(store: Store) -> StoreApiStorage:
    """Local disk: PyArrow's own filesystem on native paths (no Python in the read path)."""
    return StoreApiStorage(
        store,
        "local",
        pafs.LocalFileSystem(),
        native=store.native_path,
        uri=lambda path: Path(store.native_path(path)).as_uri(),
        creates_parents=False,
    )


def plain_s3_storage(store: Store) -> StoreApiStorage:
    """remote-store's plain ``s3`` backend: its native path is ``<bucket>/<key>``."""
    from remote_store.ext.arrow import pyarrow_fs

    return StoreApiStorage(store, "s3", pyarrow_fs(store), uri=lambda path: f"s3://{store.native_path(path)}")


def generic_storage(store: Store, kind: str) -> StoreApiStorage:
    """Any other backend, read through remote-store's PyArrow adapter."""
    from remote_store.ext.arrow import pyarrow_fs

    root = adapter.store_root(store)
    return StoreApiStorage(store, kind, pyarrow_fs(store), uri=lambda path: f"{kind}://{join(root, path)}")


class StoreApiStorage:
    """A store reached through the ``Store`` API, read through a PyArrow filesystem."""

    def __init__(
        self,
        store: Store,
        kind: str,
        filesystem: pafs.FileSystem,
        *,
        uri: Callable[[str], str],
        native: Callable[[str], str] | None = None,
        creates_parents: bool = True,
    ) -> None:
        self.store = store
        self.kind = kind
        self.filesystem = filesystem
        self._uri = uri
        self._native = native
        self._creates_parents = creates_parents

    def native(self, path: str) -> str:
        return self._native(path) if self._native is not None else path

    def uri(self, path: str) -> str:
        return self._uri(path)

    def warm_up(self) -> None:
        return None

    # -- reads

    def locate(self, path: str) -> Located | None:
        info = self.filesystem.get_file_info(self.native(path))
        if info.type != pafs.FileType.File:
            return None
        return Located(path, info.size)

    def list_objects(self, folder: str, *, narrow_to: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object below ``folder``, sorted by path (``narrow_to`` is for key-prefix listings;
        folders list whole); ``start_after`` filters the sorted listing."""
        try:
            infos = sorted(self.store.list_files(folder.strip("/"), recursive=True), key=lambda info: str(info.path))
        except RemoteStoreError as exc:
            if type(exc).__name__ == "NotFound":
                return
            raise
        for info in infos:
            if start_after and str(info.path) <= start_after:
                continue
            modified = info.modified_at
            yield ObjectInfo(str(info.path), int(info.size), modified if modified.year > 1 else None)

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
        staged = staging_path(staging_prefix, uuid.uuid4().hex, path)
        if not self._creates_parents:
            os.makedirs(os.path.dirname(self.native(staged)), exist_ok=True)
        out = self.filesystem.open_output_stream(self.native(staged))
        try:
            yield out if on_write is None else pa.PythonFile(_Counting(out, on_write), mode="w")
        except BaseException:
            # Closing may flush the partial file, but only to the reserved staging name.
            with contextlib.suppress(Exception):
                out.close()
            with contextlib.suppress(Exception):
                self.store.delete(staged, missing_ok=True)
            raise
        out.close()
        try:
            self.store.move(staged, path, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.delete(staged, missing_ok=True)
            raise
        if provenance is not None:
            self.store.write(sidecar_path(path), provenance.to_json(), overwrite=True)

    def delete_quietly(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.store.delete(path, missing_ok=True)

    # -- provenance and cleanup

    def provenance_source(self, listed: Mapping[str, ObjectInfo]) -> _SidecarProvenance:
        return _SidecarProvenance(self.store, listed)

    def bulk_deleter(self, keep_folders: frozenset[str]) -> _PathDeleter:
        return _PathDeleter(self.store, keep_folders)

    def pending_uploads(self, folder: str) -> Iterator[PendingUpload]:
        return iter(())

    def abort_upload(self, path: str, upload_id: str) -> None:
        raise NotImplementedError(f"{self.kind} stores have no multipart uploads")

    def missing_cleanup_capabilities(self) -> list[str]:
        return [cap.value for cap in (Capability.LIST, Capability.DELETE) if not self.store.supports(cap)]


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


class _SidecarProvenance:
    """Provenance from the folder's ``_provenance.json`` sidecar.

    Valid only if the sidecar is not older than the data file: a crash between
    data and sidecar, or a newer write, leaves the data unstamped rather than
    wrongly attributed. One read per sidecar.
    """

    parallelism = 1

    def __init__(self, store: Store, listed: Mapping[str, ObjectInfo]) -> None:
        self._store = store
        self._listed = listed
        self._sidecars: dict[str, Provenance | None] = {}

    def read(self, path: str) -> Provenance | None:
        sidecar = sidecar_path(path)
        listed_sidecar, data = self._listed.get(sidecar), self._listed.get(path)
        if listed_sidecar is None:
            return None
        if data is not None and _older(listed_sidecar, data):
            return None
        if sidecar not in self._sidecars:
            try:
                self._sidecars[sidecar] = Provenance.from_json(self._store.read_bytes(sidecar))
            except RemoteStoreError:
                self._sidecars[sidecar] = None
        return self._sidecars[sidecar]


def _older(a: ObjectInfo, b: ObjectInfo) -> bool:
    return a.modified is not None and b.modified is not None and a.modified < b.modified


class _PathDeleter:
    """``Store.delete`` per path at ``close``, then the emptied folders (local disk keeps them)."""

    parallelism = 1  # backends behind the Store API need not take concurrent calls

    def __init__(self, store: Store, keep_folders: frozenset[str]) -> None:
        self._store = store
        self._keep = keep_folders
        self._paths: list[str] = []

    def add(self, path: str) -> None:
        self._paths.append(path)

    def discard_unsent(self) -> None:
        self._paths = []

    def close(self) -> tuple[int, list[str]]:
        requests, errors = 0, []
        for path in self._paths:
            try:
                self._store.delete(path, missing_ok=True)
                requests += 1
            except Exception as exc:
                errors.append(f"{path}: {exc}")
        self._prune_empty_folders()
        return requests, errors

    def _prune_empty_folders(self) -> None:
        folders: set[str] = set()
        for path in self._paths:
            parts = path.split("/")[:-1]
            while parts and "/".join(parts) not in self._keep:
                folders.add("/".join(parts))
                parts.pop()
        for folder in sorted(folders, key=lambda f: (-f.count("/"), f)):
            with contextlib.suppress(Exception):
                self._store.delete_folder(folder, recursive=False, missing_ok=True)
