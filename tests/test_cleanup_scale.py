"""Scale: one cleanup tick over 20,000 objects on SeaweedFS, 10,000 of them stale.

The tick must remove exactly the stale ones with ceil(10,000 / 1000) (+ at
most 2) ``DeleteObjects`` requests (counted, under a lock, by a wrapper around
the s3fs client call the control path uses; the lower bounds prove it counts).
The 200 young objects are kept by an injected clock (``_clock``), not by racing
a few seconds of grace against the setup time. For comparison it then deletes the same keys one
by one through ``Store.delete`` (a sample of 1,000 by default; all 10,000 with
``RSD_SCALE_FULL=1``) and prints both wall times (run with ``-s``).
"""

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest
from _clock import frozen_sensor_clock, tick_time, young_boundary

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.testing import SeaweedFSServer

BUCKET = "rsd-test"  # conftest.BUCKET
PREFIX = "lake1"
STALE = 10_000
DATA = 9_800
YOUNG = 200
GRACE = timedelta(hours=1)

pytestmark = pytest.mark.slow


def _put_all(client: Any, keys: list[str]) -> None:
    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))


def _listing(client: Any, prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = f"{item['ETag']}:{item['Size']}"
    return found


@pytest.fixture
def weed(
    seaweedfs_server: SeaweedFSServer, make_remote_store: Callable[..., RemoteStoreResource]
) -> Iterator[tuple[Any, RemoteStoreResource]]:
    client = seaweedfs_server.client(max_pool_connections=32)
    resource = make_remote_store("seaweedfs")
    yield client, resource
    resource.close()


def test_one_tick_deletes_10k_stale_of_20k_objects_in_bulk(
    weed: tuple[Any, RemoteStoreResource], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, resource = weed
    root = resource.stores["lake"].root_path
    stale = [f"{PREFIX}/_staging/{i:05d}.data.parquet" for i in range(STALE)]
    data = [f"{PREFIX}/big/part={i:05d}/data.parquet" for i in range(DATA)]
    neighbours = [f"{PREFIX}x/_staging/{i:03d}.data.parquet" for i in range(50)]  # another prefix, same bucket
    outside = [f"{root}-outside/{PREFIX}/_staging/{i:03d}.data.parquet" for i in range(50)]
    started = time.perf_counter()
    _put_all(client, [f"{root}/{p}" for p in stale + data + neighbours] + outside)
    boundary = young_boundary()
    before = _listing(client, root)
    # Writes in flight right now (younger than the grace), just before the tick.
    young = [f"{PREFIX}/_staging/y{i:05d}.data.parquet" for i in range(YOUNG)]
    _put_all(client, [f"{root}/{p}" for p in young])
    setup_seconds = time.perf_counter() - started
    before.update(_listing(client, f"{root}/{PREFIX}/_staging/y"))
    assert len(before) == STALE + DATA + YOUNG + len(neighbours) + len(outside)

    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    calls: Counter[str] = Counter()
    lock = threading.Lock()  # DeleteObjects requests run on several threads
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, resources={"remote_store": resource}, definitions=dg.Definitions(sensors=[sensor])
        ) as ctx,
    ):
        fs = adapter.s3fs_filesystem(ctx.resources.remote_store.get_store("lake"))
        original = fs.call_s3

        def counting_call_s3(method: str, *args: Any, **kwargs: Any) -> Any:
            with lock:
                calls[method] += 1
            return original(method, *args, **kwargs)

        fs.call_s3 = counting_call_s3
        try:
            tick_started = time.perf_counter()
            with frozen_sensor_clock(monkeypatch, tick_time(boundary, GRACE)):
                result = sensor(ctx)
            tick_seconds = time.perf_counter() - tick_started
        finally:
            del fs.call_s3
    assert isinstance(result, dg.SensorResult)

    after = _listing(client, root)
    gone = set(before) - set(after)
    assert gone == {f"{root}/{p}" for p in stale}
    assert all(after[k] == v for k, v in before.items() if k not in gone)
    assert math.ceil(STALE / 1000) <= calls["delete_objects"] <= math.ceil(STALE / 1000) + 2, calls
    assert calls["delete_object"] == 0, calls
    # Default policies list only ``<prefix>/_staging/`` (leftovers), never the DATA objects.
    listed_staging = STALE + YOUNG
    assert math.ceil(listed_staging / 1000) <= calls["list_objects_v2"] <= math.ceil(listed_staging / 1000) + 1, calls
    assert result.skip_reason is not None and "Deleted 10000 objects" in (result.skip_reason.skip_message or "")

    # The same keys, one by one through Store.delete.
    full = os.environ.get("RSD_SCALE_FULL") == "1"
    sample = stale if full else stale[:1000]
    _put_all(client, [f"{root}/{p}" for p in sample])
    store = resource.get_store("lake")
    one_by_one_started = time.perf_counter()
    for path in sample:
        store.delete(path)
    one_by_one = time.perf_counter() - one_by_one_started
    assert not set(_listing(client, f"{root}/{PREFIX}/_staging/0"))
    print(
        f"\nscale: setup {setup_seconds:.1f}s for {len(before)} objects; tick {tick_seconds:.2f}s with "
        f"{calls['delete_objects']} DeleteObjects, {calls['list_objects_v2']} ListObjectsV2 "
        f"({dict(calls)}); Store.delete one by one: {len(sample)} keys in {one_by_one:.2f}s "
        f"(= {one_by_one / len(sample) * STALE:.1f}s per {STALE})\ntick: {result.skip_reason.skip_message}"
    )
