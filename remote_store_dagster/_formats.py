"""Type routing: which storage format an output gets, and how an annotation is loaded.

Writers stream into a PyArrow output stream (see ``_publish``); loaders read
through a PyArrow filesystem with buffering so that small consumer reads never
become one GET each.
"""

from __future__ import annotations

import io
import itertools
import pickle
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

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


def write_parquet(out: pa.NativeFile, obj: Any, *, compression: str) -> WriteStats:
    """Stream ``obj`` into ``out`` as Parquet, one bounded row group at a time."""
    schema, batches = to_batches(obj)
    rows = 0
    # A 256 KiB dictionary page limit (default 1 MiB) makes high-cardinality columns fall back
    # to plain encoding sooner: Arrow's peak over the table drops from 42 to 20 MiB for 256 MiB.
    with pq.ParquetWriter(out, schema, compression=compression, dictionary_pagesize_limit=256 * 1024) as writer:
        pending: list[pa.RecordBatch] = []
        pending_bytes = 0
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_bytes += batch.nbytes
            pending_rows += batch.num_rows
            if pending_bytes >= ROW_GROUP_BYTES or pending_rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
                pending, pending_bytes, pending_rows = [], 0, 0
        if pending or rows == 0:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_ROWS)
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


def write_pickle(out: pa.NativeFile, obj: Any) -> WriteStats:
    pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
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


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadRequest:
    """What the consumer asked for: the target type and optional column projection."""

    target: Any
    columns: Sequence[str] | None = None


def type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


def unwrap_dict_annotation(tp: Any) -> tuple[bool, Any]:
    """``dict[str, X]`` -> (True, X); anything else -> (False, tp)."""
    origin = typing.get_origin(tp)
    if origin in (dict, Mapping):
        args = typing.get_args(tp)
        return True, (args[1] if len(args) == 2 else Any)
    if tp is dict:
        return True, Any
    return False, tp


def is_unannotated(tp: Any) -> bool:
    return tp in (None, Any, object, type(None)) or tp is typing.Any


def is_binary_io_type(tp: Any) -> bool:
    return tp in (BinaryIO, typing.IO[bytes], io.BufferedIOBase, io.IOBase, io.RawIOBase, typing.IO) or (
        isinstance(tp, type) and issubclass(tp, io.BufferedIOBase)
    )


def wants_table_family(tp: Any) -> bool:
    """Targets that need a Parquet file (not raw bytes or a pickle)."""
    if tp in (pa.Table, pa.RecordBatchReader):
        return True
    pd = _optional("pandas")
    if pd is not None and tp is pd.DataFrame:
        return True
    pl = _optional("polars")
    return pl is not None and tp in (pl.DataFrame, pl.LazyFrame)


def preferred_formats(tp: Any) -> tuple[str, ...]:
    """Formats to look for, most likely first (saves a HEAD per load)."""
    if wants_table_family(tp):
        return ("parquet",)
    if tp is bytes or is_binary_io_type(tp):
        return ("raw", "parquet", "pickle")
    return ("parquet", "raw", "pickle")


def convert_table(table: pa.Table, tp: Any) -> Any:
    """A pyarrow Table as the requested frame type."""
    if is_unannotated(tp) or tp is pa.Table:
        return table
    pd = _optional("pandas")
    if pd is not None and tp is pd.DataFrame:
        return table.to_pandas()
    pl = _optional("polars")
    if pl is not None:
        if tp is pl.DataFrame:
            return pl.from_arrow(table)
        if tp is pl.LazyFrame:
            return pl.from_arrow(table).lazy()
    raise TypeError(f"cannot convert a table to {type_name(tp)}")


def batch_reader(open_file: Callable[[], Any], columns: Sequence[str] | None) -> pa.RecordBatchReader:
    """A lazy RecordBatchReader over one Parquet file: one row group in memory at a time."""
    source = open_file()
    # pre_buffer (pyarrow's default) caches every requested row group: the whole file.
    parquet = pq.ParquetFile(source, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
    schema = parquet.schema_arrow
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    batch_rows = _batch_rows(parquet.metadata)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)
        finally:
            parquet.close()
            source.close()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _batch_rows(metadata: Any) -> int:
    """Rows per streamed batch: ~READ_BATCH_BYTES of uncompressed data, capped at READ_BATCH_ROWS."""
    rows = int(metadata.num_rows)
    size = sum(int(metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups))
    if rows <= 0 or size <= 0:
        return READ_BATCH_ROWS
    return max(1, min(READ_BATCH_ROWS, READ_BATCH_BYTES * rows // size))


def chain_readers(readers: Sequence[pa.RecordBatchReader], names: Sequence[str]) -> pa.RecordBatchReader:
    """Several readers as one, after checking their schemas agree."""
    schema = readers[0].schema
    for reader, name in zip(readers[1:], names[1:], strict=True):
        if not reader.schema.equals(schema, check_metadata=False):
            raise SchemaMismatch(names[0], name, schema, reader.schema)
    return pa.RecordBatchReader.from_batches(schema, (b for r in readers for b in r))


class SchemaMismatch(ValueError):
    def __init__(self, first: str, other: str, first_schema: pa.Schema, other_schema: pa.Schema) -> None:
        super().__init__(
            f"schema of partition {other!r} differs from partition {first!r}: "
            f"{_schema_text(other_schema)} vs {_schema_text(first_schema)}"
        )


def _schema_text(schema: pa.Schema) -> str:
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"


def concat_tables(tables: Sequence[pa.Table], names: Sequence[str]) -> pa.Table:
    schema = tables[0].schema
    for table, name in zip(tables[1:], names[1:], strict=True):
        if not table.schema.equals(schema, check_metadata=False):
            raise SchemaMismatch(names[0], name, schema, table.schema)
    return pa.concat_tables(tables)


class ChunkedReader(io.BufferedIOBase, BinaryIO):
    """A read-only binary file over a buffered PyArrow input stream.

    Each ``read(65536)`` is served from an 8 MiB read-ahead buffer, not one
    GET per call. It subclasses ``typing.BinaryIO`` so that Dagster's type
    check of a ``BinaryIO`` input passes.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if size is None or size < 0:
            return bytes(self._stream.read())
        return bytes(self._stream.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()

    def __enter__(self) -> ChunkedReader:
        return self


def read_pickle(stream: Any) -> Any:
    return pickle.load(stream)
