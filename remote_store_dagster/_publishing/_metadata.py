"""What Dagster shows for each written output: URI, row count, schema, stored bytes.

A single-run backfill writes several partitions from one output. Dagster records
one materialization per partition; each gets its own row count and URI through
partition-scoped asset metadata, and the output-wide values (the whole range) go
under keys that say they cover the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import MetadataValue, TableColumn, TableSchema

from remote_store_dagster import _dagster_context as dagster_context

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa
    from dagster import OutputContext

    from remote_store_dagster._formats import WriteStats
    from remote_store_dagster._targets import Target

__all__ = ["Written", "add_output_metadata"]

#: Our own metadata keys (``dagster/*`` keys follow Dagster's conventions).
STORE_KEY = "remote_store/store"
PATH_KEY = "remote_store/path"
STORED_BYTES_KEY = "remote_store/stored_bytes"


@dataclass(frozen=True)
class Written:
    """One published object: where it went and what it holds."""

    target: Target
    path: str
    uri: str
    stats: WriteStats


def _column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema])


def _one(store: str, written: Written, *, partitioned: bool) -> dict[str, Any]:
    stats = written.stats
    metadata: dict[str, Any] = {
        "dagster/uri": MetadataValue.path(written.uri),
        STORE_KEY: store,
        PATH_KEY: written.path,
        STORED_BYTES_KEY: MetadataValue.int(stats.stored_bytes),
    }
    if stats.schema is not None and stats.row_count is not None:
        row_key = "dagster/partition_row_count" if partitioned else "dagster/row_count"
        metadata[row_key] = MetadataValue.int(stats.row_count)
        metadata["dagster/column_schema"] = _column_schema(stats.schema)
    if written.target.asset is not None:
        metadata["dagster/table_name"] = written.target.asset.replace("/", ".")
    return metadata


def add_output_metadata(context: OutputContext, store: str, written: Sequence[Written], range_uri: str) -> None:
    """One object: its metadata. A partition range: each partition its own, the range's under ``range_*`` keys."""
    partitioned = written[0].target.partition is not None
    if len(written) == 1:
        context.add_output_metadata(_one(store, written[0], partitioned=partitioned))
        return
    for item in written:
        dagster_context.add_partition_metadata(context, item.target.key, _one(store, item, partitioned=True))
    rows = [w.stats.row_count for w in written]
    metadata: dict[str, Any] = {
        "remote_store/range_uri": MetadataValue.path(range_uri),
        "remote_store/range_partitions": MetadataValue.int(len(written)),
        "remote_store/range_stored_bytes": MetadataValue.int(sum(w.stats.stored_bytes for w in written)),
        STORE_KEY: store,
    }
    if all(r is not None for r in rows):
        metadata["remote_store/range_row_count"] = MetadataValue.int(sum(r for r in rows if r is not None))
    context.add_output_metadata(metadata)
