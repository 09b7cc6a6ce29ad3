"""Storage formats: which format an output gets, and the writers.

Writers stream into a PyArrow output stream (``Storage.publish``). The load side,
from input annotation to loader, is ``_loading``; the read-buffer and batch
sizes it uses live here with the row-group sizes they depend on.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from remote_store_dagster import _signing

#: Rows per Parquet row group, and the in-memory batch size that triggers one.
ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = 64 * 1024 * 1024
#: Read-ahead of streamed reads: a 64 KiB consumer read is served from this buffer.
READ_BUFFER_BYTES = 8 * 1024 * 1024
RAW_CHUNK_BYTES = 8 * 1024 * 1024
#: Batch size of RecordBatchReader loads: at most this many rows, and about
#: READ_BATCH_BYTES of (uncompressed) data, so wide rows do not make huge batches.
READ_BATCH_ROWS = 128 * 1024
READ_BATCH_BYTES = 16 * 1024 * 1024


class UnsupportedOutput(TypeError):
    """An output object this configuration cannot store."""


@dataclass
class WriteStats:
    fmt: str
    stored_bytes: int
    row_count: int | None = None
    schema: pa.Schema | None = None


# --------------------------------------------------------------------------- writing


def _optional(module: str) -> Any:
    import sys

    return sys.modules.get(module)


def is_table_like(obj: Any) -> bool:
    if isinstance(obj, pa.Table | pa.RecordBatch | pa.RecordBatchReader):
        return True
    pd = _optional("pandas")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return True
    pl = _optional("polars")
    return pl is not None and isinstance(obj, pl.DataFrame | pl.LazyFrame)


def is_binary_file(obj: Any) -> bool:
    if isinstance(obj, io.TextIOBase):
        return False
    if isinstance(obj, pa.NativeFile):
        return bool(obj.readable())
    return isinstance(obj, io.IOBase) and obj.readable()


def to_batches(obj: Any) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Any table-like (or iterator of batches/tables) as a schema plus a batch stream.

    Iterators are consumed lazily: only one batch is held at a time.
    """
    if isinstance(obj, pa.Table):
        return obj.schema, iter(obj.to_batches())
    if isinstance(obj, pa.RecordBatch):
        return obj.schema, iter([obj])
    if isinstance(obj, pa.RecordBatchReader):
        return obj.schema, iter(obj)
    pd = _optional("pandas")
    if pd is not None and isinstance(obj, pd.DataFrame):
        table = pa.Table.from_pandas(obj)
        return table.schema, iter(table.to_batches())
    pl = _optional("polars")
    if pl is not None:
        if isinstance(obj, pl.LazyFrame):
            frames = obj.collect_batches(engine="streaming")
            first = next(iter(frames), None)
            if first is None:
                table = obj.limit(0).collect().to_arrow()
                return table.schema, iter([])
            head = first.to_arrow()
            rest = (frame.to_arrow() for frame in frames)
            return head.schema, (b for t in itertools.chain([head], rest) for b in t.to_batches())
        if isinstance(obj, pl.DataFrame):
            table = obj.to_arrow()
            return table.schema, iter(table.to_batches())
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | bytearray | dict):
        iterator = iter(obj)
        first = next(iterator, None)
        if first is None:
            raise UnsupportedOutput("the iterator yielded no record batches, so the schema is unknown")
        if isinstance(first, pa.Table):
            tables = itertools.chain([first], iterator)
            return first.schema, (b for t in tables for b in _check_batch(t, first.schema).to_batches())
        if isinstance(first, pa.RecordBatch):
            rest = (_check_batch(b, first.schema) for b in iterator)
            return first.schema, itertools.chain([first], rest)
        raise UnsupportedOutput(f"an iterator of {type(first).__name__} (expected pyarrow RecordBatch or Table)")
    raise UnsupportedOutput(f"{type(obj).__name__} is not table-like")


def _check_batch(batch: Any, schema: pa.Schema) -> Any:
    if not isinstance(batch, pa.RecordBatch | pa.Table):
        raise UnsupportedOutput(f"the batch stream yielded a {type(batch).__name__} after record batches")
    if not batch.schema.equals(schema, check_metadata=False):
        raise UnsupportedOutput(f"a record batch's schema differs from the first batch's: {batch.schema} vs {schema}")
    return batch


def is_batch_iterator(obj: Any) -> bool:
    return isinstance(obj, Iterator) and not is_binary_file(obj)


#: Parquet codecs PyArrow writes (``compression``).
PARQUET_CODECS = ("snappy", "zstd", "gzip", "brotli", "lz4", "none")


@dataclass(frozen=True)
class ParquetOptions:
    """How ``ParquetWriter`` encodes an output (IO manager fields, per asset through definition metadata)."""

    compression: str = "snappy"
    #: Codec level (zstd, gzip, brotli); ``None``: the codec's default.
    compression_level: int | None = None
    #: Rows per row group at most; a row group is also cut at ``ROW_GROUP_BYTES`` of Arrow data.
    row_group_rows: int = ROW_GROUP_ROWS
    use_dictionary: bool = True
    #: CRC32 of every data page, verified on load: a flipped byte fails the load instead of decoding.
    page_checksums: bool = True

    def replace(self, overrides: Mapping[str, Any]) -> ParquetOptions:
        """These options with ``overrides`` (definition metadata ``{"parquet": {...}}``); raises ``ValueError``."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"unknown Parquet option(s) {unknown}; known: {[f.name for f in dataclasses.fields(self)]}"
            )
        options = dataclasses.replace(self, **dict(overrides))
        options.check()
        return options

    def check(self) -> None:
        if self.compression not in PARQUET_CODECS:
            raise ValueError(f"compression {self.compression!r} is not one of {', '.join(PARQUET_CODECS)}")
        if self.compression_level is not None and (
            isinstance(self.compression_level, bool) or not isinstance(self.compression_level, int)
        ):
            raise ValueError(f"compression_level must be an int or None, got {self.compression_level!r}")
        if isinstance(self.row_group_rows, bool) or not isinstance(self.row_group_rows, int) or self.row_group_rows < 1:
            raise ValueError(f"row_group_rows must be an int >= 1, got {self.row_group_rows!r}")
        for name in ("use_dictionary", "page_checksums"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


def write_parquet(out: pa.NativeFile, obj: Any, options: ParquetOptions) -> WriteStats:
    """Stream ``obj`` into ``out`` as Parquet, one bounded row group at a time.

    PyArrow's own defaults otherwise (dictionary page limit included): a smaller
    dictionary page made high-cardinality columns fall back to plain encoding and the
    file 13% larger than ``pq.write_table``'s, and every byte costs time on a capped link.
    """
    schema, batches = to_batches(obj)
    rows = 0
    max_rows = options.row_group_rows
    writer_options: dict[str, Any] = {
        "compression": options.compression,
        "use_dictionary": options.use_dictionary,
        "write_page_checksum": options.page_checksums,
    }
    if options.compression_level is not None:
        writer_options["compression_level"] = options.compression_level
    with pq.ParquetWriter(out, schema, **writer_options) as writer:
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_bytes += batch.nbytes
            pending_rows += batch.num_rows
            if pending_bytes >= ROW_GROUP_BYTES or pending_rows >= max_rows:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=max_rows)
                rows += pending_rows
                pending, pending_bytes, pending_rows = [], 0, 0
        if pending or rows == 0:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=max_rows)
            rows += pending_rows
    return WriteStats("parquet", out.tell(), rows, schema)


def write_raw(out: pa.NativeFile, obj: Any) -> WriteStats:
    if isinstance(obj, bytes | bytearray | memoryview):
        out.write(obj)
    else:
        read: Callable[[int], bytes] = obj.read
        while chunk := read(RAW_CHUNK_BYTES):
            out.write(chunk)
    return WriteStats("raw", out.tell())


def write_pickle(out: pa.NativeFile, obj: Any, signing_key: str | None = None) -> WriteStats:
    """Pickle ``obj`` into ``out``; signed (``_signing``) when a key is given."""
    if signing_key is None:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_signing.sign(payload, signing_key))
        out.write(payload)
    return WriteStats("pickle", out.tell())


def output_format(obj: Any, *, allow_pickle: bool) -> str:
    """``parquet``, ``raw`` or ``pickle`` for an output object (raises if none fits)."""
    if isinstance(obj, bytes | bytearray | memoryview) or is_binary_file(obj):
        return "raw"
    if is_table_like(obj) or is_batch_iterator(obj):
        return "parquet"
    if allow_pickle:
        return "pickle"
    raise UnsupportedOutput(
        f"{type(obj).__module__}.{type(obj).__qualname__} is not a table, bytes or a binary file, "
        "and pickling is switched off (allow_pickle=False)"
    )
