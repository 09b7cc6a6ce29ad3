"""Reading one stored object: whole, row group by row group, as a batch stream, or in chunks.

Each reader spends as few requests as the object allows: a small object is one
GET (after the HEAD that found it, or none when a listing gave its size); a
large Parquet object is its footer, then its row groups' column chunks as a few
coalesced ranged GETs, ``ROW_GROUPS_IN_FLIGHT`` row groups at a time.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from remote_store_dagster import _formats as formats
from remote_store_dagster import _signing
from remote_store_dagster._loading._chunked import ChunkedReader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._progress import Progress

__all__ = [
    "ROW_GROUPS_IN_FLIGHT",
    "WHOLE_OBJECT_BYTES",
    "batch_reader",
    "batch_rows",
    "chunked_reader",
    "fragment",
    "is_small",
    "open_file",
    "read_bytes",
    "read_pickle",
    "read_stream",
    "read_table",
    "read_whole",
]

#: Objects up to this size are fetched with one GET into memory and decoded
#: there; larger ones are read as Parquet ranges (footer, then column chunks).
WHOLE_OBJECT_BYTES = 8 * 1024 * 1024
#: Row groups of one large Parquet object read at once. Each is pre-buffered alone (its
#: column chunks fetched as a few coalesced ranges) and released once decoded, so a load
#: holds the table plus this many row groups of raw bytes, not the whole file twice.
ROW_GROUPS_IN_FLIGHT = 2


def is_small(stored: Stored) -> bool:
    """Whether ``stored`` is fetched with one GET (its size is known and at most ``WHOLE_OBJECT_BYTES``)."""
    return stored.size is not None and stored.size <= WHOLE_OBJECT_BYTES


def open_file(dp: DataPath, stored: Stored) -> Any:
    """A random-access file: the one opened to find it, unused yet, or a new one (on S3, one HEAD)."""
    if stored.opened is not None and not stored.opened.closed:
        return stored.opened
    return dp.filesystem.open_input_file(dp.native(stored.path))


def fragment(dp: DataPath, stored: Stored, partition_expression: Any = None) -> Any:
    """A Parquet fragment with its size known (from the listing or the HEAD that found it).

    The dataset layer is the one place in PyArrow's Python API that opens an
    S3 object with a known size, so reading through it sends no HEAD: one GET
    for the footer, then the column chunks (as ``pyarrow.dataset`` does).
    """
    native = dp.native(stored.path)
    return parquet_format().make_fragment(
        native, filesystem=dp.filesystem, partition_expression=partition_expression, file_size=stored.size
    )


def parquet_format() -> Any:
    """Parquet as every load reads it: page checksums verified as the pages are read.

    The IO manager writes a CRC32 per page (``page_checksums``); a page whose bytes
    changed in storage fails its load instead of decoding wrong values. Pages
    written without one (older objects, other tools) are read as before.
    """
    import pyarrow.dataset as ds

    options = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    return ds.ParquetFileFormat(default_fragment_scan_options=options)


def parquet_file(source: Any, **options: Any) -> pq.ParquetFile:
    """``pq.ParquetFile`` with page checksums verified (see ``parquet_format``)."""
    return pq.ParquetFile(source, page_checksum_verification=True, **options)


def read_whole(dp: DataPath, stored: Stored) -> pa.Buffer:
    """A small object's bytes, in one GET once the file is open.

    ``read()`` fills a Python ``bytes`` directly (``read_buffer()`` would allocate from
    Arrow's default pool): the memory goes back to the system when the object is
    dropped, which keeps a long multi-partition stream's peak down.
    """
    with open_file(dp, stored) as source:
        return pa.py_buffer(source.read())


def read_bytes(dp: DataPath, stored: Stored) -> bytes:
    """The object's bytes: one request for the full size, no read-ahead buffer."""
    with open_file(dp, stored) as whole:
        data: bytes = whole.read()
        return data


def read_pickle(dp: DataPath, stored: Stored) -> Any:
    """The unpickled object: a small one from one GET, a large one through an 8 MiB read-ahead stream.

    Its signature is verified (``_signing``, raising ``SignatureError``) before a single byte is
    unpickled: unpickling runs code.
    """
    if is_small(stored):
        data = read_whole(dp, stored).to_pybytes()  # one GET, no read-ahead buffer
    else:
        native = dp.native(stored.path)
        with dp.filesystem.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES) as stream:
            data = stream.read()
    return pickle.loads(_signing.unwrap(data, dp.pickle_signing_key))


def chunked_reader(dp: DataPath, stored: Stored) -> ChunkedReader:
    """A ``BinaryIO`` whose small reads are served from an 8 MiB read-ahead buffer."""
    native = dp.native(stored.path)
    return ChunkedReader(dp.filesystem.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES))


def present_columns(columns: Sequence[str] | None, schema: pa.Schema) -> list[str] | None:
    """The requested ``columns`` that ``schema`` has (``None``: all)."""
    if columns is None:
        return None
    names = set(schema.names)
    return [c for c in columns if c in names]


def read_table(
    dp: DataPath, stored: Stored, columns: Sequence[str] | None, progress: Progress | None = None
) -> pa.Table:
    """A whole Parquet object as a Table (``columns`` that it lacks are left out).

    Large objects and listed partitions decode through the dataset layer, the one
    PyArrow Python API that takes a ``memory_pool`` (see ``memory_pool_for``). One
    small object with all columns is one GET decoded by ``ParquetFile``: 0.3-0.4 ms
    less per object than a dataset scan, and a few MiB of first-touch cost nothing.
    """
    if not is_small(stored):
        table = _read_row_groups(dp, stored, columns, progress)
        if progress is not None:
            progress.done()
        return table
    if columns is None and not stored.listed:
        return parquet_file(pa.BufferReader(read_whole(dp, stored))).read(use_threads=False)
    part = fragment(dp, stored)  # footer, then the column chunks; no HEAD
    columns = present_columns(columns, part.physical_schema)
    return part.to_table(columns=columns, use_threads=False, memory_pool=dp.memory_pool)


def _read_row_groups(
    dp: DataPath, stored: Stored, columns: Sequence[str] | None, progress: Progress | None
) -> pa.Table:
    """A large Parquet object, ``ROW_GROUPS_IN_FLIGHT`` row groups at a time.

    ``ParquetFile.read(pre_buffer=True)`` (and the dataset scanner) pre-buffer every row
    group before decoding the first: the raw file and the table are in memory together,
    and in a fresh process touching that much new memory costs more than the download
    (256 MiB: Δ RSS 584 MB vs 357 MB, measured in ``bench/probe.py load``). Per row group,
    pre-buffering keeps what makes it fast on S3: few coalesced ranged GETs, fetched
    concurrently. The footer is read once (one GET, no HEAD: the size is known) and
    shared by the row-group fragments. ``progress`` hears of each row group as it arrives.
    """
    whole = fragment(dp, stored)
    columns = present_columns(columns, whole.physical_schema)  # reads the footer
    metadata = whole.metadata
    pool = dp.memory_pool
    # One batch per row group (the scanner's default would cut it into 128k-row chunks).
    batch_rows = max((metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)), default=1)

    def read_group(group: Any) -> pa.Table:
        return group.to_table(columns=columns, batch_size=max(batch_rows, 1), memory_pool=pool)

    groups = whole.split_by_row_group()
    if len(groups) <= 1:
        return read_group(whole)
    tables = []
    with ThreadPoolExecutor(ROW_GROUPS_IN_FLIGHT, thread_name_prefix="rsd-row-groups") as workers:
        for index, table in enumerate(workers.map(read_group, groups)):
            tables.append(table)
            if progress is not None:  # in order, on this thread: no lock needed
                progress.update(_fetched_bytes(metadata.row_group(index), columns), table.num_rows)
    return pa.concat_tables(tables)


def _fetched_bytes(row_group: Any, columns: Sequence[str] | None) -> int:
    """Stored bytes of the column chunks a read of ``columns`` (top-level names) fetches."""
    chunks = (row_group.column(i) for i in range(row_group.num_columns))
    wanted = None if columns is None else set(columns)
    return sum(c.total_compressed_size for c in chunks if wanted is None or c.path_in_schema.split(".")[0] in wanted)


def read_stream(
    dp: DataPath, stored: Stored, columns: Sequence[str] | None, progress: Progress | None = None
) -> pa.RecordBatchReader:
    """One Parquet object as a lazy batch stream (reporting to ``progress`` as it is read)."""
    reader = batch_reader(lambda: open_file(dp, stored), columns)
    return with_progress(reader, progress, stored.size) if progress is not None else reader


def batch_reader(open_source: Callable[[], Any], columns: Sequence[str] | None) -> pa.RecordBatchReader:
    """A lazy RecordBatchReader over one Parquet file: one row group in memory at a time."""
    source = open_source()
    # pre_buffer (pyarrow's default) caches every requested row group: the whole file.
    parquet = parquet_file(source, buffer_size=formats.READ_BUFFER_BYTES, pre_buffer=False)
    schema = parquet.schema_arrow
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        schema = pa.schema([schema.field(c) for c in wanted])
    rows = batch_rows(parquet.metadata)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(batch_size=rows, columns=wanted)
        finally:
            parquet.close()
            source.close()

    return pa.RecordBatchReader.from_batches(schema, batches())


def batch_rows(metadata: Any) -> int:
    """Rows per streamed batch: ~READ_BATCH_BYTES of uncompressed data, capped at READ_BATCH_ROWS."""
    rows = int(metadata.num_rows)
    size = sum(int(metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups))
    if rows <= 0 or size <= 0:
        return formats.READ_BATCH_ROWS
    return max(1, min(formats.READ_BATCH_ROWS, formats.READ_BATCH_BYTES * rows // size))


def with_progress(reader: pa.RecordBatchReader, progress: Progress, stored_bytes: int | None) -> pa.RecordBatchReader:
    """``reader`` reporting rows as they stream, and one closing line when it is exhausted."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            progress.update(0, batch.num_rows)
            yield batch
        progress.done(stored_bytes)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
