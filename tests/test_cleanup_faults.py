"""Cleanup sensor guarantees that need a fault, a clock or an unusual backend to show.

* an incomplete upload's age counts from its newest part (real parts at different times, SeaweedFS);
* the cursor moves only after every deletion succeeded; a failed ``DeleteObjects`` is retried on
  the next tick (fault injected by ``_fault_proxy`` between the sensor and SeaweedFS; per-key
  ``Errors`` in a 200 answer from a moto bucket policy);
* deleting an object, or aborting an upload, that is already gone is not an error (a racing
  delete/abort, done by the proxy; moto answers NoSuchUpload, SeaweedFS does not);
* a backend without object times (remote-store's ``sql-blob`` on a key/data-only table) is treated
  as new: nothing on it is ever old enough to delete by age;
* ``memory``: one tick within the registry that holds the data (a memory store lives as long as
  one registry).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import _fault_proxy as fp
import dagster as dg
import pytest
from _clock import frozen_sensor_clock, tick_time, young_boundary
from conftest import BUCKET, MEMORY, PLAIN_S3, server_for

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster._errors import RemoteStoreIOError
from remote_store_dagster.cleanup import build_cleanup_sensor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from remote_store_dagster.testing import S3Server, SeaweedFSServer

PREFIX = "lake1"
GRACE = timedelta(hours=1)


@dg.asset
def sales() -> None: ...


@dg.asset
def events() -> None: ...


ASSETS = [sales, events]


def text(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, resource: RemoteStoreResource, cursor: str | None
) -> dg.SensorResult:
    defs = dg.Definitions(assets=ASSETS, sensors=[sensor])
    with dg.build_sensor_context(
        instance=instance, resources={"remote_store": resource}, definitions=defs, cursor=cursor
    ) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def keys(client: Any, root: str) -> set[str]:
    found: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{root}/"):
        found.update(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    return found


def stage_a_wiped_asset(client: Any, root: str, instance: dg.DagsterInstance) -> tuple[set[str], set[str]]:
    """Objects of ``sales`` (then wiped) and ``events`` (kept) under ``root``: (wiped keys, kept keys)."""
    wiped_keys = {f"{root}/{PREFIX}/sales/{name}" for name in ("data.parquet", "_meta/x.json")}
    kept_keys = {f"{root}/{PREFIX}/events/data.parquet"}
    for key in wiped_keys | kept_keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    time.sleep(1.1)  # S3 object times have one-second resolution: written before the wipe's second
    instance.wipe_assets([dg.AssetKey("sales")])
    return wiped_keys, kept_keys


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def proxied_resource(kind: str, server: S3Server, proxy: fp.FaultProxy, root: str) -> RemoteStoreResource:
    options = {**server.backend_options(BUCKET), "endpoint_url": proxy.endpoint_url}
    # One attempt per request: an injected 500 is not retried away inside botocore.
    options["client_options"] = {"config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}}
    return RemoteStoreResource(
        backends={"main": {"type": "s3" if kind == PLAIN_S3 else "s3-pyarrow", "options": options}},
        stores={"lake": {"backend": "main", "root_path": root}},
    )


# --- upload age -----------------------------------------------------------------------------------


def test_upload_age_counts_from_its_newest_part(
    seaweedfs_server: SeaweedFSServer,
    make_remote_store: Callable[..., RemoteStoreResource],
    unique_root: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = seaweedfs_server.client()
    resource = make_remote_store("seaweedfs")
    key = f"{unique_root}/{PREFIX}/sales/data.parquet"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = b"x" * (5 * 1024 * 1024)
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=part)
    boundary = young_boundary()
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2, Body=part)  # still writing
    parts = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    initiated = next(
        u["Initiated"]
        for u in client.list_multipart_uploads(Bucket=BUCKET, Prefix=key)["Uploads"]
        if u["UploadId"] == upload_id
    )
    newest = max(p["LastModified"] for p in parts)
    assert initiated < boundary <= newest, (initiated, boundary, parts)  # the server really shows the gap

    def pending() -> set[str]:
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])}

    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE, delete_wiped=False)
    try:
        # Started more than the grace ago, but its last part is younger: a live writer, kept.
        with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
            kept = tick(sensor, instance, resource, None)
        assert upload_id in pending(), text(kept)
        assert text(kept).startswith("Nothing to clean up"), text(kept)
        # Once its newest part is older than the grace: aborted.
        with frozen_sensor_clock(monkeypatch, newest + GRACE + timedelta(seconds=1)):
            aborted = tick(sensor, instance, resource, None)
        assert upload_id not in pending(), text(aborted)
        assert "aborted 1 incomplete multipart upload (10.0 MiB)" in text(aborted)
    finally:
        if upload_id in pending():
            client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        resource.close()


# --- failed deletes and the cursor ----------------------------------------------------------------


# s3-pyarrow: one DeleteObjects request fails; plain s3: each DeleteObject fails (collected per path).
@pytest.mark.parametrize("kind", ["seaweedfs", PLAIN_S3])
def test_failed_delete_keeps_the_cursor_and_is_retried_next_tick(
    kind: str, seaweedfs_server: SeaweedFSServer, unique_root: str, instance: dg.DagsterInstance
) -> None:
    client = seaweedfs_server.client()
    failing = threading.Event()
    failing.set()
    deletes = ("DeleteObjects", "DELETE")

    def rule(request: fp.Request, count: int) -> str:
        return fp.ERROR_500 if failing.is_set() and request.operation in deletes else fp.PASS

    wiped_keys, kept_keys = stage_a_wiped_asset(client, unique_root, instance)
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX)
    with fp.FaultProxy(seaweedfs_server.port, rule=rule) as proxy:
        resource = proxied_resource(kind, seaweedfs_server, proxy, unique_root)
        try:
            cursor: str | None = None
            failure = ""
            try:
                result = tick(sensor, instance, resource, cursor)
            except (RemoteStoreIOError, OSError) as exc:
                # Per-key errors are collected (RemoteStoreIOError); a failed request surfaces as is.
                failure = str(exc)
            else:  # a tick that swallowed the failure must at least not move the cursor past the wipe
                assert result.cursor == cursor, text(result)
                pytest.fail(f"a failed DeleteObjects was reported as success: {text(result)}")
            assert "injected by the test proxy" in failure or "InternalError" in failure, failure
            assert {op for op, _ in proxy.injected()} & set(deletes)
            assert keys(client, unique_root) == wiped_keys | kept_keys  # nothing deleted

            failing.clear()  # the server recovers: the next tick (same cursor) retries the wipe
            retried = tick(sensor, instance, resource, cursor)
            assert keys(client, unique_root) == kept_keys, text(retried)
            assert "Deleted 2 objects" in text(retried)
            done = tick(sensor, instance, resource, retried.cursor)
            assert text(done).startswith("Nothing to clean up"), text(done)
        finally:
            resource.close()


def test_per_key_delete_errors_keep_the_cursor_and_are_retried_next_tick(
    moto_server: S3Server, unique_root: str, instance: dg.DagsterInstance
) -> None:
    """``DeleteObjects`` answers 200 with per-key ``Errors`` (here: a bucket policy denying
    ``s3:DeleteObject`` below the wiped asset, which moto evaluates per key): the tick fails naming
    the key, the cursor stays, and the next tick retries once the policy is gone."""
    import json

    client = moto_server.client()
    wiped_keys, kept_keys = stage_a_wiped_asset(client, unique_root, instance)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/{unique_root}/{PREFIX}/sales/*",
            }
        ],
    }
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX)
    resource = RemoteStoreResource(
        backends={"main": {"type": "s3-pyarrow", "options": moto_server.backend_options(BUCKET)}},
        stores={"lake": {"backend": "main", "root_path": unique_root}},
    )
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(deny))
    try:
        cursor: str | None = None
        with pytest.raises(RemoteStoreIOError) as failed:
            result = tick(sensor, instance, resource, cursor)
            pytest.fail(f"per-key delete errors were reported as success: {text(result)}")
        assert "AccessDenied" in str(failed.value) and f"{PREFIX}/sales/data.parquet" in str(failed.value)
        assert keys(client, unique_root) == wiped_keys | kept_keys  # nothing deleted

        client.delete_bucket_policy(Bucket=BUCKET)  # the denial is lifted: the next tick (same cursor) retries
        retried = tick(sensor, instance, resource, cursor)
        assert keys(client, unique_root) == kept_keys, text(retried)
        assert "Deleted 2 objects" in text(retried)
    finally:
        client.delete_bucket_policy(Bucket=BUCKET)
        resource.close()


# moto answers NoSuchUpload to aborting an aborted upload (SeaweedFS does not): both servers.
@pytest.mark.parametrize("kind", ["moto", "seaweedfs", PLAIN_S3])
def test_deleting_or_aborting_what_is_already_gone_is_not_an_error(
    kind: str,
    request: pytest.FixtureRequest,
    unique_root: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another cleaner gets there first: right before the sensor's own request reaches the server,
    the proxy deletes one leftover (and, on s3-pyarrow, aborts the stale upload) directly."""
    server = server_for(request, kind)
    client = server.client()
    leftovers = {f"{unique_root}/{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet" for _ in range(3)}
    for key in leftovers:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"partial")
    racing = sorted(leftovers)[0]
    upload_key = f"{unique_root}/{PREFIX}/sales/data.parquet"
    upload_id = None
    if kind != PLAIN_S3:  # only s3-pyarrow's cleanup sees multipart uploads
        upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=upload_key)["UploadId"]
        client.upload_part(Bucket=BUCKET, Key=upload_key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    raced: set[str] = set()

    def rule(req: fp.Request, count: int) -> str:
        deleting = req.operation == "DeleteObjects" or (req.method in ("HEAD", "DELETE") and req.path.endswith(racing))
        if deleting and "delete" not in raced:
            client.delete_object(Bucket=BUCKET, Key=racing)  # straight to the server, not through the proxy
            raced.add("delete")
        if req.operation == "AbortMultipartUpload" and "abort" not in raced:
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload_key, UploadId=upload_id)
            raced.add("abort")
        return fp.PASS

    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    with fp.FaultProxy(server.port, rule=rule) as proxy:
        resource = proxied_resource(kind, server, proxy, unique_root)
        try:
            with frozen_sensor_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(minutes=1)):
                result = tick(sensor, instance, resource, None)
        finally:
            resource.close()
    assert raced == ({"delete"} if kind == PLAIN_S3 else {"delete", "abort"}), raced
    assert "Deleted 3 objects" in text(result), text(result)
    assert keys(client, unique_root) == set()
    assert not client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{unique_root}/").get("Uploads")


# --- a backend without object times ---------------------------------------------------------------


def test_backend_without_object_times_treats_everything_as_new(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remote-store's ``sql-blob`` on a table with only ``key`` and ``data`` reports no times."""
    database = tmp_path / "objects.sqlite"
    with sqlite3.connect(database) as con:
        con.execute("create table objects (key text primary key, data blob not null)")
    resource = RemoteStoreResource(
        backends={
            "db": {
                "type": "sql-blob",
                "options": {"url": f"sqlite:///{database}", "table_name": "objects", "create_table": False},
            }
        },
        stores={"lake": {"backend": "db"}},
    )
    store = resource.get_store("lake")
    paths = [f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet", f"{PREFIX}/retired/data.parquet"]
    for path in paths:
        store.write(path, b"bytes")
    infos = list(store.list_files(PREFIX, recursive=True))
    assert {i.modified_at.year for i in infos} == {1}, infos  # really no times: datetime.min
    sensor = build_cleanup_sensor(
        store="lake", prefix=PREFIX, leftover_grace=timedelta(0), delete_orphans=True, orphan_grace=timedelta(0)
    )
    try:
        with frozen_sensor_clock(monkeypatch, datetime.now(UTC) + timedelta(days=3650)):
            result = tick(sensor, instance, resource, None)
        assert text(result).startswith("Nothing to clean up"), text(result)
        assert sorted(str(i.path) for i in store.list_files(PREFIX, recursive=True)) == sorted(paths)
    finally:
        resource.close()


# --- memory: one registry -------------------------------------------------------------------------


def test_memory_store_cleaned_within_one_registry(
    make_remote_store: Callable[..., RemoteStoreResource], instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is written through the sensor context's own resource, so the tick sees it."""
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    dry = build_cleanup_sensor("dry", store="lake", prefix=PREFIX, leftover_grace=GRACE, dry_run=True)
    defs = dg.Definitions(assets=ASSETS, sensors=[sensor, dry])
    with dg.build_sensor_context(
        instance=instance, resources={"remote_store": make_remote_store(MEMORY)}, definitions=defs
    ) as ctx:
        store = ctx.resources.remote_store.get_store("lake")
        old = f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet"
        wiped = f"{PREFIX}/sales/data.parquet"
        for path in (old, wiped, f"{PREFIX}/events/data.parquet", f"{PREFIX}x/_staging/a.data.parquet"):
            store.write(path, path.encode())
        boundary = young_boundary()
        instance.wipe_assets([dg.AssetKey("sales")])
        young = f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet"
        store.write(young, b"in flight")

        def listing() -> list[str]:
            return sorted(str(i.path) for i in store.list_files("", recursive=True))

        before = listing()
        with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
            preview = dry(ctx)
            assert isinstance(preview, dg.SensorResult)
            assert text(preview).startswith("[dry run] Would delete 2 objects"), text(preview)
            assert listing() == before
            result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        assert listing() == sorted(set(before) - {old, wiped}), text(result)


# --- never outside the prefix ---------------------------------------------------------------------


def test_a_plan_reaching_outside_the_prefix_stops_before_deleting_anything(
    make_remote_store: Callable[..., RemoteStoreResource], instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last safety net: if a policy ever chose a path outside ``<prefix>/`` (a bug), the tick
    refuses and deletes nothing at all, not even the legitimate leftovers. The bug is injected by
    wrapping the real leftover policy."""
    from remote_store_dagster.cleanup import plan as plan_mod

    resource = make_remote_store("local")
    store = resource.get_store("lake")
    leftover = store_path = f"{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet"
    sibling = f"{PREFIX}x/sales/data.parquet"  # shares the string prefix "lake1"
    for path in (store_path, sibling):
        store.write(path, b"x")
    real = plan_mod.leftovers

    def buggy_leftovers(plan: Any, prefix: str, located: Any, *args: Any) -> None:
        real(plan, prefix, located, *args)
        outside = plan_mod.locate(prefix, plan_mod.StoredObject(sibling, 1, datetime.now(UTC)))
        plan.add(outside, plan_mod.Policy.LEFTOVER)

    monkeypatch.setattr(plan_mod, "leftovers", buggy_leftovers)
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    try:
        with (
            frozen_sensor_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(minutes=1)),
            pytest.raises(RemoteStoreIOError, match=r"refusing to delete outside 'lake1'.*lake1x/sales"),
        ):
            tick(sensor, instance, resource, None)
        assert store.exists(sibling) and store.exists(leftover)
    finally:
        resource.close()


# --- leftover deletes go out while the listing is still paging --------------------------------------


def test_leftover_deletes_are_sent_while_the_listing_is_still_paging(
    seaweedfs_server: SeaweedFSServer, unique_root: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``_staging`` object is decided by its own age, so each full batch of 1000 is deleted before the
    next pages are listed: memory and time do not wait for a listing of millions (seen at the proxy)."""
    from concurrent.futures import ThreadPoolExecutor

    client = seaweedfs_server.client(max_pool_connections=32)
    stale = [f"{unique_root}/{PREFIX}/_staging/{i:05d}.data.parquet" for i in range(3500)]  # 4 list pages

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, stale))
    order: list[str] = []

    def record(request: fp.Request, count: int) -> str:
        if request.operation == "DeleteObjects" or (request.method == "GET" and "list-type" in request.query):
            order.append(request.operation if request.operation == "DeleteObjects" else "ListObjectsV2")
        return fp.PASS

    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    with fp.FaultProxy(seaweedfs_server.port, rule=record) as proxy:
        resource = proxied_resource("seaweedfs", seaweedfs_server, proxy, unique_root)
        try:
            with frozen_sensor_clock(monkeypatch, datetime.now(UTC) + GRACE + timedelta(minutes=1)):
                result = tick(sensor, instance, resource, None)
        finally:
            resource.close()
    assert "Deleted 3500 objects" in text(result), text(result)
    assert keys(client, unique_root) == set()
    assert order.count("ListObjectsV2") == 4 and order.count("DeleteObjects") == 4, order
    last_page = len(order) - 1 - order[::-1].index("ListObjectsV2")
    assert order.index("DeleteObjects") < last_page, f"every delete waited for the whole listing: {order}"


def test_the_pipelined_deleter_refuses_a_path_outside_the_prefix_before_sending_it(
    make_remote_store: Callable[..., RemoteStoreResource],
) -> None:
    """Leftover deletes are sent in batches of 1000 while the listing pages, and the deleter is the one
    scope check: it refuses any path outside ``<prefix>/`` before sending it (here the 1000th, which
    would otherwise complete a batch and be sent at once)."""
    from remote_store_dagster._storage import storage_for
    from remote_store_dagster.cleanup.deleter import Deleter

    resource = make_remote_store("seaweedfs")
    store = resource.get_store("lake")
    sibling = f"{PREFIX}x/_staging/{uuid.uuid4().hex}.data.parquet"  # shares the string prefix "lake1"
    store.write(sibling, b"x")
    deleter = Deleter(storage_for(store), PREFIX, dry_run=False, where="test tick")
    try:
        for i in range(999):
            deleter.add(f"{PREFIX}/_staging/{i:04d}.data.parquet")
        with pytest.raises(RemoteStoreIOError, match=r"refusing to delete outside 'lake1'.*lake1x/_staging"):
            deleter.add(sibling)
        deleter.discard_unsent()
    finally:
        deleter.close()
        assert store.exists(sibling)
        resource.close()
