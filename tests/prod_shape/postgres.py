"""A private PostgreSQL server for the production-shape stack: ``initdb`` + ``postgres`` on a free port.

Uses Debian's server binaries (``apt-get install postgresql``; ``scripts/_bootstrap.sh``'s
``ensure_postgres`` installs them), found under ``/usr/lib/postgresql/<version>/bin`` or on
``PATH``. PostgreSQL refuses to run as root, so as root the data directory is owned by, and the
server runs as, the ``postgres`` system user (else ``nobody``). Only TCP on 127.0.0.1 with
``trust`` authentication: a throwaway test database, never a deployment recipe.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from remote_store_dagster.testing import free_port

DB_NAME = "dagster"
DB_USER = "dagster"


class PostgresError(RuntimeError):
    """PostgreSQL could not be found or started."""


def postgres_bindir() -> Path:
    """The directory of ``initdb`` and ``postgres``: newest ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresError(
        "PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql "
        "(scripts/prod-shape and scripts/test install it when run as root)"
    )


def _run_as() -> str | None:
    """The user the server runs as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` -> ``postgresql+psycopg2://dagster@127.0.0.1:<port>/dagster``.

    ``data_dir`` (default: a new directory under the system temp dir, removed by ``cleanup``) keeps
    the cluster across ``stop``/``start``. It must be reachable by the server's user: as root that
    is the ``postgres`` user, who cannot enter pytest's ``/tmp/pytest-of-root``.
    """

    data_dir: Path | None = None
    port: int = 0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        """SQLAlchemy URL; ``+psycopg2`` because SQLAlchemy 2.1 maps plain ``postgresql://`` to psycopg 3."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _user_kwargs(self) -> dict[str, object]:
        user = _run_as()
        if user is None:
            return {}
        entry = pwd.getpwnam(user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _init_cluster(self, bindir: Path) -> None:
        assert self.data_dir is not None
        cluster = self.data_dir / "cluster"
        if (cluster / "PG_VERSION").exists():
            return
        cluster.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.data_dir, cluster):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._user_kwargs(),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bindir = postgres_bindir()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="rsd-postgres-"))
            self._owns_dir = True
        self._init_cluster(bindir)
        if not self.port:
            self.port = free_port()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="rsd-postgres-", suffix=".log")[1])
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(self.data_dir / "cluster"),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                # A throwaway test database: durability is not what is under test.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._user_kwargs(),  # type: ignore[arg-type]
        )
        self._wait_ready(timeout)
        self._create_database()
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres").close()
                return
            except (OSError, psycopg2.OperationalError):
                time.sleep(0.2)
        self.stop()
        raise PostgresError(f"postgres did not accept connections within {timeout}s: {self.log_tail()}")

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back, disconnect, exit
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(str(self.log_path)).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
