"""A byte flipped in a stored Parquet object fails the load, naming the asset; it never decodes as wrong data."""

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from dagster import DailyPartitionsDefinition, asset, materialize

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource

VALUES = np.random.default_rng(11).random(200_000)  # incompressible: most of the file is data pages


@pytest.fixture(params=["local", "seaweedfs"])
def resource(
    request: pytest.FixtureRequest, make_remote_store: Callable[..., RemoteStoreResource]
) -> RemoteStoreResource:
    return make_remote_store(str(request.param))


def _flip_a_data_byte(resource: RemoteStoreResource, path: str) -> None:
    store = resource.get_store("lake")
    data = bytearray(store.read_bytes(path))
    middle = len(data) // 2  # inside the column's pages, far from the footer
    data[middle] ^= 0x01
    store.write(path, bytes(data), overwrite=True)


def _failure(result: Any) -> str:
    return str(result.get_step_failure_events()[0].event_specific_data.error.to_string())


@pytest.mark.parametrize("annotation", [pa.Table, pa.RecordBatchReader], ids=["table", "stream"])
def test_a_flipped_byte_fails_the_load_naming_the_asset(resource: RemoteStoreResource, annotation: Any) -> None:
    io_manager = RemoteStoreIOManager(remote_store=resource, store="lake", prefix="warehouse")

    @asset(metadata={"parquet": {"compression": "none"}})
    def readings() -> pa.Table:
        return pa.table({"value": VALUES})

    @asset
    def total(readings: annotation) -> float:  # type: ignore[valid-type]
        table = readings.read_all() if isinstance(readings, pa.RecordBatchReader) else readings
        return float(pa.compute.sum(table["value"]).as_py())

    assert materialize([readings], resources={"io_manager": io_manager}).success
    _flip_a_data_byte(resource, "warehouse/readings/data.parquet")
    result = materialize(
        [readings.to_source_asset(), total], resources={"io_manager": io_manager}, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "asset readings" in message and "checksum" in message.lower()


def test_a_flipped_byte_in_one_partition_fails_a_multi_partition_load(resource: RemoteStoreResource) -> None:
    io_manager = RemoteStoreIOManager(remote_store=resource, store="lake", prefix="warehouse")
    days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")

    @asset(partitions_def=days, metadata={"parquet": {"compression": "none"}})
    def daily() -> pa.Table:
        return pa.table({"value": VALUES[:50_000]})

    @asset
    def combined(daily: pa.Table) -> int:
        return daily.num_rows

    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert materialize([daily], partition_key=day, resources={"io_manager": io_manager}).success
    _flip_a_data_byte(resource, "warehouse/daily/partition=2024-01-02/data.parquet")
    result = materialize(
        [daily.to_source_asset(), combined], resources={"io_manager": io_manager}, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "asset daily partition '2024-01-02'" in message and "checksum" in message.lower()
