"""Where a Dagster output lives: from asset key, partition keys or op output to store folders.

The one place that turns Dagster's notion of an output (asset key, partition keys,
multi-partition dimensions, run/step/output of an op) into ``_layout`` locations,
so the write side and the read side agree on every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import MultiPartitionsDefinition

from remote_store_dagster import _layout as layout
from remote_store_dagster._errors import RemoteStoreIOError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Target", "asset_targets", "op_target", "partition_dims"]


@dataclass(frozen=True)
class Target:
    """One place an output lives, and what it is (asset and partition, or op output) for messages."""

    location: layout.OutputLocation
    #: Asset key as a user string (``"a/b"``); ``None`` for op outputs.
    asset: str | None = None
    #: Partition key; ``None`` when unpartitioned.
    partition: str | None = None
    #: For op outputs: what it is, e.g. ``output 'result' of step 'my_op' (run 1234)``.
    op_output: str | None = None
    #: The partition's Hive dimensions (``(("date", "2024-01-01"),)``): a dataset load makes them columns.
    dims: tuple[tuple[str, str], ...] = ()
    #: The asset's folder, which holds every partition (several partitions are listed from it);
    #: ``None``: the output's own folder.
    asset_folder: str | None = None

    @property
    def folder(self) -> str:
        """The folder a load of this output (or of several partitions with it) lists or reads as a dataset."""
        return self.asset_folder if self.asset_folder is not None else self.location.folder

    @property
    def key(self) -> str:
        """The partition key, ``""`` when unpartitioned (the key of a one-value mapping)."""
        return self.partition or ""

    @property
    def asset_label(self) -> str:
        return f"asset {self.asset}" if self.asset is not None else str(self.op_output)

    @property
    def label(self) -> str:
        if self.partition is None:
            return self.asset_label
        return f"{self.asset_label} partition {self.partition!r}"


def partition_dims(partitions_def: Any, key: str, column: str) -> dict[str, str]:
    """Hive folder name -> value for one partition key (one per dimension of a multi-partition)."""
    if isinstance(partitions_def, MultiPartitionsDefinition):
        by_dim = partitions_def.get_partition_key_from_str(key).keys_by_dimension
        return {dim: by_dim[dim] for dim in partitions_def.partition_dimension_names}
    return {column: key}


def asset_targets(
    prefix: str, asset_path: Sequence[str], partitions_def: Any, keys: Sequence[str] | None, column: str
) -> dict[str, Target]:
    """Partition key (``""`` when unpartitioned) -> target, in the order of ``keys``."""
    asset = "/".join(asset_path)
    if keys is None:
        return {"": Target(layout.asset_location(prefix, asset_path), asset)}
    folder = layout.asset_folder(prefix, asset_path)
    targets = {}
    for key in keys:
        dims = partition_dims(partitions_def, key, column)
        try:
            location = layout.partition_location(prefix, asset_path, dims)
        except ValueError as exc:
            raise RemoteStoreIOError(f"asset {asset} partition {key!r}: {exc}") from None
        targets[key] = Target(location, asset, key, dims=tuple(dims.items()), asset_folder=folder)
    return targets


def op_target(prefix: str, identifier: Sequence[str]) -> Target:
    """The run-scoped folder of an op (non-asset) output, from Dagster's output identifier."""
    run_id, step_key, *rest = identifier
    name = "/".join(rest)
    location = layout.run_location(prefix, run_id, step_key, name)
    return Target(location, op_output=f"output {name!r} of step {step_key!r} (run {run_id})")
