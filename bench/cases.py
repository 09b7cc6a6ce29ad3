"""One benchmark case per process: ``python bench/cases.py CASE '<json config>'``.

Each case does its (untimed) setup, then runs one or more timed *phases*. For
every phase it resets the process's peak-RSS counter (``/proc/self/clear_refs``
"5", which also resets ``getrusage(RUSAGE_SELF).ru_maxrss``), times the phase
with ``perf_counter`` and reads the peak back, so setup (e.g. loading the
input table) and earlier phases never mix into a phase's peak. The last line
printed is one JSON object: ``{"phases": {name: {...}}, "info": {...}}``.

Imports are lazy, per case, so that a case's baseline RSS holds only what
that case needs.
"""

import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

MiB = 1024 * 1024
CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
COLUMNS = ["a", "b", "c", "d"]


def case(name: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]]:
    def deco(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        CASES[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------- measurement


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _link(command: str) -> dict[str, Any] | None:
    """Ask the shaping proxy (``./bench/run --link ...``) to ``reset`` or report ``stats``; None without one."""
    address = os.environ.get("RSD_BENCH_LINK_CONTROL")
    if not address:
        return None
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return dict(json.loads(buf))


def measure(fn: Callable[[], Any], nbytes: int = 0, **extra: Any) -> dict[str, Any]:
    """Time ``fn`` and record peak RSS during it (after resetting the peak).

    Behind the shaping proxy, the requests of the timed region only are counted
    (reset just before, read just after) and returned under ``link``.
    """
    import gc

    gc.collect()
    base = rss_mb()
    reset_ok = _reset_peak()
    _link("reset")
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    link = _link("stats")
    if link is not None:
        extra["link"] = link
    peak = max(_status_kb("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    if "pyarrow" in sys.modules:
        pool = sys.modules["pyarrow"].default_memory_pool()
        extra.setdefault("arrow_pool_max_mb", round(pool.max_memory() / MiB, 1))
    out = {
        "seconds": seconds,
        "bytes": nbytes,
        "rss_base_mb": round(base, 1),
        "rss_peak_mb": round(peak, 1),
        "peak_reset": reset_ok,
        **extra,
    }
    if isinstance(value, dict):
        out.update(value)
    return out


# --------------------------------------------------------------------------- data


def load_table(cfg: dict[str, Any]) -> Any:
    """The shared input table, read fully into memory (not memory-mapped)."""
    import pyarrow as pa

    with pa.OSFile(cfg["table_file"], "rb") as f:
        return pa.ipc.open_file(f).read_all()


def make_table(rows: int, rng_state: int = 0) -> Any:
    """4 incompressible 8-byte columns: 32 bytes/row, Parquet size ~ Arrow size."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(rng_state)
    return pa.table(
        {
            "a": pa.array(rng.integers(0, 2**62, rows, dtype=np.int64)),
            "b": pa.array(rng.random(rows)),
            "c": pa.array(rng.random(rows)),
            "d": pa.array(rng.integers(0, 2**62, rows, dtype=np.int64)),
        }
    )


STREAM_BATCH_ROWS = 262_144  # 8 MiB per batch


def stream_batches(total_bytes: int) -> tuple[Any, Iterator[Any], int]:
    """(schema, iterator of RecordBatch, rows): ``total_bytes`` of record batches.

    A pool of 8 distinct 8 MiB batches is cycled, so producing the stream costs
    no CPU and bounded memory, while Parquet still cannot compress it.
    """
    # Independent batches, not slices of one table: pickling a slice writes its parent's
    # whole buffers, which would inflate the pickle peer 8x.
    pool = [make_table(STREAM_BATCH_ROWS, rng_state=1 + i).to_batches()[0] for i in range(8)]
    n = max(1, total_bytes // (STREAM_BATCH_ROWS * 32))

    def gen() -> Iterator[Any]:
        for i in range(n):
            yield pool[i % len(pool)]

    return pool[0].schema, gen(), n * STREAM_BATCH_ROWS


# --------------------------------------------------------------------------- clients


def pa_fs(cfg: dict[str, Any], **kw: Any) -> Any:
    import pyarrow.fs as pafs

    scheme, _, host = cfg["endpoint"].partition("://")
    return pafs.S3FileSystem(
        access_key=cfg["key"],
        secret_key=cfg["secret"],
        endpoint_override=host,
        scheme=scheme,
        region=cfg["region"],
        **kw,
    )


def rs_backend_options(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "bucket": cfg["bucket"],
        "endpoint_url": cfg["endpoint"],
        "key": cfg["key"],
        "secret": cfg["secret"],
        "region_name": cfg["region"],
    }


def our_resource(cfg: dict[str, Any]) -> Any:
    from remote_store_dagster import RemoteStoreResource

    return RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": rs_backend_options(cfg)}},
        stores={"lake": {"backend": "s3", "root_path": "ours"}},
    )


def init(iom: Any) -> Any:
    """Run a Configurable IO manager's setup hook, as Dagster does before a step."""
    from dagster import build_init_resource_context

    setup = getattr(iom, "setup_for_execution", None)
    if setup is not None:
        setup(build_init_resource_context())
    return iom


def our_io_manager(cfg: dict[str, Any], **fields: Any) -> Any:
    from remote_store_dagster import RemoteStoreIOManager

    return init(RemoteStoreIOManager(remote_store=our_resource(cfg), store="lake", **fields))


def our_store(iom: Any, warm: bool = True) -> Any:
    """The IO manager's store; ``warm`` also resolves its data path and opens the s3fs
    control-path client (imports s3fs/aiobotocore: ~0.5-0.8 s once per process), as the
    peers build their clients before the timed region too. ``publish.ours-cold`` skips it."""
    store = iom.remote_store.get_store(iom.store)
    if warm:
        from remote_store_dagster import _remote_store_adapter as adapter

        iom.data_path  # noqa: B018 - resolves the PyArrow filesystem (imports s3fs)
        adapter.s3fs_filesystem(store).call_s3("head_bucket", Bucket=adapter.backend_bucket(store))
    return store


def rs_store(cfg: dict[str, Any], root: str = "rs") -> Any:
    """remote-store's own s3-pyarrow Store, built as its Dagster extension builds it."""
    from remote_store.ext.dagster import _build_store

    return _build_store("s3-pyarrow", rs_backend_options(cfg), root)


def rs_io_manager(store: Any) -> Any:
    from remote_store.ext.dagster import dagster_io_manager

    return dagster_io_manager(store, serializer="parquet")


def pickle_io_manager(cfg: dict[str, Any]) -> Any:
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    res = S3PickleIOManager(
        s3_resource=S3Resource(
            endpoint_url=cfg["endpoint"],
            aws_access_key_id=cfg["key"],
            aws_secret_access_key=cfg["secret"],
            region_name=cfg["region"],
        ),
        s3_bucket=cfg["bucket"],
        s3_prefix="pickle",
    )
    return res.create_io_manager(None)


def polars_io_manager(cfg: dict[str, Any]) -> Any:
    from dagster_polars import PolarsParquetIOManager

    return init(PolarsParquetIOManager(
        base_dir=f"s3://{cfg['bucket']}/polars",
        storage_options={
            "key": cfg["key"],
            "secret": cfg["secret"],
            "client_kwargs": {"endpoint_url": cfg["endpoint"], "region_name": cfg["region"]},
        },
    ))


_PATCHED: list[bool] = []


def _cheap_contexts() -> None:
    """``build_*_context`` builds a fresh ephemeral DagsterInstance (sqlite + alembic,
    ~140 ms) per call; share one so that building 500 contexts is not the benchmark."""
    if _PATCHED:
        return
    import contextlib

    import dagster._core.execution.build_resources as br
    from dagster import DagsterInstance

    shared = DagsterInstance.ephemeral()
    br.ephemeral_instance_if_missing = lambda i: contextlib.nullcontext(i or shared)  # type: ignore[assignment]
    _PATCHED.append(True)


def out_ctx(asset: list[str], typ: Any = None, **kw: Any) -> Any:
    from dagster import AssetKey, build_output_context
    from dagster._core.types.dagster_type import resolve_dagster_type

    _cheap_contexts()
    if typ is not None:
        kw["dagster_type"] = resolve_dagster_type(typ)
    return build_output_context(asset_key=AssetKey(asset), **kw)


def in_ctx(asset: list[str], typ: Any = None, *, metadata: dict[str, Any] | None = None, **kw: Any) -> Any:
    from dagster import AssetKey, build_input_context
    from dagster._core.types.dagster_type import resolve_dagster_type

    _cheap_contexts()
    upstream = out_ctx(asset, **{k: v for k, v in kw.items() if k in ("partition_key", "asset_partitions_def")})
    return build_input_context(
        asset_key=AssetKey(asset),
        upstream_output=upstream,
        dagster_type=resolve_dagster_type(typ) if typ is not None else None,
        definition_metadata=metadata,
        **kw,
    )


def object_size(cfg: dict[str, Any], path: str) -> int:
    import pyarrow.fs as pafs

    info = pa_fs(cfg).get_file_info(f"{cfg['bucket']}/{path}")
    return int(info.size) if info.type == pafs.FileType.File else 0


def parquet_fetch(cfg: dict[str, Any], path: str, columns: list[str] | None) -> int:
    """Bytes of the column chunks a reader must fetch (+ footer) for ``columns``."""
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    full = f"{cfg['bucket']}/{path}"
    with fs.open_input_file(full) as f:
        md = pq.ParquetFile(f).metadata
        size = f.size()
    if columns is None:
        return int(size)
    total = 0
    for rg in range(md.num_row_groups):
        for ci in range(md.num_columns):
            col = md.row_group(rg).column(ci)
            if col.path_in_schema in columns:
                total += col.total_compressed_size
    return int(total + md.serialized_size + 8)


# --------------------------------------------------------------------------- paths


def our_path(asset: list[str], fmt: str = "parquet", partition: dict[str, str] | None = None) -> str:
    """Object key (below the bucket) where our IO manager keeps ``asset``."""
    from remote_store_dagster import _layout

    loc = (
        _layout.partition_location("", asset, partition)
        if partition
        else _layout.asset_location("", asset)
    )
    return "ours/" + loc.data_path(fmt)


T256 = ["bench", "t256"]
S1G = ["bench", "s1g"]
B256 = ["bench", "b256"]
SMALL = ["bench", "small"]
RUNS = ["bench", "runs"]
NOPROTO = ["bench", "noproto"]


# =========================================================================== S1 write 256 MB


@case("prep-table")
def _prep_table(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    table = make_table(cfg["rows"])
    with pa.OSFile(cfg["table_file"], "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    return {"phases": {}, "info": {"nbytes": table.nbytes, "rows": table.num_rows}}


def _write_phase(cfg: dict[str, Any], fn: Callable[[Any], Any], path: str, table: Any | None = None) -> dict[str, Any]:
    table = load_table(cfg) if table is None else table
    result = measure(lambda: fn(table), table.nbytes, rows=table.num_rows, table_mb=round(table.nbytes / MiB, 1))
    result["stored_bytes"] = object_size(cfg, path) if path else None
    return {"phases": {"write": result}}


@case("write.raw-pyarrow")
def _w_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    path = "raw/t256.parquet"
    return _write_phase(cfg, lambda t: pq.write_table(t, f"{cfg['bucket']}/{path}", filesystem=fs), path)


@case("write.ours")
def _w_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = our_io_manager(cfg)
    our_store(iom)  # registry built outside the timed region
    ctx = out_ctx(T256)
    return _write_phase(cfg, lambda t: iom.handle_output(ctx, t), our_path(T256))


@case("write.ours-materialize")
def _w_ours_mat(cfg: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    table = load_table(cfg)

    @dg.asset(key=T256)
    def t256() -> Any:
        return table

    iom = our_io_manager(cfg)
    _warm_up_materialize(iom)

    def run(_: Any) -> None:
        res = dg.materialize([t256], resources={"io_manager": iom})
        assert res.success

    return _write_phase(cfg, run, our_path(T256), table)


def _warm_up_materialize(iom: Any) -> None:
    """One tiny run first, so one-time costs (imports, instance, connections) and the
    memory of the big table do not land in the measured run."""
    import dagster as dg
    import pyarrow as pa

    @dg.asset(key=["bench", "warm"])
    def warm() -> pa.Table:
        return pa.table({"a": [1, 2, 3]})

    @dg.asset(key=["bench", "warm_down"], ins={"w": dg.AssetIn(key=["bench", "warm"])})
    def warm_down(w: pa.Table) -> None:
        assert w.num_rows == 3

    assert dg.materialize([warm, warm_down], resources={"io_manager": iom}).success


@case("write.remote-store")
def _w_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    store = rs_store(cfg)
    iom = rs_io_manager(store)
    store.exists("warm-up")
    ctx = out_ctx(T256)
    return _write_phase(cfg, lambda t: iom.handle_output(ctx, t), "rs/bench/t256.parquet")


@case("write.s3-pickle")
def _w_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = pickle_io_manager(cfg)
    ctx = out_ctx(T256)
    return _write_phase(cfg, lambda t: iom.handle_output(ctx, t), "pickle/bench/t256")


@case("write.polars")
def _w_polars(cfg: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    iom = polars_io_manager(cfg)
    df = pl.from_arrow(load_table(cfg))
    table_like = _Sized(df, df.estimated_size(), df.height)
    ctx = out_ctx(T256, pl.DataFrame)
    return _write_phase(
        cfg, lambda t: iom.handle_output(ctx, t.obj), "polars/bench/t256.parquet", table_like
    )


class _Sized:
    def __init__(self, obj: Any, nbytes: int, rows: int) -> None:
        self.obj, self.nbytes, self.num_rows = obj, nbytes, rows


# =========================================================================== S2 load 256 MB


def _read_phase(fn: Callable[[], Any], nbytes: int, **extra: Any) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        value = fn()
        rows = value.num_rows if hasattr(value, "num_rows") else getattr(value, "height", None)
        return {"rows": rows}

    return {"phases": {"load": measure(run, nbytes, **extra)}}


def _proj(cfg: dict[str, Any]) -> list[str] | None:
    return cfg.get("columns")


@case("load.raw-pyarrow")
def _r_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    path = "raw/t256.parquet"
    cols = _proj(cfg)
    fetch = parquet_fetch(cfg, path, cols)
    return _read_phase(
        lambda: pq.read_table(f"{cfg['bucket']}/{path}", filesystem=fs, columns=cols),
        fetch,
        fetched_bytes=fetch,
    )


def _ours_load(cfg: dict[str, Any], **fields: Any) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg, **fields)
    our_store(iom)
    cols = _proj(cfg)
    fetch = parquet_fetch(cfg, our_path(T256), cols)
    meta = {"columns": cols} if cols else None
    ctx = in_ctx(T256, pa.Table, metadata=meta)
    return _read_phase(lambda: iom.load_input(ctx), fetch, fetched_bytes=fetch)


@case("load.ours")
def _r_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    return _ours_load(cfg)


@case("load.ours-arrow-default-pool")
def _r_ours_default_pool(cfg: dict[str, Any]) -> dict[str, Any]:
    """``load.ours`` decoding into Arrow's default pool (``load_memory_pool="default"``).

    A diagnostic: pyarrow 26's default pool is mimalloc, whose transparent-huge-page arenas
    make first-touch of fresh memory about twice as expensive on this VM; ``auto`` (what
    ``load.ours`` runs) decodes into the system allocator instead.
    """
    return _ours_load(cfg, load_memory_pool="default")


@case("load.ours-materialize")
def _r_ours_mat(cfg: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg
    import pyarrow as pa

    @dg.asset(key=T256)
    def t256() -> pa.Table:
        raise RuntimeError("not selected")

    seen: dict[str, int] = {}

    @dg.asset(key=["bench", "t256_rows"], ins={"t": dg.AssetIn(key=T256)})
    def rows(t: pa.Table) -> None:
        seen["rows"] = t.num_rows

    iom = our_io_manager(cfg)
    fetch = parquet_fetch(cfg, our_path(T256), None)
    _warm_up_materialize(iom)

    def run() -> Any:
        res = dg.materialize([t256, rows], selection=[rows], resources={"io_manager": iom})
        assert res.success
        return _Sized(None, 0, seen["rows"])

    return _read_phase(run, fetch, fetched_bytes=fetch)


@case("load.remote-store")
def _r_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    store = rs_store(cfg)
    iom = rs_io_manager(store)
    path = "rs/bench/t256.parquet"
    fetch = object_size(cfg, path)
    ctx = in_ctx(T256)
    return _read_phase(lambda: iom.load_input(ctx), fetch, fetched_bytes=fetch)


@case("load.s3-pickle")
def _r_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = pickle_io_manager(cfg)
    fetch = object_size(cfg, "pickle/bench/t256")
    ctx = in_ctx(T256)
    return _read_phase(lambda: iom.load_input(ctx), fetch, fetched_bytes=fetch)


@case("load.polars")
def _r_polars(cfg: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    iom = polars_io_manager(cfg)
    path = "polars/bench/t256.parquet"
    cols = _proj(cfg)
    fetch = parquet_fetch(cfg, path, cols)
    meta = {"columns": cols} if cols else None
    ctx = in_ctx(T256, pl.DataFrame, metadata=meta)
    return _read_phase(lambda: iom.load_input(ctx), fetch, fetched_bytes=fetch)


# =========================================================================== S3 streaming 1 GB


def _stream_write(cfg: dict[str, Any], fn: Callable[[Any, Iterator[Any]], Any], path: str) -> dict[str, Any]:
    schema, batches, rows = stream_batches(cfg["stream_bytes"])
    nbytes = rows * 32
    result = measure(lambda: fn(schema, batches), nbytes, rows=rows)
    result["stored_bytes"] = object_size(cfg, path)
    return {"phases": {"write": result}}


def _stream_materialized(cfg: dict[str, Any]) -> Any:
    """The same stream as one in-memory Table (what non-streaming peers need)."""
    import pyarrow as pa

    schema, batches, _ = stream_batches(cfg["stream_bytes"])
    return pa.Table.from_batches(list(batches), schema=schema)


@case("stream-write.raw-pyarrow")
def _sw_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    path = "raw/s1g.parquet"

    def run(schema: Any, batches: Iterator[Any]) -> None:
        with pq.ParquetWriter(f"{cfg['bucket']}/{path}", schema, filesystem=fs) as w:
            for b in batches:
                w.write_batch(b)

    return _stream_write(cfg, run, path)


@case("stream-write.ours")
def _sw_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    ctx = out_ctx(S1G)

    def run(schema: Any, batches: Iterator[Any]) -> None:
        iom.handle_output(ctx, pa.RecordBatchReader.from_batches(schema, batches))

    return _stream_write(cfg, run, our_path(S1G))


def _peer_stream_write(
    cfg: dict[str, Any], iom: Any, path: str, convert: Callable[[Any], Any] = lambda t: t, typ: Any = None
) -> dict[str, Any]:
    # Peers take only in-memory tables: building it from the stream is part of their cost.
    ctx = out_ctx(S1G, typ)

    def run(schema: Any, batches: Iterator[Any]) -> None:
        import pyarrow as pa

        iom.handle_output(ctx, convert(pa.Table.from_batches(list(batches), schema=schema)))

    return _stream_write(cfg, run, path)


@case("stream-write.remote-store")
def _sw_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    return _peer_stream_write(cfg, rs_io_manager(rs_store(cfg)), "rs/bench/s1g.parquet")


@case("stream-write.s3-pickle")
def _sw_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    return _peer_stream_write(cfg, pickle_io_manager(cfg), "pickle/bench/s1g")


@case("stream-write.polars")
def _sw_polars(cfg: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    return _peer_stream_write(cfg, polars_io_manager(cfg), "polars/bench/s1g.parquet", pl.from_arrow, pl.DataFrame)


def _stream_read(fn: Callable[[], int], nbytes: int) -> dict[str, Any]:
    return {"phases": {"load": measure(lambda: {"rows": fn()}, nbytes)}}


@case("stream-load.raw-pyarrow")
def _sr_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    path = f"{cfg['bucket']}/raw/s1g.parquet"

    def run() -> int:
        with fs.open_input_file(path) as f:
            return sum(b.num_rows for b in pq.ParquetFile(f).iter_batches())

    return _stream_read(run, object_size(cfg, "raw/s1g.parquet"))


@case("stream-load.ours")
def _sr_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    ctx = in_ctx(S1G, pa.RecordBatchReader)

    def run() -> int:
        reader = iom.load_input(ctx)
        try:
            return sum(b.num_rows for b in reader)
        finally:
            close = getattr(reader, "close", None)
            if close:
                close()

    return _stream_read(run, object_size(cfg, our_path(S1G)))


@case("stream-load.remote-store")
def _sr_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = rs_io_manager(rs_store(cfg))
    ctx = in_ctx(S1G)
    return _stream_read(lambda: iom.load_input(ctx).num_rows, object_size(cfg, "rs/bench/s1g.parquet"))


@case("stream-load.s3-pickle")
def _sr_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = pickle_io_manager(cfg)
    ctx = in_ctx(S1G)
    return _stream_read(lambda: iom.load_input(ctx).num_rows, object_size(cfg, "pickle/bench/s1g"))


@case("stream-load.polars")
def _sr_polars(cfg: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    iom = polars_io_manager(cfg)
    ctx = in_ctx(S1G, pl.DataFrame)
    return _stream_read(
        lambda: iom.load_input(ctx).height, object_size(cfg, "polars/bench/s1g.parquet")
    )


# =========================================================================== S4 chunked raw read


@case("chunked.prep")
def _c_prep(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    payload = np.random.default_rng(2).bytes(cfg["raw_bytes"])
    iom = our_io_manager(cfg)
    iom.handle_output(out_ctx(B256), payload)
    rs_store(cfg, "rs").write("bench/b256.bin", payload, overwrite=True)
    return {"phases": {}, "info": {"bytes": len(payload), "path": our_path(B256, "raw")}}


def _drain(f: Any, chunk: int) -> int:
    total = 0
    while True:
        b = f.read(chunk)
        if not b:
            return total
        total += len(b)


@case("chunked.ours-binaryio-64k")
def _c_ours_bio(cfg: dict[str, Any]) -> dict[str, Any]:
    from typing import BinaryIO

    iom = our_io_manager(cfg)
    our_store(iom)
    size = object_size(cfg, our_path(B256, "raw"))
    ctx = in_ctx(B256, BinaryIO)

    def run() -> dict[str, Any]:
        f = iom.load_input(ctx)
        try:
            n = _drain(f, 65536)
        finally:
            f.close()
        assert n == size, (n, size)
        return {}

    return {"phases": {"load": measure(run, size)}}


@case("chunked.ours-bytes")
def _c_ours_bytes(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = our_io_manager(cfg)
    our_store(iom)
    size = object_size(cfg, our_path(B256, "raw"))
    ctx = in_ctx(B256, bytes)

    def run() -> dict[str, Any]:
        data = iom.load_input(ctx)
        assert len(data) == size
        return {}

    return {"phases": {"load": measure(run, size)}}


@case("chunked.raw-pyarrow-bulk")
def _c_raw_bulk(cfg: dict[str, Any]) -> dict[str, Any]:
    fs = pa_fs(cfg)
    path = our_path(B256, "raw")
    size = object_size(cfg, path)

    def run() -> dict[str, Any]:
        with fs.open_input_file(f"{cfg['bucket']}/{path}") as f:
            data = f.read()
        assert len(data) == size
        return {}

    return {"phases": {"load": measure(run, size)}}


@case("chunked.raw-pyarrow-64k-unbuffered")
def _c_raw_64k(cfg: dict[str, Any]) -> dict[str, Any]:
    fs = pa_fs(cfg)
    path = our_path(B256, "raw")
    size = object_size(cfg, path)

    def run() -> dict[str, Any]:
        with fs.open_input_file(f"{cfg['bucket']}/{path}") as f:
            assert _drain(f, 65536) == size
        return {}

    return {"phases": {"load": measure(run, size)}}


@case("chunked.remote-store-read-64k")
def _c_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    store = rs_store(cfg, "rs")
    size = object_size(cfg, "rs/bench/b256.bin")

    def run() -> dict[str, Any]:
        f = store.read("bench/b256.bin")
        try:
            assert _drain(f, 65536) == size
        finally:
            f.close()
        return {}

    return {"phases": {"load": measure(run, size)}}


# =========================================================================== S5 publish overhead


@case("publish.ours")
def _p_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    iom = our_io_manager(cfg)
    our_store(iom)
    ctx = out_ctx(NOPROTO)
    return _write_phase(cfg, lambda t: iom.handle_output(ctx, t), our_path(NOPROTO))


@case("publish.ours-cold")
def _p_ours_cold(cfg: dict[str, Any]) -> dict[str, Any]:
    """First write of a fresh process (a Dagster step): s3fs import + client in the timed region."""
    iom = our_io_manager(cfg)
    our_store(iom, warm=False)
    ctx = out_ctx(NOPROTO)
    return _write_phase(cfg, lambda t: iom.handle_output(ctx, t), our_path(NOPROTO))


@case("publish.no-protocol")
def _p_noproto(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same bytes to the same key with the same filesystem and writer, minus the protocol."""
    import pyarrow.parquet as pq

    from remote_store_dagster import _remote_store_adapter as adapter

    iom = our_io_manager(cfg)
    store = our_store(iom)
    fs = adapter.pyarrow_filesystem(store)  # the tuned filesystem our IO manager writes through
    native = store.native_path(our_path(NOPROTO)[len("ours/") :])
    kwargs = _our_writer_kwargs()

    def run(t: Any) -> None:
        with fs.open_output_stream(native) as out, pq.ParquetWriter(out, t.schema, **kwargs) as w:
            w.write_table(t)

    result = _write_phase(cfg, run, our_path(NOPROTO))
    result["info"] = {"writer_kwargs": {k: str(v) for k, v in kwargs.items()}}
    return result


def _our_writer_kwargs() -> dict[str, Any]:
    """ParquetWriter options our IO manager uses, if it exposes them."""
    try:
        from remote_store_dagster import _formats  # type: ignore[attr-defined]
    except ImportError:
        return {}
    for name in ("PARQUET_WRITER_OPTIONS", "PARQUET_WRITE_OPTIONS", "WRITER_OPTIONS", "DEFAULT_WRITER_OPTIONS"):
        value = getattr(_formats, name, None)
        if isinstance(value, dict):
            return dict(value)
    return {}


# =========================================================================== S6 cleanup


@case("cleanup.populate")
def _cl_populate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Upload ``count`` tiny objects under ``prefix`` with a thread pool (untimed setup)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=cfg["endpoint"],
        aws_access_key_id=cfg["key"],
        aws_secret_access_key=cfg["secret"],
        region_name=cfg["region"],
        config=Config(max_pool_connections=32),
    )
    keys = [k for k in cfg["keys"]]
    body = b"x" * 100

    def put(k: str) -> None:
        client.put_object(Bucket=cfg["bucket"], Key=k, Body=body)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    return {"phases": {}, "info": {"uploaded": len(keys), "seconds": time.perf_counter() - t0}}


@case("cleanup.store-delete-per-key")
def _cl_per_key(cfg: dict[str, Any]) -> dict[str, Any]:
    store = rs_store(cfg, cfg["store_root"])
    paths = cfg["paths"]
    store.exists("warm-up")

    def run() -> dict[str, Any]:
        for p in paths:
            store.delete(p)
        return {"deleted": len(paths)}

    return {"phases": {"delete": measure(run, 0, objects=len(paths))}}


@case("cleanup.sensor-tick")
def _cl_tick(cfg: dict[str, Any]) -> dict[str, Any]:
    """One tick of build_cleanup_sensor deleting the ``_staging`` leftovers among all objects."""
    from datetime import timedelta

    import dagster as dg

    from remote_store_dagster.cleanup import build_cleanup_sensor

    sensor = build_cleanup_sensor(store="lake", leftover_grace=timedelta(0), delete_wiped=False)
    pdef = dg.StaticPartitionsDefinition([f"p{i:05d}" for i in range(cfg["live"])])

    @dg.asset(key=["bench", "cleanup"], partitions_def=pdef)
    def live() -> None: ...

    resource = our_resource(cfg)
    defs = dg.Definitions(assets=[live], sensors=[sensor], resources={"remote_store": resource})
    instance = dg.DagsterInstance.ephemeral()
    resource.get_store("lake").exists("warm-up")

    def run() -> dict[str, Any]:
        with dg.build_sensor_context(
            instance=instance, resources={"remote_store": resource}, definitions=defs
        ) as ctx:
            result = sensor(ctx)
        text = getattr(result, "skip_reason", None)
        return {"tick_text": str(text)[:300] if text else None}

    return {"phases": {"delete": measure(run, 0, objects=cfg["leftovers"])}}


# =========================================================================== S7 many small partitions


def _small_parts(cfg: dict[str, Any]) -> tuple[Any, list[str], Any]:
    import dagster as dg

    keys = [f"p{i:04d}" for i in range(cfg["partitions"])]
    table = make_table(cfg["small_rows"], rng_state=3)
    return dg.StaticPartitionsDefinition(keys), keys, table


def _small_io(cfg: dict[str, Any], iom: Any, typ: Any, convert: Callable[[Any], Any] = lambda t: t) -> dict[str, Any]:
    pdef, keys, table = _small_parts(cfg)
    obj = convert(table)
    n = len(keys)
    outs = [out_ctx(SMALL, typ, partition_key=k, asset_partitions_def=pdef) for k in keys]
    ins = [in_ctx(SMALL, typ, partition_key=k, asset_partitions_def=pdef) for k in keys]

    def write() -> dict[str, Any]:
        for ctx in outs:
            iom.handle_output(ctx, obj)
        return {}

    def load() -> dict[str, Any]:
        rows = 0
        for ctx in ins:
            v = iom.load_input(ctx)
            rows += v.num_rows if hasattr(v, "num_rows") else v.height
        return {"rows": rows}

    nbytes = table.nbytes * n
    return {"phases": {"write": measure(write, nbytes, items=n), "load": measure(load, nbytes, items=n)}}


@case("small.raw-pyarrow")
def _s_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    fs = pa_fs(cfg)
    _, keys, table = _small_parts(cfg)
    n = len(keys)
    base = f"{cfg['bucket']}/raw/small"

    def write() -> dict[str, Any]:
        for k in keys:
            pq.write_table(table, f"{base}/partition={k}/data.parquet", filesystem=fs)
        return {}

    def load() -> dict[str, Any]:
        return {"rows": sum(pq.read_table(f"{base}/partition={k}/data.parquet", filesystem=fs).num_rows for k in keys)}

    nbytes = table.nbytes * n
    return {"phases": {"write": measure(write, nbytes, items=n), "load": measure(load, nbytes, items=n)}}


@case("small.ours")
def _s_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    return _small_io(cfg, iom, pa.Table)


@case("small.remote-store")
def _s_rs(cfg: dict[str, Any]) -> dict[str, Any]:
    store = rs_store(cfg)
    store.exists("warm-up")
    return _small_io(cfg, rs_io_manager(store), None)


@case("small.s3-pickle")
def _s_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    return _small_io(cfg, pickle_io_manager(cfg), None)


@case("small.polars")
def _s_polars(cfg: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    return _small_io(cfg, polars_io_manager(cfg), pl.DataFrame, pl.from_arrow)


# =========================================================================== S8 one partition per run


def _runs_write(cfg: dict[str, Any], iom: Any, *, store_nothing: bool = False, load: bool = False) -> dict[str, Any]:
    """Each small partition written by its own ``dagster.materialize`` run, as a daily schedule does.

    Every run sets the IO manager up again (``setup_for_execution``: clients, connections)
    and writes one object, so per-run fixed costs count here, unlike in S7. All peers share
    one ephemeral instance; an untimed warm-up run pays the process's one-time imports.
    ``store_nothing`` returns ``None``: the IO manager is set up but stores nothing.
    ``load`` adds a second phase: one run per partition that loads it into a downstream
    asset (which stores nothing), the daily job that reads yesterday's partition.
    """
    import dagster as dg

    _, keys, table = _small_parts(cfg)
    keys = keys[: cfg["run_partitions"]]
    pdef = dg.StaticPartitionsDefinition([*keys, "warm"])
    value = None if store_nothing else table

    @dg.asset(key=RUNS, partitions_def=pdef)
    def runs() -> Any:
        return value

    seen: list[int] = []

    @dg.asset(key=[*RUNS[:-1], "runs_down"], partitions_def=pdef, ins={"up": dg.AssetIn(key=RUNS)})
    def runs_down(up: Any) -> None:
        seen.append(up.num_rows)

    instance = dg.DagsterInstance.ephemeral()
    resources = {"io_manager": iom}

    def run(key: str) -> None:
        assert dg.materialize([runs], partition_key=key, resources=resources, instance=instance).success

    def run_load(key: str) -> None:
        result = dg.materialize(
            [runs, runs_down], selection=[runs_down], partition_key=key, resources=resources, instance=instance
        )
        assert result.success

    run("warm")
    if load:
        run_load("warm")

    def write() -> dict[str, Any]:
        for key in keys:
            run(key)
        return {}

    def load_all() -> dict[str, Any]:
        seen.clear()
        for key in keys:
            run_load(key)
        assert len(seen) == len(keys)
        return {"rows": sum(seen)}

    n = len(keys)
    phases = {"write": measure(write, table.nbytes * n, items=n)}
    if load:
        phases["load"] = measure(load_all, table.nbytes * n, items=n)
    return {"phases": phases}


@case("runs.dagster-only")
def _runs_dagster(cfg: dict[str, Any]) -> dict[str, Any]:
    """The run itself: Dagster's in-memory IO manager, no store."""
    import dagster as dg

    return _runs_write(cfg, dg.InMemoryIOManager())


@case("runs.ours-setup-only")
def _runs_setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Our IO manager set up in every run (registry, clients) but storing nothing (the asset returns None)."""
    from remote_store_dagster import RemoteStoreIOManager

    return _runs_write(cfg, RemoteStoreIOManager(remote_store=our_resource(cfg), store="lake"), store_nothing=True)


@case("runs.ours")
def _runs_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    from remote_store_dagster import RemoteStoreIOManager

    return _runs_write(cfg, RemoteStoreIOManager(remote_store=our_resource(cfg), store="lake"), load=True)


@case("runs.s3-pickle")
def _runs_pickle(cfg: dict[str, Any]) -> dict[str, Any]:
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    iom = S3PickleIOManager(
        s3_resource=S3Resource(
            endpoint_url=cfg["endpoint"],
            aws_access_key_id=cfg["key"],
            aws_secret_access_key=cfg["secret"],
            region_name=cfg["region"],
        ),
        s3_bucket=cfg["bucket"],
        s3_prefix="pickle",
    )
    return _runs_write(cfg, iom, load=True)
# =========================================================================== S8 a year of daily partitions


DAILY = ["bench", "daily"]
DAILY_START = "2024-01-01"


def _daily(cfg: dict[str, Any]) -> tuple[Any, list[str]]:
    import dagster as dg

    pdef = dg.DailyPartitionsDefinition(start_date=DAILY_START)
    keys = pdef.get_partition_keys()[: cfg["days"]]
    return pdef, keys


def _daily_in(cfg: dict[str, Any], typ: Any) -> Any:
    from dagster import PartitionKeyRange

    pdef, keys = _daily(cfg)
    return in_ctx(DAILY, typ, asset_partitions_def=pdef, asset_partition_key_range=PartitionKeyRange(keys[0], keys[-1]))


@case("parts.prep")
def _pt_prep(cfg: dict[str, Any]) -> dict[str, Any]:
    """``days`` daily partitions of ``day_rows`` rows written through our IO manager (untimed setup)."""
    from concurrent.futures import ThreadPoolExecutor

    pdef, keys = _daily(cfg)
    iom = our_io_manager(cfg)
    our_store(iom)
    tables = [make_table(cfg["day_rows"], rng_state=100 + i) for i in range(8)]
    ctxs = [out_ctx(DAILY, partition_key=k, asset_partitions_def=pdef) for k in keys]

    def put(i: int) -> None:
        iom.handle_output(ctxs[i], tables[i % len(tables)])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(keys))))
    folder = f"{cfg['bucket']}/ours/bench/daily"
    import pyarrow.fs as pafs

    infos = pa_fs(cfg).get_file_info(pafs.FileSelector(folder, recursive=True))
    stored = sum(i.size for i in infos if i.type == pafs.FileType.File)
    return {"phases": {}, "info": {"seconds": time.perf_counter() - t0, "stored_bytes": stored, "days": len(keys)}}


def _parts_bytes(cfg: dict[str, Any]) -> int:
    import pyarrow.fs as pafs

    infos = pa_fs(cfg).get_file_info(pafs.FileSelector(f"{cfg['bucket']}/ours/bench/daily", recursive=True))
    return sum(i.size for i in infos if i.type == pafs.FileType.File)


@case("parts.pyarrow-dataset")
def _pt_dataset(cfg: dict[str, Any]) -> dict[str, Any]:
    """The reference: ``pyarrow.dataset(<asset folder>, partitioning="hive").to_table()``."""
    import pyarrow.dataset as ds

    fs = pa_fs(cfg)
    nbytes = _parts_bytes(cfg)

    def run() -> dict[str, Any]:
        folder = f"{cfg['bucket']}/ours/bench/daily"
        table = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive").to_table()
        return {"rows": table.num_rows}

    return {"phases": {"load": measure(run, nbytes)}}


@case("parts.ours-table")
def _pt_ours_table(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    nbytes = _parts_bytes(cfg)
    ctx = _daily_in(cfg, pa.Table)

    def run() -> dict[str, Any]:
        return {"rows": iom.load_input(ctx).num_rows}

    return {"phases": {"load": measure(run, nbytes)}}


@case("parts.ours-dict")
def _pt_ours_dict(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    nbytes = _parts_bytes(cfg)
    ctx = _daily_in(cfg, dict[str, pa.Table])

    def run() -> dict[str, Any]:
        value = iom.load_input(ctx)
        return {"rows": sum(t.num_rows for t in value.values()), "items": len(value)}

    return {"phases": {"load": measure(run, nbytes)}}


@case("parts.ours-stream")
def _pt_ours_stream(cfg: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    iom = our_io_manager(cfg)
    our_store(iom)
    nbytes = _parts_bytes(cfg)
    ctx = _daily_in(cfg, pa.RecordBatchReader)

    def run() -> dict[str, Any]:
        return {"rows": sum(b.num_rows for b in iom.load_input(ctx))}

    return {"phases": {"load": measure(run, nbytes)}}


# --------------------------------------------------------------------------- main


def main() -> None:
    name, cfg_json = sys.argv[1], sys.argv[2]
    if cfg_json.startswith("@"):
        with open(cfg_json[1:]) as f:
            cfg = json.load(f)
    else:
        cfg = json.loads(cfg_json)
    if name not in CASES:
        raise SystemExit(f"unknown case {name!r}; known: {', '.join(sorted(CASES))}")
    out = CASES[name](cfg)
    out.setdefault("info", {})
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
