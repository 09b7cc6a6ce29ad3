"""``RemoteStoreIOManager``: Parquet by PyArrow, streamed, atomically published, read in chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

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
from remote_store_dagster import _publishing as publishing
from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._storage import Storage, storage_for
from remote_store_dagster._targets import Target, asset_targets, op_target, partition_dims
from remote_store_dagster.resources import StoreResource

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RemoteStoreIOManager"]

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
        """The input as its annotation asks, from one object or several partitions (see ``_loading``)."""
        metadata = context.definition_metadata or {}
        request = loading.request_for(
            _requested_type(context),
            columns=metadata.get(COLUMNS_KEY),
            allow_missing=bool(metadata.get(ALLOW_MISSING_PARTITIONS_KEY, False)),
        )
        return loading.load(self.data_path, self._input_targets(context), request, context.log)

    def _input_targets(self, context: InputContext) -> list[Target]:
        """What the input covers: its upstream op output or asset, or the asset's partitions in order."""
        if not context.has_asset_key:
            if context.upstream_output is None:
                raise RemoteStoreIOError(f"input {context.name!r}: has neither an asset key nor an upstream output")
            return [self._op_target(context.upstream_output.get_identifier())]
        upstream_metadata = context.upstream_output.definition_metadata if context.upstream_output else None
        column = self._partition_column(upstream_metadata)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else None
        partitions_def = context.asset_partitions_def if keys is not None else None
        return list(self._asset_targets(context.asset_key.path, partitions_def, keys, column).values())


def _requested_type(context: InputContext) -> Any:
    """The input's annotation; ``Any`` for contexts built without a Dagster type (unit tests)."""
    try:
        dagster_type = context.dagster_type
    except DagsterInvariantViolationError:
        return Any
    return dagster_type.typing_type if dagster_type is not None else Any
