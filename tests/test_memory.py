"""Memory stays bounded for a > 1 GB streaming output, written and loaded.

Each direction runs in a fresh interpreter (``tests/_workers.py``) on the
session SeaweedFS server. The subprocess first warms up (imports, one tiny
materialize and load through the same IO manager), then takes its *current*
RSS as the baseline and resets its peak (``VmHWM``) to it through
``/proc/self/clear_refs``, then streams the big asset; the bound applies to
the peak RSS during the operation over that baseline. RSS counts Python
buffers (``bytes``, ``bytearray``, s3fs/PyArrow client buffers) as well as
Arrow's pool. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _workers as workers
import pytest
from conftest import BUCKET

if TYPE_CHECKING:
    from remote_store_dagster.testing import SeaweedFSServer

MiB = 1024 * 1024
TOTAL_BYTES = 1100 * MiB  # of (incompressible) row data, ~1.15 GB of Parquet
#: Peak RSS growth over the warmed-up interpreter + Dagster baseline, each way.
RSS_BOUND_MB = 200
WORKER = Path(__file__).with_name("_workers.py")


def run_worker(mode: str, config: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, f"{mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_gigabyte_stream_written_and_loaded_in_bounded_memory(
    seaweedfs_server: SeaweedFSServer, unique_root: str
) -> None:
    config = {
        "backend": {"type": "s3-pyarrow", "options": seaweedfs_server.backend_options(BUCKET)},
        "root": unique_root,
        "rng_state": 7,
        "total_bytes": TOTAL_BYTES,
    }
    client = seaweedfs_server.client()
    try:
        write = run_worker("memwrite", config)
        load = run_worker("memload", config)
        stored = client.head_object(Bucket=BUCKET, Key=f"{unique_root}/{workers.ASSET}/data.parquet")["ContentLength"]
    finally:
        for item in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{unique_root}/").get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])

    mb = stored / 1e6
    print(
        f"\n1 GB stream: {mb:.0f} MB stored, {write['rows']} rows\n"
        f"  write: {mb / write['seconds']:.0f} MB/s, peak RSS {write['peak_mb']:.0f} MB "
        f"(baseline {write['baseline_mb']:.0f} MB, +{write['peak_mb'] - write['baseline_mb']:.0f} MB)\n"
        f"  load:  {mb / load['seconds']:.0f} MB/s, peak RSS {load['peak_mb']:.0f} MB "
        f"(baseline {load['baseline_mb']:.0f} MB, +{load['peak_mb'] - load['baseline_mb']:.0f} MB), "
        f"{load['batches']} batches"
    )
    assert write["peak_reset"] and load["peak_reset"], "VmHWM could not be reset: the baseline would hide growth"
    assert stored >= 1_000_000_000
    assert write["stored_bytes"] == stored
    assert load["rows"] == write["rows"]
    assert write["peak_mb"] - write["baseline_mb"] <= RSS_BOUND_MB, write
    assert load["peak_mb"] - load["baseline_mb"] <= RSS_BOUND_MB, load


#: 200 partitions x 8 MB loaded as one batch stream: peak RSS growth bound.
PARTITIONS_RSS_BOUND_MB = 150


@pytest.mark.slow
def test_many_partitions_stream_in_bounded_memory(seaweedfs_server: SeaweedFSServer, unique_root: str) -> None:
    config = {
        "backend": {"type": "s3-pyarrow", "options": seaweedfs_server.backend_options(BUCKET)},
        "root": unique_root,
        "rng_state": 11,
        "partitions": 200,
        "partition_bytes": 8 * MiB,
    }
    client = seaweedfs_server.client()
    try:
        load = run_worker("memparts", config)
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{unique_root}/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    growth = load["peak_mb"] - load["baseline_mb"]
    print(
        f"\n200 x 8 MB partitions as one RecordBatchReader: {load['rows']} rows in {load['seconds']:.1f}s, "
        f"peak RSS {load['peak_mb']:.0f} MB (RSS before the load {load['baseline_mb']:.0f} MB, +{growth:.0f} MB)"
    )
    assert load["rows"] >= 200 * 7000
    assert growth <= PARTITIONS_RSS_BOUND_MB, load
