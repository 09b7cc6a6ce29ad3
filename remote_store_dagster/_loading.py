"""The load side: a table from input annotation to loader, and concurrent multi-partition loads.

``io_manager.py`` asks two things of this module: *where* the stored objects
are (one HEAD per likely format for one object; one listing of the asset
folder for several partitions) and *how* to turn them into what the input is
annotated with. The answer to the second is the ``ROUTES`` table below, read
top to bottom, as dagster-polars' type routers are; ``Optional[...]`` and
``dict[...]`` wrap a route.

Several partitions follow Dagster's ``UPathIOManager`` convention: a
``dict[partition_key, value]`` for ``dict[...]``, ``Any`` and unannotated
inputs; one concatenated table or frame (or one batch stream) for table
annotations. ``docs/io-manager/partitions.md`` has the rules as one table.
"""

from __future__ import annotations

import io
import os
import pickle
import posixpath
import threading
import types
import typing
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from remote_store_dagster import _formats as formats
from remote_store_dagster import _layout as layout
from remote_store_dagster import _signing

if TYPE_CHECKING:
    from remote_store_dagster._progress import Progress
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


#: Partitions fetched at once (each fetch is mostly waiting on the server).
LOAD_CONCURRENCY = 16
#: Objects up to this size are fetched with one GET into memory and decoded
#: there; larger ones are read as Parquet ranges (footer, then column chunks).
WHOLE_OBJECT_BYTES = 8 * 1024 * 1024
#: A batch stream over several partitions prefetches whole partitions up to
#: this many bytes ahead of the consumer (memory stays bounded by it).
STREAM_PREFETCH_BYTES = 16 * 1024 * 1024
#: Row groups of one large Parquet object read at once. Each is pre-buffered alone (its
#: column chunks fetched as a few coalesced ranges) and released once decoded, so a load
#: holds the table plus this many row groups of raw bytes, not the whole file twice.
ROW_GROUPS_IN_FLIGHT = 2


#: Settings of ``RemoteStoreIOManager.load_memory_pool``.
MEMORY_POOLS = ("auto", "default", "system", "jemalloc", "mimalloc")


def memory_pool_for(setting: str) -> pa.MemoryPool:
    """The Arrow pool loaded tables are decoded into.

    ``auto`` is Arrow's default pool, except where that is mimalloc only because
    pyarrow's wheels default to it (no ``ARROW_DEFAULT_MEMORY_POOL``): then the
    system allocator. mimalloc backs its arenas with transparent huge pages, and
    where a huge-page fault is expensive (measured on a Firecracker VM: twice the
    CPU of first-touching a freshly loaded table; 256 MiB load 0.92 s vs 0.63 s)
    a one-shot load pays for it. Writes and batch streams reuse a few buffers and
    keep Arrow's default. Raises ``ValueError`` naming what this pyarrow lacks.
    """
    if setting not in MEMORY_POOLS:
        raise ValueError(f"{setting!r} is not one of {', '.join(MEMORY_POOLS)}")
    default = pa.default_memory_pool()
    if setting == "default":
        return default
    if setting == "auto":
        chosen = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
        return default if chosen or default.backend_name != "mimalloc" else pa.system_memory_pool()
    factory = {
        "system": pa.system_memory_pool,
        "jemalloc": pa.jemalloc_memory_pool,
        "mimalloc": pa.mimalloc_memory_pool,
    }[setting]
    try:
        return factory()
    except NotImplementedError:
        raise ValueError(f"{setting!r}: this pyarrow {pa.__version__} build has no {setting} allocator") from None


class LoadError(RuntimeError):
    """A load failed; the message names the asset (partition) and the cause."""


# =========================================================================== routing


@dataclass(frozen=True)
class Route:
    """How one stored object becomes the annotated type, and what several of them become.

    ``kind`` is one of: ``table`` (pyarrow Table), ``pandas``, ``polars``,
    ``lazy`` (polars LazyFrame), ``stream`` (RecordBatchReader), ``bytes``,
    ``binary`` (a chunked file object), ``any`` (by stored format), ``object``
    (a pickled object of that type). ``formats`` are the stored formats it can
    read, likeliest first. ``combines``: several partitions become one value.
    """

    kind: str
    target: Any
    formats: tuple[str, ...]
    combines: bool


def _is_pandas_frame(tp: Any) -> bool:
    pd = formats._optional("pandas")
    return pd is not None and tp is pd.DataFrame


def _is_polars(tp: Any, name: str) -> bool:
    pl = formats._optional("polars")
    return pl is not None and tp is getattr(pl, name)


def is_unannotated(tp: Any) -> bool:
    return tp in (None, Any, object, type(None)) or tp is typing.Any


def is_binary_io_type(tp: Any) -> bool:
    return tp in (BinaryIO, typing.IO[bytes], io.BufferedIOBase, io.IOBase, io.RawIOBase, typing.IO) or (
        isinstance(tp, type) and issubclass(tp, io.BufferedIOBase)
    )


TABLE_FORMATS = ("parquet",)
ANY_FORMATS = ("parquet", "raw", "pickle")

#: Annotation -> route, first match wins.
ROUTES: list[tuple[Callable[[Any], bool], str, tuple[str, ...], bool]] = [
    (lambda tp: tp is pa.Table, "table", TABLE_FORMATS, True),
    (lambda tp: tp is pa.RecordBatchReader, "stream", TABLE_FORMATS, True),
    (_is_pandas_frame, "pandas", TABLE_FORMATS, True),
    (lambda tp: _is_polars(tp, "DataFrame"), "polars", TABLE_FORMATS, True),
    (lambda tp: _is_polars(tp, "LazyFrame"), "lazy", TABLE_FORMATS, True),
    (lambda tp: tp is bytes, "bytes", ("raw", "parquet", "pickle"), False),
    (is_binary_io_type, "binary", ("raw", "parquet", "pickle"), False),
    (is_unannotated, "any", ANY_FORMATS, False),
]


def route_for(tp: Any) -> Route:
    for match, kind, fmts, combines in ROUTES:
        if match(tp):
            return Route(kind, tp, fmts, combines)
    return Route("object", tp, ANY_FORMATS, False)


@dataclass(frozen=True)
class Request:
    """What an input asked for, from its annotation.

    ``optional``: ``Optional[T]`` / ``T | None`` (nothing stored -> ``None``).
    ``as_dict``: ``dict[...]`` (several partitions -> ``{key: value}``);
    ``item_optional``: ``dict[str, T | None]`` (a missing partition -> ``None``).
    """

    route: Route
    annotation: Any
    optional: bool = False
    as_dict: bool = False
    item_optional: bool = False


def _strip_optional(tp: Any) -> tuple[bool, Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, (rest[0] if len(rest) == 1 else Any)
    return False, tp


def _dict_value_type(tp: Any) -> tuple[bool, Any]:
    """``dict[str, X]`` -> (True, X); a bare ``dict`` -> (True, Any); anything else -> (False, tp)."""
    if typing.get_origin(tp) in (dict, Mapping, typing.Mapping, typing.Dict):  # noqa: UP006
        args = typing.get_args(tp)
        return True, (args[1] if len(args) == 2 else Any)
    if tp in (dict, Mapping):
        return True, Any
    return False, tp


def request_for(annotation: Any) -> Request:
    optional, tp = _strip_optional(annotation)
    as_dict, inner = _dict_value_type(tp)
    if not as_dict:
        return Request(route_for(tp), annotation, optional=optional)
    item_optional, inner = _strip_optional(inner)
    return Request(route_for(inner), annotation, optional=optional, as_dict=True, item_optional=item_optional)


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return repr(tp).replace("typing.", "")
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


# =========================================================================== locating


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


@dataclass(frozen=True)
class Target:
    """One thing to load: partition key (``""`` if none), folder and a label for messages."""

    key: str
    location: layout.OutputLocation
    label: str


def find_one(dp: DataPath, location: layout.OutputLocation, fmts: Sequence[str]) -> Stored | None:
    """The stored object in ``location``, trying ``fmts`` in order (one HEAD each).

    On S3 the lookup is opening the file (``Storage.locate``); the open file is kept for
    the read (``Stored.opened``).
    """
    for fmt in fmts:
        found = dp.storage.locate(location.data_path(fmt))
        if found is not None:
            return Stored(fmt, found.path, found.size, opened=found.opened)
    return None


def _common_prefix(paths: Sequence[str]) -> str:
    """Longest common string prefix (not path prefix: ``partition=2024-01-`` is what S3 lists by)."""
    return os.path.commonprefix(list(paths))  # noqa: RUF071 - a key prefix, not a path


def list_folder(dp: DataPath, folder: str, within: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """(store-relative path, size) of every object below ``folder``: one listing.

    Narrowed to the longest common key prefix of ``within`` (e.g. ``partition=2024-01-``
    for a month of days) where the storage lists by key prefix.
    """
    narrow = _common_prefix(within) if within else ""
    for info in dp.storage.list_objects(folder, narrow_to=narrow):
        yield info.path, info.size


def find_many(dp: DataPath, folder: str, targets: Sequence[Target]) -> dict[str, dict[str, Stored]]:
    """Per partition key, the stored objects by format, from one listing of ``folder``."""
    by_folder: dict[str, str] = {t.location.folder: t.key for t in targets}
    found: dict[str, dict[str, Stored]] = {t.key: {} for t in targets}
    for path, size in list_folder(dp, folder, [t.location.folder + "/" for t in targets]):
        parent, name = posixpath.split(path)
        key = by_folder.get(parent)
        if key is None:
            continue
        stem, ext = posixpath.splitext(name)
        fmt = layout.EXTENSION_FORMATS.get(ext)
        if stem == layout.DATA_STEM and fmt is not None:
            found[key][fmt] = Stored(fmt, path, size, listed=True)
    return found


def pick(stored: Mapping[str, Stored], fmts: Sequence[str]) -> Stored | None:
    for fmt in fmts:
        if fmt in stored:
            return stored[fmt]
    return None


# =========================================================================== reading one object


def open_file(dp: DataPath, stored: Stored) -> Any:
    """A random-access file: the one opened to find it, unused yet, or a new one (on S3, one HEAD)."""
    if stored.opened is not None and not stored.opened.closed:
        return stored.opened
    return dp.filesystem.open_input_file(dp.native(stored.path))


def fragment(dp: DataPath, stored: Stored) -> Any:
    """A Parquet fragment with its size known from the listing.

    The dataset layer is the one place in PyArrow's Python API that opens an
    S3 object with a known size, so reading through it sends no HEAD: one GET
    for the footer, then the column chunks (as ``pyarrow.dataset`` does).
    """
    import pyarrow.dataset as ds

    native = dp.native(stored.path)
    return ds.ParquetFileFormat().make_fragment(native, filesystem=dp.filesystem, file_size=stored.size)


def read_whole(dp: DataPath, stored: Stored) -> pa.Buffer:
    """A small object's bytes, in one GET once the file is open.

    ``read()`` fills a Python ``bytes`` directly (``read_buffer()`` would allocate from
    Arrow's default pool): the memory goes back to the system when the object is
    dropped, which keeps a long multi-partition stream's peak down.
    """
    with open_file(dp, stored) as source:
        return pa.py_buffer(source.read())


def _is_small(stored: Stored) -> bool:
    return stored.size is not None and stored.size <= WHOLE_OBJECT_BYTES


def _present(columns: Sequence[str] | None, schema: pa.Schema) -> list[str] | None:
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
    if not _is_small(stored):
        table = _read_row_groups(dp, stored, columns, progress)
        if progress is not None:
            progress.done()
        return table
    if columns is None and not stored.listed:
        return pq.ParquetFile(pa.BufferReader(read_whole(dp, stored))).read(use_threads=False)
    part = fragment(dp, stored)  # footer, then the column chunks; no HEAD
    return part.to_table(columns=_present(columns, part.physical_schema), use_threads=False, memory_pool=dp.memory_pool)


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
    columns = _present(columns, whole.physical_schema)  # reads the footer
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


def convert_table(table: pa.Table, route: Route) -> Any:
    """A pyarrow Table as the route's frame type."""
    if route.kind in ("table", "any", "object") and (route.kind != "object" or route.target is pa.Table):
        return table
    if route.kind == "pandas":
        return table.to_pandas()
    if route.kind in ("polars", "lazy"):
        import polars as pl

        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a Table (not an Array) converts to a DataFrame
        return frame.lazy() if route.kind == "lazy" else frame
    if route.kind == "stream":
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    raise TypeError(f"a Parquet table cannot be loaded as {type_name(route.target)}")


def read_one(
    dp: DataPath, stored: Stored, route: Route, columns: Sequence[str] | None, progress: Progress | None = None
) -> Any:
    """One stored object as the route asks."""
    fs = dp.filesystem
    native = dp.native(stored.path)
    if route.kind == "binary":
        return ChunkedReader(fs.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES))
    if route.kind == "bytes" or (stored.fmt == "raw" and route.kind == "any"):
        with open_file(dp, stored) as whole:  # one request for the full size, no read-ahead buffer
            return whole.read()
    if stored.fmt == "raw":
        raise TypeError(f"raw bytes cannot be loaded as {type_name(route.target)}; annotate bytes or BinaryIO")
    if stored.fmt == "pickle":
        if _is_small(stored):
            data = read_whole(dp, stored).to_pybytes()  # one GET, no read-ahead buffer
        else:
            with fs.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES) as stream:
                data = stream.read()
        # Verified before a single byte is unpickled (unpickling runs code).
        value = pickle.loads(_signing.unwrap(data, dp.pickle_signing_key))
        target = route.target
        if route.kind == "object" and isinstance(target, type) and not isinstance(value, target):
            raise TypeError(f"the stored object is a {type(value).__name__}, not {type_name(target)}")
        return value
    if route.kind == "stream":
        reader = batch_reader(lambda: open_file(dp, stored), columns)
        return with_progress(reader, progress, stored.size) if progress is not None else reader
    if route.kind == "lazy":
        import polars as pl
        import pyarrow.dataset as ds

        lazy = pl.scan_pyarrow_dataset(ds.dataset(native, filesystem=fs, format="parquet"))
        return lazy.select(list(columns)) if columns else lazy
    if route.kind == "object" and route.target is not pa.Table:
        raise TypeError(f"a Parquet table cannot be loaded as {type_name(route.target)}")
    return convert_table(read_table(dp, stored, columns, progress), route)


def batch_reader(open_source: Callable[[], Any], columns: Sequence[str] | None) -> pa.RecordBatchReader:
    """A lazy RecordBatchReader over one Parquet file: one row group in memory at a time."""
    source = open_source()
    # pre_buffer (pyarrow's default) caches every requested row group: the whole file.
    parquet = pq.ParquetFile(source, buffer_size=formats.READ_BUFFER_BYTES, pre_buffer=False)
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


# =========================================================================== schema evolution


class SchemaMismatch(ValueError):
    """Two partitions' schemas differ in a way that is not an added column or a widened type."""


def widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both ``a`` and ``b`` convert to without loss of meaning, or ``None``.

    Same type; ``null`` with anything; a narrower integer to a wider one (signed
    and unsigned mixed: the signed type that holds both, up to int64); float16/32
    to a wider float; any integer with a float to float64; string/binary to their
    ``large_`` variants. Nothing else (no string <-> number, no timestamp units).
    """
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return _widen_ints(a, b)
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if (pa.types.is_integer(a) and pa.types.is_floating(b)) or (pa.types.is_floating(a) and pa.types.is_integer(b)):
        return pa.float64()
    pairs = {(pa.string(), pa.large_string()): pa.large_string(), (pa.binary(), pa.large_binary()): pa.large_binary()}
    for (x, y), wide in pairs.items():
        if (a.equals(x) and b.equals(y)) or (a.equals(y) and b.equals(x)):
            return wide
    return None


def _widen_ints(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    signed = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}
    a_signed, b_signed = pa.types.is_signed_integer(a), pa.types.is_signed_integer(b)
    if a_signed == b_signed:
        return a if a.bit_width >= b.bit_width else b
    s, u = (a, b) if a_signed else (b, a)
    if s.bit_width > u.bit_width:
        return s
    if u.bit_width < 64:
        return signed[2 * u.bit_width]
    return None


def unify_schemas(schemas: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for several partitions: columns in order of first appearance, widened types.

    Raises ``SchemaMismatch`` naming both partitions and the field when a
    column's types cannot be widened to one.
    """
    first = schemas[0][1]
    if all(s.equals(first, check_metadata=False) for _, s in schemas[1:]):
        return first
    fields: dict[str, pa.Field] = {}
    seen_in: dict[str, tuple[str, pa.DataType]] = {}
    for name, schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f
                seen_in[f.name] = (name, f.type)
                continue
            wide = widen(fields[f.name].type, f.type)
            if wide is None:
                other, other_type = seen_in[f.name]
                raise SchemaMismatch(
                    f"partitions {other!r} and {name!r} differ in field {f.name!r}: {other_type} vs {f.type} "
                    "(only added columns and widened types combine; load them as a dict[str, ...] instead)"
                )
            fields[f.name] = pa.field(f.name, wide, nullable=fields[f.name].nullable or f.nullable)
            if not f.type.equals(seen_in[f.name][1]) and wide.equals(f.type):
                seen_in[f.name] = (name, f.type)
    return pa.schema(list(fields.values()), metadata=first.metadata)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> Any:
    """``table`` with ``schema``'s columns in its order: missing ones as nulls, types widened."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    arrays = []
    for f in schema:
        if f.name in table.schema.names:
            column = table.column(f.name)
            arrays.append(column if column.type.equals(f.type) else column.cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    if isinstance(table, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)


# =========================================================================== several partitions


@dataclass
class Many:
    """A multi-partition load: what was found for each target, and how to report it."""

    dp: DataPath
    targets: list[Target]
    stored: dict[str, Stored]  # key -> object, only partitions that have one
    request: Request
    columns: Sequence[str] | None
    progress: Progress
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fetch(self, target: Target, route: Route) -> Any:
        stored = self.stored[target.key]
        try:
            value = read_one(self.dp, stored, route, self.columns)
        except (
            OSError,
            pa.ArrowException,
            TypeError,
            pickle.UnpicklingError,
            EOFError,
            _signing.SignatureError,
        ) as exc:
            raise LoadError(f"{target.label}: cannot load {stored.path}: {exc}") from exc
        rows = value.num_rows if isinstance(value, pa.Table) else None
        with self._lock:
            self.progress.update(stored.size or 0, rows)
        return value

    def fetch_all(self, route: Route) -> list[tuple[Target, Any]]:
        """Every stored partition, ``LOAD_CONCURRENCY`` at a time, in partition order."""
        present = [t for t in self.targets if t.key in self.stored]
        if len(present) <= 1:
            return [(t, self._fetch(t, route)) for t in present]
        with ThreadPoolExecutor(max_workers=min(LOAD_CONCURRENCY, len(present))) as pool:
            futures = [pool.submit(self._fetch, t, route) for t in present]
            try:
                return [(t, f.result()) for t, f in zip(present, futures, strict=True)]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def as_dict(self) -> dict[str, Any]:
        loaded = dict((t.key, v) for t, v in self.fetch_all(self.request.route))
        result: dict[str, Any] = {}
        for t in self.targets:
            if t.key in loaded:
                result[t.key] = loaded[t.key]
            elif self.request.item_optional:
                result[t.key] = None
        self.progress.done()
        return result

    def concatenated(self) -> Any:
        route = self.request.route
        parts = self.fetch_all(Route("table", pa.Table, TABLE_FORMATS, True))
        schema = self._unify([(t.key, v.schema) for t, v in parts])
        table = pa.concat_tables([conform(v, schema) for _, v in parts])
        self.progress.done()
        return convert_table(table, route)

    def _unify(self, schemas: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
        try:
            return unify_schemas(schemas)
        except SchemaMismatch as exc:
            asset = self.targets[0].label.split(" partition ")[0]
            raise LoadError(f"{asset}: cannot combine partitions: {exc}") from None

    def stream(self) -> pa.RecordBatchReader:
        """One batch stream over every partition, in order, with bounded memory.

        Footers are read first (concurrently) so the stream's schema covers
        every partition; then small partitions are prefetched whole, at most
        ``STREAM_PREFETCH_BYTES`` ahead of the consumer, and large ones are
        read one row group at a time.
        """
        present = [t for t in self.targets if t.key in self.stored]
        with ThreadPoolExecutor(max_workers=max(1, min(LOAD_CONCURRENCY, len(present)))) as pool:
            schemas = list(pool.map(self._schema, present))
        schema = self._unify([(t.key, s) for t, s in zip(present, schemas, strict=True)])
        if self.columns is not None:
            missing = [c for c in self.columns if c not in schema.names]
            if missing:
                asset = self.targets[0].label.split(" partition ")[0]
                raise LoadError(f"{asset}: no partition has column(s) {missing}")
            schema = pa.schema([schema.field(c) for c in self.columns], metadata=schema.metadata)
        return pa.RecordBatchReader.from_batches(schema, self._stream_batches(present, schema))

    def _schema(self, target: Target) -> pa.Schema:
        stored = self.stored[target.key]
        try:
            schema: pa.Schema = fragment(self.dp, stored).physical_schema  # footer GET, no HEAD
            return schema
        except (OSError, pa.ArrowException) as exc:
            raise LoadError(f"{target.label}: cannot read the Parquet footer of {stored.path}: {exc}") from exc

    def _stream_batches(self, present: list[Target], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        pool = ThreadPoolExecutor(max_workers=4)
        window: deque[tuple[Target, Future[Any] | None]] = deque()
        ahead = 0
        pending = iter(present)

        def fill() -> None:
            nonlocal ahead
            for target in pending:
                size = self.stored[target.key].size or 0
                small = size <= WHOLE_OBJECT_BYTES
                window.append((target, pool.submit(self._whole, target) if small else None))
                ahead += size if small else 0
                if ahead >= STREAM_PREFETCH_BYTES:
                    return

        try:
            fill()
            while window:
                target, future = window.popleft()
                stored = self.stored[target.key]
                if future is not None:
                    source: Any = pa.BufferReader(future.result())
                    ahead -= stored.size or 0
                else:
                    source = open_file(self.dp, stored)
                fill()
                try:
                    yield from self._partition_batches(target, source, schema)
                finally:
                    source.close()
                self.progress.update(stored.size or 0)
            self.progress.done()
        finally:
            for _, future in window:
                if future is not None:
                    future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def _whole(self, target: Target) -> pa.Buffer:
        stored = self.stored[target.key]
        try:
            return read_whole(self.dp, stored)
        except (OSError, pa.ArrowException) as exc:
            raise LoadError(f"{target.label}: cannot load {stored.path}: {exc}") from exc

    def _partition_batches(self, target: Target, source: Any, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        try:
            parquet = pq.ParquetFile(source, buffer_size=formats.READ_BUFFER_BYTES, pre_buffer=False)
            names = set(parquet.schema_arrow.names)
            columns = [c for c in schema.names if c in names]
            for batch in parquet.iter_batches(batch_size=_batch_rows(parquet.metadata), columns=columns):
                self.progress.update(0, batch.num_rows)
                yield conform(batch, schema)
        except (OSError, pa.ArrowException) as exc:
            raise LoadError(f"{target.label}: cannot load {self.stored[target.key].path}: {exc}") from exc


# =========================================================================== chunked file object


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


__all__ = [
    "LOAD_CONCURRENCY",
    "ChunkedReader",
    "LoadError",
    "Many",
    "Request",
    "Route",
    "Stored",
    "Target",
    "find_many",
    "find_one",
    "pick",
    "read_one",
    "request_for",
    "route_for",
    "unify_schemas",
    "widen",
]
