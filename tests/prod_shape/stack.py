"""The production-shape stack: every Dagster service in its own process, as a deployment runs them.

* PostgreSQL (Debian's server, private data dir, free port): run, event-log and schedule
  storage of the Dagster instance (``dagster-postgres``).
* SeaweedFS: the S3 server; both code locations share one bucket and store prefix.
* Two ``dagster api grpc`` code servers (``ingest``, ``sales``: ``prod_shape/locations.py``).
  Run workers are started by them (``DefaultRunLauncher``); each run uses the multiprocess
  executor with 4 concurrent steps. The code servers alone hold S3 credentials, and only in
  their environment (the AWS default chain: no key or secret in any Dagster config).
* ``dagster-daemon run``: the ``QueuedRunCoordinator``'s queue, backfills, the two cleanup
  sensors, run monitoring (2 s poll interval).
* ``dagster-webserver``: the UI and the GraphQL API the tests drive.

``ProdStack`` is used by ``tests/test_e2e_production.py`` (which restarts and kills its parts)
and by ``scripts/prod-shape`` (``python -m prod_shape``), which runs it until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prod_shape.postgres import PostgresServer
from remote_store_dagster.testing import SeaweedFSServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
BUCKET = "rsd-prod"
S3_KEY = "rsd-prod-key"
S3_SECRET = "rsd-prod-secret-do-not-log"
LOCATIONS = {"ingest": "prod_shape.location_ingest", "sales": "prod_shape.location_sales"}
#: Runs the QueuedRunCoordinator lets run at once (2 cores: more only queue up on the CPU).
MAX_CONCURRENT_RUNS = 3
RUN_MONITORING_POLL_SECONDS = 2

DAGSTER_YAML = """\
# Written by prod_shape/stack.py: the production shape of a Dagster instance.
storage:
  postgres:
    postgres_url: "{postgres_url}"
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_concurrent_runs}
    dequeue_interval_seconds: 1
run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: {poll}
  start_timeout_seconds: 120
  cancel_timeout_seconds: 60
  max_resume_run_attempts: 0
sensors:
  use_threads: true
  num_workers: 2
backfills:
  use_threads: true
  num_workers: 2
local_artifact_storage:
  module: dagster.core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: "{artifacts}"
compute_logs:
  module: dagster.core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: "{artifacts}/compute_logs"
telemetry:
  enabled: false
"""


class StackError(RuntimeError):
    pass


@dataclass
class Service:
    """One long-running process of the stack, logging to ``<base>/logs/<name>.log``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        assert self.pid is None, f"{self.name} already running"
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n==== start {self.starts}: {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise StackError(f"{self.name} is not running (exit code {code}):\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ProdStack:
    """Start with ``start()``, stop with ``stop()``; ``base`` keeps logs, S3 data and Dagster home."""

    base: Path
    ui_port: int = field(default_factory=free_port)
    postgres: PostgresServer = field(default_factory=PostgresServer)
    s3: SeaweedFSServer | None = None
    services: dict[str, Service] = field(default_factory=dict)
    grpc_ports: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def dagster_home(self) -> Path:
        return self.base / "dagster_home"

    @property
    def log_dir(self) -> Path:
        return self.base / "logs"

    @property
    def workspace(self) -> Path:
        return self.base / "workspace.yaml"

    # ------------------------------------------------------------------ setup

    def _write_config(self) -> None:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        (self.dagster_home / "dagster.yaml").write_text(
            DAGSTER_YAML.format(
                postgres_url=self.postgres.url,
                max_concurrent_runs=MAX_CONCURRENT_RUNS,
                poll=RUN_MONITORING_POLL_SECONDS,
                artifacts=self.base / "artifacts",
            )
        )
        lines = ["load_from:"]
        for name in LOCATIONS:
            lines += [
                "  - grpc_server:",
                "      host: 127.0.0.1",
                f"      port: {self.grpc_ports[name]}",
                f"      location_name: {name}",
            ]
        self.workspace.write_text("\n".join(lines) + "\n")

    def _base_env(self) -> dict[str, str]:
        """Environment of the Dagster services: no S3 credentials (webserver, daemon)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RS_S3_", "DAGSTER_"))}
        python_path = [str(REPO_ROOT), str(TESTS_DIR)]
        if os.environ.get("PYTHONPATH"):
            python_path.append(os.environ["PYTHONPATH"])
        env.update(
            {
                "DAGSTER_HOME": str(self.dagster_home),
                "PYTHONPATH": os.pathsep.join(python_path),
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_DEFAULT_REGION": "us-east-1",
                # Starting a run worker on a loaded 2-core machine can exceed the 60 s default.
                "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
            }
        )
        env.update(self.extra_env)
        return env

    def code_env(self) -> dict[str, str]:
        """Environment of a code server and its run workers: S3 credentials from the AWS chain."""
        assert self.s3 is not None
        env = self._base_env()
        env.update(self.s3.client_env())  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, checksums
        env.update({"RS_S3_BUCKET": BUCKET, "RS_S3_ENDPOINT": self.s3.endpoint_url})
        env.update(self.extra_env)
        return env

    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def start(self, timeout: float = 240.0) -> ProdStack:
        started = time.monotonic()
        self.base.mkdir(parents=True, exist_ok=True)
        self.postgres.log_path = self.log_dir / "postgres.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        if self.s3 is None:
            self.s3 = SeaweedFSServer(
                access_key=S3_KEY,
                secret_key=S3_SECRET,
                data_dir=self.base / "seaweedfs",
                log_path=self.log_dir / "seaweedfs.log",
            )
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        self.grpc_ports = {name: free_port() for name in LOCATIONS}
        self._write_config()
        # Create the instance's tables once, before several processes race to.
        migrate = subprocess.run(
            [self._bin("dagster"), "instance", "migrate"],
            cwd=REPO_ROOT,
            env=self._base_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            raise StackError(f"dagster instance migrate failed: {migrate.stderr[-3000:]}")
        for name, module in LOCATIONS.items():
            self.services[name] = Service(
                name=f"code-server-{name}",
                command=[
                    self._bin("dagster"),
                    "api",
                    "grpc",
                    "--module-name",
                    module,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.grpc_ports[name]),
                    "--location-name",
                    name,
                ],
                env=self.code_env(),
                log_dir=self.log_dir,
            )
        self.services["daemon"] = Service(
            name="daemon",
            command=[self._bin("dagster-daemon"), "run", "-w", str(self.workspace)],
            env=self._base_env(),
            log_dir=self.log_dir,
        )
        self.services["webserver"] = Service(
            name="webserver",
            command=[
                self._bin("dagster-webserver"),
                "-w",
                str(self.workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ui_port),
            ],
            env=self._base_env(),
            log_dir=self.log_dir,
        )
        try:
            # Code servers first: the daemon and the webserver connect to them.
            for name in LOCATIONS:
                self.services[name].start()
            self.services["daemon"].start()
            self.services["webserver"].start()
            self.wait_ready(timeout - (time.monotonic() - started))
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------------ health

    def check_alive(self) -> None:
        for service in self.services.values():
            service.check_alive()

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the webserver answers, both locations are loaded and every daemon is healthy."""
        deadline = time.monotonic() + timeout
        last = "nothing answered yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.locations_loaded() and self.daemons_healthy():
                    return
                last = "locations or daemons not ready"
            except (OSError, StackError) as exc:
                last = str(exc)
            time.sleep(1)
        raise StackError(f"stack not ready within {timeout:.0f}s ({last}); logs in {self.log_dir}")

    def locations_loaded(self) -> bool:
        data = self.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries { name
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }""",
            retries=0,
        )
        loaded = set()
        for entry in data["workspaceOrError"]["locationEntries"]:
            result = entry["locationOrLoadError"] or {}
            if result.get("__typename") == "PythonError":
                raise StackError(f"code location {entry['name']} failed to load: {result['message']}")
            if result.get("__typename") == "RepositoryLocation":
                loaded.add(entry["name"])
        return loaded == set(LOCATIONS)

    def daemon_statuses(self) -> dict[str, dict[str, Any]]:
        data = self.graphql(
            """{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy
                 lastHeartbeatErrors { message } } } } }""",
            retries=0,
        )
        return {d["daemonType"]: d for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}

    def daemons_healthy(self) -> bool:
        statuses = self.daemon_statuses()
        return bool(statuses) and all(s["healthy"] for s in statuses.values() if s["required"])

    # ------------------------------------------------------------------ GraphQL

    def graphql(self, query: str, variables: dict[str, Any] | None = None, retries: int = 3) -> Any:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        for attempt in range(retries + 1):
            request = urllib.request.Request(
                f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = json.loads(response.read())
                break
            except urllib.error.HTTPError as exc:
                raise StackError(f"HTTP {exc.code}: {exc.read()[:2000]!r}") from None
            except OSError:
                if attempt == retries:
                    raise
                time.sleep(1)
        if payload.get("errors"):
            raise StackError(json.dumps(payload["errors"])[:3000])
        return payload["data"]

    # ------------------------------------------------------------------ restarts

    def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one service (``webserver``, ``daemon``, ``ingest``, ``sales``) and start it again."""
        service = self.services[name]
        service.stop(sig)
        service.start()

    def stop(self) -> None:
        services = [self.services[n] for n in ("webserver", "daemon", *LOCATIONS) if n in self.services]
        for service in services:  # signal all first: they shut down in parallel
            if service.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.pid, signal.SIGTERM)
        for service in services:
            service.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.postgres.cleanup()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/prod-shape",
        description="Dagster in its production shape (Postgres, daemon, webserver, two gRPC code "
        "locations) on an embedded SeaweedFS; runs until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("RSD_PROD_PORT", "3000")), help="UI port")
    parser.add_argument(
        "--base",
        type=Path,
        default=Path(os.environ.get("RSD_PROD_DIR", str(REPO_ROOT / ".prod-shape"))),
        help="logs, S3 data, PostgreSQL data and Dagster home (kept for the next start)",
    )
    args = parser.parse_args(argv)
    base = args.base.resolve()
    stack = ProdStack(base=base, ui_port=args.port, postgres=PostgresServer(data_dir=base / "postgres"))
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"[prod-shape] starting; logs in {stack.log_dir}", file=sys.stderr, flush=True)
    try:
        stack.start()
        print(f"[prod-shape] Dagster UI ready: {stack.url}", file=sys.stderr, flush=True)
        print(
            f"[prod-shape] S3 (SeaweedFS): {stack.s3.endpoint_url if stack.s3 else '?'} bucket {BUCKET}",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            time.sleep(0.5)
            stack.check_alive()
    except StackError as exc:
        print(f"[prod-shape] error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("[prod-shape] stopping", file=sys.stderr, flush=True)
        stack.stop()
    return 0
