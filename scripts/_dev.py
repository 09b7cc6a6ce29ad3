"""``./scripts/dev``: the example project in ``dagster dev``, on an embedded S3 server by default.

Dev tooling, not part of the code location: ``scripts/dev`` (bash) prepares ``.venv`` and runs
this file with it.

With no ``RS_S3_*`` variable set, a persistent SeaweedFS S3 server is started on
127.0.0.1 (objects kept in ``.dev-data/seaweedfs`` of the repository, reused on
the next start), the bucket is created, the ``RS_S3_*`` variables are pointed at
it, and ``dagster dev -w workspace.yaml`` runs until Ctrl-C / SIGTERM, after
which SeaweedFS is stopped cleanly.

With ``RS_S3_BUCKET`` (and optionally ``RS_S3_KEY``, ``RS_S3_SECRET``,
``RS_S3_ENDPOINT``, ``RS_S3_REGION``) set, nothing is started: the example uses
that service.

Settings (flag, or environment variable):

``--host`` / ``RSD_DEV_HOST``        UI host (default 127.0.0.1)
``--port`` / ``RSD_DEV_PORT``        UI port (default 3000)
``--s3-port`` / ``RSD_DEV_S3_PORT``  embedded S3 port (default 8333)
``--data-dir`` / ``RSD_DEV_DATA_DIR`` embedded data + Dagster home (default ``<repo>/.dev-data``)

``DAGSTER_HOME`` is respected; if unset, ``<data-dir>/dagster_home`` keeps run
history next to the stored objects, so both survive a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

    from remote_store_dagster.testing import SeaweedFSServer

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"

#: The example's storage variables; any of them set means "use that S3 service, start nothing".
RS_S3_VARS = ("RS_S3_BUCKET", "RS_S3_KEY", "RS_S3_SECRET", "RS_S3_ENDPOINT", "RS_S3_REGION")

EMBEDDED_BUCKET = "rsd-example"
EMBEDDED_KEY = "rsd-dev-key"
EMBEDDED_SECRET = "rsd-dev-secret"
EMBEDDED_REGION = "us-east-1"

#: Client settings that every S3 client of the example gets: PyArrow's default aws-chunked uploads with
#: CRC64 trailers are mishandled by some S3 servers, so checksums are sent only when an operation requires them.
CLIENT_ENV = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    "AWS_EC2_METADATA_DISABLED": "true",
}

DAGSTER_YAML = """\
# Written by ./scripts/dev for the example project's persistent dev instance.
telemetry:
  enabled: false
"""


class DevError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _log(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/dev",
        description="Run the example project in `dagster dev` (embedded S3 server unless RS_S3_* is set).",
    )
    parser.add_argument("--host", default=env.get("RSD_DEV_HOST", "127.0.0.1"), help="UI host")
    parser.add_argument("--port", type=int, default=int(env.get("RSD_DEV_PORT", "3000")), help="UI port")
    parser.add_argument("--s3-port", type=int, default=int(env.get("RSD_DEV_S3_PORT", "8333")), help="embedded S3 port")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("RSD_DEV_DATA_DIR", str(REPO_ROOT / ".dev-data"))),
        help="embedded S3 data and Dagster home (git-ignored)",
    )
    return parser.parse_args(argv)


def external_s3_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """The ``RS_S3_*`` variables the user set, if any, else ``None`` (embedded mode)."""
    given = {name: env[name] for name in RS_S3_VARS if env.get(name)}
    if not given:
        return None
    if "RS_S3_BUCKET" not in given:
        raise DevError(
            f"{', '.join(sorted(given))} set but RS_S3_BUCKET is not: set RS_S3_BUCKET to use your S3 "
            "service, or unset every RS_S3_* variable to use the embedded server"
        )
    return given


def check_endpoint(s3_env: Mapping[str, str]) -> None:
    """Fail with one clear message when the configured S3 service cannot be reached."""
    import boto3
    import botocore.config
    import botocore.exceptions

    endpoint = s3_env.get("RS_S3_ENDPOINT")
    bucket = s3_env["RS_S3_BUCKET"]
    shown = endpoint or "AWS S3 (default endpoint)"
    if endpoint:
        parsed = urllib.parse.urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise DevError(f"RS_S3_ENDPOINT={endpoint!r} is not an http(s) URL")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=5).close()
        except OSError as exc:
            raise DevError(f"S3 endpoint {endpoint} (RS_S3_ENDPOINT) is unreachable: {exc}") from None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=s3_env.get("RS_S3_KEY"),
        aws_secret_access_key=s3_env.get("RS_S3_SECRET"),
        region_name=s3_env.get("RS_S3_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=botocore.config.Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.EndpointConnectionError as exc:
        raise DevError(f"S3 endpoint {shown} is unreachable: {exc}") from None
    except botocore.exceptions.NoCredentialsError:
        raise DevError("no S3 credentials: set RS_S3_KEY and RS_S3_SECRET (or configure AWS credentials)") from None
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise DevError(f"bucket {bucket!r} (RS_S3_BUCKET) does not exist on {shown}") from None
        # 403 and friends: credentials may lack s3:ListBucket; let the run report details.
        _log(f"warning: HEAD bucket {bucket!r} on {shown} answered {code or exc}; continuing")
    except botocore.exceptions.BotoCoreError as exc:
        raise DevError(f"S3 endpoint {shown} is unreachable: {exc}") from None


def embedded_server(data_dir: Path, s3_port: int) -> SeaweedFSServer:
    """The persistent SeaweedFS server of the dev loop (not started yet)."""
    if port_in_use("127.0.0.1", s3_port):
        raise DevError(
            f"port {s3_port} on 127.0.0.1 (embedded S3 server) is already in use: stop what uses it or "
            "pick another with RSD_DEV_S3_PORT=<port> / --s3-port"
        )
    from remote_store_dagster.testing import SeaweedFSServer  # imports dagster: only when needed

    return SeaweedFSServer(
        data_dir=data_dir / "seaweedfs",
        port=s3_port,
        access_key=EMBEDDED_KEY,
        secret_key=EMBEDDED_SECRET,
        region=EMBEDDED_REGION,
        log_path=data_dir / "seaweedfs.log",
    )


def start_embedded_s3(server: SeaweedFSServer) -> dict[str, str]:
    """Start (or resume) the persistent SeaweedFS server; return the RS_S3_* variables for it."""
    from remote_store_dagster.testing import S3ServerError

    _log(f"starting embedded S3 server (SeaweedFS) on 127.0.0.1:{server.port}, data in {server.data_dir}")
    started = time.monotonic()
    try:
        server.start()
    except S3ServerError as exc:
        server.stop()
        raise DevError(f"embedded S3 server failed to start: {exc}") from None
    try:
        server.create_bucket(EMBEDDED_BUCKET)
    except Exception as exc:
        server.stop()
        raise DevError(f"embedded S3 server did not create bucket {EMBEDDED_BUCKET!r}: {exc}") from None
    _log(f"embedded S3 server ready in {time.monotonic() - started:.1f}s: {server.endpoint_url}")
    s3_env = {
        "RS_S3_BUCKET": EMBEDDED_BUCKET,
        "RS_S3_KEY": EMBEDDED_KEY,
        "RS_S3_SECRET": EMBEDDED_SECRET,
        "RS_S3_ENDPOINT": server.endpoint_url,
        "RS_S3_REGION": EMBEDDED_REGION,
    }
    return s3_env


def ensure_dagster_home(env: Mapping[str, str], data_dir: Path) -> Path:
    home = Path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home.resolve()


def ui_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def run(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    args = parse_args(argv, env)
    if not WORKSPACE.exists():
        raise DevError(f"{WORKSPACE} not found")
    if port_in_use(args.host, args.port):
        raise DevError(
            f"port {args.port} on {args.host} (Dagster UI) is already in use: stop what uses it or "
            "pick another with RSD_DEV_PORT=<port> / --port"
        )
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    # Ctrl-C / SIGTERM only set a flag: every step below runs to completion (a process we
    # started is always recorded before we look at the flag), then we shut down in order.
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: SeaweedFSServer | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        s3_env = external_s3_env(env)
        if s3_env is None:
            server = embedded_server(data_dir, args.s3_port)
            s3_env = start_embedded_s3(server)
        else:
            _log(
                f"RS_S3_* set: using bucket {s3_env['RS_S3_BUCKET']!r} on "
                f"{s3_env.get('RS_S3_ENDPOINT', 'AWS S3')}; no embedded server"
            )
            check_endpoint(s3_env)
        if stop.is_set():
            return 0
        home = ensure_dagster_home(env, data_dir)
        child_env = {**env, **{k: v for k, v in CLIENT_ENV.items() if k not in env}, **s3_env}
        child_env["DAGSTER_HOME"] = str(home)
        cmd = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(WORKSPACE),
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        url = f"http://{args.host}:{args.port}"
        _log(f"starting dagster dev (DAGSTER_HOME={home}); the UI will be at {url}")
        # Own session: Ctrl-C reaches only us, and we shut dagster down once, in order.
        proc = subprocess.Popen(cmd, env=child_env, cwd=REPO_ROOT, start_new_session=True)
        ready = False
        while proc.poll() is None and not stop.is_set():
            if not ready and ui_answers(url):
                ready = True
                _log(f"Dagster UI ready: {url}   (Ctrl-C stops Dagster and the embedded S3 server)")
            stop.wait(0.5 if ready else 0.25)
        if stop.is_set():
            _log("stopping ...")
            return 0
        return proc.returncode
    finally:
        # A second Ctrl-C must not cut the shutdown short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            _stop_dagster(proc)
        if server is not None and server.pid is not None:
            _log("stopping embedded S3 server")
            server.stop()
        if proc is not None:
            _log("stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_dagster(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # dagster dev maps SIGTERM to a graceful shutdown
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _log("dagster dev did not stop within 60s; killing it")
    # Anything dagster left behind (webserver, daemon, code server) is in its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except DevError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
