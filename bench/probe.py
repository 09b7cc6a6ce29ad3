"""Diagnostics behind the benchmark's explanations: A/B variants in one process.

    .venv-bench/bin/python bench/probe.py publish|small|chunked|streamread [--profile]

Starts its own SeaweedFS on 127.0.0.1. Alternates variants (A, B, A, B, ...) so
that load from other jobs hits both; prints medians. ``--profile`` wraps our
layer's call in pyinstrument and prints the call tree.
"""

import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for k, v in {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(k, v)

import cases  # noqa: E402

MiB = 1024 * 1024


def ab(variants: dict[str, Any], reps: int) -> None:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"  {name:45s} median {statistics.median(ts):8.4f}s  min {min(ts):8.4f}s  (n={len(ts)})")


def profile(fn: Any) -> None:
    from pyinstrument import Profiler

    p = Profiler(interval=0.001)
    p.start()
    fn()
    p.stop()
    print(p.output_text(unicode=False, color=False, show_all=False))


class PeakRSS:
    """Poll VmRSS every 5 ms in a thread (the GIL is released during Arrow I/O)."""

    def __enter__(self) -> "PeakRSS":
        self.base = cases.rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, cases.rss_mb())
            time.sleep(0.005)

    def __exit__(self, *a: Any) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    what = sys.argv[1]
    prof = "--profile" in sys.argv
    from remote_store_dagster.testing import SeaweedFSServer

    with SeaweedFSServer() as server:
        server.create_bucket("bench")
        cfg = {
            "endpoint": server.endpoint_url,
            "key": server.access_key,
            "secret": server.secret_key,
            "region": server.region,
            "bucket": "bench",
        }
        globals()[f"probe_{what}"](cfg, prof)


def probe_publish(cfg: dict[str, Any], prof: bool) -> None:
    import pyarrow.parquet as pq

    from remote_store_dagster import _remote_store_adapter as adapter

    table = cases.make_table(2 * MiB)  # 64 MiB
    iom = cases.our_io_manager(cfg)
    store = cases.our_store(iom)
    fs = adapter.pyarrow_filesystem(store)
    ctx = cases.out_ctx(cases.NOPROTO)
    native = store.native_path(cases.our_path(cases.NOPROTO)[len("ours/") :])
    raw_fs = cases.pa_fs(cfg)

    def noproto() -> None:
        with fs.open_output_stream(native) as out, pq.ParquetWriter(out, table.schema) as w:
            w.write_table(table)

    print("64 MiB table, same key:")
    ab(
        {
            "ours handle_output": lambda: iom.handle_output(cases.out_ctx(cases.NOPROTO), table),
            "no protocol (same fs, ParquetWriter)": noproto,
            "raw pq.write_table (default fs)": lambda: pq.write_table(table, "bench/raw/p.parquet", filesystem=raw_fs),
        },
        int(os.environ.get("REPS", "5")),
    )
    if prof:
        profile(lambda: iom.handle_output(cases.out_ctx(cases.NOPROTO), table))


def probe_small(cfg: dict[str, Any], prof: bool) -> None:
    import dagster as dg
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = cases.make_table(320, seed=3)
    iom = cases.our_io_manager(cfg)
    cases.our_store(iom)
    raw_fs = cases.pa_fs(cfg)
    pdef = dg.StaticPartitionsDefinition([f"p{i}" for i in range(50)])
    ins = [cases.in_ctx(cases.SMALL, pa.Table, partition_key=f"p{i}", asset_partitions_def=pdef) for i in range(50)]

    pending = [
        [cases.out_ctx(cases.SMALL, partition_key=f"p{i}", asset_partitions_def=pdef) for i in range(50)]
        for _ in range(5)
    ]

    def ours_w() -> None:
        for c in pending.pop():
            iom.handle_output(c, table)

    def ours_r() -> None:
        for c in ins:
            iom.load_input(c)

    def raw_w() -> None:
        for i in range(50):
            pq.write_table(table, f"bench/raw/small/partition=p{i}/data.parquet", filesystem=raw_fs)

    def raw_r() -> None:
        for i in range(50):
            pq.read_table(f"bench/raw/small/partition=p{i}/data.parquet", filesystem=raw_fs)

    import remote_store_dagster

    print(f"50 x 10 KB partitions (seconds per 50), package at {remote_store_dagster.__file__}:")
    ab({"ours write": ours_w, "raw write": raw_w, "ours load": ours_r, "raw load": raw_r}, 3)
    if prof:
        profile(ours_w)
        profile(ours_r)


def probe_chunked(cfg: dict[str, Any], prof: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from typing import BinaryIO

    import numpy as np

    size = 128 * MiB
    payload = np.random.default_rng(2).bytes(size)
    iom = cases.our_io_manager(cfg)
    store = cases.our_store(iom)
    iom.handle_output(cases.out_ctx(cases.B256), payload)
    from remote_store_dagster import _remote_store_adapter as adapter

    fs = adapter.pyarrow_filesystem(store)
    native = store.native_path(cases.our_path(cases.B256, "raw")[len("ours/") :])
    ctx_bio = cases.in_ctx(cases.B256, BinaryIO)

    def drain(f: Any) -> None:
        assert cases._drain(f, 65536) == size

    def ours_bio() -> None:
        f = iom.load_input(ctx_bio)
        drain(f)
        f.close()

    def bulk() -> None:
        with fs.open_input_file(native) as f:
            assert len(f.read()) == size

    def buffered(n: int) -> Any:
        def run() -> None:
            with fs.open_input_stream(native, buffer_size=n) as f:
                drain(f)

        return run

    def stream_read_all() -> None:
        with fs.open_input_stream(native, buffer_size=8 * MiB) as f:
            assert len(f.read()) == size

    def readahead(chunk: int, depth: int) -> Any:
        def run() -> None:
            f = fs.open_input_file(native)
            total = f.size()
            offsets = list(range(0, total, chunk))
            with ThreadPoolExecutor(depth) as pool:
                futs = [pool.submit(f.read_at, min(chunk, total - o), o) for o in offsets[:depth]]
                nxt = depth
                got = 0
                i = 0
                while i < len(offsets):
                    buf = futs[i].result()
                    futs[i] = None  # type: ignore[call-overload]
                    if nxt < len(offsets):
                        o = offsets[nxt]
                        futs.append(pool.submit(f.read_at, min(chunk, total - o), o))
                        nxt += 1
                    mv = memoryview(buf)
                    for j in range(0, len(mv), 65536):
                        got += len(bytes(mv[j : j + 65536]))
                    i += 1
            f.close()
            assert got == total

        return run

    print(f"{size // MiB} MiB raw object:")
    ab(
        {
            "bulk open_input_file().read()": bulk,
            "ours BinaryIO 64 KiB (8 MiB buffered stream)": ours_bio,
            "open_input_stream(8 MiB).read() (ours bytes)": stream_read_all,
            "buffered 16 MiB, 64 KiB reads": buffered(16 * MiB),
            "buffered 32 MiB, 64 KiB reads": buffered(32 * MiB),
            "read-ahead 8 MiB x2 threads, 64 KiB reads": readahead(8 * MiB, 2),
            "read-ahead 8 MiB x4 threads, 64 KiB reads": readahead(8 * MiB, 4),
            "read-ahead 16 MiB x2 threads, 64 KiB reads": readahead(16 * MiB, 2),
        },
        int(os.environ.get("REPS", "3")),
    )
    if prof:
        profile(ours_bio)


def probe_streamread(cfg: dict[str, Any], prof: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, batches, rows = cases.stream_batches(256 * MiB)
    iom = cases.our_io_manager(cfg)
    store = cases.our_store(iom)
    iom.handle_output(cases.out_ctx(cases.S1G), pa.RecordBatchReader.from_batches(schema, batches))
    from remote_store_dagster import _remote_store_adapter as adapter

    fs = adapter.pyarrow_filesystem(store)
    native = store.native_path(cases.our_path(cases.S1G)[len("ours/") :])
    with fs.open_input_file(native) as f:
        md = pq.ParquetFile(f).metadata
        print(f"file: {md.num_row_groups} row groups, {md.row_group(0).total_byte_size / MiB:.0f} MiB each")
    ctx = cases.in_ctx(cases.S1G, pa.RecordBatchReader)

    def variants() -> dict[str, Any]:
        def ours() -> int:
            return sum(b.num_rows for b in iom.load_input(ctx))

        def pf(**kw: Any) -> Any:
            def run() -> int:
                with fs.open_input_file(native) as f:
                    return sum(b.num_rows for b in pq.ParquetFile(f, **kw).iter_batches(batch_size=128 * 1024))

            return run

        def pf_nothreads() -> int:
            with fs.open_input_file(native) as f:
                return sum(
                    b.num_rows for b in pq.ParquetFile(f).iter_batches(batch_size=128 * 1024, use_threads=False)
                )

        return {
            "ours load_input(RecordBatchReader)": ours,
            "ParquetFile(buffer_size=8MiB) (ours' settings)": pf(buffer_size=8 * MiB),
            "ParquetFile() defaults": pf(),
            "ParquetFile(pre_buffer=True)": pf(pre_buffer=True),
            "ParquetFile() iter_batches(use_threads=False)": pf_nothreads,
        }

    # Each variant in a fresh allocator state is impossible in-process; run each once, print
    # RSS peak over the pre-call RSS and Arrow's own peak allocation.
    only = os.environ.get("VARIANT")
    for name, fn in variants().items():
        if only and only not in name:
            continue
        pool = pa.default_memory_pool()
        with PeakRSS() as m:
            t0 = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t0
        print(
            f"  {name:48s} {dt:6.2f}s rows={n} RSS peak-base {m.peak - m.base:6.0f} MB, "
            f"arrow pool max {pool.max_memory() / MiB:6.0f} MiB ({pool.backend_name})"
        )


def probe_load(cfg: dict[str, Any], prof: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from remote_store_dagster import _remote_store_adapter as adapter

    table = cases.make_table(4 * MiB)  # 128 MiB
    iom = cases.our_io_manager(cfg)
    store = cases.our_store(iom)
    iom.handle_output(cases.out_ctx(cases.T256), table)
    fs = adapter.pyarrow_filesystem(store)
    raw_fs = cases.pa_fs(cfg)
    native = store.native_path(cases.our_path(cases.T256)[len("ours/") :])

    def ours(cols: Any = None) -> Any:
        meta = {"columns": cols} if cols else None
        return lambda: iom.load_input(cases.in_ctx(cases.T256, pa.Table, metadata=meta))

    print("128 MiB table (4 x 8-byte columns), same object:")
    ab(
        {
            "ours load_input(pa.Table)": ours(),
            "pq.read_table(path, filesystem=ours' fs)": lambda: pq.read_table(native, filesystem=fs),
            "pq.read_table(path, filesystem=default fs)": lambda: pq.read_table(native, filesystem=raw_fs),
            "ParquetFile(open_input_file, pre_buffer).read()": lambda: pq.ParquetFile(
                fs.open_input_file(native), pre_buffer=True
            ).read(),
            "ours columns=['b']": ours(["b"]),
            "pq.read_table(columns=['b'])": lambda: pq.read_table(native, filesystem=fs, columns=["b"]),
        },
        int(os.environ.get("REPS", "5")),
    )
    if prof:
        profile(ours())


if __name__ == "__main__":
    main()
