"""One cleanup tick over many objects on a fresh SeaweedFS: requests and seconds per tick.

    PYTHONPATH=. .venv/bin/python bench/cleanup_scale.py --objects 200000 --leftovers 20000

Populates ``objects`` tiny objects below one prefix (``leftovers`` of them
failed-write leftovers under ``_staging/``, the rest live partitions of one
asset), then runs

1. a tick that deletes the leftovers (pipelined ``DeleteObjects`` while listing),
2. a steady-state tick (nothing to delete: the cost every tick pays with the
   default policies, which list only ``_staging`` and newly wiped assets),
3. a steady-state tick with ``delete_orphans=True`` (orphans need the whole
   listing: the cost that grows with the number of stored objects),

counting every S3 request the sensor's control path makes (a wrapper around
the s3fs ``call_s3`` it uses). Prints one JSON line; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _name, _value in {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}.items():
    os.environ.setdefault(_name, _value)

BUCKET = "scale"
PREFIX = "lake"


def populate(client: Any, keys: list[str], threads: int) -> float:
    started = time.perf_counter()

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 100)

    with ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(put, keys), 1):
            if done % 20_000 == 0:
                print(f"  {done:,} objects in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def tick(sensor: Any, resource: Any, defs: Any, instance: Any) -> dict[str, Any]:
    import dagster as dg

    from remote_store_dagster import _remote_store_adapter as adapter

    calls: Counter[str] = Counter()
    with dg.build_sensor_context(instance=instance, resources={"remote_store": resource}, definitions=defs) as ctx:
        fs = adapter.s3fs_filesystem(ctx.resources.remote_store.get_store("lake"))
        original = fs.call_s3

        def counting(method: str, *args: Any, **kwargs: Any) -> Any:
            calls[method] += 1
            return original(method, *args, **kwargs)

        fs.call_s3 = counting
        try:
            started = time.perf_counter()
            result = sensor(ctx)
            seconds = time.perf_counter() - started
        finally:
            del fs.call_s3
    message = result.skip_reason.skip_message if result.skip_reason else ""
    return {
        "seconds": round(seconds, 2),
        "requests": dict(calls),
        "total_requests": sum(calls.values()),
        "text": message[:160],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=200_000)
    ap.add_argument("--leftovers", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=32, help="upload threads for populating")
    args = ap.parse_args()

    import dagster as dg

    from remote_store_dagster import RemoteStoreResource
    from remote_store_dagster.cleanup import build_cleanup_sensor
    from remote_store_dagster.testing import SeaweedFSServer

    server = SeaweedFSServer()
    server.start()
    try:
        server.create_bucket(BUCKET)
        client = server.client(max_pool_connections=args.threads)
        live = args.objects - args.leftovers
        keys = [f"{PREFIX}/_staging/{i:07d}.data.parquet" for i in range(args.leftovers)]
        keys += [f"{PREFIX}/big/partition=p{i:07d}/data.parquet" for i in range(live)]
        print(f"populating {len(keys):,} objects", file=sys.stderr, flush=True)
        populate_s = populate(client, keys, args.threads)

        resource = RemoteStoreResource(
            backends={"s3": {"type": "s3-pyarrow", "options": server.backend_options(BUCKET)}},
            stores={"lake": {"backend": "s3", "root_path": ""}},
        )
        pdef = dg.StaticPartitionsDefinition([f"p{i:07d}" for i in range(min(live, 1000))])

        @dg.asset(key=["big"], partitions_def=pdef)
        def big() -> None: ...

        sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=timedelta(0))
        full = build_cleanup_sensor(
            "full_listing", store="lake", prefix=PREFIX, delete_orphans=True, code_location="bench"
        )
        defs = dg.Definitions(assets=[big], sensors=[sensor, full], resources={"remote_store": resource})
        with dg.instance_for_test() as instance:
            deleting = tick(sensor, resource, defs, instance)
            steady = tick(sensor, resource, defs, instance)
            steady_full = tick(full, resource, defs, instance)
        resource.close()
    finally:
        server.cleanup()
    out = {
        "objects": args.objects,
        "leftovers": args.leftovers,
        "populate_s": round(populate_s, 1),
        "tick_deleting": deleting,
        "tick_steady": steady,
        "tick_steady_full_listing": steady_full,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
