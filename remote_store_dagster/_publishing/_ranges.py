"""A single-run backfill's value, cut into one value per partition."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from remote_store_dagster import _formats as formats
from remote_store_dagster._errors import RemoteStoreIOError

__all__ = ["split_range"]


def split_range(
    asset: str, obj: Any, keys: Sequence[str], dims_of: Callable[[str], Mapping[str, str]], column: str
) -> dict[str, Any]:
    """One value per partition key: a ``{key: value}`` dict as is, a table split by its partition column(s).

    ``dims_of(key)`` gives the Hive column -> value of a partition key; those columns
    are dropped from each partition's table, as they live in the folder names.
    """
    span = f"{len(keys)} partitions {keys[0]!r}..{keys[-1]!r}"
    if isinstance(obj, Mapping):
        missing = [k for k in keys if k not in obj]
        extra = [k for k in obj if k not in set(keys)]
        if missing or extra:
            raise RemoteStoreIOError(
                f"asset {asset}: run over {span} returned a dict whose keys do not match the partitions "
                f"(missing: {missing[:5]}, unexpected: {extra[:5]})"
            )
        return {k: obj[k] for k in keys}
    if not (formats.is_table_like(obj) or formats.is_batch_iterator(obj)):
        raise RemoteStoreIOError(
            f"asset {asset}: run over {span} returned a {type(obj).__name__}; return a dict "
            f"{{partition_key: value}} or a table with the partition column {column!r}"
        )
    schema, batches = formats.to_batches(obj)
    table = pa.Table.from_batches(list(batches), schema)
    dims = list(dims_of(keys[0]))
    missing_columns = [d for d in dims if d not in table.column_names]
    if missing_columns:
        raise RemoteStoreIOError(
            f"asset {asset}: run over {span} returned a table without partition column(s) "
            f"{missing_columns}; add them, or return a dict {{partition_key: value}}"
        )
    as_text = {d: pc.cast(table[d], pa.string()) for d in dims}
    result = {}
    for key in keys:
        mask = None
        for dim, value in dims_of(key).items():
            condition = pc.equal(as_text[dim], value)
            mask = condition if mask is None else pc.and_(mask, condition)
        result[key] = table.filter(mask).drop_columns(dims)
    return result
