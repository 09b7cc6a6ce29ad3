"""Several partitions of one asset: concurrent fetches, one table, one stream, or a dict.

The objects were found by one listing (``_locate.find_many``), so every read
here knows its object's size and sends no HEAD. Fetches run ``LOAD_CONCURRENCY``
at a time (each is mostly waiting on the server) and results keep partition
order, whatever order the fetches finish in.
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from remote_store_dagster import _formats as formats
from remote_store_dagster import _progress
from remote_store_dagster._errors import RemoteStoreIOError
from remote_store_dagster._loading import _read
from remote_store_dagster._loading._dataset import dataset_of
from remote_store_dagster._loading._refusal import named_refusals
from remote_store_dagster._loading._schema import SchemaMismatch, conform, unify_schemas
from remote_store_dagster._signing import SignatureError

if TYPE_CHECKING:
    from remote_store_dagster._loading._loaders import Loader
    from remote_store_dagster._loading._model import DataPath, Stored
    from remote_store_dagster._targets import Target

__all__ = ["LOAD_CONCURRENCY", "STREAM_PREFETCH_BYTES", "Partitions"]

#: Partitions fetched at once (each fetch is mostly waiting on the server).
LOAD_CONCURRENCY = 16
#: A batch stream over several partitions prefetches whole partitions up to
#: this many bytes ahead of the consumer (memory stays bounded by it).
STREAM_PREFETCH_BYTES = 16 * 1024 * 1024

#: What reading one partition may raise besides a refusal: the load names the partition.
READ_ERRORS = (OSError, pa.ArrowException, TypeError, pickle.UnpicklingError, EOFError, SignatureError)

#: Reads one partition's stored object into a value.
Read = Callable[["Target", "Stored"], Any]


@dataclass
class Partitions:
    """A multi-partition load: every requested partition, what the listing found, the report."""

    dp: DataPath
    #: Every requested partition, in partition order.
    targets: list[Target]
    #: Partition key -> its object, only for partitions that have one.
    stored: dict[str, Stored]
    columns: Sequence[str] | None
    #: INFO lines to the run log (progress, the closing line).
    log: Callable[[str], None]
    #: ``dict[str, T | None]``: a partition without data maps to ``None``.
    item_optional: bool = False
    progress: _progress.Progress = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.progress = _progress.Progress(
            self.log, "loaded", self.what, self.uri, interval=_progress.PROGRESS_INTERVAL_SECONDS
        )

    @property
    def owner(self) -> str:
        """What messages about the whole load name (``asset a/b``)."""
        return self.targets[0].asset_label

    @property
    def what(self) -> str:
        """``asset a/b, 3 of 5 partitions``: how the run log names this load."""
        return f"{self.owner}, {len(self.stored)} of {len(self.targets)} partitions"

    @property
    def uri(self) -> str:
        """The asset folder's URI."""
        return self.dp.uri(self.targets[0].folder)

    @property
    def present(self) -> list[Target]:
        """The partitions that have stored data, in partition order."""
        return [t for t in self.targets if t.partition in self.stored]

    def _stored(self, target: Target) -> Stored:
        return self.stored[str(target.partition)]

    def _require_some(self) -> list[Target]:
        present = self.present
        if not present:
            raise RemoteStoreIOError(
                f"{self.owner}: none of the {len(self.targets)} requested partitions has stored data"
            )
        return present

    # ------------------------------------------------------------------ whole partitions

    def _fetch(self, target: Target, read: Read) -> Any:
        stored = self._stored(target)
        try:
            with named_refusals(target.label, "GetObject", self.dp.uri(stored.path)):
                value = read(target, stored)
        except READ_ERRORS as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {stored.path}: {exc}") from exc
        rows = value.num_rows if isinstance(value, pa.Table) else None
        with self._lock:
            self.progress.update(stored.size or 0, rows)
        return value

    def fetch_all(self, read: Read) -> list[tuple[Target, Any]]:
        """Every stored partition through ``read``, ``LOAD_CONCURRENCY`` at a time, in partition order."""
        present = self.present
        if len(present) <= 1:
            return [(t, self._fetch(t, read)) for t in present]
        with ThreadPoolExecutor(max_workers=min(LOAD_CONCURRENCY, len(present))) as pool:
            futures = [pool.submit(self._fetch, t, read) for t in present]
            try:
                return [(t, f.result()) for t, f in zip(present, futures, strict=True)]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def as_dict(self, loader: Loader) -> dict[str, Any]:
        """``{partition_key: value}`` in partition order, each value read by ``loader``."""
        dp, columns = self.dp, self.columns

        def read(target: Target, stored: Stored) -> Any:
            return loader.read(dp, target, stored, columns, None)

        loaded = {str(t.partition): v for t, v in self.fetch_all(read)}
        result: dict[str, Any] = {}
        for t in self.targets:
            key = str(t.partition)
            if key in loaded:
                result[key] = loaded[key]
            elif self.item_optional:
                result[key] = None
        self.progress.done()
        return result

    def concatenated(self) -> pa.Table:
        """One table: every partition in order, schemas unified (added columns, widened types)."""
        self._require_some()
        dp, columns = self.dp, self.columns
        parts = self.fetch_all(lambda _, stored: _read.read_table(dp, stored, columns))
        schema = self._unify([(str(t.partition), v.schema) for t, v in parts])
        table = pa.concat_tables([conform(v, schema) for _, v in parts])
        self.progress.done()
        return table

    def _unify(self, schemas: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
        try:
            return unify_schemas(schemas)
        except SchemaMismatch as exc:
            raise RemoteStoreIOError(f"{self.owner}: cannot combine partitions: {exc}") from None

    # ------------------------------------------------------------------ lazy

    def dataset(self) -> Any:
        """A lazy ``pyarrow.dataset`` over the stored partitions (see ``_dataset``), nothing read but a footer."""
        present = self._require_some()
        dataset = dataset_of(self.dp, [(t, self._stored(t)) for t in present], self.columns)
        stored_bytes = sum(self._stored(t).size or 0 for t in present)
        self.log(
            f"{self.what}: a lazy dataset over {len(present)} objects "
            f"({_progress.format_bytes(stored_bytes)} stored) -> {self.uri}"
        )
        return dataset

    # ------------------------------------------------------------------ one stream

    def stream(self) -> pa.RecordBatchReader:
        """One batch stream over every partition, in order, with bounded memory.

        Footers are read first (concurrently) so the stream's schema covers
        every partition; then small partitions are prefetched whole, at most
        ``STREAM_PREFETCH_BYTES`` ahead of the consumer, and large ones are
        read one row group at a time.
        """
        present = self._require_some()
        with ThreadPoolExecutor(max_workers=max(1, min(LOAD_CONCURRENCY, len(present)))) as pool:
            schemas = list(pool.map(self._schema, present))
        schema = self._unify([(str(t.partition), s) for t, s in zip(present, schemas, strict=True)])
        if self.columns is not None:
            missing = [c for c in self.columns if c not in schema.names]
            if missing:
                raise RemoteStoreIOError(f"{self.owner}: no partition has column(s) {missing}")
            schema = pa.schema([schema.field(c) for c in self.columns], metadata=schema.metadata)
        return pa.RecordBatchReader.from_batches(schema, self._stream_batches(present, schema))

    def _schema(self, target: Target) -> pa.Schema:
        stored = self._stored(target)
        try:
            with named_refusals(target.label, "GetObject", self.dp.uri(stored.path)):
                schema: pa.Schema = _read.fragment(self.dp, stored).physical_schema  # footer GET, no HEAD
            return schema
        except (OSError, pa.ArrowException) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot read the Parquet footer of {stored.path}: {exc}") from exc

    def _stream_batches(self, present: list[Target], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        pool = ThreadPoolExecutor(max_workers=4)
        window: deque[tuple[Target, Future[Any] | None]] = deque()
        ahead = 0
        pending = iter(present)

        def fill() -> None:
            nonlocal ahead
            for target in pending:
                size = self._stored(target).size or 0
                small = size <= _read.WHOLE_OBJECT_BYTES
                window.append((target, pool.submit(self._whole, target) if small else None))
                ahead += size if small else 0
                if ahead >= STREAM_PREFETCH_BYTES:
                    return

        try:
            fill()
            while window:
                target, future = window.popleft()
                stored = self._stored(target)
                if future is not None:
                    source: Any = pa.BufferReader(future.result())
                    ahead -= stored.size or 0
                else:
                    with named_refusals(target.label, "GetObject", self.dp.uri(stored.path)):
                        source = _read.open_file(self.dp, stored)
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
        stored = self._stored(target)
        try:
            with named_refusals(target.label, "GetObject", self.dp.uri(stored.path)):
                return _read.read_whole(self.dp, stored)
        except (OSError, pa.ArrowException) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {stored.path}: {exc}") from exc

    def _partition_batches(self, target: Target, source: Any, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        stored = self._stored(target)
        try:
            with named_refusals(target.label, "GetObject", self.dp.uri(stored.path)):
                parquet = _read.parquet_file(source, buffer_size=formats.READ_BUFFER_BYTES, pre_buffer=False)
                names = set(parquet.schema_arrow.names)
                columns = [c for c in schema.names if c in names]
                for batch in parquet.iter_batches(batch_size=_read.batch_rows(parquet.metadata), columns=columns):
                    self.progress.update(0, batch.num_rows)
                    yield conform(batch, schema)
        except (OSError, pa.ArrowException) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {stored.path}: {exc}") from exc
