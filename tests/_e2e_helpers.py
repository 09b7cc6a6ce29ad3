"""The real ``./scripts/dev`` in a subprocess, and a small Dagster GraphQL client.

Loaded as a pytest plugin (``pytest_plugins = ["_e2e_helpers"]``) by the e2e and
browser test modules, so they share one session-scoped dev server: starting
``dagster dev`` costs 12-27 s on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

from remote_store_dagster.testing import free_port, port_is_free

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_COMMAND = REPO_ROOT / "scripts" / "dev"
ARTIFACTS = REPO_ROOT / ".test-artifacts"
LOCATION = "example_project"
REPOSITORY = "__repository__"
ASSET_JOB = "__ASSET_JOB"
#: Small streaming asset for tests (MB of Arrow data); the default is a few hundred MB.
TEST_STREAM_MB = "8"

RUN_FINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class GraphQLError(AssertionError):
    pass


@dataclass
class DevServer:
    """``scripts/dev`` on free ports, with its data and Dagster home in ``base``."""

    base: Path
    ui_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def data_dir(self) -> Path:
        return self.base / "dev-data"

    @property
    def dagster_home(self) -> Path:
        return self.base / "dagster_home"

    @property
    def log_path(self) -> Path:
        return self.base / f"dev-{self.starts}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RS_S3_", "RSD_DEV_"))}
        env.update(
            {
                "RSD_DEV_PORT": str(self.ui_port),
                "RSD_DEV_S3_PORT": str(self.s3_port),
                "RSD_DEV_DATA_DIR": str(self.data_dir),
                "DAGSTER_HOME": str(self.dagster_home),
                "EXAMPLE_STREAM_MB": TEST_STREAM_MB,
            }
        )
        return env

    def start(self, timeout: float = 150.0) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        self.base.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(DEV_COMMAND)],
            cwd=REPO_ROOT,
            env=self.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"scripts/dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                data = self.graphql("{ version }", retries=0)
                if data.get("version") and self.location_loaded():
                    return
            except (OSError, GraphQLError):
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"dagster dev did not answer GraphQL within {timeout}s:\n{self.log_tail()}")

    def location_loaded(self) -> bool:
        data = self.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries { name
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }""",
            retries=0,
        )
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] == LOCATION:
                loaded = entry["locationOrLoadError"]
                if loaded and loaded["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {loaded['message']}")
                return bool(loaded and loaded["__typename"] == "RepositoryLocation")
        return False

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 90.0) -> int:
        """Signal the dev command (SIGINT is Ctrl-C) and wait; returns its exit code."""
        if self.proc is None:
            return 0
        code: int
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"scripts/dev did not stop within {timeout}s:\n{self.log_tail()}") from None
        else:
            code = self.proc.returncode
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ GraphQL

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, retries: int = 2) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        for attempt in range(retries + 1):
            request = urllib.request.Request(
                f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    payload = json.loads(response.read())
                break
            except urllib.error.HTTPError as exc:
                raise GraphQLError(f"HTTP {exc.code}: {exc.read()[:2000]!r}") from None
            except OSError:
                if attempt == retries:
                    raise
                time.sleep(1)
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"])[:3000])
        return payload["data"]

    def repository(self) -> Any:
        data = self.graphql(
            """query($sel: RepositorySelector!) { repositoryOrError(repositorySelector: $sel) {
                 __typename
                 ... on Repository {
                   assetNodes { assetKey { path } groupName isPartitioned description }
                   sensors { name sensorState { status } }
                   schedules { name cronSchedule scheduleState { status } }
                   jobs { name }
                 }
                 ... on PythonError { message }
               } }""",
            {"sel": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}},
        )
        repo = data["repositoryOrError"]
        assert repo["__typename"] == "Repository", repo
        return repo

    def launch_assets(
        self,
        assets: Sequence[str],
        *,
        partition: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        in_process: bool = True,
    ) -> str:
        config: dict[str, Any] = dict(run_config or {})
        if in_process:
            config.setdefault("execution", {"config": {"in_process": {}}})
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        data = self.graphql(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename
                 ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message stack }
                 ... on RunConfigValidationInvalid { errors { message } }
                 ... on InvalidSubsetError { message }
                 ... on InvalidStepError { invalidStepKey }
                 ... on InvalidOutputError { invalidOutputName }
               } }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": ASSET_JOB,
                        "assetSelection": [{"path": [name]} for name in assets],
                    },
                    "runConfigData": config,
                    "executionMetadata": {"tags": tags},
                }
            },
        )
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return str(result["run"]["runId"])

    def materialize(self, assets: Sequence[str], **kwargs: Any) -> str:
        """Launch a run of ``assets`` (like the UI's Materialize button) and assert it succeeds."""
        run_id = self.launch_assets(assets, **kwargs)
        status = self.wait_run(run_id)
        assert status == "SUCCESS", f"run {run_id} of {list(assets)}: {status}\n{self.run_failure(run_id)}"
        return run_id

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }""",
            {"id": run_id},
        )
        return str(data["runOrError"]["status"])

    def wait_run(self, run_id: str, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status in RUN_FINAL:
                return status
            time.sleep(1)
        raise AssertionError(f"run {run_id} still {status} after {timeout}s")

    def run_failure(self, run_id: str) -> str:
        """Error messages of a failed run's events, for assertion messages."""
        data = self.graphql(
            """query($id: ID!) { logsForRun(runId: $id, limit: 500) { __typename
                 ... on EventConnection { events { __typename
                   ... on MessageEvent { message }
                   ... on ExecutionStepFailureEvent { error { message stack } } } } } }""",
            {"id": run_id},
        )
        events = data["logsForRun"].get("events", [])
        return "\n".join(
            (e.get("error") or {}).get("message", "") + "".join((e.get("error") or {}).get("stack", []))
            or e.get("message", "")
            for e in events
            if "Failure" in e["__typename"] or "Error" in e["__typename"]
        )

    def materializations(self, asset: str, partition: str | None = None, limit: int = 1) -> list[dict[str, Any]]:
        """Newest materializations of ``asset``: ``[{partition, runId, metadata: {label: value}}]``."""
        data = self.graphql(
            """query($key: AssetKeyInput!, $limit: Int, $partitions: [String!]) {
                 assetOrError(assetKey: $key) { __typename ... on Asset {
                   assetMaterializations(limit: $limit, partitions: $partitions) {
                     partition runId
                     metadataEntries { label __typename
                       ... on TextMetadataEntry { text }
                       ... on UrlMetadataEntry { url }
                       ... on PathMetadataEntry { path }
                       ... on IntMetadataEntry { intValue }
                       ... on FloatMetadataEntry { floatValue }
                       ... on JsonMetadataEntry { jsonString }
                       ... on TableSchemaMetadataEntry { schema { columns { name type } } }
                     } } } } }""",
            {"key": {"path": [asset]}, "limit": limit, "partitions": [partition] if partition else None},
        )
        asset_data = data["assetOrError"]
        assert asset_data["__typename"] == "Asset", asset_data
        out = []
        for mat in asset_data["assetMaterializations"]:
            out.append(
                {
                    "partition": mat["partition"],
                    "runId": mat["runId"],
                    "metadata": {e["label"]: _entry_value(e) for e in mat["metadataEntries"]},
                }
            )
        return out


def _entry_value(entry: Mapping[str, Any]) -> Any:
    for key in ("text", "url", "path", "intValue", "floatValue"):
        if key in entry:
            return entry[key]
    if "jsonString" in entry:
        return json.loads(entry["jsonString"])
    if "schema" in entry:
        return [(c["name"], c["type"]) for c in entry["schema"]["columns"]]
    return entry["__typename"]


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One ``./scripts/dev`` (embedded SeaweedFS) for the e2e and browser tests."""
    server = DevServer(base=tmp_path_factory.mktemp("dev"))
    server.start()
    yield server
    if server.proc is not None:
        code = server.stop()
        assert code == 0, f"scripts/dev exited with {code}:\n{server.log_tail()}"
    assert port_is_free(server.s3_port), "embedded S3 server still listening after scripts/dev stopped"


#: The example's assets, written out by hand: the tests compare the code location against this.
EXPECTED_ASSETS = {
    "daily_sensor_readings",
    "readings_daily_stats",
    "regional_sales",
    "events_stream",
    "events_by_kind",
    "report_csv",
    "report_csv_digest",
}
