"""What a ``Storage`` is: the protocol, and the plain records it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import datetime

    import pyarrow as pa
    import pyarrow.fs as pafs
    from remote_store import Store

    from remote_store_dagster._provenance import Provenance


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: store-relative path, size, last modified (``None``: the backend cannot tell)."""

    path: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class Located:
    """One object found by ``Storage.locate``: its size, and the file opened to find it, if any.

    On S3 finding an object *is* opening it (PyArrow's S3 file sends the HEAD), and
    the open file serves the first read, so a small load costs a HEAD and a GET.
    """

    path: str
    size: int | None
    opened: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PendingUpload:
    """An incomplete multipart upload: key, id, start, bytes of its parts, time of its newest part."""

    path: str
    upload_id: str
    initiated: datetime
    size: int
    last_part: datetime | None


class ProvenanceSource(Protocol):
    """Reads who wrote a data file; ``parallelism`` lookups may run at once."""

    parallelism: int

    def read(self, path: str) -> Provenance | None: ...


class BulkDeleter(Protocol):
    """Deletes paths as they are added; ``close`` sends the rest and reports (requests, errors)."""

    #: How many deleters of this storage may run at once on separate threads.
    parallelism: int

    def add(self, path: str) -> None: ...

    def discard_unsent(self) -> None: ...

    def close(self) -> tuple[int, list[str]]: ...


class Storage(Protocol):
    """Everything the integration asks of one store.

    Paths are store-relative (``"prefix/asset/data.parquet"``). Reads go through
    ``filesystem`` (PyArrow) at ``native(path)``; the rest through the methods.
    """

    store: Store
    #: PyArrow filesystem of the data path (Parquet reads, datasets, ranged GETs).
    filesystem: pafs.FileSystem
    #: Short name shown in messages: "s3-pyarrow", "local", "memory", ...
    kind: str

    def native(self, path: str) -> str:
        """The ``filesystem`` path of a store-relative ``path``."""
        ...

    def uri(self, path: str) -> str:
        """A URI other engines understand (``s3://bucket/key``, ``file:///...``)."""
        ...

    def warm_up(self) -> None:
        """Pay client setup (imports, credentials) now instead of in the first output."""
        ...

    # -- reads

    def locate(self, path: str) -> Located | None:
        """The object at ``path`` (one HEAD on S3), ``None`` if there is none."""
        ...

    def list_objects(self, folder: str, *, narrow_to: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object below ``folder``, page by page, in key order.

        ``narrow_to``: a longer key prefix inside ``folder`` (``<asset>/partition=2024-01-``)
        that a backend listing by key prefix may list instead of the whole folder.
        ``start_after``: only objects whose path sorts after this one (a listing resumed
        where an earlier one stopped; the path need not exist).
        """
        ...

    # -- writes

    def publish(
        self,
        path: str,
        *,
        staging_prefix: str = "",
        provenance: Provenance | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> contextlib.AbstractContextManager[pa.NativeFile]:
        """An output stream whose bytes appear at ``path`` only on clean exit (atomic publish)."""
        ...

    def delete_quietly(self, paths: Sequence[str]) -> None:
        """Delete ``paths`` if they exist (absent ones are no error)."""
        ...

    # -- provenance and cleanup

    def provenance_source(self, listed: Mapping[str, ObjectInfo]) -> ProvenanceSource:
        """Where the provenance of listed data files is read (S3 metadata or sidecars)."""
        ...

    def bulk_deleter(self, keep_folders: frozenset[str]) -> BulkDeleter:
        """A deleter for many paths; empty folders up to ``keep_folders`` go too where folders exist."""
        ...

    def pending_uploads(self, folder: str) -> Iterator[PendingUpload]:
        """Incomplete multipart uploads below ``folder`` (none where the backend has no such thing)."""
        ...

    def abort_upload(self, path: str, upload_id: str) -> None:
        """Abort one incomplete multipart upload; one already gone is fine."""
        ...

    def missing_cleanup_capabilities(self) -> list[str]:
        """What the cleanup sensor needs that this store cannot do (``[]``: nothing)."""
        ...
