"""Cleanup sensor guarantees that need a fault, a real multipart upload or a backend without times.

* An incomplete upload's age counts from its newest part (real multipart upload on SeaweedFS,
  parts written on both sides of a whole-second boundary).
* The cursor moves only after every deletion succeeded; a failed ``DeleteObjects`` is retried by
  the next tick (the fault is injected at ``tests/_fault_proxy.py``).
* Deleting an object, or aborting an upload, that is already gone is not an error (the proxy
  removes it right before the sensor's request reaches the server).
* A backend without object times (remote-store's ``sql-blob`` on a table without
  ``modified_at``) is treated as new: never old enough to delete by age.

The tick's "now" is injected (``frozen_clock``), so no test races the wall clock: the grace is
an hour, and only the one-second resolution of S3 times is waited for.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import _fault_proxy as fp
import dagster as dg
import pyarrow as pa
import pytest
from conftest import BUCKET

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster import cleanup as cleanup_module
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.io_manager import RemoteStoreIOManager

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from remote_store_dagster.testing import S3Server, SeaweedFSServer

PREFIX = "lake1"
GRACE = timedelta(hours=1)


@contextlib.contextmanager
def frozen_clock(monkeypatch: pytest.MonkeyPatch, at: datetime) -> Iterator[None]:
    """Every cleanup tick inside the block reads ``at`` as ``datetime.now``."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return at.astimezone(tz) if tz is not None else at.replace(tzinfo=None)

    with monkeypatch.context() as patch:
        patch.setattr(cleanup_module, "datetime", Frozen)
        yield


def next_whole_second() -> datetime:
    """Sleep to a whole second at least 0.5 s ahead: S3 times written before it are earlier, after it not."""
    boundary = math.ceil(time.time() + 0.5)
    while time.time() < boundary:
        time.sleep(boundary - time.time() + 0.01)
    return datetime.fromtimestamp(boundary, tz=UTC)


@dg.asset
def sales() -> pa.Table:
    return pa.table({"n": [1, 2, 3], "nonce": [uuid.uuid4().hex] * 3})


def tick(
    resource: RemoteStoreResource, instance: dg.DagsterInstance, sensor: dg.SensorDefinition, cursor: str | None
) -> tuple[dg.SensorResult, str | None]:
    """One evaluation; returns the result and the cursor the context holds afterwards."""
    defs = dg.Definitions(assets=[sales], sensors=[sensor], resources={"remote_store": resource})
    with dg.build_sensor_context(
        instance=instance, resources={"remote_store": resource}, definitions=defs, cursor=cursor
    ) as ctx:
        result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        return result, result.cursor


def text(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def keys(client: Any, prefix: str) -> set[str]:
    found: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found.update(item["Key"] for item in page.get("Contents", []))
    return found


def uploads(client: Any, prefix: str) -> set[str]:
    response = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return {u["UploadId"] for u in response.get("Uploads", []) or []}


@pytest.fixture(params=["seaweedfs"])
def proxied(
    request: pytest.FixtureRequest, unique_root: str
) -> Iterator[tuple[fp.FaultProxy, RemoteStoreResource, Any]]:
    """A store on an S3 server (SeaweedFS unless parametrized) reached through the fault proxy,
    and a direct boto3 client."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    with fp.FaultProxy(server.port) as proxy:
        options = {**server.backend_options(BUCKET), "endpoint_url": proxy.endpoint_url}
        resource = RemoteStoreResource(
            backends={"main": {"type": "s3-pyarrow", "options": options}},
            stores={"lake": {"backend": "main", "root_path": unique_root}},
        )
        yield proxy, resource, server.client()
        resource.close()


# --- upload age ------------------------------------------------------------------------------------


def test_upload_age_counts_from_its_newest_part(
    seaweedfs_server: SeaweedFSServer,
    make_remote_store: Callable[..., RemoteStoreResource],
    unique_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resource = make_remote_store("seaweedfs")
    client = seaweedfs_server.client()
    key = f"{unique_root}/{PREFIX}/sales/data.parquet"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"a" * 1024)
    boundary = next_whole_second()
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2, Body=b"b" * 1024)
    parts = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    assert max(p["LastModified"] for p in parts) >= boundary > min(p["LastModified"] for p in parts), parts
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    try:
        with dg.instance_for_test() as instance:
            # Started and first written more than the grace ago, but still written to within it: kept.
            with frozen_clock(monkeypatch, boundary + GRACE - timedelta(milliseconds=250)):
                result, _ = tick(resource, instance, sensor, None)
            assert uploads(client, unique_root) == {upload_id}, text(result)
            assert text(result).startswith("Nothing to clean up"), text(result)
            # The newest part older than the grace: aborted.
            with frozen_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(seconds=2)):
                result, _ = tick(resource, instance, sensor, None)
            assert uploads(client, unique_root) == set(), text(result)
            assert "aborted 1 incomplete multipart upload (2.0 KiB)" in text(result), text(result)
    finally:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        resource.close()


# --- failed deletes and the cursor -------------------------------------------------------------------


def test_failed_delete_keeps_the_cursor_and_the_next_tick_retries(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource, Any], unique_root: str
) -> None:
    proxy, resource, client = proxied
    io_manager = RemoteStoreIOManager(remote_store=resource, store="lake", prefix=PREFIX)
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX)
    data_key = f"{unique_root}/{PREFIX}/sales/data.parquet"
    with dg.instance_for_test() as instance:
        assert dg.materialize([sales], instance=instance, resources={"io_manager": io_manager}).success
        first, cursor = tick(resource, instance, sensor, None)
        assert text(first).startswith("Nothing to clean up"), text(first)
        time.sleep(1.1)  # S3 times have one-second resolution
        instance.wipe_assets([dg.AssetKey("sales")])
        assert data_key in keys(client, unique_root)

        failing = threading.Event()
        failing.set()
        proxy.rule = lambda request, count: (
            fp.ERROR_500 if failing.is_set() and request.operation == "DeleteObjects" else fp.PASS
        )
        defs = dg.Definitions(assets=[sales], sensors=[sensor], resources={"remote_store": resource})
        with dg.build_sensor_context(
            instance=instance, resources={"remote_store": resource}, definitions=defs, cursor=cursor
        ) as ctx:
            with pytest.raises(Exception, match=r"injected by the test proxy|deletion"):
                sensor(ctx)
            assert ctx.cursor == cursor, "the cursor moved although the delete failed"
        assert ("DeleteObjects", fp.ERROR_500) in proxy.injected()
        assert data_key in keys(client, unique_root)

        # The next tick (same cursor: the failed one stored nothing) deletes the wiped data.
        failing.clear()
        retried, moved = tick(resource, instance, sensor, cursor)
        assert data_key not in keys(client, unique_root), text(retried)
        assert "Deleted 1 object" in text(retried), text(retried)
        assert moved != cursor
        again, _ = tick(resource, instance, sensor, moved)
        assert text(again).startswith("Nothing to clean up"), text(again)


# --- already gone ---------------------------------------------------------------------------------


# moto answers NoSuchUpload to aborting an aborted upload (SeaweedFS does not): both servers.
@pytest.mark.parametrize("proxied", ["moto", "seaweedfs"], indirect=True)
def test_deleting_or_aborting_what_is_already_gone_is_not_an_error(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource, Any], unique_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another cleaner gets there first: the proxy deletes the object / aborts the upload right
    before the sensor's own request reaches the server."""
    proxy, resource, client = proxied
    staging = [f"{unique_root}/{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet" for _ in range(3)]
    for key in staging:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"leftover")
    upload_key = f"{unique_root}/{PREFIX}/sales/data.parquet"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=upload_key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=upload_key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    raced: list[str] = []

    def someone_else_first(request: fp.Request, count: int) -> str:
        if request.operation == "DeleteObjects":
            for key in staging:
                client.delete_object(Bucket=BUCKET, Key=key)
            raced.append("delete")
        elif request.operation == "AbortMultipartUpload":
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=BUCKET, Key=upload_key, UploadId=upload_id)
            raced.append("abort")
        return fp.PASS

    proxy.rule = someone_else_first
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    with dg.instance_for_test() as instance, frozen_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(2)):
        result, _ = tick(resource, instance, sensor, None)
    assert sorted(set(raced)) == ["abort", "delete"], raced
    assert keys(client, f"{unique_root}/") == set()
    assert uploads(client, unique_root) == set()
    assert "Deleted 3 objects" in text(result), text(result)


# --- no object times ------------------------------------------------------------------------------


def _sql_blob_store(path: Path, *, with_times: bool) -> RemoteStoreResource:
    """remote-store's ``sql-blob`` backend on SQLite; without ``modified_at`` it reports no times."""
    db = sqlite3.connect(path)
    columns = "key TEXT PRIMARY KEY, data BLOB NOT NULL, size INTEGER" + (", modified_at REAL" if with_times else "")
    db.execute(f"CREATE TABLE blobs ({columns})")
    db.commit()
    db.close()
    return RemoteStoreResource(
        backends={
            "db": {
                "type": "sql-blob",
                "options": {"url": f"sqlite:///{path}", "table_name": "blobs", "create_table": False},
            }
        },
        stores={"lake": {"backend": "db", "root_path": "root"}},
    )


def test_backend_without_object_times_is_treated_as_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=timedelta(0))
    far_future = datetime.now(UTC) + timedelta(days=3650)
    outcome: dict[bool, list[str]] = {}
    for with_times in (False, True):
        resource = _sql_blob_store(tmp_path / f"times-{with_times}.db", with_times=with_times)
        store = resource.get_store("lake")
        leftover = f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet"
        store.write(leftover, b"leftover")
        times = {f.modified_at.year for f in store.list_files(PREFIX, recursive=True)}
        assert (times == {1}) is not with_times, times  # year 1: remote-store's "unknown"
        with dg.instance_for_test() as instance, frozen_clock(monkeypatch, far_future):
            tick(resource, instance, sensor, None)
        outcome[with_times] = [str(f.path) for f in store.list_files(PREFIX, recursive=True)]
        resource.close()
    assert outcome[False] != [], "an object without a time was deleted by age"
    assert outcome[True] == [], "control: with times, the same leftover is old enough to go"
