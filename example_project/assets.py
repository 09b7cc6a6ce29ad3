"""Example assets: every one is written and read by ``RemoteStoreIOManager`` on S3-PyArrow.

Nothing is downloaded: all data is generated deterministically from the
partition key (or the batch number), so re-materializing gives the same bytes.

Groups:

``sensors``  a daily-partitioned table (Hive folders ``partition=YYYY-MM-DD``) and
             a per-partition downstream asset loaded as a polars DataFrame.
``sales``    a two-dimensional partitioned asset (``date=.../region=...``) written
             from pandas.
``events``   a streaming asset of a few hundred MB written batch by batch, a
             downstream asset that streams it back with column projection, a raw
             ``report.csv`` (bytes) and a reader that consumes it in 64 KB chunks.
"""

import datetime as dt
import hashlib
import io
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    DailyPartitionsDefinition,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Output,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

# --------------------------------------------------------------------------- partitions

DAILY = DailyPartitionsDefinition(start_date="2025-01-01")
REGIONS = StaticPartitionsDefinition(["eu-west", "us-east", "ap-south"])
DAILY_BY_REGION = MultiPartitionsDefinition({"date": DAILY, "region": REGIONS})

SENSORS = [f"sensor-{i:02d}" for i in range(10)]
TEMPERATURE_RANGE_C = (-40.0, 60.0)


def _stable_hash(*parts: str) -> int:
    """The same number for the same parts in every process (unlike ``hash``): reproducible data."""
    return zlib.crc32("/".join(parts).encode())


# --------------------------------------------------------------------------- sensors


@asset(
    group_name="sensors",
    partitions_def=DAILY,
    check_specs=[AssetCheckSpec("temperature_in_range", asset="daily_sensor_readings")],
    description=(
        "**Daily partitions, Hive layout.** One day of 5-minute readings for 10 sensors, generated "
        "from the date (no download), returned as a `pyarrow.Table` and written as Parquet through "
        "PyArrow's S3 data path to `<store>/daily_sensor_readings/partition=YYYY-MM-DD/data.parquet`, "
        "so DuckDB / pyarrow.dataset read the folder as one dataset with a `partition` column. "
        "A check validates the temperatures of each materialized day."
    ),
)
def daily_sensor_readings(context: AssetExecutionContext) -> Iterator[Output[pa.Table] | AssetCheckResult]:
    day = dt.datetime.strptime(context.partition_key, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    rng = np.random.default_rng(_stable_hash("readings", context.partition_key))
    steps = 24 * 12
    ts = pa.array(
        np.repeat(
            np.datetime64(day.replace(tzinfo=None), "us") + np.arange(steps) * np.timedelta64(5, "m"), len(SENSORS)
        ),
        type=pa.timestamp("us", tz="UTC"),
    )
    n = steps * len(SENSORS)
    base = np.tile(rng.normal(18.0, 6.0, len(SENSORS)), steps)
    daily_wave = 6.0 * np.sin(np.repeat(np.arange(steps), len(SENSORS)) / steps * 2 * np.pi)
    table = pa.table(
        {
            "ts": ts,
            "sensor_id": pa.array(SENSORS * steps),
            "temperature_c": pa.array(np.round(base + daily_wave + rng.normal(0, 0.5, n), 2)),
            "humidity_pct": pa.array(np.round(np.clip(rng.normal(55, 15, n), 0, 100), 1)),
        }
    )
    low, high = TEMPERATURE_RANGE_C
    out_of_range = pc.sum(
        pc.or_(pc.less(table["temperature_c"], low), pc.greater(table["temperature_c"], high))
    ).as_py()
    yield Output(table)
    yield AssetCheckResult(
        check_name="temperature_in_range",
        passed=out_of_range == 0,
        metadata={"out_of_range_rows": out_of_range, "range_c": f"{low}..{high}"},
    )


@asset(
    group_name="sensors",
    partitions_def=DAILY,
    description=(
        "**Partition-to-partition dependency, polars in and out.** Loads the same day of "
        "`daily_sensor_readings` as a `polars.DataFrame` (the input annotation picks the loader) "
        "and stores per-sensor daily statistics."
    ),
)
def readings_daily_stats(context: AssetExecutionContext, daily_sensor_readings: pl.DataFrame) -> pl.DataFrame:
    stats = (
        daily_sensor_readings.group_by("sensor_id")
        .agg(
            pl.col("temperature_c").min().alias("temperature_min"),
            pl.col("temperature_c").max().alias("temperature_max"),
            pl.col("temperature_c").mean().round(2).alias("temperature_mean"),
            pl.col("humidity_pct").mean().round(1).alias("humidity_mean"),
            pl.len().alias("readings"),
        )
        .sort("sensor_id")
    )
    context.log.info(f"{context.partition_key}: {stats.height} sensors")
    return stats


# --------------------------------------------------------------------------- sales


@asset(
    group_name="sales",
    partitions_def=DAILY_BY_REGION,
    description=(
        "**Multi-dimensional partitions.** Orders of one day in one region, generated as a pandas "
        "DataFrame. Each dimension is its own Hive folder level, "
        "`regional_sales/date=YYYY-MM-DD/region=<region>/data.parquet`, so readers get `date` and "
        "`region` columns back when they read the whole folder."
    ),
)
def regional_sales(context: AssetExecutionContext) -> pd.DataFrame:
    key = context.partition_key
    assert isinstance(key, MultiPartitionKey)
    date, region = key.keys_by_dimension["date"], key.keys_by_dimension["region"]
    rng = np.random.default_rng(_stable_hash("sales", date, region))
    n = 500
    return pd.DataFrame(
        {
            "order_id": [f"{region}-{date}-{i:05d}" for i in range(n)],
            "product": rng.choice(["widget", "gadget", "gizmo", "doohickey"], n),
            "quantity": rng.integers(1, 10, n),
            "unit_price": np.round(rng.uniform(2.0, 200.0, n), 2),
        }
    )


# --------------------------------------------------------------------------- events (streaming)

EVENT_KINDS = ["view", "click", "search", "add_to_cart", "checkout", "refund", "signup", "logout"]
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("kind", pa.string()),
        ("user_id", pa.int32()),
        ("amount", pa.float64()),
        ("session", pa.string()),
    ]
)
ROWS_PER_BATCH = 131_072
#: In-memory Arrow bytes per row of EVENT_SCHEMA (measured on generated batches).
_BYTES_PER_ROW = 8 + 8 + (4 + 6) + 4 + 8 + (4 + 14)
EVENTS_START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
EVENTS_SPAN = dt.timedelta(days=30)
REPORT_COLUMNS = ["ts", "kind", "amount"]


def _default_stream_mb() -> int:
    return int(os.environ.get("EXAMPLE_STREAM_MB", "256"))


class EventStreamConfig(Config):
    total_mb: int = Field(
        default_factory=_default_stream_mb,
        description="Approximate in-memory size of all batches (env EXAMPLE_STREAM_MB, default 256).",
    )
    rows_per_batch: int = Field(default=ROWS_PER_BATCH, description="Rows per record batch.")


def _event_batch(index: int, rows: int, total_rows: int) -> pa.RecordBatch:
    rng = np.random.default_rng(_stable_hash("events", str(index)))
    ids = np.arange(index * rows, index * rows + rows, dtype=np.int64)
    step_us = EVENTS_SPAN // dt.timedelta(microseconds=1) / max(total_rows, 1)
    start = np.datetime64(EVENTS_START.replace(tzinfo=None), "us")
    kinds = np.array(EVENT_KINDS)[rng.integers(0, len(EVENT_KINDS), rows)]
    sessions = pc.binary_join_element_wise("s-", pc.cast(pa.array(rng.integers(10**11, 10**12, rows)), pa.string()), "")
    return pa.record_batch(
        [
            pa.array(ids),
            pa.array(start + (ids * step_us).astype("timedelta64[us]"), type=pa.timestamp("us", tz="UTC")),
            pa.array(kinds),
            pa.array(rng.integers(0, 1_000_000, rows, dtype=np.int32)),
            pa.array(np.round(rng.exponential(30.0, rows), 2)),
            sessions,
        ],
        schema=EVENT_SCHEMA,
    )


@asset(
    group_name="events",
    description=(
        "**Streaming, larger-than-memory style write.** Returns a `pyarrow.RecordBatchReader` over a "
        "generator that makes one ~7 MB record batch at a time (a few hundred MB in total, "
        "`total_mb` in the launchpad or env `EXAMPLE_STREAM_MB`). The IO manager streams the batches "
        "into one Parquet object through PyArrow's multipart upload, so memory stays bounded by a "
        "few batches, and publishes it atomically: a failure mid-stream leaves the previous "
        "materialization untouched."
    ),
)
def events_stream(context: AssetExecutionContext, config: EventStreamConfig) -> pa.RecordBatchReader:
    rows = config.rows_per_batch
    total_rows = max(rows, config.total_mb * 1024 * 1024 // _BYTES_PER_ROW)
    batches = -(-total_rows // rows)
    total_rows = batches * rows
    context.log.info(f"streaming {batches} batches x {rows:,} rows (~{config.total_mb} MB in Arrow)")
    context.add_output_metadata({"batches_generated": batches, "configured_mb": config.total_mb})

    def generate() -> Iterator[pa.RecordBatch]:
        for index in range(batches):
            yield _event_batch(index, rows, total_rows)

    return pa.RecordBatchReader.from_batches(EVENT_SCHEMA, generate())


@asset(
    group_name="events",
    ins={"events_stream": AssetIn(metadata={"columns": REPORT_COLUMNS})},
    description=(
        "**Chunked read with column projection.** The input is annotated `pyarrow.RecordBatchReader` "
        "and carries `AssetIn(metadata={'columns': ['ts', 'kind', 'amount']})`: the IO manager "
        "streams `events_stream` batch by batch and fetches only those three columns' bytes. "
        "Aggregates events per kind and hour incrementally."
    ),
)
def events_by_kind(context: AssetExecutionContext, events_stream: pa.RecordBatchReader) -> pa.Table:
    partials: list[pa.Table] = []
    batches = rows = 0
    for batch in events_stream:
        if batch.schema.names != REPORT_COLUMNS:
            raise ValueError(f"expected only the projected columns {REPORT_COLUMNS}, got {batch.schema.names}")
        batches += 1
        rows += batch.num_rows
        hourly = pa.table(
            {
                "kind": batch.column("kind"),
                "hour": pc.floor_temporal(batch.column("ts"), unit="hour"),
                "amount": batch.column("amount"),
            }
        )
        partials.append(hourly.group_by(["kind", "hour"]).aggregate([("amount", "sum"), ("amount", "count")]))
    if not partials:
        raise ValueError("events_stream is empty")
    merged = (
        pa.concat_tables(partials)
        .group_by(["kind", "hour"])
        .aggregate([("amount_count", "sum"), ("amount_sum", "sum")])
        .rename_columns(["kind", "hour", "events", "amount_total"])
        .sort_by([("hour", "ascending"), ("kind", "ascending")])
    )
    merged = merged.set_column(3, "amount_total", pc.round(merged["amount_total"], 2))
    context.add_output_metadata(
        {"batches_read": batches, "rows_read": rows, "columns_read": MetadataValue.json(REPORT_COLUMNS)}
    )
    return merged


REPORT_HEADER = b'"kind","hour","events","amount_total"'


@asset(
    group_name="events",
    description=(
        "**Raw bytes: a CSV report.** Renders `events_by_kind` as CSV and returns `bytes`; the IO "
        "manager stores bytes as-is (no Parquet, `data.bin`) through the PyArrow data path, so any "
        "S3 client can download it as a plain file. A few hundred KB, so the chunked reader below "
        "sees several 64 KB chunks."
    ),
)
def report_csv(events_by_kind: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(events_by_kind, sink)
    return sink.getvalue()


@asset(
    group_name="events",
    description=(
        "**Chunked streaming read (64 KB).** The input is annotated `typing.BinaryIO`: the IO "
        "manager hands over a reader instead of the whole object, and this asset loops "
        "`read(65_536)` until EOF, hashing as it goes, so memory stays at one chunk whatever the "
        "size of `report_csv`. Stores a one-row summary table (SHA-256, bytes, chunks, lines)."
    ),
)
def report_csv_digest(context: AssetExecutionContext, report_csv: BinaryIO) -> pa.Table:
    digest = hashlib.sha256()
    total = chunks = lines = 0
    while True:
        chunk = report_csv.read(65_536)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
        chunks += 1
        lines += chunk.count(b"\n")
    context.log.info(f"read report_csv: {total:,} bytes in {chunks} chunk(s)")
    context.add_output_metadata({"bytes_read": total, "chunks_read": chunks})
    return pa.table({"sha256": [digest.hexdigest()], "bytes": [total], "chunks_64k": [chunks], "lines": [lines]})


ALL_ASSETS = [
    daily_sensor_readings,
    readings_daily_stats,
    regional_sales,
    events_stream,
    events_by_kind,
    report_csv,
    report_csv_digest,
]
