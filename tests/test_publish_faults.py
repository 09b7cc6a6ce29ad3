"""Fault injection for the atomic publish protocol: a failed write never tears an object.

Every test first materializes a small *previous* version of asset ``events``,
then breaks a bigger write of a new version in one way:

(a) the producer (a RecordBatch generator) raises after several multipart
    parts (> 20 MB) were uploaded;
(b) the writer process is SIGKILLed mid-upload;
(c) the S3 server process is SIGKILLed mid-upload, then started again on the
    same data;
(d) a fault-injecting proxy in front of SeaweedFS answers 5xx or resets
    connections for some requests.

and then checks what any reader sees: the previous object byte-identical
(content hash, and ETag on S3), loadable through the IO manager, the asset
folder holding nothing but that object, ``pyarrow.dataset`` reading the folder
cleanly, and leftovers (if any) only under reserved names / as incomplete
multipart uploads, which no reader sees.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _fault_proxy as fp
import _workers as workers
import botocore.exceptions
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from conftest import BUCKET
from dagster import AssetIn, asset, materialize

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource
from remote_store_dagster._storage import storage_for
from remote_store_dagster.testing import S3rverServer, S3Server, SeaweedFSServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MiB = 1024 * 1024
ASSET = workers.ASSET
WORKER = Path(__file__).with_name("_workers.py")


# --------------------------------------------------------------------------- helpers


def io_manager(resource: RemoteStoreResource) -> RemoteStoreIOManager:
    return RemoteStoreIOManager(remote_store=resource, store="lake")


def write_version(resource: RemoteStoreResource, produce: Callable[[], Any], *, raise_on_error: bool = True) -> Any:
    @asset(name=ASSET)
    def events() -> Any:
        return produce()

    return materialize([events], resources={"io_manager": io_manager(resource)}, raise_on_error=raise_on_error)


def load_version(resource: RemoteStoreResource) -> pa.Table:
    """Load ``events`` through the IO manager, as a downstream asset would."""
    loaded: dict[str, pa.Table] = {}

    @asset(name=ASSET)
    def events() -> pa.Table:
        raise AssertionError("not selected: loaded from the store")

    @asset(ins={ASSET: AssetIn()})
    def consumer(events: pa.Table) -> None:
        loaded["table"] = events

    materialize([events, consumer], selection=[consumer], resources={"io_manager": io_manager(resource)})
    return loaded["table"]


def root_of(resource: RemoteStoreResource) -> str:
    return resource.stores["lake"].root_path


def s3_client(server: S3Server) -> Any:
    return server.client()


def visible_files(resource: RemoteStoreResource, folder: str = ASSET) -> dict[str, str]:
    """Every data file a reader listing ``folder`` sees -> sha256 of its bytes."""
    dp = storage_for(resource.get_store("lake"))
    base = dp.native(folder)
    infos = dp.filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = {}
    for info in infos:
        # Like dataset readers, skip names starting with "_" or "." (the provenance sidecar on local).
        if info.type == pafs.FileType.File and not info.base_name.startswith(("_", ".")):
            with dp.filesystem.open_input_stream(info.path) as stream:
                files[info.path[len(base) + 1 :]] = hashlib.sha256(stream.read()).hexdigest()
    return files


def dataset_table(resource: RemoteStoreResource) -> pa.Table:
    """The asset folder read as a Hive dataset, as DuckDB/Polars/Spark users would."""
    dp = storage_for(resource.get_store("lake"))
    return ds.dataset(dp.native(ASSET), filesystem=dp.filesystem, format="parquet", partitioning="hive").to_table()


def s3_key(resource: RemoteStoreResource, path: str = f"{ASSET}/data.parquet") -> str:
    return f"{root_of(resource)}/{path}"


def s3_etag(client: Any, resource: RemoteStoreResource) -> str:
    return str(client.head_object(Bucket=BUCKET, Key=s3_key(resource))["ETag"])


def pending_uploads(client: Any, resource: RemoteStoreResource) -> list[tuple[str, int, int]]:
    """(upload id, parts, bytes) of incomplete multipart uploads under the asset folder."""
    server = getattr(client, "rsd_s3rver", None)
    if server is not None:  # s3rver cannot list uploads: read its data directory
        return [(uid, n, size) for _, uid, n, size in server.pending_uploads(BUCKET, f"{root_of(resource)}/{ASSET}/")]
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{root_of(resource)}/{ASSET}/").get("Uploads", [])
    found = []
    for upload in uploads:
        parts = client.list_parts(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])
        found.append((upload["UploadId"], len(parts), sum(p["Size"] for p in parts)))
    return found


def abort_all(client: Any, resource: RemoteStoreResource) -> None:
    if getattr(client, "rsd_s3rver", None) is not None:
        return  # s3rver cannot abort (MethodNotAllowed); its uploads stay on its disk
    prefix = f"{root_of(resource)}/"
    for upload in client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []):
        client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


def staging_bytes(resource: RemoteStoreResource) -> int:
    """Bytes of in-flight staging files (local backend)."""
    dp = storage_for(resource.get_store("lake"))
    infos = dp.filesystem.get_file_info(pafs.FileSelector(dp.native("_staging"), recursive=True, allow_not_found=True))
    return sum(i.size for i in infos if i.type == pafs.FileType.File)


def previous_table() -> pa.Table:
    return workers.table(rng_state=1, total_bytes=256 * 1024)


class Previous:
    """The previous materialization, and the checks that it is still all a reader sees."""

    def __init__(self, resource: RemoteStoreResource, client: Any | None) -> None:
        self.resource = resource
        self.client = client
        self.table = previous_table()
        write_version(resource, lambda: self.table)
        self.files = visible_files(resource)
        assert list(self.files) == ["data.parquet"], self.files
        self.etag = s3_etag(client, resource) if client is not None else None

    def assert_intact(self) -> None:
        assert visible_files(self.resource) == self.files, "the asset folder changed: torn or extra object visible"
        if self.client is not None:
            assert s3_etag(self.client, self.resource) == self.etag
        assert dataset_table(self.resource).equals(self.table)
        assert load_version(self.resource).equals(self.table)


def s3_client_for(request: pytest.FixtureRequest, backend_kind: str) -> Any | None:
    if backend_kind == "local":
        return None
    server = request.getfixturevalue(f"{backend_kind}_server")
    client = s3_client(server)
    client.rsd_s3rver = server if isinstance(server, S3rverServer) else None
    return client


class Boom(RuntimeError):
    pass


# --------------------------------------------------------------------------- (a) producer raises


def test_producer_raises_after_parts_uploaded(
    remote_store: RemoteStoreResource, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    client = s3_client_for(request, backend_kind)
    previous = Previous(remote_store, client)
    progress: dict[str, Any] = {}

    def produce() -> pa.RecordBatchReader:
        def gen() -> Iterator[pa.RecordBatch]:
            produced = 0
            for batch in workers.batches(rng_state=2, total_bytes=10**12):
                yield batch
                produced += batch.nbytes
                # write_parquet flushes a 64 MiB row group; ~90 MB in, >= 60 MiB of it is on the server.
                if produced >= 90 * MiB:
                    if client is not None:
                        # Part 3 was handed over, so part 1 is done; part 2 may still be uploading on a
                        # loaded machine: wait for it (bounded), so the failure is mid-upload with 2 parts.
                        wait_until(two_parts_uploaded(client, remote_store), 60, "two uploaded parts")
                        progress["uploads"] = pending_uploads(client, remote_store)
                    else:
                        progress["staged"] = staging_bytes(remote_store)
                    raise Boom("producer failed mid-stream")

        return pa.RecordBatchReader.from_batches(workers.SCHEMA, gen())

    result = write_version(remote_store, produce, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "producer failed mid-stream" in failure.to_string()

    previous.assert_intact()
    # The failure really happened mid-upload, with more than one part on the server.
    if client is not None:
        [(_, parts, size)] = progress["uploads"]
        assert parts >= 2
        assert size > 20 * MiB
        if client.rsd_s3rver is not None:  # s3rver answers AbortMultipartUpload with 405: the parts stay
            assert len(pending_uploads(client, remote_store)) == 1
        else:
            assert pending_uploads(client, remote_store) == [], "the failed upload was not aborted"
    else:
        assert progress["staged"] > 20 * MiB
        assert staging_bytes(remote_store) == 0, "staging leftover of a failed write"

    # And the next good write publishes normally.
    write_version(remote_store, lambda: workers.table(rng_state=3, total_bytes=1 * MiB))
    assert load_version(remote_store).equals(workers.table(rng_state=3, total_bytes=1 * MiB))


# --------------------------------------------------------------------------- subprocess writer


class Writer:
    """``tests/_workers.py write`` in its own interpreter, its stdout lines in a queue."""

    def __init__(self, backend: dict[str, Any], root: str, *, total_bytes: int, wait_on_failure: bool = False) -> None:
        config = {
            "backend": backend,
            "root": root,
            "rng_state": 5,
            "total_bytes": total_bytes,
            "wait_on_failure": wait_on_failure,
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "write", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"writer never printed {prefix!r}; output:\n{''.join(self.output)[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 60) -> int:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        return self.proc.wait(timeout=timeout)


def backend_config(resource: RemoteStoreResource) -> dict[str, Any]:
    spec = resource.backends["main"]
    return {"type": spec.type, "options": dict(spec.options)}


def wait_until(condition: Callable[[], Any], timeout: float, what: str, writer: Writer | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if writer is not None and writer.proc.poll() is not None:
            raise AssertionError(f"writer exited before {what}:\n{''.join(writer.output)[-4000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def two_parts_uploaded(client: Any, resource: RemoteStoreResource) -> Callable[[], bool]:
    def check() -> bool:
        return any(parts >= 2 for _, parts, _ in pending_uploads(client, resource))

    return check


def serves_reads(server: S3Server, resource: RemoteStoreResource) -> Callable[[], bool]:
    """The server answers a GET of the previous object with anything but a 5xx or a connection error.

    A restarted SeaweedFS accepts connections before it serves objects (its first GETs can answer
    500 InternalError). A 404 counts as serving: then the checks after the wait report the missing
    object themselves.
    """
    client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)

    def check() -> bool:
        try:
            client.get_object(Bucket=BUCKET, Key=s3_key(resource))["Body"].read()
        except botocore.exceptions.ClientError as exc:
            return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)) < 500
        except botocore.exceptions.BotoCoreError:
            return False
        return True

    return check


# --------------------------------------------------------------------------- (b) writer SIGKILLed


def test_writer_killed_mid_upload(
    remote_store: RemoteStoreResource, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    client = s3_client_for(request, backend_kind)
    previous = Previous(remote_store, client)
    writer = Writer(backend_config(remote_store), root_of(remote_store), total_bytes=2000 * MiB)
    try:
        writer.wait_for_line("STARTED", timeout=120)
        if client is not None:
            wait_until(two_parts_uploaded(client, remote_store), 120, "two uploaded parts", writer)
        else:
            wait_until(lambda: staging_bytes(remote_store) > 20 * MiB, 120, "20 MB staged", writer)
    finally:
        writer.kill()
    assert writer.proc.returncode == -signal.SIGKILL

    previous.assert_intact()
    if client is not None:
        # The dead writer's upload is incomplete (invisible to readers) until the cleanup sensor aborts it.
        [(_, parts, _)] = pending_uploads(client, remote_store)
        assert parts >= 2
        abort_all(client, remote_store)
    else:
        # Its leftover lives only under the reserved _staging folder.
        assert staging_bytes(remote_store) > 20 * MiB
        dp = storage_for(remote_store.get_store("lake"))
        top = {i.base_name for i in dp.filesystem.get_file_info(pafs.FileSelector(dp.native(""), recursive=False))}
        assert top == {ASSET, "_staging"}


# --------------------------------------------------------------------------- (c) server SIGKILLed


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[SeaweedFSServer]:
    """A SeaweedFS of this test alone (the test kills it), with a persistent data dir."""
    server = SeaweedFSServer(data_dir=tmp_path / "seaweedfs-data", log_path=tmp_path / "seaweedfs.log")
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


def test_server_killed_mid_upload(own_seaweedfs: SeaweedFSServer, unique_root: str) -> None:
    server = own_seaweedfs
    resource = RemoteStoreResource(
        backends={"main": {"type": "s3-pyarrow", "options": server.backend_options(BUCKET)}},
        stores={"lake": {"backend": "main", "root_path": unique_root}},
    )
    client = s3_client(server)
    previous = Previous(resource, client)
    resource.close()

    writer = Writer(backend_config(resource), unique_root, total_bytes=2000 * MiB, wait_on_failure=True)
    try:
        writer.wait_for_line("STARTED", timeout=120)
        wait_until(two_parts_uploaded(client, resource), 120, "two uploaded parts", writer)
        server.kill()
        killed_at = time.monotonic()
        # The writer must notice and fail, not hang.
        failed = writer.wait_for_line("FAILED", timeout=180)
        fail_seconds = time.monotonic() - killed_at
        # Bring the server back on the same data while the failed writer is still alive, wait until
        # it serves reads again (bounded), then let the writer exit normally (its S3 streams are
        # destroyed at exit, against a server that answers).
        server.restart()
        wait_until(serves_reads(server, resource), 30, "the restarted server to serve reads")
        assert writer.finish() == 1
    finally:
        writer.kill()
    print(f"writer failed {fail_seconds:.1f}s after the server was killed: {failed.strip()}")
    # The write failed because the server went away, while uploading our asset's object.
    assert failed.startswith("FAILED EndpointConnectionError"), failed
    assert f"/{ASSET}/data.parquet" in failed, failed

    client = s3_client(server)
    previous.assert_intact()
    resource.close()
    # The writer's abort could not reach the dead server, so the interrupted upload is still there,
    # never completed: an invisible leftover for the cleanup sensor.
    uploads = pending_uploads(client, resource)
    assert len(uploads) == 1, uploads
    assert all(parts >= 1 for _, parts, _ in uploads), uploads
    abort_all(client, resource)


# --------------------------------------------------------------------------- (d) 5xx / resets


def op(name: str, action: str, when: Callable[[int], bool] = lambda n: True) -> fp.Rule:
    def rule(request: fp.Request, count: int) -> str:
        return action if request.operation == name and when(count) else fp.PASS

    return rule


def both(*rules: fp.Rule) -> fp.Rule:
    def rule(request: fp.Request, count: int) -> str:
        for r in rules:
            action = r(request, count)
            if action != fp.PASS:
                return action
        return fp.PASS

    return rule


NEW_BYTES = 40 * MiB  # five 8 MiB parts

# name -> (rule, expected outcome: "ok", "fail" or "either", operations whose fault must have been injected)
SCENARIOS: dict[str, tuple[fp.Rule, str, set[str]]] = {
    # transient faults: botocore's retries must carry the write through, and the result be complete
    "create_upload_500_once": (
        op("CreateMultipartUpload", fp.ERROR_500, lambda n: n == 1),
        "ok",
        {"CreateMultipartUpload"},
    ),
    "upload_part_500_once": (op("UploadPart", fp.ERROR_500, lambda n: n == 2), "ok", {"UploadPart"}),
    "upload_part_reset_once": (op("UploadPart", fp.RESET, lambda n: n == 2), "ok", {"UploadPart"}),
    "complete_503_once": (
        op("CompleteMultipartUpload", fp.ERROR_503, lambda n: n == 1),
        "ok",
        {"CompleteMultipartUpload"},
    ),
    # an IAM policy without s3:ListBucketMultipartUploads (s3rver: NotImplemented): never needed
    "list_uploads_denied": (op("ListMultipartUploads", fp.ACCESS_DENIED), "ok", set()),
    # persistent faults at each step of the multipart upload: the write fails, the old object stays
    "create_upload_500": (op("CreateMultipartUpload", fp.ERROR_500), "fail", {"CreateMultipartUpload"}),
    "create_upload_reset": (op("CreateMultipartUpload", fp.RESET), "fail", {"CreateMultipartUpload"}),
    "upload_part_500_after_2": (op("UploadPart", fp.ERROR_500, lambda n: n >= 3), "fail", {"UploadPart"}),
    "upload_part_reset_after_1": (op("UploadPart", fp.RESET, lambda n: n >= 2), "fail", {"UploadPart"}),
    "complete_503": (op("CompleteMultipartUpload", fp.ERROR_503), "fail", {"CompleteMultipartUpload"}),
    "complete_reset": (op("CompleteMultipartUpload", fp.RESET), "fail", {"CompleteMultipartUpload"}),
    # the server completes, but the answer is lost: either outcome is fine, a torn one is not
    "complete_answer_lost": (
        op("CompleteMultipartUpload", fp.RESET_AFTER, lambda n: n == 1),
        "either",
        {"CompleteMultipartUpload"},
    ),
    # the abort fails too: the upload stays incomplete (never completed), for the cleanup sensor
    "upload_part_and_abort_500": (
        both(op("UploadPart", fp.ERROR_500, lambda n: n >= 3), op("AbortMultipartUpload", fp.ERROR_500)),
        "fail",
        {"UploadPart", "AbortMultipartUpload"},
    ),
    "upload_part_500_and_abort_reset": (
        both(op("UploadPart", fp.ERROR_500, lambda n: n >= 3), op("AbortMultipartUpload", fp.RESET)),
        "fail",
        {"UploadPart", "AbortMultipartUpload"},
    ),
}


@pytest.fixture
def proxy(seaweedfs_server: SeaweedFSServer) -> Iterator[fp.FaultProxy]:
    with fp.FaultProxy(seaweedfs_server.port) as p:
        yield p


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_server_errors_and_resets(
    scenario: str, proxy: fp.FaultProxy, seaweedfs_server: SeaweedFSServer, unique_root: str
) -> None:
    rule, expected, must_inject = SCENARIOS[scenario]
    options = {**seaweedfs_server.backend_options(BUCKET), "endpoint_url": proxy.endpoint_url}
    resource = RemoteStoreResource(
        backends={"main": {"type": "s3-pyarrow", "options": options}},
        stores={"lake": {"backend": "main", "root_path": unique_root}},
    )
    client = s3_client(seaweedfs_server)  # straight to the server: what the world sees
    previous = Previous(resource, client)
    new_table = workers.table(rng_state=4, total_bytes=NEW_BYTES)

    proxy.rule = rule
    proxy.counts.clear()
    result = write_version(
        resource,
        lambda: pa.RecordBatchReader.from_batches(workers.SCHEMA, workers.batches(rng_state=4, total_bytes=NEW_BYTES)),
        raise_on_error=False,
    )
    injected = proxy.injected()
    counts = dict(proxy.counts)
    proxy.rule = fp.pass_all
    assert {operation for operation, _ in injected} >= must_inject, f"{scenario}: {injected} ({counts})"
    assert "ListMultipartUploads" not in counts, counts  # the protocol never lists uploads

    success = result.success
    # A failed write's streams may be destroyed later (garbage collection, with the server
    # healthy again): that must not publish anything either.
    del result
    gc.collect()

    if expected == "ok":
        assert success, f"{scenario}: the write should have survived {injected}"
    elif expected == "fail":
        assert not success, f"{scenario}: the write should have failed ({injected})"

    files = visible_files(resource)
    assert list(files) == ["data.parquet"], files
    if success or files != previous.files:
        # The new version, complete and correct: never a torn mix.
        assert expected != "fail", f"{scenario}: a failed write changed the object"
        assert load_version(resource).equals(new_table)
        assert dataset_table(resource).equals(new_table)
    else:
        previous.assert_intact()
    if expected == "fail":
        previous.assert_intact()
    if "AbortMultipartUpload" in must_inject:
        # Abort refused: the upload is left incomplete, never completed, for the cleanup sensor.
        assert len(pending_uploads(client, resource)) == 1
    elif expected == "fail" and "CreateMultipartUpload" not in must_inject:
        assert counts.get("AbortMultipartUpload", 0) >= 1, counts
        assert pending_uploads(client, resource) == [], "a failed write left its upload behind"
    abort_all(client, resource)
    resource.close()


# --------------------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("server_kind", ["moto", "seaweedfs"])
def test_concurrent_writers_of_one_key_each_publish_a_whole_object(
    server_kind: str, make_remote_store: Callable[..., RemoteStoreResource], request: pytest.FixtureRequest
) -> None:
    """Two multipart writes of one key interleave: each completes whole, the last completion wins, never torn."""
    from remote_store_dagster._provenance import Provenance

    resource = make_remote_store(server_kind)
    client = s3_client(request.getfixturevalue(f"{server_kind}_server"))
    store = resource.get_store("lake")
    path = f"{ASSET}/data.bin"
    first, second = os.urandom(40 * MiB), os.urandom(24 * MiB)
    first_sent = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def write(body: bytes, run_id: str, after_first_part: Callable[[], None]) -> None:
        try:
            with storage_for(store).publish(path, provenance=Provenance(run_id=run_id)) as out:
                for start in range(0, len(body), MiB):
                    out.write(body[start : start + MiB])
                    if start == 20 * MiB:  # a part is uploading or uploaded
                        after_first_part()
        except BaseException as exc:
            errors.append(exc)

    slow = threading.Thread(target=write, args=(first, "slow", lambda: (first_sent.set(), second_done.wait(120))))
    slow.start()
    assert first_sent.wait(120)
    write(second, "fast", lambda: None)  # starts after, completes first
    second_done.set()
    mid = client.get_object(Bucket=BUCKET, Key=s3_key(resource, path))["Body"].read()
    slow.join(180)
    assert errors == []
    assert mid == second  # the fast writer's whole object, while the slow one was still uploading
    head = client.head_object(Bucket=BUCKET, Key=s3_key(resource, path))
    assert store.read_bytes(path) == first  # the last completion wins, whole
    assert head["ContentLength"] == len(first)
    assert head["Metadata"]["rsd-run-id"] == "slow"
    assert pending_uploads(client, resource) == []
    resource.close()
