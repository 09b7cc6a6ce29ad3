"""End to end: the README's first command (``./scripts/dev``) with its embedded S3 server.

One dev server (session fixture in ``_e2e_helpers``) is shared with the browser
test. Through Dagster's GraphQL API: the code location lists the assets, the
cleanup sensor and the schedule; materializations launched like the UI does
succeed and report ``dagster/uri``, row counts and the column schema; the
Parquet they point at is readable straight from the embedded server. The last
test stops the dev command and starts it again: data and run history survive.
"""

from __future__ import annotations

import signal
import urllib.request
from typing import TYPE_CHECKING

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from _e2e_helpers import EXPECTED_ASSETS

from example_project.dev import EMBEDDED_BUCKET, EMBEDDED_KEY, EMBEDDED_REGION, EMBEDDED_SECRET
from remote_store_dagster.testing import port_is_free

if TYPE_CHECKING:
    from _e2e_helpers import DevServer

LOCATION = "example_project"
REPOSITORY = "__repository__"

pytest_plugins = ["_e2e_helpers"]
pytestmark = pytest.mark.e2e

DAY = "2025-01-02"
EVENTS_CHAIN = ["events_stream", "events_by_kind", "report_csv", "report_csv_digest"]


def _embedded_fs(server: DevServer) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=EMBEDDED_KEY,
        secret_key=EMBEDDED_SECRET,
        endpoint_override=f"http://127.0.0.1:{server.s3_port}",
        scheme="http",
        region=EMBEDDED_REGION,
    )


def _bucket_path(uri: str) -> str:
    assert uri.startswith(f"s3://{EMBEDDED_BUCKET}/"), uri
    return uri.removeprefix("s3://")


def test_dev_command_prints_ui_address_and_uses_embedded_s3(dev_server: DevServer) -> None:
    log = dev_server.log_text()
    assert f"Dagster UI ready: {dev_server.url}" in log
    assert f"starting embedded S3 server (SeaweedFS) on 127.0.0.1:{dev_server.s3_port}" in log
    assert not port_is_free(dev_server.s3_port)
    assert (dev_server.data_dir / "seaweedfs").is_dir()
    with urllib.request.urlopen(dev_server.url, timeout=10) as response:
        assert response.status == 200


def test_code_location_lists_assets_sensor_and_schedule(dev_server: DevServer) -> None:
    repo = dev_server.repository()
    nodes = {"/".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
    assert set(nodes) == EXPECTED_ASSETS
    assert nodes["daily_sensor_readings"]["isPartitioned"]
    assert nodes["regional_sales"]["isPartitioned"]
    assert not nodes["events_stream"]["isPartitioned"]
    for name, node in nodes.items():
        assert node["description"], f"{name} has no description"
    sensors = {s["name"]: s for s in repo["sensors"]}
    assert sensors["remote_store_cleanup"]["sensorState"]["status"] == "STOPPED"
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["daily_readings_schedule"]["cronSchedule"] == "30 0 * * *"
    assert "daily_readings_job" in {j["name"] for j in repo["jobs"]}


def test_materialize_partition_through_graphql(dev_server: DevServer) -> None:
    dev_server.materialize(["daily_sensor_readings", "readings_daily_stats"], partition=DAY)

    (mat,) = dev_server.materializations("daily_sensor_readings", partition=DAY)
    meta = mat["metadata"]
    assert mat["partition"] == DAY
    uri = meta["dagster/uri"]
    assert uri == f"s3://{EMBEDDED_BUCKET}/dagster-example/daily_sensor_readings/partition={DAY}/data.parquet"
    assert meta["dagster/partition_row_count"] == 2880
    assert [name for name, _ in meta["dagster/column_schema"]] == [
        "ts",
        "sensor_id",
        "temperature_c",
        "humidity_pct",
    ]
    assert meta["remote_store/stored_bytes"] > 0

    # The URI is real: the Parquet object is on the embedded S3 server, readable by anyone.
    fs = _embedded_fs(dev_server)
    table = pads.dataset(_bucket_path(uri), filesystem=fs).to_table()
    assert table.num_rows == 2880
    assert fs.get_file_info(_bucket_path(uri)).size == meta["remote_store/stored_bytes"]

    (stats,) = dev_server.materializations("readings_daily_stats", partition=DAY)
    assert stats["metadata"]["dagster/partition_row_count"] == 10


def test_quickstart_duckdb_snippet_reads_the_partitions(dev_server: DevServer) -> None:
    """The "See the stored Parquet" snippet of docs/getting-started.md, against the embedded server."""
    if not dev_server.materializations("daily_sensor_readings", partition=DAY):
        dev_server.materialize(["daily_sensor_readings"], partition=DAY)
    s3 = _embedded_fs(dev_server)
    listing = s3.get_file_info(pafs.FileSelector(f"{EMBEDDED_BUCKET}/dagster-example", recursive=True))
    assert any(info.path.endswith(f"partition={DAY}/data.parquet") for info in listing)
    readings = pads.dataset(  # noqa: F841 - DuckDB finds it by name
        f"{EMBEDDED_BUCKET}/dagster-example/daily_sensor_readings", filesystem=s3, partitioning="hive"
    )
    relation = duckdb.sql(
        "SELECT partition, count(*) AS readings, round(avg(temperature_c), 2) AS avg_c "
        "FROM readings GROUP BY ALL ORDER BY partition"
    )
    assert relation is not None
    rows = relation.fetchall()
    by_day = {row[0]: row[1] for row in rows}
    assert by_day[DAY] == 2880


def test_cleanup_sensor_dry_run_evaluates_in_the_code_location(dev_server: DevServer) -> None:
    """What "Test sensor" in the UI does: one evaluation of the (dry-run) cleanup sensor."""
    data = dev_server.graphql(
        """mutation($sel: SensorSelector!) { sensorDryRun(selectorData: $sel, cursor: null) {
             __typename
             ... on DryRunInstigationTick { evaluationResult {
                 skipReason cursor runRequests { runKey } error { message stack } } }
             ... on SensorNotFoundError { message }
             ... on PythonError { message stack }
           } }""",
        {
            "sel": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "sensorName": "remote_store_cleanup",
            }
        },
    )
    tick = data["sensorDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    result = tick["evaluationResult"]
    assert result["error"] is None, result["error"]
    assert not result["runRequests"]
    assert "dry run" in (result["skipReason"] or "").lower(), result


def test_materialize_streaming_chain_through_graphql(dev_server: DevServer) -> None:
    dev_server.materialize(EVENTS_CHAIN)

    stream = dev_server.materializations("events_stream")[0]["metadata"]
    by_kind = dev_server.materializations("events_by_kind")[0]["metadata"]
    report = dev_server.materializations("report_csv")[0]["metadata"]
    digest = dev_server.materializations("report_csv_digest")[0]["metadata"]
    assert stream["configured_mb"] == 8  # EXAMPLE_STREAM_MB reached the code server
    assert stream["dagster/row_count"] == by_kind["rows_read"]
    assert by_kind["columns_read"] == ["ts", "kind", "amount"]
    assert [name for name, _ in by_kind["dagster/column_schema"]] == ["kind", "hour", "events", "amount_total"]
    assert report["dagster/uri"].endswith("/report_csv/data.bin")
    assert digest["bytes_read"] == report["remote_store/stored_bytes"]
    assert digest["chunks_read"] > 1


def test_restart_keeps_data_and_history(dev_server: DevServer) -> None:
    """Stop the dev command (as Ctrl-C does) and start it again on the same data folder."""
    if not dev_server.materializations("daily_sensor_readings", partition=DAY):
        dev_server.materialize(["daily_sensor_readings"], partition=DAY)
    before = dev_server.materializations("daily_sensor_readings", partition=DAY)[0]

    assert dev_server.stop(signal.SIGINT) == 0  # Ctrl-C
    log = dev_server.log_text()
    assert "stopping embedded S3 server" in log
    assert port_is_free(dev_server.s3_port), "SeaweedFS still running after the dev command stopped"
    assert port_is_free(dev_server.ui_port), "dagster-webserver still running after the dev command stopped"

    dev_server.start()
    # Run history persisted (DAGSTER_HOME) ...
    after = dev_server.materializations("daily_sensor_readings", partition=DAY)[0]
    assert after["runId"] == before["runId"]
    # ... and so did the objects: a downstream asset loads what was written before the restart.
    run_id = dev_server.materialize(["readings_daily_stats"], partition=DAY)
    (stats,) = dev_server.materializations("readings_daily_stats", partition=DAY)
    assert stats["runId"] == run_id
    assert stats["metadata"]["dagster/partition_row_count"] == 10
