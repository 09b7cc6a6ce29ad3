"""Data generators and subprocess entry points shared by the fault and memory tests.

``python tests/_workers.py <mode> '<json config>'`` runs a real Dagster
``materialize`` of a streaming asset in a fresh interpreter, so a test can
SIGKILL the writer, measure its peak RSS, or kill the server under it.

Modes:

* ``write``: materialize asset ``events`` from a RecordBatch generator of
  ``total_bytes`` (incompressible) through ``RemoteStoreIOManager``. Prints
  ``FAILED <error>`` or ``DONE``; with ``wait_on_failure`` it then waits for a
  line on stdin before exiting normally (so a test can restart the server
  while the failed writer is still alive).
* ``memwrite`` / ``memload``: write the asset / load it as a
  ``pyarrow.RecordBatchReader`` and print one JSON line with RSS figures:
  ``baseline_mb`` is the *current* RSS just before the operation (after a
  warm-up), with the peak (``VmHWM``) reset to it through
  ``/proc/self/clear_refs``; ``peak_mb`` is the peak during the operation. RSS
  counts every buffer (Arrow's pool, Python ``bytes``/``bytearray``, s3fs and
  PyArrow client buffers), not just Arrow allocations.
* ``memparts``: store ``partitions`` partitions of ``partition_bytes`` each, then
  load them all as one ``RecordBatchReader``; peak RSS growth is measured from
  the RSS just before the load (peak counter reset through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from collections.abc import Iterator

MiB = 1024 * 1024
ASSET = "events"
PAYLOAD_BYTES = 1000
ROWS_PER_BATCH = 4096  # ~4 MiB per batch

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("payload", pa.binary(PAYLOAD_BYTES))])


def make_batch(rng: np.random.Generator, start: int, rows: int = ROWS_PER_BATCH) -> pa.RecordBatch:
    """Incompressible rows: random floats and random bytes, so Parquet bytes ~ memory bytes."""
    payload = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(PAYLOAD_BYTES), rows, [None, pa.py_buffer(rng.bytes(rows * PAYLOAD_BYTES))]
    )
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(start, start + rows, dtype=np.int64)), pa.array(rng.random(rows)), payload],
        schema=SCHEMA,
    )


def batches(rng_state: int, total_bytes: int) -> Iterator[pa.RecordBatch]:
    """Deterministic batches (per ``rng_state``) until ``total_bytes`` of row data were produced."""
    rng = np.random.default_rng(rng_state)
    produced = 0
    start = 0
    while produced < total_bytes:
        batch = make_batch(rng, start)
        start += batch.num_rows
        produced += batch.nbytes
        yield batch


def table(rng_state: int, total_bytes: int) -> pa.Table:
    return pa.Table.from_batches(list(batches(rng_state, total_bytes)), SCHEMA)


def peak_rss_mb() -> float:
    """Peak RSS of this process, in MiB.

    ``VmHWM`` belongs to this process's own address space. ``ru_maxrss`` is not
    usable in a subprocess: it is inherited across fork/exec, so a child of a
    big pytest process starts with the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident set size of this process right now, in MiB."""
    rss = _status_mb("VmRSS")
    assert rss is not None, "needs /proc/self/status (Linux)"
    return rss


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write "5" to ``/proc/self/clear_refs``).

    Returns False where that is not possible; then ``peak_rss_mb`` includes the
    warm-up's peak and overstates the growth (never understates it).
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def measure_from_here() -> tuple[float, bool]:
    """(baseline MiB, peak was reset): current RSS just before an operation, peak reset to it."""
    gc.collect()
    reset = reset_peak_rss()
    return current_rss_mb(), reset


def _resources(config: dict[str, Any]) -> dict[str, Any]:
    from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource

    remote_store = RemoteStoreResource(
        backends={"main": config["backend"]}, stores={"lake": {"backend": "main", "root_path": config["root"]}}
    )
    return {"io_manager": RemoteStoreIOManager(remote_store=remote_store, store="lake")}


def _write(config: dict[str, Any]) -> int:
    from dagster import asset, materialize

    @asset(name=ASSET)
    def events() -> pa.RecordBatchReader:
        print("STARTED", flush=True)
        return pa.RecordBatchReader.from_batches(SCHEMA, batches(config["rng_state"], config["total_bytes"]))

    try:
        materialize([events], resources=_resources(config))
    except Exception as exc:
        print(f"FAILED {type(exc).__name__}: {str(exc)[:500]!r}", flush=True)
        if config.get("wait_on_failure"):
            sys.stdin.readline()
        return 1
    print("DONE", flush=True)
    return 0


def _warm_up(config: dict[str, Any]) -> None:
    """One tiny materialize + load, so the baseline includes Dagster's own per-run memory."""
    from dagster import AssetIn, asset, materialize

    @asset(name="warmup")
    def warmup() -> pa.Table:
        return table(0, 64 * 1024)

    @asset(ins={"warmup": AssetIn()})
    def warmup_check(warmup: pa.RecordBatchReader) -> None:
        for _ in warmup:
            pass

    materialize([warmup, warmup_check], resources=_resources(config))


def _memwrite(config: dict[str, Any]) -> int:
    from dagster import asset, materialize

    _warm_up(config)

    @asset(name=ASSET)
    def events() -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(SCHEMA, batches(config["rng_state"], config["total_bytes"]))

    resources = _resources(config)
    baseline, reset = measure_from_here()
    start = time.perf_counter()
    result = materialize([events], resources=resources)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    metadata = result.asset_materializations_for_node(ASSET)[0].metadata
    stored = int(metadata["remote_store/stored_bytes"].value)
    rows = int(metadata["dagster/row_count"].value)
    print(
        json.dumps(
            {
                "baseline_mb": baseline,
                "peak_mb": peak,
                "peak_reset": reset,
                "seconds": seconds,
                "stored_bytes": stored,
                "rows": rows,
            }
        ),
        flush=True,
    )
    return 0


def _memload(config: dict[str, Any]) -> int:
    from dagster import AssetIn, asset, materialize

    _warm_up(config)
    counted: dict[str, int] = {}

    @asset(name=ASSET)
    def events() -> pa.Table:
        raise AssertionError("not selected: loaded from the store")

    @asset(ins={ASSET: AssetIn()})
    def consumer(events: pa.RecordBatchReader) -> None:
        rows = 0
        batches_seen = 0
        for batch in events:
            rows += batch.num_rows
            batches_seen += 1
        counted["rows"] = rows
        counted["batches"] = batches_seen

    resources = _resources(config)
    baseline, reset = measure_from_here()
    start = time.perf_counter()
    materialize([events, consumer], selection=[consumer], resources=resources)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    print(
        json.dumps({"baseline_mb": baseline, "peak_mb": peak, "peak_reset": reset, "seconds": seconds, **counted}),
        flush=True,
    )
    return 0


def _example_stream(config: dict[str, Any]) -> int:
    """The example project's streaming write + chunked read, measured from a warmed-up fresh process."""
    from dagster import AssetSelection, materialize

    os.environ.update(config["env"])
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: example_project
    from example_project.assets import ALL_ASSETS
    from example_project.definitions import build_defs

    defs = build_defs(config["env"])
    selection = AssetSelection.assets("events_stream", "events_by_kind")

    def run(total_mb: int) -> Any:
        return materialize(
            [*ALL_ASSETS],
            resources=defs.resources,
            run_config={"ops": {"events_stream": {"config": {"total_mb": total_mb}}}},
            selection=selection,
        )

    run(4)  # warm-up: imports, clients, one small run
    baseline, reset = measure_from_here()
    result = run(config["total_mb"])
    peak = peak_rss_mb()
    rows = int(result.asset_materializations_for_node("events_stream")[0].metadata["dagster/row_count"].value)
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "peak_reset": reset, "rows": rows}), flush=True)
    return 0


def _write_partitions_direct(config: dict[str, Any]) -> None:
    """``partitions`` x ``partition_bytes`` of Parquet straight into the IO manager's layout (setup, untimed)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    from remote_store_dagster._layout import partition_location
    from remote_store_dagster._storage import storage_for

    iom = _resources(config)["io_manager"]
    dp = storage_for(iom.remote_store.get_store("lake"))
    rng = np.random.default_rng(config["rng_state"])
    rows = config["partition_bytes"] // (ROWS_PER_BATCH * (PAYLOAD_BYTES + 16)) * ROWS_PER_BATCH
    part = pa.Table.from_batches(
        [make_batch(rng, i * ROWS_PER_BATCH) for i in range(max(1, rows // ROWS_PER_BATCH))], SCHEMA
    )

    def put(i: int) -> None:
        path = partition_location("", [ASSET], {"partition": f"p{i:04d}"}).data_path("parquet")
        pq.write_table(part, dp.native(path), filesystem=dp.filesystem)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(config["partitions"])))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _memparts(config: dict[str, Any]) -> int:
    """Load ``partitions`` partitions as one RecordBatchReader; peak RSS growth from just before the load."""
    from dagster import AssetIn, StaticPartitionsDefinition, asset, materialize

    _write_partitions_direct(config)
    parts = StaticPartitionsDefinition([f"p{i:04d}" for i in range(config["partitions"])])
    counted: dict[str, Any] = {}

    @asset(name=ASSET, partitions_def=parts)
    def events() -> pa.Table:
        raise AssertionError("not selected: loaded from the store")

    @asset(ins={ASSET: AssetIn()})
    def consumer(events: pa.RecordBatchReader) -> None:
        rows = 0
        for batch in events:
            rows += batch.num_rows
            counted["peak_mb"] = max(counted.get("peak_mb", 0.0), peak_rss_mb())
        counted["rows"] = rows

    _warm_up(config)
    import gc

    gc.collect()
    baseline = _current_rss_mb()
    _reset_peak()
    start = time.perf_counter()
    materialize([events, consumer], selection=[consumer], resources=_resources(config))
    seconds = time.perf_counter() - start
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_rss_mb(), "seconds": seconds, **counted}), flush=True)
    return 0


def main() -> int:
    mode, raw = sys.argv[1], sys.argv[2]
    config = json.loads(raw)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    modes = {
        "write": _write,
        "memwrite": _memwrite,
        "memload": _memload,
        "memparts": _memparts,
        "example_stream": _example_stream,
    }
    return modes[mode](config)


if __name__ == "__main__":
    sys.exit(main())
