"""``build_cleanup_sensor`` decides with provenance: whose data, written by which run.

On local, s3-pyarrow@moto and s3-pyarrow@SeaweedFS, with real Dagster
instances and runs. Every test compares sha256 listings of everything below
the test's store root and a sibling root outside the store, before and after.

Until the IO manager stamps provenance itself, ``stamp`` writes it the way the
IO manager does (S3 user metadata, or the ``_provenance.json`` sidecar); the
tests named ``*_through_the_io_manager`` rely on the IO manager's own stamping.
"""

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.events import AssetWipedData, DagsterEvent
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from remote_store import Store

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster._provenance import Provenance, sidecar_path
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.cleanup.catalog import MAX_PENDING_WIPES, WipeCursor, next_cursor
from remote_store_dagster.io_manager import RemoteStoreIOManager

BUCKET = "rsd-test"  # conftest.BUCKET
PREFIX = "shared"
ZERO = timedelta(0)
DAYS = dg.StaticPartitionsDefinition(["d1", "d2", "d3"])


def _table(tag: str) -> pa.Table:
    return pa.table({"tag": [tag], "nonce": [uuid.uuid4().hex]})


@dg.asset
def sales() -> pa.Table:
    return _table("sales")


@dg.asset(partitions_def=DAYS)
def daily(context: dg.AssetExecutionContext) -> pa.Table:
    return _table(context.partition_key)


@dataclass
class Env:
    kind: str
    root: str
    resource: RemoteStoreResource
    store: Store
    outside: Store
    instance: dg.DagsterInstance
    local_dir: Path
    client: Any = None
    cursors: dict[str, str | None] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        """Every object below ``<root>`` and ``<root>-outside``: key -> sha256."""
        found: dict[str, str] = {}
        if self.client is None:
            for dirpath, _, files in os.walk(self.local_dir):
                for name in files:
                    full = Path(dirpath, name)
                    rel = full.relative_to(self.local_dir).as_posix()
                    if rel.startswith(self.root):
                        found[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            return found
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=self.root):
            for item in page.get("Contents", []):
                body = self.client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                found[item["Key"]] = hashlib.sha256(body).hexdigest()
        return found

    def key(self, path: str) -> str:
        return f"{self.root}/{path}"

    def data(self, asset: str, partition: str | None = None) -> str:
        folder = f"{PREFIX}/{asset}" + (f"/partition={partition}" if partition else "")
        return f"{folder}/data.parquet"

    def stamp(self, path: str, provenance: Provenance) -> None:
        """Provenance as the IO manager records it: S3 user metadata, or the folder's sidecar."""
        if self.client is not None:
            key = self.key(path)  # rewritten with the metadata (s3rver cannot copy a Hive key onto itself)
            body = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            self.client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=provenance.to_metadata())
        else:
            self.store.write(sidecar_path(path), provenance.to_json(), overwrite=True)

    def put(self, path: str, provenance: Provenance | None = None) -> str:
        body = f"{path} {uuid.uuid4().hex}".encode()
        if provenance is not None and self.client is not None:  # one PutObject, as the IO manager sends
            self.client.put_object(Bucket=BUCKET, Key=self.key(path), Body=body, Metadata=provenance.to_metadata())
            return path
        self.store.write(path, body, overwrite=True)
        if provenance is not None:
            self.stamp(path, provenance)
        return path

    def materialize(self, assets: list[Any], partition_key: str | None = None, **io: Any) -> str:
        result = dg.materialize(
            assets,
            instance=self.instance,
            partition_key=partition_key,
            resources={
                "io_manager": RemoteStoreIOManager(remote_store=self.resource, store="lake", prefix=PREFIX, **io)
            },
        )
        assert result.success
        return result.run_id

    def tick(self, sensor: dg.SensorDefinition, assets: list[Any]) -> dg.SensorResult:
        """One evaluation; each sensor name keeps its own cursor, as the daemon does."""
        defs = dg.Definitions(assets=assets, sensors=[sensor], resources={"remote_store": self.resource})
        with dg.build_sensor_context(
            instance=self.instance,
            resources={"remote_store": self.resource},
            definitions=defs,
            cursor=self.cursors.get(sensor.name),
        ) as ctx:
            result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        self.cursors[sensor.name] = result.cursor
        return result

    def modified(self, path: str) -> float:
        if self.client is not None:
            return self.client.head_object(Bucket=BUCKET, Key=self.key(path))["LastModified"].timestamp()  # type: ignore[no-any-return]
        return (self.local_dir / self.key(path)).stat().st_mtime


def text(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def gone(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Keys that disappeared; everything still there is byte-identical."""
    assert all(after[k] == v for k, v in before.items() if k in after)
    return set(before) - set(after)


@pytest.fixture
def env(
    backend_kind: str,
    remote_store: RemoteStoreResource,
    make_remote_store: Callable[..., RemoteStoreResource],
    unique_root: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Env]:
    outside = make_remote_store(backend_kind, root_path=f"{unique_root}-outside")
    client = request.getfixturevalue(f"{backend_kind}_server").client() if backend_kind != "local" else None
    with dg.instance_for_test() as instance:
        e = Env(
            backend_kind,
            unique_root,
            remote_store,
            remote_store.get_store("lake"),
            outside.get_store("lake"),
            instance,
            tmp_path / "local-backend",
            client,
        )
        # Noise no policy may touch: the same layout outside the store root.
        for asset in ("a_live", "a_removed", "b_live"):
            e.outside.write(e.data(asset), b"outside", overwrite=True)
        yield e
    outside.close()


def _sensor(location: str | None, name: str | None = None, **options: Any) -> dg.SensorDefinition:
    options.setdefault("orphan_grace", ZERO)
    return build_cleanup_sensor(
        name or f"cleanup_{location}", store="lake", prefix=PREFIX, code_location=location, **options
    )


# --- two code locations below one prefix ---------------------------------------------------------


@dg.asset
def a_live() -> pa.Table:
    return _table("a")


@dg.asset
def a_removed() -> pa.Table:
    return _table("a-removed")


@dg.asset(partitions_def=dg.StaticPartitionsDefinition([f"p{i:02d}" for i in range(40)]))
def b_live(context: dg.AssetExecutionContext) -> pa.Table:
    return _table(context.partition_key)


def _lookups(result: dg.SensorResult) -> int:
    message = text(result)
    if "provenance lookup" not in message:
        return 0
    return int(message.rsplit(" provenance lookup", 1)[0].rsplit(" ", 1)[1])


def test_two_code_locations_share_a_prefix(env: Env) -> None:
    a = {
        asset: Provenance(run_id=uuid.uuid4().hex, code_location="A", asset_key=asset)
        for asset in ("a_live", "a_removed")
    }
    env.put(env.data("a_live"), a["a_live"])
    removed = env.put(env.data("a_removed"), a["a_removed"])
    b_paths = [
        env.put(
            env.data("b_live", f"p{i:02d}"),
            Provenance(run_id="rb", code_location="B", asset_key="b_live", partition_key=f"p{i:02d}"),
        )
        for i in range(40)
    ]
    # A folder both locations wrote into, one without provenance, one stamped without a location.
    env.put(env.data("mixed", "p1"), Provenance(run_id="r1", code_location="A", asset_key="mixed", partition_key="p1"))
    env.put(env.data("mixed", "p2"), Provenance(run_id="r2", code_location="B", asset_key="mixed", partition_key="p2"))
    legacy = env.put(env.data("legacy"))
    in_process = env.put(env.data("in_process"), Provenance(run_id="r3", asset_key="in_process"))
    # Stamped by A but for another asset (copied in by hand): not this folder's data.
    env.put(env.data("copied"), Provenance(run_id="r4", code_location="A", asset_key="elsewhere"))
    before = env.snapshot()

    a_assets, b_assets = [a_live], [b_live]  # A's code no longer defines a_removed
    sensor_a = _sensor("A", delete_orphans=True)
    sensor_b = _sensor("B", delete_orphans=True)
    for _ in range(2):
        result_b = env.tick(sensor_b, b_assets)
        assert gone(before, env.snapshot()) == set(), text(result_b)
    result_a = env.tick(sensor_a, a_assets)
    after = env.snapshot()
    assert gone(before, after) == {env.key(removed)} | (
        {env.key(sidecar_path(removed))} if env.kind == "local" else set()
    ), text(result_a)
    assert "orphan folders of another code location" in text(result_a)
    assert "orphan folders without provenance" in text(result_a)
    if env.client is not None:
        # B's 40 partitions cost one HeadObject, not 40: stop at the first foreign file.
        # a_removed 1 + b_live 1 + mixed <= 2 + legacy 1 + in_process 1 + copied 1
        assert _lookups(result_a) <= 7, text(result_a)
    # Steady state: both sensors again, nothing more goes.
    env.tick(sensor_a, a_assets)
    env.tick(sensor_b, b_assets)
    assert env.snapshot() == after

    # The explicit opt-in deletes data without provenance (or without a code location),
    # never what another location wrote.
    opt_in = _sensor("A", name="cleanup_a_unstamped", delete_orphans=True, delete_unstamped_orphans=True)
    result = env.tick(opt_in, a_assets)
    assert gone(after, env.snapshot()) == {env.key(legacy), env.key(in_process)} | (
        {env.key(sidecar_path(in_process))} if env.kind == "local" else set()
    ), text(result)
    assert all(env.key(p) in env.snapshot() for p in b_paths)

    # A sensor that cannot tell its code location keeps every orphan.
    unknown = _sensor(None, name="cleanup_unknown", delete_orphans=True)
    snap = env.snapshot()
    result = env.tick(unknown, [])
    assert env.snapshot() == snap and "code location is unknown" in text(result)


def test_two_code_locations_through_the_io_manager(env: Env) -> None:
    """The IO manager stamps ``code_location``; each sensor deletes only its own orphans."""
    env.materialize([a_live, a_removed], code_location="A")
    env.materialize([b_live], partition_key="p03", code_location="B")
    before = env.snapshot()
    env.tick(_sensor("B", delete_orphans=True), [b_live])
    assert gone(before, env.snapshot()) == set()
    result = env.tick(_sensor("A", delete_orphans=True), [a_live])
    removed = {env.key(env.data("a_removed"))} | (
        {env.key(sidecar_path(env.data("a_removed")))} if env.kind == "local" else set()
    )
    assert gone(before, env.snapshot()) == removed, text(result)


# --- wipes decided by run ------------------------------------------------------------------------


def _wipe_in_the_same_second(env: Env, stamp: bool) -> tuple[str, float]:
    """Materialize ``sales`` and wipe it within the same second as the object's last-modified time."""
    for _ in range(8):
        # Start early in a second: materialize + stamp + wipe fit in what is left of it.
        time.sleep(1 - time.time() % 1 + 0.02)
        run_id = env.materialize([sales])
        path = env.data("sales")
        if stamp:
            env.stamp(path, Provenance(run_id=run_id, asset_key="sales"))
        env.instance.wipe_assets([dg.AssetKey("sales")])
        wiped_at = env.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_WIPED), limit=1, ascending=False
        )[0].timestamp
        if int(env.modified(path)) == int(wiped_at):
            return path, wiped_at
    pytest.fail("could not write and wipe within one second (machine too loaded)")


def test_wipe_in_the_same_second_as_the_write_deletes(env: Env) -> None:
    path, _ = _wipe_in_the_same_second(env, stamp=True)
    before = env.snapshot()
    sensor = _sensor(None)
    results = [env.tick(sensor, [sales]) for _ in range(2)]
    expected = {env.key(path)} | ({env.key(sidecar_path(path))} if env.kind == "local" else set())
    assert gone(before, env.snapshot()) == expected, [text(r) for r in results]
    assert json.loads(results[-1].cursor or "{}")["pending_wipes"] == []


def test_wipe_in_the_same_second_through_the_io_manager(env: Env) -> None:
    """Relies on the IO manager's own provenance (run id) on every object."""
    path, _ = _wipe_in_the_same_second(env, stamp=False)
    before = env.snapshot()
    sensor = _sensor(None)
    results = [env.tick(sensor, [sales]) for _ in range(2)]
    assert env.key(path) in gone(before, env.snapshot()), [text(r) for r in results]


def test_wipe_then_rematerialize_at_once_keeps(env: Env) -> None:
    """Re-materialized right after the wipe (often the same second): kept, and the wipe is decided."""
    sensor = _sensor(None)
    env.materialize([sales])
    env.instance.wipe_assets([dg.AssetKey("sales")])
    run_id = env.materialize([sales])
    env.stamp(env.data("sales"), Provenance(run_id=run_id, asset_key="sales"))
    before = env.snapshot()
    results = [env.tick(sensor, [sales]) for _ in range(2)]
    assert env.snapshot() == before, [text(r) for r in results]
    assert json.loads(results[-1].cursor or "{}")["pending_wipes"] == []
    # The same object, wiped once more: now it goes.
    env.instance.wipe_assets([dg.AssetKey("sales")])
    result = env.tick(sensor, [sales])
    assert env.key(env.data("sales")) in gone(before, env.snapshot()), text(result)


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)
def test_a_wipe_never_deletes_another_code_locations_data(env: Env) -> None:
    """Wipes are instance-wide; only the sensor of the location that wrote the data acts on them."""
    env.materialize([sales], code_location="B")  # the IO manager stamps location B
    env.instance.wipe_assets([dg.AssetKey("sales")])
    before = env.snapshot()
    for _ in range(2):
        result = env.tick(_sensor("A"), [sales])
        assert env.snapshot() == before, text(result)
        assert json.loads(result.cursor or "{}")["pending_wipes"] == []  # decided: not A's to delete
    result = env.tick(_sensor("B"), [sales])
    path = env.data("sales")
    expected = {env.key(path)} | ({env.key(sidecar_path(path))} if env.kind == "local" else set())
    assert gone(before, env.snapshot()) == expected, text(result)


_GATE: dict[str, threading.Event] = {}


class _PausingIOManager(RemoteStoreIOManager):
    """Publishes, then holds the run before Dagster records the materialization."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        super().handle_output(context, obj)
        _GATE["written"].set()
        assert _GATE["release"].wait(120), "test never released the run"


def test_run_still_writing_when_the_wipe_lands_keeps_its_data(env: Env) -> None:
    old_run = env.materialize([sales])
    env.stamp(env.data("sales"), Provenance(run_id=old_run, asset_key="sales"))
    _GATE.update(written=threading.Event(), release=threading.Event())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = dg.materialize(
                [sales],
                instance=env.instance,
                resources={"io_manager": _PausingIOManager(remote_store=env.resource, store="lake", prefix=PREFIX)},
            )
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    writer = threading.Thread(target=run)
    writer.start()
    try:
        assert _GATE["written"].wait(120)
        runs = env.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        (running,) = runs
        env.stamp(env.data("sales"), Provenance(run_id=running.run_id, asset_key="sales"))
        env.instance.wipe_assets([dg.AssetKey("sales")])
        before = env.snapshot()
        sensor = _sensor(None)
        for _ in range(2):
            result = env.tick(sensor, [sales])
            assert env.snapshot() == before, text(result)
            assert "runs still running" in text(result)
            assert len(json.loads(result.cursor or "{}")["pending_wipes"]) == 1  # not skipped
    finally:
        _GATE["release"].set()
        writer.join(120)
    assert "error" not in outcome and outcome["result"].success
    result = env.tick(sensor, [sales])  # materialized after the wipe: kept, and the wipe is decided
    assert env.snapshot() == before, text(result)
    assert json.loads(result.cursor or "{}")["pending_wipes"] == []


def _wipe_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey, partition_keys: list[str]) -> None:
    """The event ``DagsterInstance.wipe_asset_partitions`` records (OSS storage cannot wipe partitions)."""
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_WIPED.value,
            event_specific_data=AssetWipedData(asset_key=asset, partition_keys=partition_keys),
            job_name=RUNLESS_JOB_NAME,
        ),
        run_id=RUNLESS_RUN_ID,
    )


def test_partition_wipe_deletes_only_those_partitions(env: Env) -> None:
    paths = {}
    for key in ("d1", "d2", "d3"):
        run_id = env.materialize([daily], partition_key=key)
        paths[key] = env.data("daily", key)
        env.stamp(paths[key], Provenance(run_id=run_id, asset_key="daily", partition_key=key))
    before = env.snapshot()
    _wipe_partitions(env.instance, dg.AssetKey("daily"), ["d1", "d3"])
    result = env.tick(_sensor(None), [daily])
    expected = {env.key(paths["d1"]), env.key(paths["d3"])}
    if env.kind == "local":
        expected |= {env.key(sidecar_path(paths["d1"])), env.key(sidecar_path(paths["d3"]))}
    assert gone(before, env.snapshot()) == expected, text(result)
    (observation,) = result.asset_events
    assert observation.metadata["remote_store/deleted_partitions"].value == ["d1", "d3"]


def test_dry_run_reports_the_same_decisions_and_deletes_nothing(env: Env) -> None:
    for key in ("d1", "d2"):
        run_id = env.materialize([daily], partition_key=key)
        env.stamp(env.data("daily", key), Provenance(run_id=run_id, asset_key="daily", partition_key=key))
    env.put(env.data("a_removed"), Provenance(run_id="r", code_location="A", asset_key="a_removed"))
    env.put(env.data("b_live"), Provenance(run_id="r", code_location="B", asset_key="b_live"))
    _wipe_partitions(env.instance, dg.AssetKey("daily"), ["d2"])
    before = env.snapshot()
    options: dict[str, Any] = {"delete_orphans": True}
    dry = env.tick(_sensor("A", name="dry", dry_run=True, **options), [daily])
    assert env.snapshot() == before
    assert text(dry).startswith("[dry run] Would delete"), text(dry)
    again = env.tick(_sensor("A", name="dry", dry_run=True, **options), [daily])  # the cursor did not move
    real = env.tick(_sensor("A", name="real", **options), [daily])

    def paths(result: dg.SensorResult) -> set[str]:
        listed = text(result).split("Paths: ", 1)[1].split(". ", 1)[0]
        return {p.strip() for p in listed.split(",")}

    assert paths(dry) == paths(again) == paths(real)
    assert {env.key(p) for p in paths(real)} == gone(before, env.snapshot())
    assert {env.data("daily", "d2"), env.data("a_removed")} <= paths(real)
    assert env.key(env.data("b_live")) in env.snapshot()


def test_cursor_keeps_undecided_wipes_bounded() -> None:
    assert next_cursor(50, [3, 7]) == WipeCursor(50, (3, 7))
    undecided = list(range(1, MAX_PENDING_WIPES + 6))
    cursor = next_cursor(10_000, undecided)
    assert list(cursor.pending) == undecided[:MAX_PENDING_WIPES]
    assert cursor.after == undecided[MAX_PENDING_WIPES] - 1  # the first that does not fit is read again


@pytest.mark.parametrize("backend_kind", ["local"], indirect=True)
def test_code_location_defaults_to_where_the_sensor_runs(env: Env) -> None:
    """Without ``code_location=``, the sensor is the code location the daemon evaluates it in."""
    from dagster._core.execution.build_resources import wrap_resources_for_execution
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin

    removed = env.put(env.data("a_removed"), Provenance(run_id="r", code_location="A", asset_key="a_removed"))
    env.put(env.data("b_gone"), Provenance(run_id="r", code_location="B", asset_key="b_gone"))
    before = env.snapshot()
    sensor = _sensor(None, name="cleanup", delete_orphans=True)
    defs = dg.Definitions(assets=[a_live], sensors=[sensor], resources={"remote_store": env.resource})
    with dg.SensorEvaluationContext(
        instance_ref=None,
        instance=env.instance,
        repository_def=defs.get_repository_def(),
        resources=wrap_resources_for_execution({"remote_store": env.resource}),
        code_location_origin=RegisteredCodeLocationOrigin("A"),
    ) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    assert gone(before, env.snapshot()) == {env.key(removed), env.key(sidecar_path(removed))}, text(result)


@pytest.mark.parametrize("backend_kind", ["local"], indirect=True)
def test_sidecar_older_than_its_data_is_not_trusted(env: Env) -> None:
    """A data file rewritten after its sidecar (a crash between the two) counts as unstamped."""
    path = env.put(env.data("a_removed"), Provenance(run_id="r", code_location="A", asset_key="a_removed"))
    time.sleep(0.05)
    env.store.write(path, b"rewritten by someone else", overwrite=True)
    before = env.snapshot()
    result = env.tick(_sensor("A", delete_orphans=True), [a_live])
    assert env.snapshot() == before, text(result)
    assert "orphan folders without provenance" in text(result)
