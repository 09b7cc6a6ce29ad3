"""``RemoteStoreIOManager``: Parquet by PyArrow, streamed, atomically published, read in chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    InitResourceContext,
    InputContext,
    MetadataValue,
    MultiPartitionsDefinition,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field, PrivateAttr

from remote_store_dagster import _formats as formats
from remote_store_dagster import _layout as layout
from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._publish import SMALL_OBJECT_BYTES, DataPath, data_path_for, open_publish_stream
from remote_store_dagster.resources import RemoteStoreResource

__all__ = ["RemoteStoreIOManager"]

#: Definition metadata keys users set on assets (outputs) and inputs.
PARTITION_COLUMN_KEY = "partition_column"
COLUMNS_KEY = "columns"
ALLOW_MISSING_PARTITIONS_KEY = "allow_missing_partitions"


@dataclass(frozen=True)
class _Target:
    """One place an output lives, with a human label for errors and logs."""

    location: layout.OutputLocation
    label: str


class RemoteStoreIOManager(ConfigurableIOManager):
    """Stores asset and op outputs in a remote-store ``Store``.

    Tables (pyarrow, pandas, polars, record-batch streams) become Parquet
    written by PyArrow straight into the store, one row group at a time;
    ``bytes`` and binary files are stored raw; anything else is pickled unless
    ``allow_pickle`` is off. A failed write never replaces the previous
    materialization (see ``_publish``). Partitioned assets use Hive folders
    (``<dim>=<key>``), so the asset folder reads as one dataset elsewhere.
    """

    remote_store: RemoteStoreResource = Field(description="The registry the store comes from.")
    store: str = Field(description="Name of the store (a key of remote_store.stores).")
    prefix: str = Field(default="", description="Folder under the store root for everything written here.")
    partition_column: str = Field(
        default=layout.DEFAULT_PARTITION_COLUMN,
        description="Hive column name of single-dimension partitions; per asset: metadata "
        "{'partition_column': ...}. Multi-partitions use their dimension names.",
    )
    allow_pickle: bool = Field(default=True, description="Pickle objects that are not tables or bytes.")
    compression: str = Field(default="snappy", description="Parquet compression codec.")

    _data_path: DataPath | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ setup

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._data_path = None
        self._validated_prefix()

    def _validated_prefix(self) -> str:
        try:
            return layout.normalize_prefix(self.prefix)
        except ValueError as exc:
            raise RemoteStoreConfigError(f"prefix: {exc}") from None

    @property
    def data_path(self) -> DataPath:
        if self._data_path is None:
            self._data_path = data_path_for(self.remote_store.get_store(self.store))
        return self._data_path

    # ------------------------------------------------------------------ paths

    def _partition_column(self, definition_metadata: Mapping[str, Any] | None) -> str:
        column = (definition_metadata or {}).get(PARTITION_COLUMN_KEY, self.partition_column)
        return str(column)

    def _partition_dims(self, partitions_def: Any, key: str, column: str) -> dict[str, str]:
        if isinstance(partitions_def, MultiPartitionsDefinition):
            multi_key = partitions_def.get_partition_key_from_str(key)
            by_dim = multi_key.keys_by_dimension
            return {dim: by_dim[dim] for dim in partitions_def.partition_dimension_names}
        return {column: key}

    def _asset_targets(
        self,
        asset_path: Sequence[str],
        partitions_def: Any,
        keys: Sequence[str] | None,
        column: str,
    ) -> dict[str, _Target]:
        prefix = self._validated_prefix()
        asset_label = "/".join(asset_path)
        if keys is None:
            return {"": _Target(layout.asset_location(prefix, asset_path), f"asset {asset_label}")}
        targets = {}
        for key in keys:
            try:
                location = layout.partition_location(
                    prefix, asset_path, self._partition_dims(partitions_def, key, column)
                )
            except ValueError as exc:
                raise RemoteStoreIOError(f"asset {asset_label} partition {key!r}: {exc}") from None
            targets[key] = _Target(location, f"asset {asset_label} partition {key!r}")
        return targets

    def _op_target(self, identifier: Sequence[str]) -> _Target:
        run_id, step_key, *rest = identifier
        name = "/".join(rest)
        location = layout.run_location(self._validated_prefix(), run_id, step_key, name)
        return _Target(location, f"output {name!r} of step {step_key!r} (run {run_id})")

    def uri(self, path: str) -> str:
        """A URI other engines understand for a store-relative path."""
        dp = self.data_path
        native = dp.native(path)
        if dp.kind == adapter.S3_PYARROW:
            return f"s3://{native}"
        if dp.kind == "local":
            return Path(native).as_uri()
        backend = adapter.store_backend(dp.store).name
        if backend == "s3":
            # remote-store's plain S3 backend: its native path is "<bucket>/<key>".
            return f"s3://{dp.store.native_path(path)}"
        root = adapter.store_root(dp.store)
        return f"{backend}://{layout.join(root, path)}"

    # ------------------------------------------------------------------ output

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.debug("output is None: nothing stored")
            return
        if not context.has_asset_key:
            target = self._op_target(context.get_identifier())
            self._write_and_report(context, {"": target}, {"": obj}, partitioned=False)
            return
        asset_path = context.asset_key.path
        column = self._partition_column(context.definition_metadata)
        if not context.has_asset_partitions:
            targets = self._asset_targets(asset_path, None, None, column)
            self._write_and_report(context, targets, {"": obj}, partitioned=False)
            return
        keys = list(context.asset_partition_keys)
        targets = self._asset_targets(asset_path, context.asset_partitions_def, keys, column)
        values = {keys[0]: obj} if len(keys) == 1 else self._split_range(context, obj, keys, column)
        folder = layout.asset_folder(self._validated_prefix(), asset_path)
        self._write_and_report(context, targets, values, partitioned=True, range_folder=folder)

    def _split_range(self, context: OutputContext, obj: Any, keys: list[str], column: str) -> dict[str, Any]:
        """One value per partition for a run over a partition range (single-run backfill)."""
        asset = context.asset_key.to_user_string()
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
        if formats.is_table_like(obj) or formats.is_batch_iterator(obj):
            schema, batches = formats.to_batches(obj)
            table = pa.Table.from_batches(list(batches), schema)
            dims = self._partition_dims(context.asset_partitions_def, keys[0], column)
            missing_cols = [d for d in dims if d not in table.column_names]
            if missing_cols:
                raise RemoteStoreIOError(
                    f"asset {asset}: run over {span} returned a table without partition column(s) "
                    f"{missing_cols}; add them, or return a dict {{partition_key: value}}"
                )
            result = {}
            as_text = {d: pc.cast(table[d], pa.string()) for d in dims}
            for key in keys:
                wanted = self._partition_dims(context.asset_partitions_def, key, column)
                mask = None
                for dim, value in wanted.items():
                    cond = pc.equal(as_text[dim], value)
                    mask = cond if mask is None else pc.and_(mask, cond)
                result[key] = table.filter(mask).drop_columns(list(dims))
            return result
        raise RemoteStoreIOError(
            f"asset {asset}: run over {span} returned a {type(obj).__name__}; return a dict "
            f"{{partition_key: value}} or a table with the partition column {column!r}"
        )

    def _write_and_report(
        self,
        context: OutputContext,
        targets: Mapping[str, _Target],
        values: Mapping[str, Any],
        *,
        partitioned: bool,
        range_folder: str = "",
    ) -> None:
        """Write every target, then one metadata entry (a range write reports its asset folder)."""
        total_rows: int | None = 0
        total_bytes = 0
        schema: pa.Schema | None = None
        paths: list[str] = []
        for key, target in targets.items():
            stats, path = self._write_one(context, target, values[key])
            total_bytes += stats.stored_bytes
            if stats.row_count is None or total_rows is None:
                total_rows = None
            else:
                total_rows += stats.row_count
            schema = stats.schema or schema
            paths.append(path)
        where = paths[0] if len(paths) == 1 else range_folder
        metadata: dict[str, Any] = {
            "dagster/uri": MetadataValue.path(self.uri(where)),
            "remote_store/store": self.store,
            "remote_store/path": where,
            "stored_bytes": MetadataValue.int(total_bytes),
        }
        if schema is not None and total_rows is not None:
            row_key = "dagster/partition_row_count" if partitioned else "dagster/row_count"
            metadata[row_key] = MetadataValue.int(total_rows)
            metadata["dagster/column_schema"] = TableSchema(
                columns=[TableColumn(name=f.name, type=str(f.type)) for f in schema]
            )
        if len(paths) > 1:
            metadata["remote_store/partitions_written"] = MetadataValue.int(len(paths))
        context.add_output_metadata(metadata)

    def _write_one(self, context: OutputContext, target: _Target, obj: Any) -> tuple[formats.WriteStats, str]:
        try:
            fmt = formats.output_format(obj, allow_pickle=self.allow_pickle)
        except formats.UnsupportedOutput as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot store output: {exc}") from None
        path = target.location.data_path(fmt)
        dp = self.data_path
        context.log.debug(f"writing {target.label} as {fmt} to {self.uri(path)}")
        try:
            with open_publish_stream(dp, path, staging_prefix=self._validated_prefix()) as out:
                if fmt == "parquet":
                    stats = formats.write_parquet(out, obj, compression=self.compression)
                elif fmt == "raw":
                    stats = formats.write_raw(out, obj)
                else:
                    stats = formats.write_pickle(out, obj)
        except formats.UnsupportedOutput as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot store output: {exc}") from None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot write Parquet: {exc}") from exc
        stale = [p for p in target.location.candidates() if p != path]
        adapter.delete_quietly(dp.store, stale)
        return stats, path

    # ------------------------------------------------------------------ input

    def load_input(self, context: InputContext) -> Any:
        target_type = _requested_type(context)
        metadata = context.definition_metadata or {}
        columns = metadata.get(COLUMNS_KEY)
        if columns is not None:
            columns = [str(c) for c in columns]
        allow_missing = bool(metadata.get(ALLOW_MISSING_PARTITIONS_KEY, False))
        is_dict, inner_type = formats.unwrap_dict_annotation(target_type)

        if not context.has_asset_key:
            if context.upstream_output is None:
                raise RemoteStoreIOError(f"input {context.name!r}: has neither an asset key nor an upstream output")
            target = self._op_target(context.upstream_output.get_identifier())
            return self._load_one(target, target_type, columns)

        asset_path = context.asset_key.path
        upstream_metadata = context.upstream_output.definition_metadata if context.upstream_output else None
        column = self._partition_column(upstream_metadata)
        if not context.has_asset_partitions:
            target = self._asset_targets(asset_path, None, None, column)[""]
            return self._load_one(target, target_type, columns)

        keys = list(context.asset_partition_keys)
        targets = self._asset_targets(asset_path, context.asset_partitions_def, keys, column)
        if is_dict:
            loaded: dict[str, Any] = {}
            for key, target in targets.items():
                value = self._load_one(target, inner_type, columns, allow_missing=allow_missing)
                if value is not _MISSING:
                    loaded[key] = value
            return loaded
        if len(keys) == 1:
            return self._load_one(targets[keys[0]], target_type, columns)
        return self._load_concatenated(targets, target_type, columns, allow_missing)

    def _load_concatenated(
        self, targets: Mapping[str, _Target], tp: Any, columns: list[str] | None, allow_missing: bool
    ) -> Any:
        if not (formats.wants_table_family(tp) or formats.is_unannotated(tp)):
            labels = ", ".join(t.label for t in list(targets.values())[:3])
            raise RemoteStoreIOError(
                f"{labels}...: several partitions can only be loaded as one table/frame or as a "
                f"dict[str, ...]; the input is annotated {formats.type_name(tp)}"
            )
        streaming = tp is pa.RecordBatchReader
        parts: list[Any] = []
        names: list[str] = []
        for key, target in targets.items():
            value = self._load_one(
                target, pa.RecordBatchReader if streaming else pa.Table, columns, allow_missing=allow_missing
            )
            if value is not _MISSING:
                parts.append(value)
                names.append(key)
        if not parts:
            first = next(iter(targets.values()))
            raise RemoteStoreIOError(f"{first.label} and the other requested partitions: no stored data")
        try:
            if streaming:
                return formats.chain_readers(parts, names)
            return formats.convert_table(formats.concat_tables(parts, names), tp)
        except formats.SchemaMismatch as exc:
            asset = next(iter(targets.values())).label.split(" partition ")[0]
            raise RemoteStoreIOError(f"{asset}: cannot concatenate partitions: {exc}") from None

    def _find_stored(self, target: _Target, tp: Any) -> tuple[str, str] | None:
        """(format, path) of the stored data, trying the likeliest format first (one HEAD each)."""
        dp = self.data_path
        for fmt in formats.preferred_formats(tp):
            path = target.location.data_path(fmt)
            if dp.filesystem.get_file_info(dp.native(path)).type == pafs.FileType.File:
                return fmt, path
        return None

    def _load_one(self, target: _Target, tp: Any, columns: list[str] | None, *, allow_missing: bool = False) -> Any:
        found = self._find_stored(target, tp)
        if found is None:
            if allow_missing:
                return _MISSING
            other = self._find_stored(target, Any) if formats.wants_table_family(tp) else None
            if other is not None:
                raise RemoteStoreIOError(
                    f"{target.label}: stored as {other[0]} at {self.uri(other[1])}, which cannot be "
                    f"loaded as {formats.type_name(tp)}"
                )
            raise RemoteStoreIOError(
                f"{target.label}: no stored data under {self.uri(target.location.folder)}/ "
                "(not materialized yet, or wiped)"
            )
        fmt, path = found
        try:
            return self._read(fmt, path, tp, columns)
        except (pa.ArrowInvalid, KeyError, TypeError) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {self.uri(path)}: {exc}") from exc

    def _read(self, fmt: str, path: str, tp: Any, columns: list[str] | None) -> Any:
        dp = self.data_path
        native = dp.native(path)
        fs = dp.filesystem
        if formats.is_binary_io_type(tp):
            return formats.ChunkedReader(fs.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES))
        if tp is bytes or (fmt == "raw" and formats.is_unannotated(tp)):
            # Whole-object reads: one request for the full size, no read-ahead buffer to refill.
            with fs.open_input_file(native) as whole:
                return whole.read()
        if fmt == "raw":
            raise TypeError(f"raw bytes cannot be loaded as {formats.type_name(tp)}; annotate bytes or BinaryIO")
        if fmt == "pickle":
            with fs.open_input_stream(native, buffer_size=formats.READ_BUFFER_BYTES) as stream:
                value = formats.read_pickle(stream)
            if isinstance(tp, type) and not formats.is_unannotated(tp) and not isinstance(value, tp):
                raise TypeError(f"the stored object is a {type(value).__name__}, not {formats.type_name(tp)}")
            return value
        if tp is pa.RecordBatchReader:
            return formats.batch_reader(lambda: fs.open_input_file(native), columns)
        pl = formats._optional("polars")
        if pl is not None and tp is pl.LazyFrame:
            import pyarrow.dataset as ds

            lazy = pl.scan_pyarrow_dataset(ds.dataset(native, filesystem=fs, format="parquet"))
            return lazy.select(columns) if columns else lazy
        source: Any = fs.open_input_file(native)  # no dataset discovery (saves a HEAD)
        if columns is None and source.size() <= SMALL_OBJECT_BYTES:
            with source:  # small, all columns: one GET for the file instead of footer + chunk GETs
                source = pa.BufferReader(source.read_buffer())
        with source:
            table = pq.ParquetFile(source, pre_buffer=True).read(columns=columns, use_threads=True)
        return formats.convert_table(table, tp)


_MISSING: Any = object()


def _requested_type(context: InputContext) -> Any:
    """The input's annotation; ``Any`` for contexts built without a Dagster type (unit tests)."""
    try:
        dagster_type = context.dagster_type
    except DagsterInvariantViolationError:
        return Any
    return dagster_type.typing_type if dagster_type is not None else Any
