"""The plain records a load passes around: where it reads, and what it found (``_targets.Target``: what it reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

    from remote_store_dagster._storage import Storage


@dataclass(frozen=True)
class DataPath:
    """Where loads read from: the storage, and the Arrow pool tables are decoded into."""

    storage: Storage
    #: ``None``: Arrow's default pool; see ``memory_pool_for``.
    memory_pool: pa.MemoryPool | None = None
    #: Pickles must carry a valid signature under this key (``_signing``); ``None``: not checked.
    pickle_signing_key: str | None = None

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self.storage.filesystem

    def native(self, path: str) -> str:
        return self.storage.native(path)

    def uri(self, path: str) -> str:
        return self.storage.uri(path)


@dataclass(frozen=True)
class Stored:
    """One stored object: its format, store-relative path and size (``None``: unknown)."""

    fmt: str
    path: str
    size: int | None
    #: Found by a listing (several partitions): read through the dataset layer on the listed
    #: size, with no HEAD (a footer GET, then the column chunks).
    listed: bool = False
    #: On s3-pyarrow, the file opened to find this object (its one HEAD gave the size); the first
    #: read uses it instead of opening again, which would send a second HEAD.
    opened: Any = field(default=None, compare=False, repr=False)


__all__ = ["DataPath", "Stored"]
