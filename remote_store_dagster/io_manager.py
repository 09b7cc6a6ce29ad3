"""``RemoteStoreIOManager``: Parquet by PyArrow, streamed, atomically published, read in chunks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    InitResourceContext,
    InputContext,
    OutputContext,
)
from pydantic import Field, PrivateAttr

from remote_store_dagster import _formats as formats
from remote_store_dagster import _layout as layout
from remote_store_dagster import _loading as loading
from remote_store_dagster import _progress
from remote_store_dagster import _publishing as publishing
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._signing import SignatureError
from remote_store_dagster._storage import Storage, storage_for
from remote_store_dagster._targets import Target, asset_targets, op_target, partition_dims
from remote_store_dagster.resources import StoreResource

__all__ = ["RemoteStoreIOManager"]

_log = logging.getLogger(__name__)

#: Definition metadata keys users set on assets (outputs) and inputs.
PARTITION_COLUMN_KEY = "partition_column"
COLUMNS_KEY = "columns"
ALLOW_MISSING_PARTITIONS_KEY = "allow_missing_partitions"
PARQUET_KEY = "parquet"

ParquetCodec = Literal["snappy", "zstd", "gzip", "brotli", "lz4", "none"]
MemoryPoolName = Literal["auto", "default", "system", "jemalloc", "mimalloc"]


class RemoteStoreIOManager(ConfigurableIOManager):
    """Stores asset and op outputs in a remote-store ``Store``.

    Tables (pyarrow, pandas, polars, record-batch streams) become Parquet
    written by PyArrow straight into the store, one row group at a time;
    ``bytes`` and binary files are stored raw; anything else is pickled unless
    ``allow_pickle`` is off. A failed write never replaces the previous
    materialization (``Storage.publish``). Partitioned assets use Hive folders
    (``<dim>=<key>``), so the asset folder reads as one dataset elsewhere.
    """

    remote_store: StoreResource = Field(
        description="Where the store comes from: a RemoteStoreResource (a registry) or an S3PyArrowResource."
    )
    store: str = Field(
        default="", description="Name of the store (a key of remote_store.stores); unused with an S3PyArrowResource."
    )
    prefix: str = Field(default="", description="Folder under the store root for everything written here.")
    partition_column: str = Field(
        default=layout.DEFAULT_PARTITION_COLUMN,
        description="Hive column name of single-dimension partitions; per asset: metadata "
        "{'partition_column': ...}. Multi-partitions use their dimension names.",
    )
    allow_pickle: bool = Field(default=True, description="Pickle objects that are not tables or bytes.")
    pickle_signing_key: str | None = Field(
        default=None,
        description="Secret (use EnvVar) to sign pickles with HMAC-SHA256; loads then refuse pickles whose "
        "signature is missing or wrong. Unsigned pickles run the code of whoever can write to the bucket.",
    )
    compression: ParquetCodec = Field(default="snappy", description="Parquet compression codec.")
    compression_level: int | None = Field(
        default=None, description="Codec level (zstd, gzip, brotli); default: the codec's own."
    )
    row_group_rows: int = Field(
        default=formats.ROW_GROUP_ROWS,
        description="Rows per Parquet row group at most (a row group is also cut at 64 MiB of Arrow data).",
    )
    use_dictionary: bool = Field(default=True, description="Dictionary-encode Parquet columns.")
    page_checksums: bool = Field(
        default=True, description="Write a CRC32 per Parquet page; loads verify them, so corruption fails loudly."
    )
    code_location: str | None = Field(
        default=None,
        description="Code location recorded in each object's provenance (the cleanup sensor decides with it); "
        "default: the run's code location, detected in deployments and dagster dev.",
    )
    load_memory_pool: MemoryPoolName = Field(
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
        self._parquet_options(None)
        # Pay imports and S3 client setup (~0.8 s a process) here, not in the first output.
        # Only an optimisation: a bad store surfaces, with its clear error, at first use.
        try:
            self.storage.warm_up()
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

    def _parquet_options(self, definition_metadata: Mapping[str, Any] | None) -> formats.ParquetOptions:
        """The IO manager's writer options, with an asset's ``{"parquet": {...}}`` definition metadata over them."""
        options = formats.ParquetOptions(
            self.compression, self.compression_level, self.row_group_rows, self.use_dictionary, self.page_checksums
        )
        try:
            options.check()
        except ValueError as exc:
            raise RemoteStoreConfigError(str(exc)) from None
        overrides = (definition_metadata or {}).get(PARQUET_KEY)
        if overrides is None:
            return options
        try:
            if not isinstance(overrides, Mapping):
                raise ValueError(f"must be a dict of writer options, got {type(overrides).__name__}")
            return options.replace(overrides)
        except ValueError as exc:
            raise RemoteStoreConfigError(f"definition metadata {PARQUET_KEY!r}: {exc}") from None

    @property
    def data_path(self) -> loading.DataPath:
        if self._data_path is None:
            storage = storage_for(self.remote_store.store_for(self.store))
            self._data_path = loading.DataPath(
                storage, memory_pool=self._load_pool(), pickle_signing_key=self.pickle_signing_key
            )
        return self._data_path

    @property
    def storage(self) -> Storage:
        return self.data_path.storage

    def uri(self, path: str) -> str:
        """A URI other engines understand for a store-relative path."""
        return self.storage.uri(path)

    # ------------------------------------------------------------------ paths

    def _partition_column(self, definition_metadata: Mapping[str, Any] | None) -> str:
        return str((definition_metadata or {}).get(PARTITION_COLUMN_KEY, self.partition_column))

    def _asset_targets(
        self, asset_path: Sequence[str], partitions_def: Any, keys: Sequence[str] | None, column: str
    ) -> dict[str, Target]:
        return asset_targets(self._validated_prefix(), asset_path, partitions_def, keys, column)

    def _op_target(self, identifier: Sequence[str]) -> Target:
        return op_target(self._validated_prefix(), identifier)

    # ------------------------------------------------------------------ output

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.debug("output is None: nothing stored")
            return
        if not context.has_asset_key:
            target = self._op_target(context.get_identifier())
            self._write(context, {"": target}, {"": obj})
            return
        asset_path = context.asset_key.path
        column = self._partition_column(context.definition_metadata)
        if not context.has_asset_partitions:
            self._write(context, self._asset_targets(asset_path, None, None, column), {"": obj})
            return
        keys = list(context.asset_partition_keys)
        partitions_def = context.asset_partitions_def
        targets = self._asset_targets(asset_path, partitions_def, keys, column)
        if len(keys) == 1:
            values = {keys[0]: obj}
        else:
            asset = context.asset_key.to_user_string()
            values = publishing.split_range(
                asset, obj, keys, lambda key: partition_dims(partitions_def, key, column), column
            )
        self._write(context, targets, values, range_folder=layout.asset_folder(self._validated_prefix(), asset_path))

    def _write(
        self, context: OutputContext, targets: Mapping[str, Target], values: Mapping[str, Any], range_folder: str = ""
    ) -> None:
        settings = publishing.WriteSettings(
            self._parquet_options(context.definition_metadata),
            self.allow_pickle,
            self._validated_prefix(),
            self.pickle_signing_key,
        )
        writer = publishing.OutputWriter(self.storage, self.store, settings, self.code_location)
        writer.write(context, targets, values, self.uri(range_folder))

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
        self, context: InputContext, target: Target, request: loading.Request, columns: list[str] | None
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
        except (pa.ArrowInvalid, KeyError, TypeError, SignatureError) as exc:
            raise RemoteStoreIOError(f"{target.label}: cannot load {self.uri(found.path)}: {exc}") from exc

    def _load_many(
        self,
        context: InputContext,
        folder: str,
        targets: Mapping[str, Target],
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
