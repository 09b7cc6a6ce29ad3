"""A shaping TCP proxy: a far S3 link in front of a server on 127.0.0.1.

``./bench/run --link cloud`` puts one of these between every benchmark case and
SeaweedFS. Per connection and per direction it models a link:

- **delay**: every chunk read from one side is released to the other at its
  arrival time plus the one-way delay. Chunks wait in a timestamped queue, so
  the delay costs latency, never throughput (many chunks are in the air at once,
  as on a real link with a large enough TCP window);
- **bandwidth cap**: a token bucket (``rate`` bytes/s, ``burst`` bytes deep) per
  connection and direction; a chunk leaves the bucket when its last byte has
  been "sent" at that rate, then takes the delay;
- **connection set-up cost**: the first bytes of a new connection wait
  ``setup_rtts`` extra round trips (a TCP handshake is 1, TLS 1.3 adds 1, TLS 1.2 2),
  which a connection to 127.0.0.1 never pays.

Read-side back-pressure (``pause_reading`` once more than ``queue_limit`` bytes
wait) bounds the proxy's memory without cutting throughput: the limit is well
above the bandwidth-delay product.

It also parses the HTTP/1.1 framing on both streams (request heads and body
lengths client -> server, response heads and body lengths server -> client) and
counts requests by method, ranged GETs, new connections, requests in flight
(from the request's first byte at the proxy to its response's last byte handed
to the client; the peak is reported), ``Expect: 100-continue`` waits and bytes
each way. A control port answers ``reset`` and ``stats`` (one JSON line), so a
benchmark case can count exactly its timed phase.

Run standalone (the harness does this)::

    python bench/linkproxy.py --upstream-port 8333 --delay-ms 10 --rate-mb 100

prints ``{"port": ..., "control_port": ...}`` on its first line and serves until
its stdin closes or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class LinkProfile:
    """One link: one-way ``delay_s`` each direction, ``rate`` bytes/s per connection and direction
    (``None``: uncapped), token-bucket depth ``burst``, ``setup_rtts`` round trips per new connection."""

    name: str
    delay_s: float = 0.0
    rate: float | None = None
    burst: int = 256 * KiB
    setup_rtts: int = 0

    def describe(self) -> str:
        parts = [f"{self.delay_s * 1000:g} ms each way"]
        parts.append(f"{self.rate / 1e6:g} MB/s per connection and direction" if self.rate else "no bandwidth cap")
        if self.setup_rtts:
            parts.append(f"{self.setup_rtts} extra round trip(s) per new connection")
        return ", ".join(parts)


#: ``loopback`` has no proxy at all; ``counted`` is the proxy with no delay and no cap (it only counts).
PROFILES: dict[str, LinkProfile | None] = {
    "loopback": None,
    "counted": LinkProfile("counted"),
    "cloud": LinkProfile("cloud", delay_s=0.010, rate=100e6),
    "cloud-tls": LinkProfile("cloud-tls", delay_s=0.010, rate=100e6, setup_rtts=2),
}


# --------------------------------------------------------------------------- HTTP framing


class _Framer:
    """Incremental HTTP/1.1 message framing on one direction of a connection.

    ``feed`` takes the bytes as they pass and calls ``on_head`` for every message head
    and ``on_end`` when a message's body is complete. Bodies are skipped by length
    (Content-Length, chunked sizes), never scanned, so the cost per byte is nil.
    """

    def __init__(self, conn: _Conn, responses: bool) -> None:
        self.conn = conn
        self.responses = responses
        self.buf = bytearray()
        self.state = "head"  # head | body | chunk-size | chunk-data | chunk-crlf | trailer | close | broken
        self.remaining = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        n = len(view)
        while pos < n:
            state = self.state
            if state in ("body", "chunk-data", "chunk-crlf"):
                take = min(self.remaining, n - pos)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    if state == "body":
                        self._end()
                    elif state == "chunk-data":
                        self.state, self.remaining = "chunk-crlf", 2
                    else:
                        self.state = "chunk-size"
                continue
            if state in ("close", "broken"):
                return
            # line-oriented states: head, chunk-size, trailer
            self.buf += view[pos:]
            pos = n
            while self.state in ("head", "chunk-size", "trailer"):
                if self.state == "head":
                    end = self.buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(self.buf) > 256 * KiB:
                            self.state = "broken"
                        break
                    head = bytes(self.buf[: end + 4])
                    del self.buf[: end + 4]
                    self._head(head)
                else:
                    end = self.buf.find(b"\r\n")
                    if end < 0:
                        break
                    line = bytes(self.buf[:end])
                    del self.buf[: end + 2]
                    if self.state == "chunk-size":
                        try:
                            size = int(line.split(b";")[0].strip() or b"0", 16)
                        except ValueError:
                            self.state = "broken"
                            break
                        if size == 0:
                            self.state = "trailer"
                        else:
                            self.state, self.remaining = "chunk-data", size
                    elif line == b"":  # end of trailers
                        self._end()
                if self.state in ("body", "chunk-data", "chunk-crlf") and self.buf:
                    rest = bytes(self.buf)
                    self.buf.clear()
                    self.feed(rest)
                    return

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        first = lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if self.responses:
            try:
                status = int(first.split(" ", 2)[1])
            except (IndexError, ValueError):
                self.state = "broken"
                return
            method = self.conn.pending[0] if self.conn.pending else "GET"
            if 100 <= status < 200:
                self.state = "head"  # interim (100 Continue): the real answer follows
                return
            if method == "HEAD" or status in (204, 304):
                self.state = "head"
                self._end()
                return
        else:
            method = first.split(" ", 1)[0]
            self.conn.proxy.stats.request(self.conn, method, headers)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "chunk-size"
        elif "content-length" in headers:
            try:
                self.remaining = int(headers["content-length"])
            except ValueError:
                self.state = "broken"
                return
            self.state = "body"
            if self.remaining == 0:
                self._end()
        elif self.responses:
            self.state = "close"  # body runs to the end of the connection
        else:
            self.state = "head"
            self._end()

    def _end(self) -> None:
        self.state = "head"
        if self.responses:
            self.conn.proxy.stats.answered(self.conn)


# --------------------------------------------------------------------------- statistics


class Stats:
    """Counters of one phase (``reset`` starts a new one); touched only on the event loop."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.open_connections = 0
        self.reset()

    def reset(self) -> None:
        self.methods: collections.Counter[str] = collections.Counter()
        self.ranged_gets = 0
        self.expect_continue = 0
        self.connections = 0
        self.peak_in_flight = self.in_flight
        self.peak_connections = self.open_connections
        self.bytes_up = 0
        self.bytes_down = 0

    def request(self, conn: _Conn, method: str, headers: dict[str, str]) -> None:
        self.methods[method] += 1
        if method == "GET" and "range" in headers:
            self.ranged_gets += 1
        if headers.get("expect", "").lower() == "100-continue":
            self.expect_continue += 1
        conn.pending.append(method)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def answered(self, conn: _Conn) -> None:
        if conn.pending:
            conn.pending.popleft()
            self.in_flight -= 1

    def dropped(self, conn: _Conn) -> None:
        """A connection closed with requests unanswered."""
        self.in_flight -= len(conn.pending)
        conn.pending.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": sum(self.methods.values()),
            "methods": dict(sorted(self.methods.items())),
            "ranged_gets": self.ranged_gets,
            "expect_continue": self.expect_continue,
            "connections": self.connections,
            "peak_connections": self.peak_connections,
            "peak_in_flight": self.peak_in_flight,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


# --------------------------------------------------------------------------- the link


class _Pipe:
    """One direction of one connection: timestamped queue, token bucket, delay, back-pressure."""

    def __init__(self, proxy: LinkProxy, conn: _Conn, framer: _Framer, *, upstream: bool, not_before: float) -> None:
        self.proxy = proxy
        self.conn = conn
        self.framer = framer
        self.upstream = upstream  # client -> server
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.vt = 0.0  # token bucket: virtual time its last queued byte leaves (starts full)
        self.not_before = not_before
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.dst_paused = False
        self.src_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.eof = False

    def push(self, data: bytes | None) -> None:
        loop = self.proxy.loop
        now = loop.time()
        p = self.proxy.profile
        if data is None:
            self.eof = True
        else:
            if self.upstream:
                self.framer.feed(data)  # requests count when they reach the proxy
                self.proxy.stats.bytes_up += len(data)
            else:
                self.proxy.stats.bytes_down += len(data)
        depart = max(now, self.not_before)
        if p.rate and data:
            self.vt = max(self.vt, depart - p.burst / p.rate) + len(data) / p.rate
            depart = max(depart, self.vt)
        release = depart + p.delay_s
        if self.queue and release < self.queue[-1][0]:
            release = self.queue[-1][0]  # FIFO
        self.queue.append((release, data))
        if data:
            self.queued += len(data)
            if self.queued > self.proxy.queue_limit and self.src is not None and not self.src_paused:
                self.src_paused = True
                with contextlib.suppress(Exception):
                    self.src.pause_reading()
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None or not self.queue or self.dst is None or self.dst_paused or self.closed:
            return
        when = self.queue[0][0]
        loop = self.proxy.loop
        if when <= loop.time():
            self.flush()
        else:
            self.timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        loop = self.proxy.loop
        dst = self.dst
        if dst is None or self.closed:
            return
        now = loop.time()
        while self.queue and self.queue[0][0] <= now + 0.0002 and not self.dst_paused:
            _, data = self.queue.popleft()
            if data is None:
                if self.upstream and dst.can_write_eof():
                    with contextlib.suppress(Exception):
                        dst.write_eof()  # the client half-closed: pass it on, wait for the answer
                else:
                    self.conn.close()  # the server is done: close once the queued answer is written
                    return
                continue
            self.queued -= len(data)
            dst.write(data)
            if not self.upstream:
                self.framer.feed(data)  # responses end when their last byte reaches the client
        if self.src_paused and self.queued <= self.proxy.queue_limit // 2 and self.src is not None:
            self.src_paused = False
            with contextlib.suppress(Exception):
                self.src.resume_reading()
        self._schedule()

    def pause_writing(self) -> None:
        self.dst_paused = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def resume_writing(self) -> None:
        self.dst_paused = False
        self._schedule()

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Conn:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.pending: collections.deque[str] = collections.deque()
        loop = proxy.loop
        p = proxy.profile
        ready = loop.time() + p.setup_rtts * 2 * p.delay_s
        self.up = _Pipe(proxy, self, _Framer(self, responses=False), upstream=True, not_before=ready)
        self.down = _Pipe(proxy, self, _Framer(self, responses=True), upstream=False, not_before=ready)
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.close()
        self.down.close()
        for t in (self.client, self.server):
            if t is not None:
                t.close()
        stats = self.proxy.stats
        stats.dropped(self)
        stats.open_connections -= 1


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.conn = _Conn(proxy)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        conn = self.conn
        conn.client = transport
        conn.up.src = transport
        conn.down.dst = transport
        stats = self.proxy.stats
        stats.connections += 1
        stats.open_connections += 1
        stats.peak_connections = max(stats.peak_connections, stats.open_connections)
        self.proxy.loop.create_task(self._connect())

    async def _connect(self) -> None:
        conn = self.conn
        try:
            transport, _ = await self.proxy.loop.create_connection(
                lambda: _ServerSide(conn), self.proxy.upstream_host, self.proxy.upstream_port
            )
        except OSError:
            conn.close()
            return
        if conn.closed:
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        conn.server = transport
        conn.down.src = transport
        conn.up.dst = transport
        conn.up._schedule()

    def data_received(self, data: bytes) -> None:
        self.conn.up.push(data)

    def eof_received(self) -> bool:
        self.conn.up.push(None)
        return True  # keep the transport half-open until the answer has gone back

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()

    def pause_writing(self) -> None:
        self.conn.down.pause_writing()

    def resume_writing(self) -> None:
        self.conn.down.resume_writing()


class _ServerSide(asyncio.Protocol):
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.down.push(data)

    def eof_received(self) -> bool:
        self.conn.down.push(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # The queued answer still goes to the client, then the client side closes.
        conn = self.conn
        if not conn.closed and not conn.down.eof:
            conn.down.push(None)

    def pause_writing(self) -> None:
        self.conn.up.pause_writing()

    def resume_writing(self) -> None:
        self.conn.up.resume_writing()


class LinkProxy:
    """The proxy on its own event loop thread: ``start()``, ``endpoint_url``, ``stats()``, ``stop()``."""

    def __init__(
        self,
        upstream_port: int,
        profile: LinkProfile,
        *,
        upstream_host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        queue_limit: int = 4 * MiB,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.profile = profile
        self.queue_limit = max(queue_limit, int(2 * (profile.rate or 0) * profile.delay_s))
        self.stats = Stats()
        self.loop = asyncio.new_event_loop()
        self._want_port = port
        self._want_control = control_port
        self.port = 0
        self.control_port = 0
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LinkProxy:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="link-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]
        return self

    async def _open(self) -> None:
        server = await self.loop.create_server(
            lambda: _ClientSide(self), "127.0.0.1", self._want_port, backlog=256, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        control = await self.loop.create_server(lambda: _Control(self), "127.0.0.1", self._want_control)
        self.control_port = control.sockets[0].getsockname()[1]
        self._servers = [server, control]

    def _call(self, fn: Any) -> Any:
        done = threading.Event()
        out: list[Any] = []

        def go() -> None:
            out.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(go)
        done.wait()
        return out[0]

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        def fn() -> dict[str, Any]:
            snap = self.stats.snapshot()
            if reset:
                self.stats.reset()
            return snap

        return self._call(fn)

    def reset(self) -> None:
        self._call(self.stats.reset)

    def stop(self) -> None:
        if self._thread is None:
            return

        def shut() -> None:
            for s in getattr(self, "_servers", []):
                s.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(shut)
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Control(asyncio.Protocol):
    """``reset`` / ``stats`` / ``stats-reset``, one per line; each answered with one JSON line."""

    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            cmd = line.decode().strip()
            stats = self.proxy.stats
            if cmd == "reset":
                stats.reset()
                answer: dict[str, Any] = {"ok": True}
            elif cmd in ("stats", "stats-reset"):
                answer = stats.snapshot()
                if cmd == "stats-reset":
                    stats.reset()
            else:
                answer = {"error": f"unknown command {cmd!r}"}
            self.transport.write(json.dumps(answer).encode() + b"\n")


def control(address: str, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to a proxy's control port (``host:port``) and return its answer."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return dict(json.loads(buf))


# --------------------------------------------------------------------------- as a subprocess


class LinkProxyProcess:
    """The proxy in its own process (its own GIL): what the harness starts in front of the server."""

    def __init__(self, upstream_port: int, profile: LinkProfile) -> None:
        self.upstream_port = upstream_port
        self.profile = profile
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.control_port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    def start(self) -> LinkProxyProcess:
        p = self.profile
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--upstream-port",
            str(self.upstream_port),
            "--delay-ms",
            repr(p.delay_s * 1000),
            "--burst-kib",
            str(p.burst // KiB),
            "--setup-rtts",
            str(p.setup_rtts),
        ]
        if p.rate:
            cmd += ["--rate-mb", repr(p.rate / 1e6)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError("link proxy did not start")
        info = json.loads(first)
        self.port, self.control_port = int(info["port"]), int(info["control_port"])
        return self

    def control(self, command: str) -> dict[str, Any]:
        return control(self.control_address, command)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> LinkProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    ap.add_argument("--rate-mb", type=float, default=None, help="MB/s (10^6) per connection and direction")
    ap.add_argument("--burst-kib", type=int, default=256)
    ap.add_argument("--setup-rtts", type=int, default=0)
    args = ap.parse_args()
    profile = LinkProfile(
        "custom",
        delay_s=args.delay_ms / 1000,
        rate=args.rate_mb * 1e6 if args.rate_mb else None,
        burst=args.burst_kib * KiB,
        setup_rtts=args.setup_rtts,
    )
    proxy = LinkProxy(
        args.upstream_port, profile, upstream_host=args.upstream_host, port=args.port, control_port=args.control_port
    ).start()
    print(json.dumps({"port": proxy.port, "control_port": proxy.control_port}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or dies)
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
