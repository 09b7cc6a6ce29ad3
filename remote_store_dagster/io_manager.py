"""``RemoteStoreIOManager``: Parquet by PyArrow, streamed, atomically published, read in chunks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
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

from remote_store_dagster import _dagster_context as dagster_context
from remote_store_dagster import _formats as formats
from remote_store_dagster import _layout as layout
from remote_store_dagster import _loading as loading
from remote_store_dagster import _progress
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError, S3RefusedError, s3_refusal_error
from remote_store_dagster._provenance import Provenance
from remote_store_dagster._storage import Storage, storage_for
from remote_store_dagster.resources import RemoteStoreResource

__all__ = ["RemoteStoreIOManager"]

_log = logging.getLogger(__name__)

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
    code_location: str | None = Field(
        default=None,
        description="Code location recorded in each object's provenance (the cleanup sensor decides with it); "
        "default: the run's code location, detected in deployments and dagster dev.",
    )
    load_memory_pool: str = Field(
        default="auto",
        description="Arrow memory pool loaded tables are decoded into: auto, default, system, jemalloc or "
        "mimalloc. auto is Arrow's default pool unless that is mimalloc by pyarrow's own default (no "
        "ARROW_DEFAULT_MEMORY_POOL), then the system allocator (docs: Deploying, Memory).",
    )

    _data_path: loading.DataPath | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ setup

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._data_path = None
        self._validated_prefix()
        self._load_pool()
        # Pay imports and S3 client setup (~0.8 s a process) here, not in the first output.
        # Only an optimisation: a bad store surfaces, with its clear error, at first use.
        try:
            self.data_path.storage.warm_up()
        except Exception as exc:
            self._data_path = None
            if context.log is not None:
                context.log.debug(f"remote-store warm-up skipped: {exc}")

    def _validated_prefix(self) -> str:
        try:
            return layout.normalize_prefix(self.prefix)
        except ValueError as exc:
            raise RemoteStoreConfigError(f"prefix: {exc}") from None

    def _load_pool(self) -> pa.MemoryPool:
        try:
            return loading.memory_pool_for(self.load_memory_pool)
        except ValueError as exc:
            raise RemoteStoreConfigError(f"load_memory_pool: {exc}") from None

    @property
    def data_path(self) -> loading.DataPath:
        if self._data_path is None:
            storage = storage_for(self.remote_store.get_store(self.store))
            self._data_path = loading.DataPath(storage, memory_pool=self._load_pool())
        return self._data_path

    @property
    def storage(self) -> Storage:
        return self.data_path.storage

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
        return self.storage.uri(path)

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
            stats, path = self._write_one(context, target, values[key], key if partitioned else None)
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

    def _write_one(
        self, context: OutputContext, target: _Target, obj: Any, partition_key: str | None = None
    ) -> tuple[formats.WriteStats, str]:
        try:
            fmt = formats.output_format(obj, allow_pickle=self.allow_pickle)
        except formats.UnsupportedOutput as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot store output: {exc}") from None
        path = target.location.data_path(fmt)
        storage = self.storage
        uri = self.uri(path)
        context.log.debug(f"writing {target.label} as {fmt} to {uri}")
        progress = _progress.Progress(
            context.log.info, "wrote", target.label, uri, interval=_progress.PROGRESS_INTERVAL_SECONDS
        )
        try:
            with storage.publish(
                path,
                staging_prefix=self._validated_prefix(),
                provenance=self._provenance(context, partition_key),
                on_write=progress.update,
            ) as out:
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
        except S3RefusedError as exc:
            raise RemoteStoreIOError(f"{target.label}: {exc}") from exc
        progress.rows = stats.row_count
        progress.done(stats.stored_bytes)
        if self._other_format_can_exist(context, partition_key, path):
            stale = [p for p in target.location.candidates() if p != path]
            try:
                storage.delete_quietly(stale)
            except Exception as exc:
                refusal = s3_refusal_error(exc, "DeleteObjects", uri)
                if refusal is not None:
                    raise RemoteStoreIOError(f"{target.label}: {refusal}") from exc
                raise
        return stats, path

    def _provenance(self, context: OutputContext, partition_key: str | None) -> Provenance:
        """What the cleanup sensor needs to know about who wrote this output (op outputs: run and location)."""
        location = self.code_location or dagster_context.step_run_code_location(context)
        if not context.has_asset_key:
            return Provenance(run_id=context.run_id, code_location=location)
        return Provenance(
            run_id=context.run_id,
            code_location=location,
            asset_key=context.asset_key.to_user_string(),
            partition_key=partition_key,
        )

    def _other_format_can_exist(self, context: OutputContext, partition_key: str | None, path: str) -> bool:
        """Whether the folder may hold this output in another format (then its siblings are deleted).

        The format follows the output's type, and every write deletes the other formats
        when the format may have changed. So another format can exist only if the last
        write stored another one: for an asset (partition) we ask the Dagster instance
        for its latest materialization's ``remote_store/store`` and ``remote_store/path``
        (one indexed query); the same store and path means nothing else is there. No
        record (first write, wiped, instance unreachable) or another path: delete. An op
        output's folder is new per run, so only a step retry can find anything in it.
        """
        if not context.has_asset_key:
            return dagster_context.is_step_retry(context)
        return dagster_context.latest_recorded_output(context, partition_key) != (self.store, path)

    # ------------------------------------------------------------------ input

    def load_input(self, context: InputContext) -> Any:
        """Route the input's annotation through ``_loading`` (see its ``ROUTES`` table)."""
        request = loading.request_for(_requested_type(context))
        metadata = context.definition_metadata or {}
        columns = metadata.get(COLUMNS_KEY)
        if columns is not None:
            columns = [str(c) for c in columns]
        allow_missing = bool(metadata.get(ALLOW_MISSING_PARTITIONS_KEY, False))

        if not context.has_asset_key:
            if context.upstream_output is None:
                raise RemoteStoreIOError(f"input {context.name!r}: has neither an asset key nor an upstream output")
            target = self._op_target(context.upstream_output.get_identifier())
            return self._load_one(context, target, request, columns)

        asset_path = context.asset_key.path
        upstream_metadata = context.upstream_output.definition_metadata if context.upstream_output else None
        column = self._partition_column(upstream_metadata)
        if not context.has_asset_partitions:
            target = self._asset_targets(asset_path, None, None, column)[""]
            return self._load_one(context, target, request, columns)

        keys = list(context.asset_partition_keys)
        targets = self._asset_targets(asset_path, context.asset_partitions_def, keys, column)
        if len(keys) == 1 and not request.as_dict:
            return self._load_one(context, targets[keys[0]], request, columns)
        folder = layout.asset_folder(self._validated_prefix(), asset_path)
        return self._load_many(context, folder, targets, request, columns, allow_missing)

    def _load_one(
        self, context: InputContext, target: _Target, request: loading.Request, columns: list[str] | None
    ) -> Any:
        route = request.route
        dp = self.data_path
        found = loading.find_one(dp, target.location, route.formats)
        if found is None:
            if request.optional:
                context.log.debug(f"{target.label}: nothing stored; the input is Optional, so it loads None")
                return None
            other = loading.find_one(dp, target.location, loading.ANY_FORMATS) if route.combines else None
            if other is not None:
                raise RemoteStoreIOError(
                    f"{target.label}: stored as {other.fmt} at {self.uri(other.path)}, which cannot be "
                    f"loaded as {loading.type_name(route.target)}"
                )
            raise RemoteStoreIOError(
                f"{target.label}: no stored data under {self.uri(target.location.folder)}/ "
                "(not materialized yet, or wiped)"
            )
        progress = None
        if route.kind == "stream" or found.size is None or found.size > loading.WHOLE_OBJECT_BYTES:
            progress = _progress.Progress(
                _run_log(context),
                "loaded",
                target.label,
                self.uri(found.path),
                interval=_progress.PROGRESS_INTERVAL_SECONDS,
            )
        try:
            return loading.read_one(dp, found, route, columns, progress)
        except (pa.ArrowInvalid, KeyError, TypeError) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {self.uri(found.path)}: {exc}") from exc

    def _load_many(
        self,
        context: InputContext,
        folder: str,
        targets: Mapping[str, _Target],
        request: loading.Request,
        columns: list[str] | None,
        allow_missing: bool,
    ) -> Any:
        """Several partitions: one listing, concurrent fetches, partition order kept."""
        route = request.route
        asset = next(iter(targets.values())).label.split(" partition ")[0]
        if not request.as_dict and route.kind != "any" and not route.combines:
            raise RemoteStoreIOError(
                f"{asset}: {len(targets)} partitions can only be loaded as one table/frame/batch stream or "
                f"as a dict[str, ...]; the input is annotated {loading.type_name(request.annotation)}"
            )
        as_dict = request.as_dict or route.kind == "any"
        items = [loading.Target(k, t.location, t.label) for k, t in targets.items()]
        dp = self.data_path
        listed = loading.find_many(dp, folder, items)
        stored: dict[str, loading.Stored] = {}
        missing: list[loading.Target] = []
        for item in items:
            found = loading.pick(listed[item.key], route.formats)
            if found is not None:
                stored[item.key] = found
                continue
            other = loading.pick(listed[item.key], loading.ANY_FORMATS)
            if other is not None:
                raise RemoteStoreIOError(
                    f"{item.label}: stored as {other.fmt} at {self.uri(other.path)}, which cannot be "
                    f"loaded as {loading.type_name(route.target)}"
                )
            missing.append(item)
        if missing and not (allow_missing or request.optional or request.item_optional):
            others = [m.key for m in missing[1:6]]
            more = f"; {len(missing) - 1} more partition(s) missing too: {others}" if len(missing) > 1 else ""
            raise RemoteStoreIOError(
                f"{missing[0].label}: no stored data under {self.uri(missing[0].location.folder)}/ "
                f"(not materialized yet, or wiped){more}; set input metadata allow_missing_partitions=True "
                "to skip missing partitions"
            )
        if missing and allow_missing and not (request.optional or request.item_optional):
            context.log.warning(
                f"{asset}: skipping {len(missing)} partition(s) with no stored data "
                f"(allow_missing_partitions): {[m.key for m in missing[:10]]}"
            )
        if not stored and request.optional:
            context.log.debug(f"{asset}: no requested partition has stored data; the input is Optional, so None")
            return None
        if not stored and not as_dict:
            raise RemoteStoreIOError(f"{asset}: none of the {len(items)} requested partitions has stored data")
        what = f"{asset}, {len(stored)} of {len(items)} partitions"
        progress = _progress.Progress(
            _run_log(context), "loaded", what, self.uri(folder), interval=_progress.PROGRESS_INTERVAL_SECONDS
        )
        many = loading.Many(dp, items, stored, request, columns, progress)
        try:
            if as_dict:
                return many.as_dict()
            if route.kind == "stream":
                return many.stream()
            return many.concatenated()
        except loading.LoadError as exc:
            raise RemoteStoreIOError(str(exc)) from exc.__cause__


def _run_log(context: InputContext) -> Callable[[str], None]:
    """INFO lines to the run log that never fail a load.

    A batch stream can outlive its step (a consumer may keep the reader); its
    closing line then cannot reach the run's event log and goes to this
    module's logger instead.
    """

    def log(message: str) -> None:
        try:
            context.log.info(message)
        except Exception:  # the step (and its event log) may be gone; progress is best effort
            _log.info(message)

    return log


def _requested_type(context: InputContext) -> Any:
    """The input's annotation; ``Any`` for contexts built without a Dagster type (unit tests)."""
    try:
        dagster_type = context.dagster_type
    except DagsterInvariantViolationError:
        return Any
    return dagster_type.typing_type if dagster_type is not None else Any
