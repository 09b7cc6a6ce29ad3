"""Stored Parquet objects as one lazy ``pyarrow.dataset``: the asset folder, restricted to what the input covers.

The dataset is what ``pyarrow.dataset.dataset(<asset folder>, partitioning="hive")``
would give, restricted to the requested partitions' files, built without a
request per file: every fragment carries its size (from the listing, or the
HEAD that found a lone object), so scanning sends no HEAD; and its partition
expression (``partition == 'k03'``) comes from the target's Hive dimensions,
so each dimension is a string column holding the decoded partition key and a
filter on it skips other partitions' objects unread. Filters and projections
pass down to PyArrow's scanner: only the matching row groups' column chunks are
fetched.

The schema is the last (for time partitions: the newest) partition's, read from
its footer (one GET, kept for the scan): pruning would be lost if every footer
were read up front. Older partitions' missing columns scan as nulls and
narrower types are cast, as ``pyarrow.dataset`` does.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from remote_store_dagster._errors import RemoteStoreIOError
from remote_store_dagster._loading import _read
from remote_store_dagster._loading._refusal import named_refusals

if TYPE_CHECKING:
    from collections.abc import Sequence

    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._targets import Target

__all__ = ["dataset_of"]


def dataset_of(dp: DataPath, found: Sequence[tuple[Target, Stored]], columns: Sequence[str] | None) -> Any:
    """One ``FileSystemDataset`` over ``found`` (partition order), projected to ``columns`` if given."""
    import pyarrow.dataset as ds

    for _, stored in found:
        if stored.opened is not None:  # the HEAD that found it gave the size; fragments reopen on it
            stored.opened.close()
    fragments = [_read.fragment(dp, stored, _partition_expression(target)) for target, stored in found]
    newest, newest_stored = found[-1]
    where = dp.uri(newest_stored.path)
    try:
        with named_refusals(newest.label, "GetObject", where):
            physical: pa.Schema = fragments[-1].physical_schema  # the footer GET; the fragment keeps it
    except (OSError, pa.ArrowException) as exc:
        raise RemoteStoreIOError(f"{newest.label}: cannot read the Parquet footer of {where}: {exc}") from exc
    schema = _with_dimensions(physical, newest)
    if columns is not None:
        names = set(schema.names)
        schema = pa.schema([schema.field(c) for c in columns if c in names], metadata=schema.metadata)
    return ds.FileSystemDataset(fragments, schema, _read.parquet_format(), dp.filesystem)


def _partition_expression(target: Target) -> Any:
    """``dim == 'key'`` for each Hive dimension of ``target`` (``None``: not a partition)."""
    import pyarrow.dataset as ds

    if not target.dims:
        return None
    return functools.reduce(operator.and_, [ds.field(dim) == key for dim, key in target.dims])


def _with_dimensions(schema: pa.Schema, target: Target) -> pa.Schema:
    """``schema`` plus one string column per Hive dimension the files do not already hold."""
    for dim, _ in target.dims:
        if dim not in schema.names:
            schema = schema.append(pa.field(dim, pa.string()))
    return schema
