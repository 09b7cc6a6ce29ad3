"""Self-check of the shaping proxy (``./bench/run --validate-link``).

Starts SeaweedFS, stores one object, and measures with PyArrow's S3 client,
each figure the median of a few tries, straight to the server and through the
proxy (in its own process, as the benchmark runs it):

1. overhead at delay 0 (``counted`` profile): per HEAD, one whole-object GET,
   8 ranged GETs at once;
2. a HEAD on a warm connection costs 2 x the one-way delay more;
3. one capped GET of the object takes size / cap (+ one round trip), the same
   at delay 0 and at the cloud delay (the delay queue does not cut throughput);
4. 8 ranged GETs at once (8 connections) finish about 8x faster than one GET;
   where the machine cannot move 8 x the cap at all, a lower cap shows the scaling.

Prints a Markdown report (``docs/benchmarks.md`` quotes it).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from linkproxy import PROFILES, LinkProfile, LinkProxyProcess  # noqa: E402

MiB = 1024 * 1024
KEY = "bench/linkcheck.bin"


def _fs(server: Any, url: str) -> Any:
    import pyarrow.fs as pafs

    scheme, _, host = url.partition("://")
    return pafs.S3FileSystem(
        access_key=server.access_key,
        secret_key=server.secret_key,
        endpoint_override=host,
        scheme=scheme,
        region=server.region,
    )


class _Client:
    """One PyArrow filesystem, one open input file of the object (opened once: its HEAD is not timed)."""

    def __init__(self, server: Any, url: str, size: int) -> None:
        self.fs = _fs(server, url)
        self.size = size
        self.file = self.fs.open_input_file(KEY)
        self.pool = ThreadPoolExecutor(8)

    def head(self) -> None:
        self.fs.get_file_info(KEY)

    def get_all(self, size: int | None = None) -> None:
        size = size or self.size
        assert len(self.file.read_at(size, 0)) == size

    def get_ranges(self, size: int | None = None, n: int = 8) -> None:
        size = size or self.size
        step = -(-size // n)
        ranges = [(o, min(step, size - o)) for o in range(0, size, step)]
        got = sum(self.pool.map(lambda r: len(self.file.read_at(r[1], r[0])), ranges))
        assert got == size

    def close(self) -> None:
        self.pool.shutdown()
        self.file.close()


def run(size_mib: int = 256, tries: int = 3) -> str:
    from remote_store_dagster.testing import SeaweedFSServer

    size = size_mib * MiB
    workdir = Path(tempfile.mkdtemp(prefix="rsd-linkcheck-"))
    server = SeaweedFSServer(data_dir=workdir / "seaweedfs", log_path=workdir / "seaweedfs.log")
    server.start()
    lines: list[str] = []
    try:
        server.create_bucket("bench")
        with _fs(server, server.endpoint_url).open_output_stream(KEY) as out:
            block = os.urandom(MiB)
            for _ in range(size_mib):
                out.write(block)
        cloud_profile = PROFILES["cloud"]
        assert cloud_profile is not None
        assert cloud_profile.rate
        slow_rate = 25e6
        slow_size = size // 4
        links = {
            "counted": PROFILES["counted"] or LinkProfile("counted"),
            "cloud": cloud_profile,
            "cap": LinkProfile("cap", rate=cloud_profile.rate),
            "slow": LinkProfile("cloud-25", delay_s=cloud_profile.delay_s, rate=slow_rate),
        }
        proxies = {name: LinkProxyProcess(server.port, profile).start() for name, profile in links.items()}
        clients = {name: _Client(server, proxy.endpoint_url, size) for name, proxy in proxies.items()}
        clients["direct"] = _Client(server, server.endpoint_url, size)
        for client in clients.values():
            client.get_ranges(MiB)  # opens 8 pooled connections, kept alive as a real client does
        # (client, operation) -> (function, repetitions per round); rounds interleave every check,
        # so that load from other jobs on the machine spreads over all of them.
        plan: dict[tuple[str, str], tuple[Any, int]] = {
            ("direct", "head"): (clients["direct"].head, 6),
            ("counted", "head"): (clients["counted"].head, 6),
            ("cloud", "head"): (clients["cloud"].head, 3),
            ("direct", "get"): (clients["direct"].get_all, 1),
            ("counted", "get"): (clients["counted"].get_all, 1),
            ("cap", "get"): (clients["cap"].get_all, 1),
            ("cloud", "get"): (clients["cloud"].get_all, 1),
            ("direct", "ranges"): (clients["direct"].get_ranges, 1),
            ("counted", "ranges"): (clients["counted"].get_ranges, 1),
            ("cloud", "ranges"): (clients["cloud"].get_ranges, 1),
            ("slow", "get"): (lambda: clients["slow"].get_all(slow_size), 1),
            ("slow", "ranges"): (lambda: clients["slow"].get_ranges(slow_size), 1),
        }
        times: dict[tuple[str, str], list[float]] = {k: [] for k in plan}
        stats: dict[tuple[str, str], dict[str, Any]] = {}
        for _ in range(tries):
            for (name, op), (fn, reps) in plan.items():
                proxy = proxies.get(name)
                if proxy:
                    proxy.control("reset")
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    times[(name, op)].append(time.perf_counter() - t0)
                if proxy:
                    stats[(name, op)] = proxy.control("stats")
        for client in clients.values():
            client.close()
        for proxy in proxies.values():
            proxy.stop()
        med = {k: statistics.median(v) for k, v in times.items()}
        d_head, d_get, d_ranges = med[("direct", "head")], med[("direct", "get")], med[("direct", "ranges")]
        counted = {op: med[("counted", op)] for op in ("head", "get", "ranges")}
        counted.update({f"{op}_stats": stats[("counted", op)] for op in ("head", "get", "ranges")})
        cloud = {op: med[("cloud", op)] for op in ("head", "get", "ranges")}
        cloud["ranges_stats"] = stats[("cloud", "ranges")]
        cap_only = {"get": med[("cap", "get")]}
        slow = {"get": med[("slow", "get")], "ranges": med[("slow", "ranges")]}
        slow["ranges_stats"] = stats[("slow", "ranges")]

        mb = size / 1e6
        rtt = 2 * cloud_profile.delay_s
        lines.append(
            f"Object {size_mib} MiB; PyArrow {__import__('pyarrow').__version__} S3 client, connections kept warm; "
            f"checks interleaved over {tries} rounds, medians (HEAD: of {3 * tries}-{6 * tries}); each proxy in its "
            f"own process. Load average at start "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores."
        )
        lines.append("")
        lines.append("| check | direct | through the proxy | expected | result |")
        lines.append("|---|---:|---:|---:|---|")
        lines.append(
            f"| delay 0, no cap: one HEAD | {d_head * 1e3:.2f} ms | {counted['head'] * 1e3:.2f} ms | ≈ direct | "
            f"+{(counted['head'] - d_head) * 1e3:.2f} ms per request |"
        )
        lines.append(
            f"| delay 0, no cap: one GET of the object | {mb / d_get:.0f} MB/s | {mb / counted['get']:.0f} MB/s | "
            f"≈ direct | {100 * (counted['get'] / d_get - 1):+.0f} % time |"
        )
        lines.append(
            f"| delay 0, no cap: 8 ranged GETs at once | {mb / d_ranges:.0f} MB/s | "
            f"{mb / counted['ranges']:.0f} MB/s | ≈ direct | {100 * (counted['ranges'] / d_ranges - 1):+.0f} % time |"
        )
        lines.append(
            f"| cloud: one HEAD (warm connection) | {d_head * 1e3:.2f} ms | {cloud['head'] * 1e3:.2f} ms | "
            f"direct + {rtt * 1e3:.0f} ms | +{(cloud['head'] - d_head) * 1e3:.1f} ms |"
        )
        expect_get = size / cloud_profile.rate + rtt
        lines.append(
            f"| cap {cloud_profile.rate / 1e6:.0f} MB/s, delay 0: one GET | | {cap_only['get']:.3f} s | "
            f"{size / cloud_profile.rate:.3f} s | {cap_only['get'] / (size / cloud_profile.rate):.2f}× expected |"
        )
        lines.append(
            f"| cloud: one GET ({cloud_profile.rate / 1e6:.0f} MB/s, {cloud_profile.delay_s * 1e3:.0f} ms) | | "
            f"{cloud['get']:.3f} s | {expect_get:.3f} s | {cloud['get'] / expect_get:.2f}× expected; "
            f"delay costs {(cloud['get'] - cap_only['get']) * 1e3:+.0f} ms vs delay 0 |"
        )
        peak = cloud["ranges_stats"]["peak_in_flight"]
        lines.append(
            f"| cloud: 8 ranged GETs at once | {d_ranges:.3f} s | {cloud['ranges']:.3f} s | "
            f"{max(size / cloud_profile.rate / 8 + rtt, d_ranges):.3f} s | {cloud['get'] / cloud['ranges']:.1f}× one GET "
            f"({mb / cloud['ranges']:.0f} MB/s, {peak} in flight) |"
        )
        expect_slow = slow_size / slow_rate + rtt
        speedup = slow["get"] / slow["ranges"]
        lines.append(
            f"| {slow_rate / 1e6:.0f} MB/s, {cloud_profile.delay_s * 1e3:.0f} ms: one GET vs 8 ranged GETs "
            f"({slow_size // MiB} MiB) | | "
            f"{slow['get']:.3f} s / {slow['ranges']:.3f} s | "
            f"{expect_slow:.3f} s / {slow_size / slow_rate / 8 + rtt:.3f} s | "
            f"{speedup:.1f}× ({slow['ranges_stats']['peak_in_flight']} in flight) |"
        )
        lines.append("")
        lines.append(
            "Requests counted by the proxy: "
            f"6 HEADs → `{counted['head_stats']['methods']}`; "
            f"one whole GET → `{counted['get_stats']['methods']}` ({counted['get_stats']['ranged_gets']} ranged); "
            f"8 ranged GETs → `{counted['ranges_stats']['methods']}`, peak "
            f"{counted['ranges_stats']['peak_in_flight']} in flight."
        )
    finally:
        server.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 256))
