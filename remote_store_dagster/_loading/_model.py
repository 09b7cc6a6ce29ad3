"""The plain records a load passes around: where it reads, what it reads, what it found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remote_store_dagster import _layout as layout
from remote_store_dagster._errors import RemoteStoreIOError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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
class StepOutput:
    """An op (non-asset) output: the run and step that wrote it, and its name."""

    run_id: str
    step_key: str
    name: str

    def __str__(self) -> str:
        return f"output {self.name!r} of step {self.step_key!r} (run {self.run_id})"


@dataclass(frozen=True)
class Target:
    """One stored thing an input reads: whose it is, which partition, and where it lives.

    Messages are built from these fields (``label``), so nothing ever has to read an
    asset or partition back out of a message. ``dims`` are the partition's Hive
    dimensions (``{"date": "2024-01-01"}``): a dataset load turns them into columns.
    """

    location: layout.OutputLocation
    #: The asset folder (a partition's parent folder); an op output's own folder.
    folder: str
    asset: str | None = None
    partition: str | None = None
    dims: tuple[tuple[str, str], ...] = ()
    step_output: StepOutput | None = None

    @classmethod
    def for_asset(
        cls,
        prefix: str,
        asset_path: Sequence[str],
        partition: str | None = None,
        dims: Mapping[str, str] | None = None,
    ) -> Target:
        """An asset, or one partition of it (``dims``: its Hive dimensions)."""
        asset = "/".join(asset_path)
        folder = layout.asset_folder(prefix, asset_path)
        if partition is None:
            return cls(layout.OutputLocation(folder), folder, asset)
        dims = dims or {}
        try:
            location = layout.partition_location(prefix, asset_path, dims)
        except ValueError as exc:
            raise RemoteStoreIOError(f"asset {asset} partition {partition!r}: {exc}") from None
        return cls(location, folder, asset, partition, tuple(dims.items()))

    @classmethod
    def for_step_output(cls, prefix: str, run_id: str, step_key: str, name: str) -> Target:
        location = layout.run_location(prefix, run_id, step_key, name)
        return cls(location, location.folder, step_output=StepOutput(run_id, step_key, name))

    @property
    def owner(self) -> str:
        """``asset a/b`` (or the op output): what a message about any of its partitions names."""
        return f"asset {self.asset}" if self.asset is not None else str(self.step_output)

    @property
    def label(self) -> str:
        """``asset a/b partition 'k'``: what a message about this one object names."""
        return self.owner if self.partition is None else f"{self.owner} partition {self.partition!r}"


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


__all__ = ["DataPath", "StepOutput", "Stored", "Target"]
