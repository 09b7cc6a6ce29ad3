"""The two code locations of the production-shape stack, sharing one bucket prefix.

Each location (``ingest``, ``sales``) defines four daily-partitioned root assets and one
downstream asset, all under its own asset-key prefix, written by ``RemoteStoreIOManager``
below the shared store prefix ``shared/`` on an ``s3-pyarrow`` backend, plus its own
cleanup sensor (RUNNING by default, evaluated by ``dagster-daemon``). ``ingest`` also has
``slow_stream``, a streaming asset whose speed comes from run config (the kill test).

No key or secret in the configuration: the backend gets its credentials from the AWS
default chain (the code server's environment), as on EKS with IRSA.

Environment: ``RS_S3_BUCKET``, ``RS_S3_ENDPOINT`` (optional), ``PROD_SHAPE_LEFTOVER_GRACE``
(seconds, default 20), ``PROD_SHAPE_SENSOR_INTERVAL`` (seconds, default 5).
"""

import os
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    Config,
    DailyPartitionsDefinition,
    DefaultSensorStatus,
    Definitions,
    asset,
    multiprocess_executor,
)

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource, build_cleanup_sensor

STORE = "lake"
#: The store prefix both code locations write below.
PREFIX = "shared"
#: 100 daily partitions, 2024-01-01 .. 2024-04-09.
DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-04-10")
#: Backfill policy per location: one run per location for a backfill of every day. Distinct on
#: purpose: Dagster 1.13 groups a backfill's run requests by partitions definition and backfill
#: policy only, so equal policies put both locations' assets into one run request, which no code
#: location can execute ("Failed to target asset selection ... in run after retrying").
BACKFILL_POLICY = {
    "ingest": BackfillPolicy.single_run(),
    "sales": BackfillPolicy.multi_run(max_partitions_per_run=len(DAYS.get_partition_keys())),
}
ROOTS = ("events", "users", "orders", "metrics")
ROWS_PER_PARTITION = 500
PRELOAD = ["dagster", "pyarrow", "pyarrow.parquet", "s3fs", "remote_store_dagster", "prod_shape.locations"]
#: 1 MiB of incompressible floats per batch of slow_stream.
STREAM_BATCH_ROWS = 131_072


def remote_store() -> RemoteStoreResource:
    options = {"bucket": "${RS_S3_BUCKET}", "endpoint_url": "${RS_S3_ENDPOINT:-}"}
    return RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": options}},
        stores={STORE: {"backend": "s3", "root_path": "warehouse"}},
    )


def _partition_table(location: str, name: str, day: str) -> pa.Table:
    seed = zlib.crc32(f"{location}/{name}/{day}".encode())
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "day": pa.array([day] * ROWS_PER_PARTITION),
            "id": pa.array(np.arange(ROWS_PER_PARTITION, dtype=np.int64)),
            "value": pa.array(rng.random(ROWS_PER_PARTITION)),
            "source": pa.array([f"{location}/{name}"] * ROWS_PER_PARTITION),
        }
    )


def _root_asset(location: str, name: str):  # type: ignore[no-untyped-def]
    @asset(
        name=name,
        key_prefix=[location],
        partitions_def=DAYS,
        backfill_policy=BACKFILL_POLICY[location],
        group_name=location,
    )
    def root(context: AssetExecutionContext) -> dict[str, pa.Table]:
        return {day: _partition_table(location, name, day) for day in context.partition_keys}

    return root


def _summary_asset(location: str):  # type: ignore[no-untyped-def]
    @asset(
        name="summary",
        key_prefix=[location],
        partitions_def=DAYS,
        backfill_policy=BACKFILL_POLICY[location],
        group_name=location,
        ins={"events": AssetIn(key=[location, "events"]), "users": AssetIn(key=[location, "users"])},
    )
    def summary(
        context: AssetExecutionContext, events: dict[str, pa.Table], users: dict[str, pa.Table]
    ) -> dict[str, pa.Table]:
        out = {}
        for day in context.partition_keys:
            out[day] = pa.table(
                {
                    "day": [day],
                    "events": [events[day].num_rows],
                    "users": [users[day].num_rows],
                    "value_sum": [float(np.sum(events[day].column("value").to_numpy()))],
                }
            )
        return out

    return summary


class StreamConfig(Config):
    """``slow_stream``: ``batches`` MiB of incompressible floats, ``sleep_s`` between batches."""

    batches: int = 12
    sleep_s: float = 0.0
    seed: int = 0


@asset(group_name="ingest", key_prefix=["ingest"])
def slow_stream(config: StreamConfig) -> pa.RecordBatchReader:
    """A streaming output written part by part (a multipart upload once it passes 8 MiB)."""
    schema = pa.schema([("x", pa.float64()), ("batch", pa.int32())])
    rng = np.random.default_rng(config.seed)

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(config.batches):
            if config.sleep_s:
                time.sleep(config.sleep_s)
            yield pa.record_batch(
                [pa.array(rng.random(STREAM_BATCH_ROWS)), pa.array(np.full(STREAM_BATCH_ROWS, i, dtype=np.int32))],
                schema=schema,
            )

    return pa.RecordBatchReader.from_batches(schema, batches())


def build_location(location: str) -> Definitions:
    store = remote_store()
    assets = [_root_asset(location, name) for name in ROOTS]
    assets.append(_summary_asset(location))
    if location == "ingest":
        assets.append(slow_stream)
    sensor = build_cleanup_sensor(
        f"{location}_cleanup",
        store=STORE,
        prefix=PREFIX,
        code_location=location,
        leftover_grace=timedelta(seconds=float(os.environ.get("PROD_SHAPE_LEFTOVER_GRACE", "20"))),
        minimum_interval_seconds=int(os.environ.get("PROD_SHAPE_SENSOR_INTERVAL", "5")),
        default_status=DefaultSensorStatus.RUNNING,
    )
    return Definitions(
        assets=assets,
        sensors=[sensor],
        executor=multiprocess_executor.configured(
            {
                "max_concurrent": 4,
                # Step processes fork from a server that imported these once per run, instead of
                # each importing Dagster, PyArrow and this package anew (~2 s of CPU each).
                "start_method": {"forkserver": {"preload_modules": PRELOAD}},
            }
        ),
        resources={
            "remote_store": store,
            "io_manager": RemoteStoreIOManager(remote_store=store, store=STORE, prefix=PREFIX, code_location=location),
        },
    )
