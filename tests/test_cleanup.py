"""``build_cleanup_sensor``: every policy on local, s3-pyarrow@moto, @SeaweedFS and @s3rver, and plain s3.

Grace periods are long (an hour) and ticks run on an injected clock
(``_clock``), so a slow tick on a loaded machine cannot turn a young object old.

Each test takes a full listing (path -> sha256 of the bytes) of everything
below the test's store root *and* of a sibling root outside the store
(``<root>-outside``, a string prefix of nothing but sharing one with the
root) before and after a tick: exactly the expected objects are gone, all
others are byte-identical. Noise in every test: another prefix in the same
store (``lake1x``, which a naive string-prefix check would match), objects
outside the store root, files below the prefix that are not in the layout,
and (on S3) stale multipart uploads outside the prefix.
"""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from _clock import frozen_sensor_clock, tick_time, young_boundary
from conftest import PERSISTENT_BACKENDS, S3_BACKENDS, server_for
from dagster import AssetExecutionContext
from remote_store import Store

from remote_store_dagster import RemoteStoreConfigError, RemoteStoreResource
from remote_store_dagster._provenance import SIDECAR_NAME
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.io_manager import RemoteStoreIOManager
from remote_store_dagster.testing import S3rverServer, S3Server

BUCKET = "rsd-test"  # conftest.BUCKET
PREFIX = "lake1"
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")
COLORS = dg.StaticPartitionsDefinition(["red", "green", "blue"])
GRACE = timedelta(hours=1)  # ticks that must see it expire run on an injected clock


def _table(tag: str) -> pa.Table:
    return pa.table({"tag": [tag] * 3, "n": [1, 2, 3], "nonce": [uuid.uuid4().hex] * 3})


@dg.asset
def sales() -> pa.Table:
    return _table("sales")


@dg.asset(partitions_def=DAILY)
def events(context: AssetExecutionContext) -> pa.Table:
    return _table(context.partition_key)


@dg.asset(partitions_def=COLORS)
def colors(context: AssetExecutionContext) -> pa.Table:
    return _table(context.partition_key)


@dg.asset(key=["nested"])
def nested() -> pa.Table:
    return _table("nested")


@dg.asset(key=["nested", "child"])
def nested_child() -> pa.Table:
    return _table("nested/child")


@dg.asset
def retired() -> pa.Table:
    return _table("retired")


CURRENT_ASSETS = [sales, events, colors, nested, nested_child]


# --- listing without the code under test -----------------------------------------------------------


@dataclass
class Env:
    kind: str
    root: str
    resource: RemoteStoreResource
    store: Store
    outside: Store
    instance: dg.DagsterInstance
    local_dir: Path
    client: Any = None  # boto3 client on S3 backends
    server: S3Server | None = None
    multipart: bool = False  # s3-pyarrow: the sensor also aborts stale multipart uploads
    cursor: str | None = None
    results: list[dg.SensorResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # WARNING lines of the sensor's log, every tick

    @property
    def lists_uploads(self) -> bool:
        """False on s3rver: no ListMultipartUploads (NotImplemented), no AbortMultipartUpload (MethodNotAllowed)."""
        return self.multipart and not isinstance(self.server, S3rverServer)

    def snapshot(self) -> dict[str, str]:
        """Every object below ``<root>`` and ``<root>-outside``: path -> sha256."""
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

    def uploads(self) -> set[tuple[str, str]]:
        if not self.multipart:
            return set()
        if isinstance(self.server, S3rverServer):  # read from its data directory
            return {(key, upload_id) for key, upload_id, _, _ in self.server.pending_uploads(BUCKET, self.root)}
        response = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.root)
        return {(u["Key"], u["UploadId"]) for u in response.get("Uploads", [])}

    def put(self, path: str) -> str:
        """Write a small, unique object at store ``path``; returns ``path``."""
        self.store.write(path, f"{path} {uuid.uuid4().hex}".encode(), overwrite=True)
        return path

    def key(self, path: str) -> str:
        """Listing key of a store-relative path."""
        return f"{self.root}/{path}"

    def start_upload(self, key: str) -> str:
        upload_id: str = self.client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        self.client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
        return upload_id

    def defs(self, assets: list[Any], sensors: list[dg.SensorDefinition] | None = None) -> dg.Definitions:
        return dg.Definitions(
            assets=assets,
            sensors=sensors or [],
            resources={
                "remote_store": self.resource,
                "io_manager": RemoteStoreIOManager(remote_store=self.resource, store="lake", prefix=PREFIX),
            },
        )

    def materialize(self, asset: Any, partition_key: str | None = None) -> None:
        result = dg.materialize(
            [asset],
            instance=self.instance,
            partition_key=partition_key,
            resources={"io_manager": RemoteStoreIOManager(remote_store=self.resource, store="lake", prefix=PREFIX)},
        )
        assert result.success

    def tick(
        self, sensor: dg.SensorDefinition, assets: list[Any] | None = None, *, keep_cursor: bool = True
    ) -> dg.SensorResult:
        defs = self.defs(CURRENT_ASSETS if assets is None else assets, [sensor])
        with dg.build_sensor_context(
            instance=self.instance,
            resources={"remote_store": self.resource},
            definitions=defs,
            cursor=self.cursor,
        ) as ctx:
            ctx.log.addHandler(_WarningLines(self.warnings))  # an InstigationLogger: not on the root logger
            result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        if keep_cursor:
            self.cursor = result.cursor
        self.results.append(result)
        return result


class _WarningLines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def text(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def reported_paths(result: dg.SensorResult) -> set[str]:
    """The store paths a tick text lists (tests keep them under the sample size)."""
    message = text(result)
    assert "(+" not in message, message
    listed = message.split("Paths: ", 1)[1].split(". ", 1)[0].rstrip(".")
    return {p.strip() for p in listed.split(",") if p.strip()}


@pytest.fixture(params=PERSISTENT_BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env(
    backend_kind: str,
    remote_store: RemoteStoreResource,
    make_remote_store: Callable[..., RemoteStoreResource],
    unique_root: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Env]:
    outside_resource = make_remote_store(backend_kind, root_path=f"{unique_root}-outside")
    client = server = None
    if backend_kind != "local":
        server = server_for(request, backend_kind)
        client = server.client()
    with dg.instance_for_test() as instance:
        yield Env(
            kind=backend_kind,
            root=unique_root,
            resource=remote_store,
            store=remote_store.get_store("lake"),
            outside=outside_resource.get_store("lake"),
            instance=instance,
            local_dir=tmp_path / "local-backend",
            client=client,
            server=server,
            multipart=backend_kind in S3_BACKENDS,
        )
    outside_resource.close()


def add_noise(env: Env) -> None:
    """Objects no policy may touch (created before every wait used here)."""
    for path in (
        "lake1x/_staging/0123.data.parquet",
        "lake1x/sales/data.parquet",
        "lake1x/retired/data.parquet",
        "other/events/partition=2024-01-01/data.parquet",
        f"{PREFIX}/notes/readme.txt",
        f"{PREFIX}/readme.txt",
        f"{PREFIX}/_runs/run1/step/result/data.parquet",
    ):
        env.put(path)
    for path in (
        f"{PREFIX}/_staging/0123.data.parquet",
        f"{PREFIX}/sales/data.parquet",
        f"{PREFIX}/retired/data.parquet",
        f"{PREFIX}/events/partition=2024-01-01/data.parquet",
    ):
        env.outside.write(path, path.encode(), overwrite=True)
    if env.multipart:
        env.start_upload(f"{env.root}/lake1x/sales/data.parquet")
        env.start_upload(f"{env.root}-outside/{PREFIX}/sales/data.parquet")


def assert_only_gone(env: Env, before: dict[str, str], after: dict[str, str], gone: set[str], msg: str = "") -> None:
    """Exactly ``gone`` (store paths) disappeared; every other object is byte-identical."""
    keys = {env.key(p) for p in gone}
    assert set(before) - set(after) == keys, msg
    assert {k: v for k, v in before.items() if k not in keys} == {k: after[k] for k in before if k not in keys}, msg


# --- leftovers ------------------------------------------------------------------------------------


def test_leftovers_older_than_grace_are_reclaimed_younger_survive(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    add_noise(env)
    env.put(f"{PREFIX}/sales/data.parquet")
    old_staging = env.put(f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet")
    old_key = env.key(f"{PREFIX}/events/partition=2024-01-02/data.parquet")
    old_upload = env.start_upload(old_key) if env.multipart else None
    boundary = young_boundary()
    before, uploads_before = env.snapshot(), env.uploads()
    # In flight right now: younger than the grace.
    young_staging = env.put(f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet")
    young_key = env.key(f"{PREFIX}/sales/data.parquet")
    young_upload = env.start_upload(young_key) if env.multipart else None

    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    assert text(env.tick(sensor)).startswith("Nothing to clean up")  # real clock: all younger than an hour
    with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
        result = env.tick(sensor)

    after = env.snapshot()
    assert env.key(young_staging) in after
    del after[env.key(young_staging)]
    assert_only_gone(env, before, after, {old_staging}, text(result))
    if env.lists_uploads:
        assert uploads_before - env.uploads() == {(old_key, old_upload)}
        assert env.uploads() - uploads_before == {(young_key, young_upload)}
        assert "aborted 1 incomplete multipart upload (1.0 KiB)" in text(result)
        assert not any("multipart" in w for w in env.warnings), env.warnings
    elif isinstance(env.server, S3rverServer):  # cannot see uploads: cleans objects, leaves uploads
        assert env.uploads() == uploads_before | {(young_key, young_upload)}
        assert "multipart" not in text(result)
        assert any("cannot list incomplete multipart uploads" in w for w in env.warnings), env.warnings
    assert "Deleted 1 object " in text(result) and old_staging in text(result)
    # Idempotent: the next tick at the same instant finds nothing of the kind (the young ones stay young).
    with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
        again = env.tick(sensor)
    assert text(again).startswith("Nothing to clean up"), text(again)


_PRODUCER = textwrap.dedent(
    """
    import io, os, time

    class Producer(io.RawIOBase):
        \"\"\"A streaming producer: 3 chunks of 8 MiB (more than one upload part), then it fails.\"\"\"

        def __init__(self, on_end):
            self.left, self.on_end = 3, on_end

        def readable(self):
            return True

        def read(self, size=-1):
            if self.left == 0:
                self.on_end()
            self.left -= 1
            return os.urandom(8 * 1024 * 1024)
    """
)
exec(_PRODUCER)  # the same producer in this process and in the killed writer

_WRITER = _PRODUCER + textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    from remote_store_dagster import RemoteStoreResource
    from remote_store_dagster.io_manager import RemoteStoreIOManager

    cfg = json.loads(sys.argv[1])
    resource = RemoteStoreResource(**cfg["resource"])

    def stall():
        open(cfg["ready"], "w").close()
        time.sleep(600)  # killed here, mid-upload

    @dg.asset
    def sales():
        return Producer(stall)

    dg.materialize([sales], resources={"io_manager": RemoteStoreIOManager(
        remote_store=resource, store="lake", prefix=cfg["prefix"])})
    """
)


def _fail() -> None:
    raise RuntimeError("producer failed mid-stream")


@dg.asset(name="sales")
def failing_sales() -> Any:
    return Producer(_fail)  # type: ignore[name-defined]  # noqa: F821 - defined by exec above


def _uploaded_parts(env: Env, key: str) -> int:
    uploads = [u for u in env.uploads() if u[0] == key]
    if not uploads:
        return 0
    return len(env.client.list_parts(Bucket=BUCKET, Key=key, UploadId=uploads[0][1]).get("Parts", []))


@pytest.mark.parametrize("backend_kind", ["local", "seaweedfs"], indirect=True)  # moto: slow, same protocol
def test_killed_writer_leftover_reclaimed_after_grace_not_before(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_noise(env)
    env.materialize(sales)
    good = env.snapshot()[env.key(f"{PREFIX}/sales/data.parquet")]

    # A producer that raises mid-stream (after more than one part): the IO manager itself
    # aborts/removes the partial write; the sensor finds nothing of it and the good data stays.
    result = dg.materialize(
        [failing_sales],
        instance=env.instance,
        raise_on_error=False,
        resources={"io_manager": RemoteStoreIOManager(remote_store=env.resource, store="lake", prefix=PREFIX)},
    )
    assert not result.success
    before_kill = env.snapshot()
    assert before_kill[env.key(f"{PREFIX}/sales/data.parquet")] == good

    # A writer killed mid-stream leaves an incomplete upload (S3) or a staging file (other backends).
    ready = tmp_path / "ready"
    cfg = {
        "resource": {
            "backends": {k: v.model_dump() for k, v in env.resource.backends.items()},
            "stores": {k: v.model_dump() for k, v in env.resource.stores.items()},
        },
        "prefix": PREFIX,
        "ready": str(ready),
    }
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, json.dumps(cfg)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer not ready"
            time.sleep(0.1)
        # Parts upload in background threads: kill only once one (16 MiB of the 24) has arrived.
        while env.multipart and _uploaded_parts(env, env.key(f"{PREFIX}/sales/data.bin")) < 1:
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "no parts uploaded"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before, uploads_before = env.snapshot(), env.uploads()
    if env.multipart:
        ours = {u for u in uploads_before if u[0] == env.key(f"{PREFIX}/sales/data.bin")}
        assert len(ours) == 1
        key, upload_id = next(iter(ours))
        parts = env.client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", [])
        assert len(parts) >= 1, parts
        leftovers: set[str] = set()
    else:
        leftovers = {k for k in set(before) - set(before_kill) if f"/{PREFIX}/_staging/" in k}
        assert len(leftovers) == 1, sorted(set(before) - set(before_kill))
    assert before[env.key(f"{PREFIX}/sales/data.parquet")] == good

    # Not before the grace: it is younger than the grace on the real clock.
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    assert text(env.tick(sensor)).startswith("Nothing to clean up")
    assert env.snapshot() == before and env.uploads() == uploads_before

    # After the grace (the clock moved on by the grace and a minute): reclaimed, and nothing else.
    with frozen_sensor_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(minutes=1)):
        result = env.tick(sensor)
    after = env.snapshot()
    assert set(before) - set(after) == leftovers, text(result)
    assert all(after[k] == v for k, v in before.items() if k not in leftovers)
    if env.multipart:
        assert uploads_before - env.uploads() == ours
    assert after[env.key(f"{PREFIX}/sales/data.parquet")] == good


# --- wiped assets ---------------------------------------------------------------------------------


def test_wiped_assets_deleted_rematerialized_kept(env: Env) -> None:
    add_noise(env)
    result = dg.materialize(
        [sales, nested, nested_child],
        instance=env.instance,
        resources={"io_manager": RemoteStoreIOManager(remote_store=env.resource, store="lake", prefix=PREFIX)},
    )
    assert result.success
    events_paths = [env.put(f"{PREFIX}/events/partition={d}/data.parquet") for d in ("2024-01-01", "2024-01-03")]
    colors_paths = [env.put(f"{PREFIX}/colors/partition={c}/data.parquet") for c in ("red", "blue")]
    env.materialize(events, "2024-01-02")
    before = env.snapshot()
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX)
    assert text(env.tick(sensor)).startswith("Nothing to clean up")  # nothing wiped yet
    assert env.snapshot() == before

    time.sleep(1.1)  # S3 object times have one-second resolution
    env.instance.wipe_assets([dg.AssetKey(["nested"]), dg.AssetKey("events"), dg.AssetKey("sales")])
    env.instance.wipe_assets([dg.AssetKey("colors")])
    env.materialize(sales)  # materialized again after the wipe: kept
    env.materialize(events, "2024-01-02")  # one partition again: kept, the others go
    before = env.snapshot()
    # delete_wiped=False leaves wiped data alone (and keeps its own cursor)
    env.tick(build_cleanup_sensor(store="lake", prefix=PREFIX, delete_wiped=False), keep_cursor=False)
    assert env.snapshot() == before

    result = env.tick(sensor)
    after = env.snapshot()
    gone = {f"{PREFIX}/nested/data.parquet", *events_paths, *colors_paths}
    # Backends without object metadata keep provenance in a sidecar next to the data: it goes with it.
    gone |= {p for p in (f"{PREFIX}/nested/{SIDECAR_NAME}",) if env.key(p) in before}
    assert_only_gone(env, before, after, gone, text(result))
    assert env.key(f"{PREFIX}/nested/child/data.parquet") in after  # a nested asset's folder is not the parent's
    observed = {tuple(e.asset_key.path): e for e in result.asset_events}
    assert set(observed) == {("nested",), ("events",), ("colors",)}
    assert observed[("events",)].metadata["remote_store/deleted_objects"].value == 2
    assert observed[("events",)].metadata["remote_store/deleted_partitions"].value == ["2024-01-01", "2024-01-03"]
    assert observed[("colors",)].metadata["remote_store/policies"].value == "wiped: 2"
    assert f"wiped: {len(gone)} objects" in text(result)
    if env.kind == "local":  # emptied folders do not linger on disk
        assert not (env.local_dir / env.root / PREFIX / "colors").exists()

    # The cursor moved past the wipes: nothing more.
    assert text(env.tick(sensor)).startswith("Nothing to clean up")
    assert env.snapshot() == after
    # A crash before the cursor was stored replays the wipes: the re-materializations survive.
    env.cursor = None
    env.tick(sensor)
    assert env.snapshot() == after


# --- orphans --------------------------------------------------------------------------------------


def test_orphans_opt_in_and_grace(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    add_noise(env)
    env.put(f"{PREFIX}/sales/data.parquet")
    orphan = {env.put(f"{PREFIX}/retired/data.parquet"), env.put(f"{PREFIX}/retired/color=red/data.parquet")}
    active = env.put(f"{PREFIX}/renamed/day=1/data.parquet")  # orphan folder that is still written to
    env.put(f"{PREFIX}/foreign/notes.txt")  # no data file: not an asset folder
    before = env.snapshot()

    env.tick(build_cleanup_sensor(store="lake", prefix=PREFIX))  # off by default
    env.tick(build_cleanup_sensor(store="lake", prefix=PREFIX, delete_orphans=True))  # default grace: 1 day
    assert env.snapshot() == before

    boundary = young_boundary()
    before = env.snapshot()
    fresh = env.put(f"{PREFIX}/renamed/day=2/data.parquet")
    with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
        # Written without provenance (env.put): deleted only with the explicit opt-in
        # (tests/test_cleanup_provenance.py covers stamped data and other code locations).
        kept = env.tick(build_cleanup_sensor(store="lake", prefix=PREFIX, delete_orphans=True, orphan_grace=GRACE))
        assert env.snapshot() == {**before, env.key(fresh): env.snapshot()[env.key(fresh)]}, text(kept)
        result = env.tick(
            build_cleanup_sensor(
                store="lake", prefix=PREFIX, delete_orphans=True, orphan_grace=GRACE, delete_unstamped_orphans=True
            )
        )
    after = env.snapshot()
    assert env.key(fresh) in after and env.key(active) in after
    del after[env.key(fresh)]
    assert_only_gone(env, before, after, orphan, text(result))
    assert result.asset_events == []  # no observation resurrects an asset the location does not define
    assert "orphan: 2 objects" in text(result)


# --- keep_last_partitions -------------------------------------------------------------------------


def test_keep_last_partitions_by_time_and_by_last_modified(env: Env) -> None:
    add_noise(env)
    days = {d: env.put(f"{PREFIX}/events/partition={d}/data.parquet") for d in ("2024-01-04", "2024-01-01")}
    env.materialize(events, "2024-01-03")  # written out of time order
    days["2024-01-02"] = env.put(f"{PREFIX}/events/partition=2024-01-02/data.parquet")
    red = env.put(f"{PREFIX}/colors/partition=red/data.parquet")
    time.sleep(1.05)  # last-modified order must be visible with one-second resolution
    env.put(f"{PREFIX}/colors/partition=blue/data.parquet")
    env.put(f"{PREFIX}/sales/data.parquet")
    before = env.snapshot()

    sensor = build_cleanup_sensor(
        store="lake", prefix=PREFIX, keep_last_partitions={"events": 2, "colors": 1}, delete_wiped=False
    )
    result = env.tick(sensor)
    after = env.snapshot()
    assert_only_gone(env, before, after, {days["2024-01-01"], days["2024-01-02"], red}, text(result))
    observed = {tuple(e.asset_key.path): e.metadata for e in result.asset_events}
    assert observed[("events",)]["remote_store/deleted_partitions"].value == ["2024-01-01", "2024-01-02"]
    assert observed[("colors",)]["remote_store/deleted_partitions"].value == ["red"]
    assert "retention: 3 objects" in text(result)
    env.tick(sensor)
    assert env.snapshot() == after  # steady state


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_deletes_nothing_and_reports_what_a_real_run_deletes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    add_noise(env)
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        env.put(f"{PREFIX}/events/partition={day}/data.parquet")
    env.put(f"{PREFIX}/nested/data.parquet")
    env.put(f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet")
    upload = env.start_upload(env.key(f"{PREFIX}/sales/data.parquet")) if env.multipart else None
    later = frozen_sensor_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(minutes=1))  # leftovers are old
    time.sleep(1.1)  # S3 object times have one-second resolution: written before the wipe's second
    env.instance.wipe_assets([dg.AssetKey(["nested"])])
    before, uploads_before = env.snapshot(), env.uploads()
    options: dict[str, Any] = {"store": "lake", "prefix": PREFIX, "leftover_grace": GRACE}
    options["keep_last_partitions"] = {"events": 1}

    with later:
        dry = env.tick(build_cleanup_sensor(**options, dry_run=True))
        assert text(dry).startswith("[dry run] Would delete 4 objects"), text(dry)
        assert env.snapshot() == before and env.uploads() == uploads_before
        assert dry.asset_events and all(e.metadata["remote_store/dry_run"].value is True for e in dry.asset_events)
        again = env.tick(build_cleanup_sensor(**options, dry_run=True))  # the dry run did not move the cursor
        assert reported_paths(again) == reported_paths(dry)

        real = env.tick(build_cleanup_sensor(**options))
    after = env.snapshot()
    would = reported_paths(dry)
    assert reported_paths(real) == would
    if env.lists_uploads:
        assert uploads_before - env.uploads() == {(env.key(f"{PREFIX}/sales/data.parquet"), upload)}
        would -= {f"{PREFIX}/sales/data.parquet"}  # the upload, not an object
    elif isinstance(env.server, S3rverServer):  # uploads neither listed nor aborted
        assert env.uploads() == uploads_before
    assert len(would) == 4
    assert_only_gone(env, before, after, would, text(real))


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["local"], indirect=True)
def test_clear_errors(env: Env) -> None:
    with pytest.raises(RemoteStoreConfigError, match="keep_last_partitions"):
        build_cleanup_sensor(store="lake", keep_last_partitions={"events": 0})
    with pytest.raises(RemoteStoreConfigError, match="prefix"):
        build_cleanup_sensor(store="lake", prefix="../up")
    with pytest.raises(RemoteStoreConfigError, match="leftover_grace"):
        build_cleanup_sensor(store="lake", leftover_grace=timedelta(seconds=-1))

    with pytest.raises(RemoteStoreConfigError, match=r"store 'nope' is not defined"):
        env.tick(build_cleanup_sensor(store="nope"))
    with pytest.raises(RemoteStoreConfigError, match=r"asset 'missing/asset'.*does not define"):
        env.tick(build_cleanup_sensor(store="lake", keep_last_partitions={"missing/asset": 3}))
    with pytest.raises(RemoteStoreConfigError, match=r"'sales', which is not partitioned"):
        env.tick(build_cleanup_sensor(store="lake", keep_last_partitions={"sales": 3}))

    sensor = build_cleanup_sensor(store="lake")
    with (
        pytest.raises(dg.DagsterInvalidDefinitionError, match="'remote_store' required by sensor"),
        dg.build_sensor_context(instance=env.instance, definitions=dg.Definitions(sensors=[sensor])) as ctx,
    ):
        sensor(ctx)
    with (
        pytest.raises(RemoteStoreConfigError, match="needs a RemoteStoreResource"),
        dg.build_sensor_context(instance=env.instance, resources={"remote_store": "not a resource"}) as ctx,
    ):
        sensor(ctx)

    read_only = RemoteStoreResource(
        backends={"web": {"type": "http", "options": {"base_url": "http://127.0.0.1:9"}}},
        stores={"lake": {"backend": "web"}},
    )
    with (
        pytest.raises(RemoteStoreConfigError, match=r"cannot .*(list|delete)"),
        dg.build_sensor_context(instance=env.instance, resources={"remote_store": read_only}) as ctx,
    ):
        sensor(ctx)


# --- layout parsing and multi-partitions ----------------------------------------------------------


def test_no_key_escapes_its_folder() -> None:
    from remote_store_dagster import _layout
    from remote_store_dagster.cleanup.plan import StoredObject, locate

    now = datetime.now(UTC)
    odd = ["a/b", "x=y", "..", ".", "_staging", "ünï cödé", "%2F", "k=v/../../etc"]
    for key in odd:
        loc = _layout.partition_location(PREFIX, ["a", "b=c", key], {"day": key, "z": key})
        located = locate(PREFIX, StoredObject(loc.data_path("parquet"), 1, now))
        assert located.asset == ("a", "b=c", key), loc
        assert located.partition == (("day", key), ("z", key))
        assert located.is_data_file and not located.top_reserved
        assert located.partition_key == f"{key}|{key}"
    staged = locate(PREFIX, StoredObject(_layout.staging_path(PREFIX, "tok", "a/data.parquet"), 1, now))
    assert staged.top_reserved and staged.asset is None
    stray = locate(PREFIX, StoredObject(f"{PREFIX}/a/x=1/b/data.parquet", 1, now))  # not our layout
    assert stray.asset is None


MULTI = dg.MultiPartitionsDefinition({"date": DAILY, "color": COLORS})


@dg.asset(partitions_def=MULTI)
def by_color_and_day() -> pa.Table:
    return _table("multi")


@pytest.mark.parametrize("backend_kind", ["local"], indirect=True)
def test_keep_last_multi_partitions_by_time_dimension(env: Env) -> None:
    from remote_store_dagster import _layout

    paths = {}
    for day in ("2024-01-03", "2024-01-01", "2024-01-02"):
        for color in ("red", "blue"):
            folder = _layout.partition_location(PREFIX, ["by_color_and_day"], {"color": color, "date": day})
            paths[(color, day)] = env.put(folder.data_path("parquet"))
    before = env.snapshot()
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, keep_last_partitions={"by_color_and_day": 4})
    result = env.tick(sensor, [*CURRENT_ASSETS, by_color_and_day])
    gone = {paths[("red", "2024-01-01")], paths[("blue", "2024-01-01")]}
    assert_only_gone(env, before, env.snapshot(), gone, text(result))
    (observation,) = result.asset_events
    assert observation.metadata["remote_store/deleted_partitions"].value == ["blue|2024-01-01", "red|2024-01-01"]


# --- one place for storage config -----------------------------------------------------------------


def test_the_sensor_takes_store_prefix_and_resource_from_the_io_manager(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``io_manager=``: nothing to match by hand, no resource key to bind; a custom key works too."""
    env.put(f"{PREFIX}/sales/data.parquet")
    old_staging = env.put(f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet")
    outside_prefix = env.put(f"other/_staging/{uuid.uuid4().hex}.data.parquet")
    boundary = young_boundary()
    io_manager = RemoteStoreIOManager(remote_store=env.resource, store="lake", prefix=PREFIX)
    from_io_manager = build_cleanup_sensor("from_io_manager", io_manager=io_manager, leftover_grace=GRACE)
    with (
        frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)),
        dg.build_sensor_context(instance=env.instance) as ctx,  # binds no resource at all
    ):
        result = from_io_manager(ctx)
    assert isinstance(result, dg.SensorResult)
    assert "leftover: 1 object" in text(result) and f"below {PREFIX}/" in text(result)
    remaining = env.snapshot()
    assert env.key(old_staging) not in remaining and env.key(outside_prefix) in remaining

    custom_key = build_cleanup_sensor("custom_key", store="lake", prefix="other", resource_key="lake_store")
    with (
        frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)),
        dg.build_sensor_context(instance=env.instance, resources={"lake_store": env.resource}) as ctx,
    ):
        result = custom_key(ctx)
    assert isinstance(result, dg.SensorResult) and "leftover: 1 object" in text(result)
    assert env.key(outside_prefix) not in env.snapshot()
