"""End to end in the shape users deploy: ``prod_shape`` (``scripts/prod-shape``), driven over GraphQL.

One stack for the module (``prod_shape/stack.py``): a Postgres-backed Dagster instance, the
``QueuedRunCoordinator``, run monitoring, ``dagster-daemon`` and ``dagster-webserver`` as separate
processes, two code locations served by ``dagster api grpc`` that share one bucket prefix on
SeaweedFS, each with daily-partitioned assets written by ``RemoteStoreIOManager`` (multiprocess
executor, 4 concurrent steps) and its own cleanup sensor running in the daemon.

Scenarios, in order (they share the stack and build on its history):

1. the stack is what it claims (processes, Postgres storage, queue, daemons, sensors RUNNING);
2. a backfill of 100 partitions across both locations completes while the cleanup sensors tick,
   and every object is a readable Parquet file stamped with its location;
3. a run worker SIGKILLed mid-upload: the run is marked failed, the previous version stays
   byte-identical, a cleanup sensor tick aborts the incomplete multipart upload;
4. the S3 server restarts mid-backfill: steps fail with a clear error, re-executing the failures
   succeeds, nothing is torn;
5. the webserver restarts: runs, materializations and sensor states are all still there.
"""

from __future__ import annotations

import io
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psutil
import psycopg2
import pyarrow.parquet as pq
import pytest
from prod_shape.locations import DAYS, PREFIX, ROOTS, ROWS_PER_PARTITION
from prod_shape.stack import BUCKET, LOCATIONS, S3_SECRET, ProdStack, StackError

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPOSITORY = "__repository__"
ASSET_JOB = "__ASSET_JOB"
STORE_ROOT = "warehouse"
ALL_DAYS = DAYS.get_partition_keys()
ASSETS = [*ROOTS, "summary"]
RUN_FINAL = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_FINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
SLOW_KEY = f"{STORE_ROOT}/{PREFIX}/ingest/slow_stream/data.parquet"
#: Partitions of the backfill during which S3 restarts.
OUTAGE_DAYS = 50


# ---------------------------------------------------------------------- fixture and helpers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdStack]:
    started = time.monotonic()
    prod = ProdStack(base=tmp_path_factory.mktemp("prod-shape"))
    prod.start()
    print(f"\nproduction-shape stack ready in {time.monotonic() - started:.1f}s ({prod.log_dir})")
    yield prod
    pids = [s.pid for s in prod.services.values() if s.pid]
    prod.stop()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def gql(stack: ProdStack, query: str, **variables: Any) -> Any:
    return stack.graphql(query, variables)


def launch_backfill(stack: ProdStack, assets: list[list[str]], partitions: list[str]) -> str:
    data = gql(
        stack,
        """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        p={"partitionNames": partitions, "assetSelection": [{"path": a} for a in assets]},
    )
    result = data["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return str(result["backfillId"])


def backfill(stack: ProdStack, backfill_id: str) -> dict[str, Any]:
    data = gql(
        stack,
        """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
             ... on PartitionBackfill { status numPartitions
               runs(limit: 100) { runId status creationTime startTime endTime tags { key value } } } } }""",
        id=backfill_id,
    )
    result = data["partitionBackfillOrError"]
    assert result["__typename"] == "PartitionBackfill", result
    return dict(result)


def wait_backfill(stack: ProdStack, backfill_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        state = backfill(stack, backfill_id)
        if state["status"] in BACKFILL_FINAL and all(r["status"] in RUN_FINAL for r in state["runs"]):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"backfill {backfill_id} not finished after {timeout}s: {summary_of(state)}")
        time.sleep(3)


def summary_of(state: dict[str, Any]) -> str:
    return f"{state['status']}, runs {sorted(r['status'] for r in state['runs'])}"


def run_status(stack: ProdStack, run_id: str) -> str:
    data = gql(stack, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id)
    return str(data["runOrError"]["status"])


def wait_run(stack: ProdStack, run_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(stack, run_id)
        if status in RUN_FINAL:
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout}s ({run_status(stack, run_id)})")


def run_events(stack: ProdStack, run_id: str) -> list[dict[str, Any]]:
    data = gql(
        stack,
        """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection { events {
             __typename
             ... on MessageEvent { message stepKey }
             ... on EngineEvent { engineError: error { message } }
             ... on ExecutionStepFailureEvent { stepError: error { message cause { message } } }
             ... on RunFailureEvent { runError: error { message } } } } } }""",
        id=run_id,
    )
    return list(data["logsForRun"]["events"])


def failure_text(stack: ProdStack, run_id: str) -> str:
    out = []
    for event in run_events(stack, run_id):
        error = event.get("stepError") or event.get("engineError") or event.get("runError")
        crash = "execution process" in (event.get("message") or "")  # the code server's crash report
        if error or crash or "Failure" in event["__typename"]:
            out.append(f"{event['__typename']} {event.get('stepKey')}: {event.get('message', '')}")
            if error:
                out.append(f"  {error.get('message', '')}")
                if error.get("cause"):
                    out.append(f"  cause: {error['cause'].get('message', '')}")
    return "\n".join(out)


def launch_run(stack: ProdStack, location: str, asset: list[str], run_config: dict[str, Any]) -> str:
    data = gql(
        stack,
        """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
             ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
             ... on RunConfigValidationInvalid { errors { message } } } }""",
        params={
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": REPOSITORY,
                "jobName": ASSET_JOB,
                "assetSelection": [{"path": asset}],
            },
            "runConfigData": run_config,
        },
    )
    result = data["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def reexecute_from_failure(stack: ProdStack, run_id: str) -> str:
    data = gql(
        stack,
        """mutation($p: ReexecutionParams!) { launchRunReexecution(reexecutionParams: $p) { __typename
             ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        p={"parentRunId": run_id, "strategy": "FROM_FAILURE"},
    )
    result = data["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def partition_stats(stack: ProdStack, location: str) -> dict[str, dict[str, int]]:
    data = gql(
        stack,
        """query($sel: RepositorySelector!) { repositoryOrError(repositorySelector: $sel) {
             ... on Repository { assetNodes { assetKey { path }
               partitionStats { numMaterialized numFailed numMaterializing numPartitions } } } } }""",
        sel={"repositoryLocationName": location, "repositoryName": REPOSITORY},
    )
    return {
        "/".join(n["assetKey"]["path"]): n["partitionStats"]
        for n in data["repositoryOrError"]["assetNodes"]
        if n["partitionStats"]
    }


def sensor_ticks(stack: ProdStack, location: str, limit: int = 200) -> list[dict[str, Any]]:
    data = gql(
        stack,
        """query($sel: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $sel) { __typename
             ... on Sensor { sensorState { status ticks(limit: $limit) {
               status timestamp skipReason error { message } } } } } }""",
        sel={"repositoryLocationName": location, "repositoryName": REPOSITORY, "sensorName": f"{location}_cleanup"},
        limit=limit,
    )
    sensor = data["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return list(sensor["sensorState"]["ticks"])


def all_runs(stack: ProdStack) -> dict[str, str]:
    data = gql(stack, "{ runsOrError(limit: 1000) { ... on Runs { results { runId status } } } }")
    return {r["runId"]: r["status"] for r in data["runsOrError"]["results"]}


def stored_objects(stack: ProdStack, prefix: str) -> dict[str, dict[str, Any]]:
    assert stack.s3 is not None
    client = stack.s3.client()
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def check_readable(stack: ProdStack, keys: list[str]) -> dict[str, tuple[int, str, str]]:
    """GET every object, parse it as Parquet: key -> (rows, code location, run id of its provenance)."""
    assert stack.s3 is not None
    client = stack.s3.client(max_pool_connections=16)

    def read(key: str) -> tuple[str, int, str, str]:
        got = client.get_object(Bucket=BUCKET, Key=key)
        body = got["Body"].read()
        assert len(body) == got["ContentLength"], key
        meta = got["Metadata"]
        rows = pq.read_table(io.BytesIO(body)).num_rows
        return key, rows, meta.get("rsd-code-location", ""), meta.get("rsd-run-id", "")

    with ThreadPoolExecutor(8) as pool:
        return {key: (rows, loc, run) for key, rows, loc, run in pool.map(read, keys)}


def partition_keys(location: str, days: list[str] = ALL_DAYS) -> list[str]:
    folder = f"{STORE_ROOT}/{PREFIX}/{location}"
    return [f"{folder}/{asset}/partition={day}/data.parquet" for asset in ASSETS for day in days]


# ---------------------------------------------------------------------- scenarios


def test_stack_is_production_shaped(stack: ProdStack) -> None:
    # Separate processes: webserver, daemon, one gRPC server per code location.
    pids = {name: service.pid for name, service in stack.services.items()}
    assert all(pids.values()) and len(set(pids.values())) == len(pids), pids
    for name in LOCATIONS:
        cmdline = " ".join(psutil.Process(pids[name]).cmdline())
        assert "api grpc" in cmdline and f"--location-name {name}" in cmdline, cmdline
    assert "dagster-daemon" in " ".join(psutil.Process(pids["daemon"]).cmdline())
    assert "dagster-webserver" in " ".join(psutil.Process(pids["webserver"]).cmdline())

    data = gql(
        stack,
        """{ instance { runQueuingSupported runLauncher { name }
             runQueueConfig { maxConcurrentRuns } daemonHealth { allDaemonStatuses { daemonType healthy } } } }""",
    )
    instance = data["instance"]
    assert instance["runQueuingSupported"] is True  # QueuedRunCoordinator
    assert instance["runLauncher"]["name"] == "DefaultRunLauncher"
    assert instance["runQueueConfig"]["maxConcurrentRuns"] >= 2
    daemons = {d["daemonType"]: d["healthy"] for d in instance["daemonHealth"]["allDaemonStatuses"]}
    for daemon in ("SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR", "MONITORING"):
        assert daemons.get(daemon) is True, daemons

    # The instance really is Postgres-backed: its tables are in our server.
    with psycopg2.connect(stack.postgres.url.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('runs', 'event_logs')")
        assert cur.fetchone() == (2,)

    for location in LOCATIONS:
        ticks = sensor_ticks(stack, location, limit=1)
        state = gql(
            stack,
            """query($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) {
                 ... on Sensor { sensorState { status } } } }""",
            sel={"repositoryLocationName": location, "repositoryName": REPOSITORY, "sensorName": f"{location}_cleanup"},
        )
        assert state["sensorOrError"]["sensorState"]["status"] == "RUNNING"
        assert isinstance(ticks, list)

    # Credentials live only in the code servers' environment (the AWS chain), never in config.
    for path in (stack.dagster_home / "dagster.yaml", stack.workspace):
        assert S3_SECRET not in path.read_text()


def test_backfill_across_both_locations_while_cleanup_sensors_run(stack: ProdStack) -> None:
    started = time.time()
    assets = [[loc, name] for loc in LOCATIONS for name in ASSETS]
    backfill_id = launch_backfill(stack, assets, ALL_DAYS)
    state = wait_backfill(stack, backfill_id, timeout=600)
    ended = time.time()
    assert state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        summary_of(state) + "\n" + "\n".join(failure_text(stack, r["runId"]) for r in state["runs"])
    )
    assert len(ALL_DAYS) >= 100
    # Each location's backfill policy makes one run over the whole range (one step per asset).
    by_location: dict[str, int] = {}
    for run in state["runs"]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        location = tags.get("dagster/code_location", "?")
        by_location[location] = by_location.get(location, 0) + 1
        assert run["status"] == "SUCCESS"
        assert tags["dagster/asset_partition_range_start"] in ALL_DAYS
    assert by_location == dict.fromkeys(LOCATIONS, 1), by_location  # one ranged run per location

    for location in LOCATIONS:
        stats = partition_stats(stack, location)
        for asset in ASSETS:
            assert stats[f"{location}/{asset}"]["numMaterialized"] == len(ALL_DAYS), (asset, stats)
        # The location's cleanup sensor ticked in the daemon during the backfill, without errors.
        ticks = [t for t in sensor_ticks(stack, location) if started <= t["timestamp"] <= ended]
        assert ticks, f"{location}_cleanup did not tick during the backfill"
        assert not [t for t in ticks if t["status"] == "FAILURE"], [t["error"] for t in ticks if t["error"]]

    # Every partition of both locations is a whole Parquet object stamped with its location:
    # neither sensor deleted the other location's data below the shared prefix.
    listed = stored_objects(stack, f"{STORE_ROOT}/{PREFIX}/")
    expected = [key for loc in LOCATIONS for key in partition_keys(loc)]
    missing = sorted(set(expected) - set(listed))
    assert not missing, f"{len(missing)} objects missing, e.g. {missing[:5]}"
    read = check_readable(stack, expected)
    for key, (rows, location, _) in read.items():
        assert location == key.split("/")[2], (key, location)
        assert rows == (1 if "/summary/" in key else ROWS_PER_PARTITION), (key, rows)
    timing = ", ".join(
        f"queued {r['startTime'] - r['creationTime']:.0f}s, ran {r['endTime'] - r['startTime']:.0f}s"
        for r in state["runs"]
    )
    print(f"\nbackfill of {len(ALL_DAYS)} partitions x {len(assets)} assets: {ended - started:.0f}s ({timing})")


def _run_worker_tree(stack: ProdStack, run_id: str) -> list[psutil.Process]:
    """The run worker process of ``run_id`` (from its "Started process for run (pid: N)" event) and its children."""
    for event in run_events(stack, run_id):
        match = re.search(r"Started process for run \(pid: (\d+)\)", event.get("message") or "")
        if match:
            worker = psutil.Process(int(match.group(1)))
            return [worker, *worker.children(recursive=True)]
    return []


def _pending_uploads(stack: ProdStack, key: str) -> list[str]:
    assert stack.s3 is not None
    listed = stack.s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    return [u["UploadId"] for u in listed.get("Uploads", []) if u["Key"] == key]


def test_run_worker_sigkilled_mid_upload(stack: ProdStack) -> None:
    assert stack.s3 is not None
    client = stack.s3.client()
    op_config = "ingest__slow_stream"
    first = launch_run(stack, "ingest", ["ingest", "slow_stream"], {"ops": {op_config: {"config": {"seed": 1}}}})
    assert wait_run(stack, first) == "SUCCESS", failure_text(stack, first)
    before = client.get_object(Bucket=BUCKET, Key=SLOW_KEY)
    before_bytes, before_etag = before["Body"].read(), before["ETag"]
    assert len(before_bytes) > 8 * 1024 * 1024  # a multipart object itself

    # The second version streams 40 MiB at 1 MiB per 0.5 s: a multipart upload is open for ~20 s.
    slow = launch_run(
        stack,
        "ingest",
        ["ingest", "slow_stream"],
        {"ops": {op_config: {"config": {"seed": 2, "batches": 40, "sleep_s": 0.5}}}},
    )
    deadline = time.monotonic() + 240
    uploads: list[str] = []
    while not uploads:
        assert time.monotonic() < deadline, f"no multipart upload appeared; run {run_status(stack, slow)}"
        assert run_status(stack, slow) not in RUN_FINAL, failure_text(stack, slow)
        uploads = _pending_uploads(stack, SLOW_KEY)
        time.sleep(0.3)
    tree = _run_worker_tree(stack, slow)
    assert len(tree) >= 2, "run worker and its step process not found"
    for process in tree:
        process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    assert wait_run(stack, slow, timeout=120) == "FAILURE"
    detected = time.monotonic() - killed_at
    text = failure_text(stack, slow)
    assert "signal 9 (SIGKILL)" in text, text

    # No torn object: the previous version is still there, byte for byte.
    after = client.get_object(Bucket=BUCKET, Key=SLOW_KEY)
    assert after["ETag"] == before_etag
    assert after["Body"].read() == before_bytes
    assert pq.read_table(io.BytesIO(before_bytes)).num_rows > 0
    # The killed writer's upload is left behind ...
    assert set(uploads) <= set(_pending_uploads(stack, SLOW_KEY)) | set(uploads)
    # ... until a cleanup sensor tick (leftover_grace 20 s) aborts it.
    deadline = time.monotonic() + 150
    while _pending_uploads(stack, SLOW_KEY):
        assert time.monotonic() < deadline, "the cleanup sensor did not abort the killed writer's upload"
        time.sleep(2)
    aborted_by = [
        t["skipReason"] or ""
        for loc in LOCATIONS
        for t in sensor_ticks(stack, loc, limit=60)
        if "incomplete multipart upload" in (t["skipReason"] or "")
    ]
    assert client.get_object(Bucket=BUCKET, Key=SLOW_KEY)["ETag"] == before_etag
    print(f"\nrun marked FAILURE {detected:.1f}s after SIGKILL; upload aborted by: {aborted_by[:1]}")


def test_s3_restart_mid_backfill(stack: ProdStack) -> None:
    assert stack.s3 is not None
    started = time.time()
    days = ALL_DAYS[:OUTAGE_DAYS]
    backfill_id = launch_backfill(stack, [["sales", name] for name in ASSETS], days)

    # Wait until a run of the backfill is writing, then take S3 away for a while.
    deadline = time.monotonic() + 300
    writing = False
    while not writing:
        assert time.monotonic() < deadline, f"backfill not writing: {summary_of(backfill(stack, backfill_id))}"
        for run in backfill(stack, backfill_id)["runs"]:
            assert run["status"] != "SUCCESS", "the backfill finished before S3 could be stopped"
            if run["status"] == "STARTED" and any(
                "wrote" in (e.get("message") or "") for e in run_events(stack, run["runId"])
            ):
                writing = True
        time.sleep(0.3)
    stack.s3.kill()
    time.sleep(8)
    stack.s3.start()

    deadline = time.monotonic() + 300
    while not (runs := backfill(stack, backfill_id)["runs"]) or any(r["status"] not in RUN_FINAL for r in runs):
        assert time.monotonic() < deadline, f"backfill runs not finished: {runs}"
        time.sleep(2)
    failed = [r["runId"] for r in runs if r["status"] == "FAILURE"]
    assert failed, f"no run failed while S3 was down: {runs}"
    text = "\n".join(failure_text(stack, run_id) for run_id in failed)
    # The error names the step and says that S3 could not be reached: on a write (s3fs/botocore)
    # with the object's URL (asset folder and partition), on a load (PyArrow) with its network error.
    assert re.search(r'step "sales__\w+"', text), text
    assert re.search(
        r"Could not connect to the endpoint URL: .*/shared/sales/\w+/partition%3D2024-"
        r"|NETWORK_CONNECTION|Couldn't connect to server",
        text,
    ), text
    print("\n" + "\n".join(line for line in text.splitlines() if "connect" in line.lower())[:1500])

    # Retry: re-execute the failed steps of each failed run.
    retries = [reexecute_from_failure(stack, run_id) for run_id in failed]
    for run_id in retries:
        assert wait_run(stack, run_id, timeout=400) == "SUCCESS", failure_text(stack, run_id)

    # Every partition of the backfill was written by it or its retry, and is whole Parquet.
    ours = {r["runId"] for r in runs} | set(retries)
    keys = partition_keys("sales", days)
    for key, (rows, location, run_id) in check_readable(stack, keys).items():
        assert location == "sales" and rows == (1 if "/summary/" in key else ROWS_PER_PARTITION), key
        assert run_id in ours, (key, run_id)
    print(f"\nS3 restart scenario: {time.time() - started:.0f}s, {len(failed)} failed run(s) re-executed")


def test_webserver_restart_loses_nothing(stack: ProdStack) -> None:
    runs_before = all_runs(stack)
    stats_before = {loc: partition_stats(stack, loc) for loc in LOCATIONS}
    assert runs_before
    old_pid = stack.services["webserver"].pid
    stack.restart("webserver", signal.SIGKILL)
    assert stack.services["webserver"].pid != old_pid
    with pytest.raises((OSError, StackError)):
        stack.graphql("{ version }", retries=0)  # not up yet: the restart is real
    stack.wait_ready(timeout=180)
    runs_after = all_runs(stack)
    assert {k: v for k, v in runs_after.items() if k in runs_before} == runs_before
    assert {loc: partition_stats(stack, loc) for loc in LOCATIONS} == stats_before
    for location in LOCATIONS:
        assert sensor_ticks(stack, location, limit=1)
