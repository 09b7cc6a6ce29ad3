"""A small fault-injecting HTTP/1.1 proxy on 127.0.0.1 for S3 fault tests.

It sits between S3 clients (PyArrow's C++ S3 client, s3fs/botocore) and a real
S3 server, forwards every request unchanged, and lets a test decide per
request whether to forward it, answer ``500``/``503`` itself, reset the
connection (TCP RST) before forwarding, or forward it and then reset the
connection instead of relaying the answer (the server acted, the client never
learns it).

Requests are classified by S3 operation (``UploadPart``,
``CompleteMultipartUpload``, ...), from the method and query string, so a rule
can target one step of a multipart upload.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

PASS = "pass"
ERROR_500 = "500"
ERROR_503 = "503"
ACCESS_DENIED = "403"  # what S3 answers an IAM policy that lacks the operation's permission
NOT_IMPLEMENTED = "501"  # what a server without the operation (s3rver: ListMultipartUploads) answers
RESET = "reset"  # RST before the request reaches the server
RESET_AFTER = "reset_after"  # forwarded; RST instead of the server's answer
CORRUPT = "corrupt"  # forwarded with one byte of the body flipped (a fault in transit)
NO_CHECKSUMS = "400"  # what a server that does not take x-amz-checksum-* parameters answers

Rule = Callable[["Request", int], str]


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.target).query, keep_blank_values=True)

    @property
    def path(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.target).path)

    @property
    def operation(self) -> str:
        q = self.query
        if self.method == "PUT" and "partNumber" in q and "uploadId" in q:
            return "UploadPart"
        if self.method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        if self.method == "GET" and "uploads" in q:
            return "ListMultipartUploads"
        if self.method == "GET" and "uploadId" in q:
            return "ListParts"
        if self.method == "POST" and "delete" in q:
            return "DeleteObjects"
        return self.method


def pass_all(request: Request, count: int) -> str:
    return PASS


@dataclass
class FaultProxy:
    """``with FaultProxy(upstream_port) as proxy:`` then point clients at ``proxy.endpoint_url``."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    rule: Rule = pass_all
    counts: Counter[str] = field(default_factory=Counter)
    actions: list[tuple[str, str]] = field(default_factory=list)
    #: Requests that asked for ``Expect: 100-continue``, by operation.
    expect_continue: Counter[str] = field(default_factory=Counter)
    #: Requests forwarded and not yet answered, and the most there were at once, by operation.
    in_flight: Counter[str] = field(default_factory=Counter)
    peak_in_flight: Counter[str] = field(default_factory=Counter)
    #: (operation, "sent" | "answered", time.monotonic()) of every forwarded request.
    timeline: list[tuple[str, str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socket.socket | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.getsockname()[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def injected(self) -> list[tuple[str, str]]:
        """(operation, action) of every request that was not simply forwarded."""
        with self._lock:
            return [a for a in self.actions if a[1] != PASS]

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self, request: Request) -> str:
        with self._lock:
            self.counts[request.operation] += 1
            count = self.counts[request.operation]
        action = self.rule(request, count)
        with self._lock:
            self.actions.append((request.operation, action))
        return action

    def _track(self, operation: str, what: str) -> None:
        with self._lock:
            self.timeline.append((operation, what, time.monotonic()))
            self.in_flight[operation] += 1 if what == "sent" else -1
            self.peak_in_flight[operation] = max(self.peak_in_flight[operation], self.in_flight[operation])

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        client_in = client.makefile("rb")
        try:
            while True:
                head = _read_head(client_in)
                if head is None:
                    return
                request_line, headers, raw_headers = head
                method, target, _version = request_line.split(" ", 2)
                request = Request(method, target, headers)
                if headers.get("expect", "").lower() == "100-continue":
                    with self._lock:
                        self.expect_continue[request.operation] += 1
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    raw_headers = [h for h in raw_headers if not h.lower().startswith(b"expect:")]
                body = _read_body(client_in, headers)
                action = self._decide(request)
                if action == RESET:
                    _reset(client)
                    return
                if action in (ERROR_500, ERROR_503, ACCESS_DENIED, NOT_IMPLEMENTED, NO_CHECKSUMS):
                    client.sendall(_error_response(int(action)))
                    continue
                if upstream is None:
                    upstream = socket.create_connection((self.upstream_host, self.upstream_port))
                    upstream_in = upstream.makefile("rb")
                if action == CORRUPT and body:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
                self._track(request.operation, "sent")
                try:
                    upstream.sendall(
                        request_line.encode() + b"\r\n" + b"".join(h + b"\r\n" for h in raw_headers) + b"\r\n" + body
                    )
                    response = _read_response(upstream_in, method)
                finally:
                    self._track(request.operation, "answered")
                if action == RESET_AFTER:
                    _reset(client)
                    return
                client.sendall(response)
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.close()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees ``connection reset by peer``."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_head(stream: object) -> tuple[str, dict[str, str], list[bytes]] | None:
    readline = stream.readline  # type: ignore[attr-defined]
    line = readline(65536)
    while line in (b"\r\n", b"\n"):
        line = readline(65536)
    if not line:
        return None
    request_line = line.decode("latin-1").rstrip("\r\n")
    raw: list[bytes] = []
    headers: dict[str, str] = {}
    while True:
        h = readline(65536)
        if not h:
            raise ValueError("connection closed inside headers")
        if h in (b"\r\n", b"\n"):
            break
        h = h.rstrip(b"\r\n")
        raw.append(h)
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return request_line, headers, raw


def _read_body(stream: object, headers: dict[str, str]) -> bytes:
    read = stream.read  # type: ignore[attr-defined]
    readline = stream.readline  # type: ignore[attr-defined]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line = readline(65536)
            out += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then an empty line
                    trailer = readline(65536)
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(out)
            out += read(size)
            out += readline(65536)
    length = int(headers.get("content-length", "0") or 0)
    data = read(length) if length else b""
    if len(data) != length:
        raise ValueError("connection closed inside body")
    return bytes(data)


def _read_response(stream: object, method: str) -> bytes:
    while True:
        head = _read_head(stream)
        if head is None:
            raise ValueError("upstream closed the connection")
        status_line, headers, raw = head
        status = int(status_line.split(" ", 2)[1])
        raw_head = status_line.encode() + b"\r\n" + b"".join(h + b"\r\n" for h in raw) + b"\r\n"
        if 100 <= status < 200:
            continue  # interim answers (we already sent 100 Continue ourselves)
        if method == "HEAD" or status in (204, 304):
            return raw_head
        if "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower():
            headers = {**headers, "content-length": "0"}
        return raw_head + _read_body(stream, headers)


_MESSAGES = {  # AWS's own texts, so clients and our error mapping see what a real denial looks like
    403: "Access Denied",
    501: "A parameter you provided implies functionality that is not implemented",
    400: "Checksum algorithm CRC32C is not supported by this server",
}


def _error_response(status: int) -> bytes:
    reasons = {
        500: "Internal Server Error",
        503: "Service Unavailable",
        403: "Forbidden",
        501: "Not Implemented",
        400: "Bad Request",
    }
    reason = reasons[status]
    code = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 501: "NotImplemented", 400: "InvalidRequest"}[
        status
    ]
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{_MESSAGES.get(status, 'injected by the test proxy')}</Message><RequestId>fault</RequestId></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body
