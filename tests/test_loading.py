"""Loading several partitions at once (dict, concatenated table, batch stream) on local, moto and SeaweedFS.

Real ``materialize`` runs: an upstream partitioned asset is written partition
by partition, then a downstream asset reads them all with each annotation.
"""

import gc
import json
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import BUCKET
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource
from remote_store_dagster._loading import Target, _locate, _memory, _partitions, _read, _schema

KEYS = ["k03", "k01", "k10", "k02", "k07"]  # definition order is not sorted order
PARTS = StaticPartitionsDefinition(KEYS)


@pytest.fixture
def io_manager(remote_store: RemoteStoreResource) -> RemoteStoreIOManager:
    return RemoteStoreIOManager(remote_store=remote_store, store="lake", prefix="wh")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def failure_text(result: Any) -> str:
    error = result.get_step_failure_events()[0].event_specific_data.error
    return str(error.to_string())


def write_partitions(io_manager: RemoteStoreIOManager, upstream: Any, keys: list[str]) -> None:
    for key in keys:
        assert materialize([upstream], resources={"io_manager": io_manager}, partition_key=key).success


def run_consumer(io_manager: RemoteStoreIOManager, upstream: Any, consumer: Any, **kw: Any) -> Any:
    return materialize([upstream, consumer], resources={"io_manager": io_manager}, selection=[consumer], **kw)


@asset(partitions_def=PARTS)
def chunk(context: AssetExecutionContext) -> pa.Table:
    n = int(context.partition_key[1:])
    return pa.table({"key": [context.partition_key] * n, "i": list(range(n))})


EXPECTED_ROWS = [(k, i) for k in KEYS for i in range(int(k[1:]))]


def load_combined(io_manager: RemoteStoreIOManager) -> pa.Table:
    """Every partition of ``chunk`` loaded into one downstream ``pa.Table`` input."""
    got: dict[str, pa.Table] = {}

    @asset(ins={"chunk": AssetIn()})
    def combined(chunk: pa.Table) -> None:
        got["t"] = chunk

    assert run_consumer(io_manager, chunk, combined).success
    return got["t"]


def _rows(value: Any) -> list[tuple[str, int]]:
    if isinstance(value, pa.RecordBatchReader):
        value = value.read_all()
    if isinstance(value, pd.DataFrame):
        value = pa.Table.from_pandas(value, preserve_index=False)
    if isinstance(value, pl.LazyFrame):
        value = value.collect()
    if isinstance(value, pl.DataFrame):
        value = value.to_arrow()
    return [(r["key"], r["i"]) for r in value.to_pylist()]


# ----------------------------------------------------------------------------- every annotation


def test_several_partitions_load_by_annotation_in_partition_order(io_manager: RemoteStoreIOManager) -> None:
    write_partitions(io_manager, chunk, KEYS)
    got: dict[str, Any] = {}

    @asset(ins={"chunk": AssetIn()})
    def unannotated(chunk):  # type: ignore[no-untyped-def]
        got["none"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_any(chunk: Any) -> None:
        got["any"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_dict(chunk: dict[str, pa.Table]) -> None:
        got["dict"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_table(chunk: pa.Table) -> None:
        got["table"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_pandas(chunk: pd.DataFrame) -> None:
        got["pandas"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_polars(chunk: pl.DataFrame) -> None:
        got["polars"] = chunk

    @asset(ins={"chunk": AssetIn()})
    def as_lazy(chunk: pl.LazyFrame) -> None:
        got["lazy"] = chunk.collect()

    @asset(ins={"chunk": AssetIn()})
    def as_stream(chunk: pa.RecordBatchReader) -> None:
        got["stream"] = chunk.read_all()

    consumers = [unannotated, as_any, as_dict, as_table, as_pandas, as_polars, as_lazy, as_stream]
    result = materialize([chunk, *consumers], resources={"io_manager": io_manager}, selection=consumers)
    assert result.success

    for label in ("none", "any", "dict"):
        value = got[label]
        assert isinstance(value, dict), label
        assert list(value) == KEYS, label  # partition order, not sorted, not completion order
        assert all(isinstance(v, pa.Table) for v in value.values())
        assert {k: v.num_rows for k, v in value.items()} == {k: int(k[1:]) for k in KEYS}
    for label in ("table", "pandas", "polars", "lazy", "stream"):
        assert _rows(got[label]) == EXPECTED_ROWS, label
    assert isinstance(got["pandas"], pd.DataFrame) and isinstance(got["polars"], pl.DataFrame)


def test_one_listing_replaces_per_partition_heads(
    backend_kind: str, io_manager: RemoteStoreIOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partitions are found by listing the asset folder once, never by one HEAD each."""
    write_partitions(io_manager, chunk, KEYS)
    calls = {"find_one": 0, "list": 0}
    real_find_one, real_list = _locate.find_one, _locate.list_folder

    def find_one(*args: Any, **kw: Any) -> Any:
        calls["find_one"] += 1
        return real_find_one(*args, **kw)

    def list_folder(*args: Any, **kw: Any) -> Any:
        calls["list"] += 1
        return real_list(*args, **kw)

    monkeypatch.setattr(_locate, "find_one", find_one)
    monkeypatch.setattr(_locate, "list_folder", list_folder)
    assert _rows(load_combined(io_manager)) == EXPECTED_ROWS
    assert calls == {"find_one": 0, "list": 1}


# ----------------------------------------------------------------------------- missing partitions


@asset(partitions_def=PARTS, name="sparse")
def sparse(context: AssetExecutionContext) -> pa.Table:
    return pa.table({"k": [context.partition_key]})


def test_missing_partitions_fail_naming_the_partition_or_are_skipped(io_manager: RemoteStoreIOManager) -> None:
    present = ["k03", "k10", "k07"]
    write_partitions(io_manager, sparse, present)
    got: dict[str, Any] = {}

    @asset(ins={"sparse": AssetIn()})
    def strict(sparse: pa.Table) -> None:
        pass

    @asset(ins={"sparse": AssetIn()})
    def strict_dict(sparse):  # type: ignore[no-untyped-def]
        pass

    for consumer in (strict, strict_dict):
        result = run_consumer(io_manager, sparse, consumer, raise_on_error=False)
        assert not result.success
        message = failure_text(result)
        assert "asset sparse partition 'k01'" in message and "no stored data" in message, message
        assert "'k02'" in message and "allow_missing_partitions" in message

    @asset(ins={"sparse": AssetIn(metadata={"allow_missing_partitions": True})})
    def lenient_table(sparse: pa.Table) -> None:
        got["table"] = sparse

    @asset(ins={"sparse": AssetIn(metadata={"allow_missing_partitions": True})})
    def lenient_dict(sparse: dict[str, pa.Table]) -> None:
        got["dict"] = sparse

    assert materialize(
        [sparse, lenient_table, lenient_dict],
        resources={"io_manager": io_manager},
        selection=[lenient_table, lenient_dict],
    ).success
    assert got["table"]["k"].to_pylist() == present
    assert list(got["dict"]) == present


def test_a_broken_partition_is_named_in_the_error(io_manager: RemoteStoreIOManager) -> None:
    write_partitions(io_manager, chunk, KEYS)
    store = io_manager.remote_store.get_store("lake")
    store.write("wh/chunk/partition=k10/data.parquet", b"not parquet at all", overwrite=True)

    @asset(ins={"chunk": AssetIn()})
    def combined(chunk: pa.Table) -> None:
        pass

    result = run_consumer(io_manager, chunk, combined, raise_on_error=False)
    message = failure_text(result)
    assert "asset chunk partition 'k10'" in message, message


# ----------------------------------------------------------------------------- Optional


def test_optional_input_loads_none_when_nothing_was_stored(io_manager: RemoteStoreIOManager) -> None:
    @asset
    def maybe() -> Optional[pa.Table]:  # noqa: UP045 - the spelling users write
        return None

    got: dict[str, Any] = {}

    @asset
    def optional_old(maybe: Optional[pa.Table]) -> None:  # noqa: UP045
        got["old"] = maybe

    @asset
    def optional_new(maybe: pl.DataFrame | None) -> None:
        got["new"] = maybe

    assert materialize([maybe, optional_old, optional_new], resources={"io_manager": io_manager}).success
    assert got == {"old": None, "new": None}

    @asset
    def required(maybe: pa.Table) -> None:
        pass

    result = run_consumer(io_manager, maybe, required, raise_on_error=False)
    assert "asset maybe" in failure_text(result) and "no stored data" in failure_text(result)


def test_optional_partitions(io_manager: RemoteStoreIOManager) -> None:
    @asset(partitions_def=PARTS)
    def gappy(context: AssetExecutionContext) -> pa.Table | None:
        return None if context.partition_key in ("k01", "k02") else pa.table({"k": [context.partition_key]})

    write_partitions(io_manager, gappy, KEYS)
    got: dict[str, Any] = {}

    @asset(partitions_def=PARTS, ins={"gappy": AssetIn()})
    def one(context: AssetExecutionContext, gappy: pa.Table | None) -> None:
        got[context.partition_key] = gappy

    for key in ("k01", "k03"):
        assert materialize(
            [gappy, one], resources={"io_manager": io_manager}, selection=[one], partition_key=key
        ).success
    assert got["k01"] is None and got["k03"]["k"].to_pylist() == ["k03"]

    @asset(ins={"gappy": AssetIn(partition_mapping=AllPartitionMapping())})
    def per_key(gappy: dict[str, pa.Table | None]) -> None:
        got["dict"] = gappy

    @asset(ins={"gappy": AssetIn(partition_mapping=AllPartitionMapping())})
    def combined(gappy: pa.Table | None) -> None:
        got["table"] = gappy

    assert materialize(
        [gappy, per_key, combined], resources={"io_manager": io_manager}, selection=[per_key, combined]
    ).success
    assert list(got["dict"]) == KEYS
    assert got["dict"]["k01"] is None and got["dict"]["k02"] is None
    assert got["dict"]["k10"]["k"].to_pylist() == ["k10"]
    assert got["table"]["k"].to_pylist() == ["k03", "k10", "k07"]


# ----------------------------------------------------------------------------- pickles


def test_hourly_pickled_values_load_as_a_dict_into_a_daily_asset(io_manager: RemoteStoreIOManager) -> None:
    from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition

    hourly = HourlyPartitionsDefinition(start_date="2024-01-01-00:00")
    daily = DailyPartitionsDefinition(start_date="2024-01-01")

    @asset(partitions_def=hourly)
    def readings(context: AssetExecutionContext) -> dict[str, Any]:
        return {"hour": context.partition_key, "values": [1, 2, 3]}

    hours = [f"2024-01-01-{h:02d}:00" for h in range(24)]
    write_partitions(io_manager, readings, hours)
    store = io_manager.remote_store.get_store("lake")
    assert store.exists("wh/readings/partition=2024-01-01-05%3A00/data.pickle")
    got: dict[str, Any] = {}

    @asset(partitions_def=daily, ins={"readings": AssetIn()})
    def day(readings):  # type: ignore[no-untyped-def]
        got["day"] = readings

    assert materialize(
        [readings, day], resources={"io_manager": io_manager}, selection=[day], partition_key="2024-01-01"
    ).success
    assert list(got["day"]) == hours
    assert got["day"]["2024-01-01-05:00"] == {"hour": "2024-01-01-05:00", "values": [1, 2, 3]}


def test_a_typed_dict_input_over_an_unpartitioned_pickled_dict(io_manager: RemoteStoreIOManager) -> None:
    """``dict[str, int]`` over an unpartitioned asset is the stored dict itself (checked to be a dict)."""

    @asset
    def counts() -> dict[str, int]:
        return {"a": 1, "b": 2}

    got: dict[str, Any] = {}

    @asset
    def typed(counts: dict[str, int]) -> None:
        got["typed"] = counts

    @asset
    def bare(counts: dict) -> None:  # type: ignore[type-arg]
        got["bare"] = counts

    assert materialize([counts, typed, bare], resources={"io_manager": io_manager}).success
    assert got == {"typed": {"a": 1, "b": 2}, "bare": {"a": 1, "b": 2}}

    @asset(name="counts")
    def not_a_dict() -> list[int]:
        return [1, 2]

    assert materialize([not_a_dict], resources={"io_manager": io_manager}).success
    result = run_consumer(io_manager, not_a_dict, typed, raise_on_error=False)
    message = failure_text(result)
    assert "asset counts: cannot load" in message and "the stored object is a list, not Dict[str, int]" in message


# ----------------------------------------------------------------------------- schema evolution


def test_added_columns_and_widened_types_concatenate(io_manager: RemoteStoreIOManager) -> None:
    tables = {
        "k03": pa.table({"id": pa.array([1], pa.int32()), "x": pa.array([0.5], pa.float32())}),
        "k01": pa.table({"id": pa.array([2], pa.int64()), "x": pa.array([1.5], pa.float64()), "new": ["n"]}),
        "k10": pa.table({"id": pa.array([3], pa.int16()), "x": pa.array([2], pa.int32())}),
        "k02": pa.table({"new": ["m"], "id": pa.array([4], pa.uint8())}),
        "k07": pa.table({"id": pa.array([5], pa.int64()), "x": pa.array([None], pa.null())}),
    }

    @asset(partitions_def=PARTS)
    def evolving(context: AssetExecutionContext) -> pa.Table:
        return tables[context.partition_key]

    write_partitions(io_manager, evolving, KEYS)
    got: dict[str, Any] = {}

    @asset(ins={"evolving": AssetIn()})
    def combined(evolving: pa.Table) -> None:
        got["table"] = evolving

    @asset(ins={"evolving": AssetIn()})
    def streamed(evolving: pa.RecordBatchReader) -> None:
        got["stream_schema"] = evolving.schema
        got["stream"] = evolving.read_all()

    @asset(ins={"evolving": AssetIn()})
    def frame(evolving: pd.DataFrame) -> None:
        got["pandas"] = evolving

    consumers = [combined, streamed, frame]
    assert materialize([evolving, *consumers], resources={"io_manager": io_manager}, selection=consumers).success
    table = got["table"]
    assert table.schema.names == ["id", "x", "new"]
    assert table.schema.field("id").type == pa.int64() and table.schema.field("x").type == pa.float64()
    assert table.to_pylist() == [
        {"id": 1, "x": 0.5, "new": None},
        {"id": 2, "x": 1.5, "new": "n"},
        {"id": 3, "x": 2.0, "new": None},
        {"id": 4, "x": None, "new": "m"},
        {"id": 5, "x": None, "new": None},
    ]
    assert got["stream"].equals(table)
    assert got["stream_schema"].names == ["id", "x", "new"]
    assert got["pandas"]["id"].tolist() == [1, 2, 3, 4, 5]


def test_incompatible_types_fail_naming_both_partitions_and_the_field(io_manager: RemoteStoreIOManager) -> None:
    @asset(partitions_def=PARTS)
    def drifting(context: AssetExecutionContext) -> pa.Table:
        if context.partition_key == "k10":
            return pa.table({"id": [1], "v": ["one"]})
        return pa.table({"id": [1], "v": [1]})

    write_partitions(io_manager, drifting, KEYS)

    @asset(ins={"drifting": AssetIn()})
    def combined(drifting: pa.Table) -> None:
        pass

    @asset(ins={"drifting": AssetIn()})
    def streamed(drifting: pa.RecordBatchReader) -> None:
        pass

    for consumer in (combined, streamed):
        result = run_consumer(io_manager, drifting, consumer, raise_on_error=False)
        message = failure_text(result)
        assert "asset drifting" in message and "'k03'" in message and "'k10'" in message, message
        assert "field 'v'" in message and "int64 vs string" in message, message

    got: dict[str, Any] = {}

    @asset(ins={"drifting": AssetIn()})
    def separately(drifting: dict[str, pa.Table]) -> None:
        got["d"] = drifting

    assert run_consumer(io_manager, drifting, separately).success
    assert got["d"]["k10"]["v"].to_pylist() == ["one"]


@pytest.mark.parametrize(
    ("a", "b", "wide"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.uint32(), pa.int32(), pa.int64()),
        (pa.uint8(), pa.int64(), pa.int64()),
        (pa.float32(), pa.float64(), pa.float64()),
        (pa.int64(), pa.float32(), pa.float64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.string(), pa.large_string(), pa.large_string()),
        (pa.uint64(), pa.int64(), None),
        (pa.int64(), pa.string(), None),
        (pa.timestamp("ms"), pa.timestamp("us"), None),
        (pa.bool_(), pa.int8(), None),
    ],
)
def test_widening_rules(a: pa.DataType, b: pa.DataType, wide: pa.DataType | None) -> None:
    assert _schema.widen(a, b) == wide
    assert _schema.widen(b, a) == wide


# ----------------------------------------------------------------------------- progress


def test_a_multi_partition_load_logs_one_info_line(io_manager: RemoteStoreIOManager, instance: DagsterInstance) -> None:
    write_partitions(io_manager, chunk, KEYS)

    @asset(ins={"chunk": AssetIn()})
    def combined(chunk: pa.Table) -> None:
        pass

    result = run_consumer(io_manager, chunk, combined, instance=instance)
    assert result.success
    lines = [
        r.user_message
        for r in instance.all_logs(result.run_id)
        if r.level == logging.INFO and "loaded" in r.user_message and "partitions" in r.user_message
    ]
    assert len(lines) == 1, lines
    assert "asset chunk, 5 of 5 partitions: loaded" in lines[0]
    assert "23 rows" in lines[0] and "MiB/s" in lines[0] and "/wh/chunk" in lines[0]


def test_pickle_round_trip_through_dict_values(io_manager: RemoteStoreIOManager) -> None:
    """``dict[str, T]`` values are type-checked per partition like a single load."""

    @asset(partitions_def=PARTS)
    def numbers(context: AssetExecutionContext) -> list[int]:
        return [int(context.partition_key[1:])]

    write_partitions(io_manager, numbers, KEYS)
    got: dict[str, Any] = {}

    @asset(ins={"numbers": AssetIn()})
    def as_lists(numbers: dict[str, list[int]]) -> None:
        got["d"] = numbers

    assert run_consumer(io_manager, numbers, as_lists).success
    assert got["d"] == {k: [int(k[1:])] for k in KEYS}
    store = io_manager.remote_store.get_store("lake")
    assert pickle.loads(store.read_bytes("wh/numbers/partition=k07/data.pickle")) == [7]


# ----------------------------------------------------------------------------- requests on the wire


def _through_proxy(server: Any, proxy: Any, root: str) -> tuple[RemoteStoreResource, RemoteStoreIOManager]:
    from conftest import BUCKET

    options = {**server.backend_options(BUCKET), "endpoint_url": proxy.endpoint_url}
    remote_store = RemoteStoreResource(
        backends={"main": {"type": "s3-pyarrow", "options": options}},
        stores={"lake": {"backend": "main", "root_path": root}},
    )
    return remote_store, RemoteStoreIOManager(remote_store=remote_store, store="lake", prefix="wh")


def test_requests_on_the_wire(seaweedfs_server: Any, unique_root: str) -> None:
    """Several partitions: one ListObjectsV2, no HEAD, footer + data GETs; one object: one HEAD, one GET."""
    import _fault_proxy as fp

    seen: list[tuple[str, bool]] = []

    def record(request: fp.Request, count: int) -> str:
        seen.append((request.method, "list-type" in request.query))
        return fp.PASS

    with fp.FaultProxy(seaweedfs_server.port) as proxy:
        remote_store, io_manager = _through_proxy(seaweedfs_server, proxy, unique_root)

        @asset
        def whole() -> pa.Table:
            return pa.table({"v": [1, 2]})

        write_partitions(io_manager, chunk, KEYS)
        assert materialize([whole], resources={"io_manager": io_manager}).success
        got: dict[str, Any] = {}

        @asset(ins={"chunk": AssetIn()})
        def combined(chunk: pa.Table) -> None:
            got["t"] = chunk

        @asset(ins={"whole": AssetIn()})
        def single(whole: pa.Table) -> None:
            got["w"] = whole

        proxy.rule = record
        assert run_consumer(io_manager, chunk, combined).success
        many = list(seen)
        seen.clear()
        assert materialize([whole, single], resources={"io_manager": io_manager}, selection=[single]).success
        one = list(seen)
        proxy.rule = fp.pass_all
        remote_store.close()

    assert _rows(got["t"]) == EXPECTED_ROWS and got["w"]["v"].to_pylist() == [1, 2]
    assert many.count(("GET", True)) == 1, many  # one listing
    assert many.count(("HEAD", False)) == 0, many  # no HEAD per partition
    assert many.count(("GET", False)) <= 2 * len(KEYS), many  # footer + column chunks per partition
    assert one == [("HEAD", False), ("GET", False)], one  # one object: find it, then one GET


def test_a_large_object_loads_with_one_head(
    seaweedfs_server: Any, unique_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding the object is the only HEAD: the row groups are read on its known size."""
    import _fault_proxy as fp
    import numpy as np

    from remote_store_dagster import _formats as formats

    monkeypatch.setattr(formats, "ROW_GROUP_BYTES", 2 * 1024 * 1024)
    rows = 420_000  # 10 MB of random doubles > _read.WHOLE_OBJECT_BYTES, 5 row groups
    rng = np.random.default_rng(5)
    table = pa.table({"x": rng.random(rows), "y": rng.random(rows), "z": rng.random(rows)})
    methods: list[str] = []

    def record(request: fp.Request, count: int) -> str:
        methods.append(request.method)
        return fp.PASS

    @asset
    def big() -> pa.Table:
        return table

    got: dict[str, Any] = {}

    @asset(ins={"big": AssetIn()})
    def reader(big: pa.Table) -> None:
        got["big"] = big

    with fp.FaultProxy(seaweedfs_server.port) as proxy:
        remote_store, io_manager = _through_proxy(seaweedfs_server, proxy, unique_root)
        assert materialize([big], resources={"io_manager": io_manager}).success
        proxy.rule = record
        assert materialize([big, reader], resources={"io_manager": io_manager}, selection=[reader]).success
        proxy.rule = fp.pass_all
        remote_store.close()

    assert got["big"].equals(table)
    assert methods.count("HEAD") == 1, methods
    assert methods.count("GET") > 1 and set(methods) == {"HEAD", "GET"}, methods  # footer, then row groups


def test_large_objects_load_row_group_by_row_group(
    io_manager: RemoteStoreIOManager, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects above the one-GET size are read a few row groups at a time: every group, in order,
    with progress in the run log."""
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from remote_store_dagster import _formats as formats
    from remote_store_dagster import _progress

    monkeypatch.setattr(formats, "ROW_GROUP_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(_progress, "PROGRESS_INTERVAL_SECONDS", 0.0)  # a progress line per row group
    rows = 420_000  # 4 x 8 bytes: 13.4 MB > _read.WHOLE_OBJECT_BYTES
    rng = np.random.default_rng(7)
    whole = pa.table({"n": np.arange(rows), "x": rng.random(rows), "y": rng.random(rows), "z": rng.random(rows)})
    parts = {"p1": whole, "p2": whole.slice(1000)}
    big_parts = StaticPartitionsDefinition(list(parts))

    @asset(partitions_def=big_parts)
    def big(context: AssetExecutionContext) -> pa.Table:
        value = parts[context.partition_key]
        return pa.Table.from_batches(value.to_batches(max_chunksize=30_000))  # 5 row groups

    write_partitions(io_manager, big, list(parts))
    stored = io_manager.remote_store.get_store("lake").read_bytes("wh/big/partition=p1/data.parquet")
    assert len(stored) > _read.WHOLE_OBJECT_BYTES
    assert pq.ParquetFile(io.BytesIO(stored)).num_row_groups > 2 * _read.ROW_GROUPS_IN_FLIGHT

    got: dict[str, Any] = {}

    @asset(ins={"big": AssetIn(partition_mapping=AllPartitionMapping())})
    def all_parts(big: pa.Table) -> None:
        got["all"] = big

    @asset(ins={"big": AssetIn(partition_mapping=AllPartitionMapping(), metadata={"columns": ["z", "n"]})})
    def projected(big: pa.Table) -> None:
        got["projected"] = big

    @asset(partitions_def=big_parts, ins={"big": AssetIn()})
    def one(context: AssetExecutionContext, big: pa.Table) -> None:
        got[context.partition_key] = big

    consumers = [all_parts, projected]
    assert materialize([big, *consumers], resources={"io_manager": io_manager}, selection=consumers).success
    result = materialize(
        [big, one], resources={"io_manager": io_manager}, selection=[one], partition_key="p1", instance=instance
    )
    assert result.success
    loaded = [
        r.user_message
        for r in instance.all_logs(result.run_id)
        if r.level == logging.INFO and "loaded" in r.user_message
    ]
    assert len([m for m in loaded if "so far" in m]) >= 2 * _read.ROW_GROUPS_IN_FLIGHT, loaded
    assert "asset big partition 'p1': loaded" in loaded[-1] and f"{rows:,} rows" in loaded[-1], loaded

    assert got["p1"].equals(whole)
    assert got["all"].equals(pa.concat_tables([whole, whole.slice(1000)]))
    assert got["projected"].column_names == ["z", "n"]
    assert got["projected"].column("n").to_pylist()[:3] == [0, 1, 2]
    assert got["projected"].num_rows == 2 * rows - 1000


# ----------------------------------------------------------------------------- bounds and progress of loads


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)
def test_partition_fetches_are_bounded_by_load_concurrency(
    io_manager: RemoteStoreIOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most LOAD_CONCURRENCY partitions are fetched at once (each fetch made slow so that they overlap)."""
    write_partitions(io_manager, chunk, KEYS)
    monkeypatch.setattr(_partitions, "LOAD_CONCURRENCY", 2)
    real_fetch = _partitions.Partitions._fetch
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}

    def slow_fetch(*args: Any, **kw: Any) -> Any:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            time.sleep(0.2)
            return real_fetch(*args, **kw)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(_partitions.Partitions, "_fetch", slow_fetch)
    assert _rows(load_combined(io_manager)) == EXPECTED_ROWS
    assert in_flight["max"] == 2, in_flight  # concurrent, and never more than the bound


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)
def test_a_batch_stream_prefetches_only_a_bounded_window(
    io_manager: RemoteStoreIOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory of a many-partition batch stream is bounded: partitions are fetched whole only
    STREAM_PREFETCH_BYTES ahead of the consumer, not all at once."""
    write_partitions(io_manager, chunk, KEYS)
    monkeypatch.setattr(_partitions, "STREAM_PREFETCH_BYTES", 1)  # one partition ahead at most
    real_whole = _partitions.Partitions._whole
    fetched: list[str] = []

    def counting_whole(self: _partitions.Partitions, target: Target) -> Any:
        fetched.append(str(target.partition))
        return real_whole(self, target)

    monkeypatch.setattr(_partitions.Partitions, "_whole", counting_whole)
    got: dict[str, Any] = {}

    @asset(ins={"chunk": AssetIn()})
    def streamed(chunk: pa.RecordBatchReader) -> None:
        first = chunk.read_next_batch()
        time.sleep(0.5)  # a prefetch without a bound would fetch every partition meanwhile
        got["fetched_after_first_batch"] = list(fetched)
        got["rows"] = pa.Table.from_batches([first, *chunk], schema=chunk.schema)

    assert run_consumer(io_manager, chunk, streamed).success
    assert _rows(got["rows"]) == EXPECTED_ROWS
    assert got["fetched_after_first_batch"] == KEYS[:2], got  # the one being read and the next one


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)
def test_long_loads_log_progress_lines(
    io_manager: RemoteStoreIOManager, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads report progress like writes do: with a zero interval every fetched partition (or streamed batch)
    logs a "so far" line, and each load one closing line."""
    from remote_store_dagster import _progress as progress_module

    monkeypatch.setattr(progress_module, "PROGRESS_INTERVAL_SECONDS", 0.0)
    write_partitions(io_manager, chunk, KEYS)

    @asset(ins={"chunk": AssetIn()})
    def combined(chunk: pa.Table) -> None:
        pass

    @asset(ins={"chunk": AssetIn()})
    def streamed(chunk: pa.RecordBatchReader) -> None:
        chunk.read_all()

    @asset(partitions_def=PARTS, ins={"chunk": AssetIn()})
    def one_stream(chunk: pa.RecordBatchReader) -> None:
        chunk.read_all()

    for consumer, key in ((combined, None), (streamed, None), (one_stream, "k10")):
        result = run_consumer(io_manager, chunk, consumer, instance=instance, partition_key=key)
        assert result.success
        lines = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.INFO]
        loaded = [m for m in lines if ": loaded " in m]
        label = "asset chunk partition 'k10'" if key else "asset chunk, 5 of 5 partitions"
        so_far = [m for m in loaded if m.startswith(f"{label}: loaded") and "so far" in m]
        closing = [m for m in loaded if m.startswith(f"{label}: loaded") and "so far" not in m]
        assert so_far, (consumer.key, loaded)
        assert len(closing) == 1, (consumer.key, loaded)
        rows = "10 rows" if key else "23 rows"
        assert rows in closing[0], closing


# =========================================================================== memory pool


@pytest.mark.parametrize("shape", ["large-object", "partitions"])
def test_loaded_tables_live_in_the_configured_memory_pool(
    remote_store: RemoteStoreResource, shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_memory_pool`` decides whose memory a large object's or combined partitions' table is."""
    import numpy as np

    from remote_store_dagster import _formats as formats

    monkeypatch.setattr(formats, "ROW_GROUP_BYTES", 2 * 1024 * 1024)
    rows = 420_000 if shape == "large-object" else 20_000  # 10 MB, 5 row groups; or 2 x 500 kB
    rng = np.random.default_rng(3)
    columns = {"x": rng.random(rows), "y": rng.random(rows), "z": rng.random(rows)}
    table = pa.table({**columns, "s": [f"v{i % 97}" for i in range(rows)]})
    keys = ["only"] if shape == "large-object" else ["p1", "p2"]

    @asset(partitions_def=StaticPartitionsDefinition(keys))
    def source() -> pa.Table:
        return table

    writer = RemoteStoreIOManager(remote_store=remote_store, store="lake", prefix="wh")
    write_partitions(writer, source, keys)
    stored = remote_store.get_store("lake").read_bytes(f"wh/source/partition={keys[0]}/data.parquet")
    assert (len(stored) > _read.WHOLE_OBJECT_BYTES) == (shape == "large-object")
    expected = pa.concat_tables([table] * len(keys))
    system = pa.system_memory_pool()
    held: dict[str, int] = {}

    def reader_asset(setting: str) -> Any:
        gc.collect()  # tables of earlier tests (auto decodes into the system pool too) are freed now, not mid-run
        before = system.bytes_allocated()

        @asset(name=f"read_{setting}", ins={"source": AssetIn(partition_mapping=AllPartitionMapping())})
        def consumer(source: pa.Table) -> None:
            assert source.equals(expected)
            held[setting] = system.bytes_allocated() - before

        return consumer

    for setting in ("system", "mimalloc"):
        consumer = reader_asset(setting)
        reader = RemoteStoreIOManager(remote_store=remote_store, store="lake", prefix="wh", load_memory_pool=setting)
        assert materialize([source, consumer], resources={"io_manager": reader}, selection=[consumer]).success
    assert held["system"] >= expected.nbytes, held
    assert held["mimalloc"] < expected.nbytes // 10, held


def test_auto_memory_pool_keeps_a_pool_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` replaces only pyarrow's own mimalloc default, never a pool chosen by env or code."""
    default = pa.default_memory_pool()
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    expected = "system" if default.backend_name == "mimalloc" else default.backend_name
    assert _memory.memory_pool_for("auto").backend_name == expected
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", default.backend_name)
    assert _memory.memory_pool_for("auto").backend_name == default.backend_name
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    pa.set_memory_pool(pa.jemalloc_memory_pool())
    try:
        assert _memory.memory_pool_for("auto").backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(default)
    assert _memory.memory_pool_for("default").backend_name == default.backend_name
    assert _memory.memory_pool_for("system").backend_name == "system"


def test_unknown_memory_pool_fails_naming_the_field(remote_store: RemoteStoreResource) -> None:
    """``load_memory_pool`` is a Literal: a bad value fails when the IO manager is built, naming the field."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"load_memory_pool\n  Input should be 'auto', 'default', 'system'"):
        RemoteStoreIOManager(remote_store=remote_store, store="lake", load_memory_pool="tcmalloc")  # type: ignore[arg-type]
    assert not list(remote_store.get_store("lake").list_files("", recursive=True))


def test_an_allocator_missing_from_the_build_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow builds without jemalloc (Windows wheels) raise NotImplementedError; we name the field's value."""

    def not_built() -> pa.MemoryPool:
        raise NotImplementedError("jemalloc support is not enabled")  # what such a build raises

    monkeypatch.setattr(pa, "jemalloc_memory_pool", not_built)
    with pytest.raises(ValueError, match=r"'jemalloc': this pyarrow .* build has no jemalloc allocator"):
        _memory.memory_pool_for("jemalloc")


# ----------------------------------------------------------------------------- lazy inputs


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs", "plain_s3"], indirect=True)
def test_lazy_inputs_are_the_hive_dataset_of_the_requested_partitions(io_manager: RemoteStoreIOManager) -> None:
    """``ds.Dataset``, ``pl.LazyFrame`` and a DuckDB relation over a multi-partitioned asset: each dimension is
    a string column holding the decoded key; filters and projections give what the eager table gives."""
    import duckdb
    import pyarrow.dataset as ds
    from dagster import MultiPartitionKey, MultiPartitionsDefinition

    colors = ["red", "blue green", "50%/x"]
    multi = MultiPartitionsDefinition(
        {"color": StaticPartitionsDefinition(colors), "day": StaticPartitionsDefinition(["d1", "d2"])}
    )

    @asset(partitions_def=multi)
    def sales(context: AssetExecutionContext) -> pa.Table:
        key = context.partition_key.keys_by_dimension
        return pa.table({"amount": [len(key["color"]), 1], "day_seen": [key["day"]] * 2})

    for color in colors:
        for day in ("d1", "d2"):
            key = MultiPartitionKey({"color": color, "day": day})
            assert materialize([sales], resources={"io_manager": io_manager}, partition_key=key).success
    got: dict[str, Any] = {}

    @asset(ins={"sales": AssetIn()})
    def as_dataset(sales: ds.Dataset) -> None:
        got["schema"] = sales.schema
        got["all"] = sales.to_table()
        got["dataset"] = sales.to_table(filter=ds.field("color") == "50%/x", columns=["amount", "day"])

    @asset(ins={"sales": AssetIn()})
    def as_lazy(sales: pl.LazyFrame) -> None:
        got["lazy"] = sales.filter(pl.col("color") == "50%/x").select("amount", "day").collect().to_arrow()

    @asset(ins={"sales": AssetIn()})
    def as_relation(sales: duckdb.DuckDBPyRelation) -> None:
        got["duckdb"] = sales.filter("color = '50%/x'").select("amount, day").to_arrow_table()

    consumers = [as_dataset, as_lazy, as_relation]
    assert materialize([sales, *consumers], resources={"io_manager": io_manager}, selection=consumers).success
    assert got["schema"].field("color").type == pa.string() and got["schema"].field("day").type == pa.string()
    rows = {(r["color"], r["day"], r["day_seen"], r["amount"]) for r in got["all"].to_pylist()}
    assert rows == {(c, d, d, n) for c in colors for d in ("d1", "d2") for n in (len(c), 1)}
    expected = sorted([(5, "d1"), (1, "d1"), (5, "d2"), (1, "d2")])
    for label in ("dataset", "lazy", "duckdb"):
        assert sorted((r["amount"], r["day"]) for r in got[label].to_pylist()) == expected, label


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)
def test_lazy_inputs_hold_only_the_requested_partitions_and_columns(io_manager: RemoteStoreIOManager) -> None:
    """A partition mapping that asks for two of five partitions: the dataset has their files only; input
    metadata ``columns`` projects it; one partition and an unpartitioned asset load lazily too."""
    import pyarrow.dataset as ds
    from dagster import StaticPartitionMapping

    write_partitions(io_manager, chunk, KEYS)

    @asset
    def whole() -> pa.Table:
        return pa.table({"v": [1, 2]})

    assert materialize([whole], resources={"io_manager": io_manager}).success
    got: dict[str, Any] = {}
    mapping = StaticPartitionMapping({"k01": "some", "k10": "some"})
    some = StaticPartitionsDefinition(["some"])

    @asset(partitions_def=some, ins={"chunk": AssetIn(partition_mapping=mapping)})
    def two(chunk: ds.Dataset) -> None:
        got["two"] = chunk.to_table()

    @asset(partitions_def=some, ins={"chunk": AssetIn(partition_mapping=mapping, metadata={"columns": ["i"]})})
    def projected(chunk: pl.LazyFrame) -> None:
        got["projected"] = chunk.collect()

    @asset(partitions_def=PARTS, ins={"chunk": AssetIn()})
    def one(chunk: ds.Dataset, whole: pl.LazyFrame) -> None:
        got["one"] = chunk.to_table()
        got["whole"] = whole.collect()

    for consumer in (two, projected):
        result = materialize(
            [chunk, consumer], resources={"io_manager": io_manager}, selection=[consumer], partition_key="some"
        )
        assert result.success
    assert materialize(
        [chunk, whole, one], resources={"io_manager": io_manager}, selection=[one], partition_key="k03"
    ).success
    assert sorted(got["two"]["partition"].unique().to_pylist()) == ["k01", "k10"]
    assert got["two"].num_rows == 11 and set(got["two"].column_names) == {"key", "i", "partition"}
    assert got["projected"].columns == ["i"] and got["projected"].height == 11
    assert got["one"].column_names == ["key", "i", "partition"] and got["one"].num_rows == 3
    assert got["whole"].to_dict(as_series=False) == {"v": [1, 2]}


class Wire:
    """Requests seen at the proxy, by phase: (phase, method, partition or "", bytes of a ranged GET)."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.seen: list[tuple[str, str, str, int]] = []

    def rule(self, request: Any, count: int) -> str:
        import re

        import _fault_proxy as fp

        method = "LIST" if "list-type" in request.query else request.method
        partition = re.search(r"/partition=([^/]+)/", request.path)
        span = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("range", ""))
        size = int(span[2]) - int(span[1]) + 1 if span else -1  # -1: a GET of the whole object
        self.seen.append((self.phase, method, partition[1] if partition else "", size))
        return fp.PASS

    def requests(self, phase: str) -> list[tuple[str, str]]:
        return sorted((method, partition) for p, method, partition, _ in self.seen if p == phase)

    def partitions_read(self, phase: str) -> set[str]:
        return {partition for p, method, partition, _ in self.seen if p == phase and method == "GET"}

    def bytes(self, phase: str) -> int:
        sizes = [size for p, method, _, size in self.seen if p == phase and method == "GET"]
        assert -1 not in sizes, "every read of a lazy input is a ranged GET"
        return sum(sizes)


def test_lazy_inputs_push_filters_and_projections_down_to_the_requests(seaweedfs_server: Any, unique_root: str) -> None:
    """Counted at the server: loading a lazy input lists the folder once and reads one footer (the schema);
    a filter on the partition column reads only the matching partitions' objects; a one-column projection
    fetches a fraction of the bytes of a full scan. For ``ds.Dataset``, ``pl.LazyFrame`` and DuckDB alike."""
    import _fault_proxy as fp
    import duckdb
    import numpy as np
    import pyarrow.dataset as ds

    rows = 100_000  # four columns of random doubles: 800 kB each, ~3.2 MB a partition

    @asset(partitions_def=PARTS, name="chunk")
    def wide(context: AssetExecutionContext) -> pa.Table:
        rng = np.random.default_rng(int(context.partition_key[1:]))
        return pa.table({name: rng.random(rows) for name in "abcd"})

    wire = Wire()
    got: dict[str, Any] = {}

    def scan(label: str, matching: Any, one_column: Any, everything: Any) -> None:
        """Run each lazy query in its own phase (the load itself was phase ``<label>:load``)."""
        for phase, query in (("filter", matching), ("column", one_column), ("all", everything)):
            wire.phase = f"{label}:{phase}"
            got[f"{label}:{phase}"] = query()
        wire.phase = "idle"

    @asset(ins={"chunk": AssetIn()})
    def as_dataset(chunk: ds.Dataset) -> None:
        scan(
            "dataset",
            lambda: chunk.to_table(filter=ds.field("partition").isin(["k01", "k10"])).num_rows,
            lambda: chunk.to_table(columns=["a"]).num_rows,
            lambda: chunk.to_table().num_rows,
        )

    @asset(ins={"chunk": AssetIn()})
    def as_lazy(chunk: pl.LazyFrame) -> None:
        scan(
            "lazy",
            lambda: chunk.filter(pl.col("partition").is_in(["k01", "k10"])).collect().height,
            lambda: chunk.select("a").collect().height,
            lambda: chunk.collect().height,
        )

    @asset(ins={"chunk": AssetIn()})
    def as_duckdb(chunk: duckdb.DuckDBPyRelation) -> None:
        scan(
            "duckdb",
            lambda: len(chunk.filter("partition in ('k01', 'k10')").fetchall()),
            lambda: len(chunk.select("a").fetchall()),
            lambda: len(chunk.fetchall()),
        )
        loaded = chunk.query("t", "select extension_name from duckdb_extensions() where loaded").fetchall()
        got["duckdb extensions"] = {name for (name,) in loaded}

    with fp.FaultProxy(seaweedfs_server.port, rule=wire.rule) as proxy:
        remote_store, io_manager = _through_proxy(seaweedfs_server, proxy, unique_root)
        write_partitions(io_manager, wide, KEYS)
        for label, consumer in (("dataset", as_dataset), ("lazy", as_lazy), ("duckdb", as_duckdb)):
            wire.phase = f"{label}:load"
            assert materialize([wide, consumer], resources={"io_manager": io_manager}, selection=[consumer]).success
        remote_store.close()

    counts = {}
    for label in ("dataset", "lazy", "duckdb"):
        # The load: one listing, no HEAD, one footer GET of the last partition (the schema).
        assert wire.requests(f"{label}:load") == [("GET", "k07"), ("LIST", "")], (label, wire.requests(f"{label}:load"))
        assert got[f"{label}:filter"] == 2 * rows and got[f"{label}:column"] == got[f"{label}:all"] == 5 * rows
        # Partition pruning: the other three partitions' objects are never read.
        assert wire.partitions_read(f"{label}:filter") == {"k01", "k10"}, (label, wire.requests(f"{label}:filter"))
        one_column, everything = wire.bytes(f"{label}:column"), wire.bytes(f"{label}:all")
        counts[label] = (len(wire.requests(f"{label}:filter")), one_column, everything)
        assert one_column < 0.4 * everything, (label, one_column, everything)
    assert "httpfs" not in got["duckdb extensions"], got["duckdb extensions"]
    print(f"\nlazy inputs on the wire (filter: requests; column, all: bytes fetched): {counts}")


# ----------------------------------------------------------------------------- refused loads


def _deny(client: Any, action: str, resource: str) -> None:
    statement = {"Effect": "Deny", "Principal": "*", "Action": action, "Resource": resource}
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


@pytest.mark.parametrize("backend_kind", ["seaweedfs", "plain_s3"], indirect=True)
def test_refused_loads_name_the_asset_partition_operation_and_permission(
    io_manager: RemoteStoreIOManager, seaweedfs_server: Any, unique_root: str
) -> None:
    """A bucket policy denies ``s3:GetObject`` below the store, then ``s3:ListBucket``: every load fails with a
    ``RemoteStoreIOError`` naming the asset, the partition, the S3 operation and the IAM permission."""
    import pyarrow.dataset as ds

    write_partitions(io_manager, chunk, KEYS)

    @asset
    def whole() -> pa.Table:
        return pa.table({"v": [1, 2]})

    assert materialize([whole], resources={"io_manager": io_manager}).success

    @asset(ins={"whole": AssetIn()})
    def one(whole: pa.Table) -> None:
        pass

    @asset(partitions_def=PARTS, ins={"chunk": AssetIn()})
    def one_partition(chunk: bytes) -> None:
        pass

    @asset(ins={"chunk": AssetIn()})
    def combined(chunk: pa.Table) -> None:
        pass

    @asset(ins={"chunk": AssetIn()})
    def streamed(chunk: pa.RecordBatchReader) -> None:
        pass

    @asset(ins={"chunk": AssetIn()})
    def as_dataset(chunk: ds.Dataset) -> None:
        pass

    def refusal(consumer: Any, key: str | None = None) -> str:
        upstream = whole if consumer is one else chunk
        result = run_consumer(io_manager, upstream, consumer, raise_on_error=False, partition_key=key)
        assert not result.success
        return failure_text(result)

    folder = f"s3://{BUCKET}/{unique_root}/wh"
    need = "the credentials need the IAM permission"
    client = seaweedfs_server.client()
    try:
        _deny(client, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{unique_root}/*")
        expected = {
            (one, None): f"asset whole: S3 denied HeadObject (AccessDenied) for {folder}/whole/data.parquet: {need} "
            "s3:GetObject",
            (one_partition, "k10"): "asset chunk partition 'k10': S3 denied HeadObject (AccessDenied) for "
            f"{folder}/chunk/partition=k10/data.bin: {need} s3:GetObject",
            (combined, None): "asset chunk partition 'k03': S3 denied GetObject (AccessDenied) for "
            f"{folder}/chunk/partition=k03/data.parquet: {need} s3:GetObject",
            (streamed, None): f"asset chunk partition 'k03': S3 denied GetObject (AccessDenied) for {folder}/chunk/",
            (as_dataset, None): "asset chunk partition 'k07': S3 denied GetObject (AccessDenied) for "
            f"{folder}/chunk/partition=k07/data.parquet: {need} s3:GetObject",
        }
        for (consumer, key), message in expected.items():
            text = refusal(consumer, key)
            assert f"RemoteStoreIOError: {message}" in text, (consumer.key, text)

        _deny(client, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}")
        text = refusal(combined)
        message = (
            f"asset chunk partitions 'k03'..'k07': S3 denied ListObjectsV2 (AccessDenied) for {folder}/chunk/: "
            f"{need} s3:ListBucket"
        )
        assert f"RemoteStoreIOError: {message}" in text, text
    finally:
        client.delete_bucket_policy(Bucket=BUCKET)
