"""The publish protocol: its request pattern (counted at a proxy in front of SeaweedFS), provenance, progress.

Small outputs are one PutObject; larger ones CreateMultipartUpload + parts + CompleteMultipartUpload,
with no ListMultipartUploads, so servers and IAM policies without it work. The provenance rides on
the object (S3 user metadata, on both paths) or in the sidecar (other backends).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import _fault_proxy as fp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BUCKET, PLAIN_S3
from dagster import DagsterInstance, StaticPartitionsDefinition, asset, job, materialize, op

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource
from remote_store_dagster import _progress as progress_module
from remote_store_dagster._provenance import Provenance, sidecar_path
from remote_store_dagster._storage import storage_for
from remote_store_dagster._storage._s3_upload import SMALL_OBJECT_BYTES
from remote_store_dagster._version import __version__
from remote_store_dagster.testing import SeaweedFSServer

MiB = 1024 * 1024
LARGE = SMALL_OBJECT_BYTES + 3 * MiB
PART_AND_A_BIT = 17 * MiB  # one write that fills the first 16 MiB part: sent at once


@pytest.fixture
def proxied(seaweedfs_server: SeaweedFSServer, unique_root: str) -> Iterator[tuple[fp.FaultProxy, RemoteStoreResource]]:
    with fp.FaultProxy(seaweedfs_server.port) as proxy:
        options = {**seaweedfs_server.backend_options(BUCKET), "endpoint_url": proxy.endpoint_url}
        resource = RemoteStoreResource(
            backends={"s3": {"type": "s3-pyarrow", "options": options}},
            stores={"lake": {"backend": "s3", "root_path": unique_root}},
        )
        yield proxy, resource
        resource.close()


def random_column(nbytes: int) -> pa.Array:
    """``nbytes`` rows of one random byte each: incompressible, so the Parquet file is as large."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(1), nbytes, [None, pa.py_buffer(os.urandom(nbytes))])


def write_body(resource: RemoteStoreResource, path: str, body: bytes, **kwargs: Any) -> None:
    with storage_for(resource.get_store("lake")).publish(path, **kwargs) as out:
        for start in range(0, len(body), MiB):
            out.write(body[start : start + MiB])


def head_metadata(client: Any, resource: RemoteStoreResource, path: str) -> dict[str, str]:
    key = f"{resource.stores['lake'].root_path}/{path}"
    return dict(client.head_object(Bucket=BUCKET, Key=key)["Metadata"])


def io_manager(resource: RemoteStoreResource, **kwargs: Any) -> RemoteStoreIOManager:
    return RemoteStoreIOManager(remote_store=resource, store="lake", **kwargs)


# --------------------------------------------------------------------------- request patterns


def test_small_output_is_one_put_with_provenance(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource], seaweedfs_server: SeaweedFSServer
) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    provenance = Provenance(run_id="r-1", code_location="loc", asset_key="a/b", partition_key="2024-01-01|ü x")
    proxy.counts.clear()
    with storage_for(store).publish("a/data.bin", provenance=provenance) as out:
        out.write(b"x" * 1000)
        out.write(b"y" * 1000)
        assert out.tell() == 2000
    assert dict(proxy.counts) == {"PUT": 1}
    assert store.read_bytes("a/data.bin") == b"x" * 1000 + b"y" * 1000
    metadata = head_metadata(seaweedfs_server.client(), resource, "a/data.bin")
    assert Provenance.from_metadata(metadata) == provenance


def test_small_output_that_fails_sends_nothing(proxied: tuple[fp.FaultProxy, RemoteStoreResource]) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    store.write("a/data.bin", b"previous", overwrite=True)
    proxy.counts.clear()
    with (
        pytest.raises(RuntimeError, match="producer failed"),
        storage_for(store).publish("a/data.bin") as out,
    ):
        out.write(b"partial")
        raise RuntimeError("producer failed")
    assert sum(proxy.counts.values()) == 0
    assert store.read_bytes("a/data.bin") == b"previous"


def test_large_output_is_create_parts_complete_without_listing_uploads(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource], seaweedfs_server: SeaweedFSServer
) -> None:
    proxy, resource = proxied
    from remote_store_dagster._storage import _s3_upload as up

    body = os.urandom(5 * up.PART_BYTES - MiB)  # five parts, the last one short
    provenance = Provenance(run_id="r-2", asset_key="big")
    proxy.counts.clear()
    write_body(resource, "big/data.bin", body, provenance=provenance)
    assert dict(proxy.counts) == {"CreateMultipartUpload": 1, "UploadPart": 5, "CompleteMultipartUpload": 1}
    assert resource.get_store("lake").read_bytes("big/data.bin") == body
    metadata = head_metadata(seaweedfs_server.client(), resource, "big/data.bin")
    assert Provenance.from_metadata(metadata) == provenance


def test_output_just_above_the_small_threshold_is_one_part(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    proxy, resource = proxied
    body = os.urandom(LARGE)
    proxy.counts.clear()
    write_body(resource, "mid/data.bin", body)
    from remote_store_dagster._storage import _s3_upload as up

    parts = -(-LARGE // up.PART_BYTES)
    assert dict(proxy.counts) == {"CreateMultipartUpload": 1, "UploadPart": parts, "CompleteMultipartUpload": 1}
    assert resource.get_store("lake").read_bytes("mid/data.bin") == body


def test_publishes_when_listing_uploads_is_denied(proxied: tuple[fp.FaultProxy, RemoteStoreResource]) -> None:
    """An IAM policy without s3:ListBucketMultipartUploads (or s3rver's NotImplemented) does not matter."""
    proxy, resource = proxied
    proxy.rule = lambda request, count: fp.ACCESS_DENIED if request.operation == "ListMultipartUploads" else fp.PASS
    table = pa.table({"x": random_column(LARGE)})  # > 8 MiB of Parquet: multipart

    @asset
    def events() -> pa.Table:
        return table

    assert materialize([events], resources={"io_manager": io_manager(resource)}).success
    assert proxy.counts["CreateMultipartUpload"] == 1 and proxy.counts["CompleteMultipartUpload"] == 1
    assert "ListMultipartUploads" not in proxy.counts
    dp = storage_for(resource.get_store("lake"))
    assert pq.read_table(dp.native("events/data.parquet"), filesystem=dp.filesystem).equals(table)


@pytest.mark.parametrize(
    ("operation", "action", "large", "expected"),
    [
        ("PUT", fp.ACCESS_DENIED, False, "S3 denied PutObject (AccessDenied)"),
        ("CreateMultipartUpload", fp.ACCESS_DENIED, True, "S3 denied CreateMultipartUpload (AccessDenied)"),
        ("UploadPart", fp.ACCESS_DENIED, True, "S3 denied UploadPart (AccessDenied)"),
        ("CreateMultipartUpload", fp.NOT_IMPLEMENTED, True, "S3 does not implement CreateMultipartUpload"),
    ],
)
def test_refused_operation_names_operation_permission_and_asset(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource], operation: str, action: str, large: bool, expected: str
) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    store.write("events/p=a/data.parquet", b"previous", overwrite=True)
    proxy.rule = lambda request, count: action if request.operation == operation else fp.PASS
    size = LARGE if large else 1000

    @asset(partitions_def=StaticPartitionsDefinition(["a"]), metadata={"partition_column": "p"})
    def events() -> pa.Table:
        return pa.table({"x": random_column(size)})

    result = materialize(
        [events], partition_key="a", resources={"io_manager": io_manager(resource)}, raise_on_error=False
    )
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "RemoteStoreIOError" in message
    assert "asset events partition 'a'" in message
    assert expected in message
    assert "s3:PutObject" in message
    assert store.read_bytes("events/p=a/data.parquet") == b"previous"
    if large:
        proxy.rule = fp.pass_all
        client_uploads = [
            u
            for u in seaweedfs_client_uploads(proxy, resource)
            if u["Key"].startswith(resource.stores["lake"].root_path + "/")
        ]
        assert client_uploads == [], "a refused write left its upload behind"


def seaweedfs_client_uploads(proxy: fp.FaultProxy, resource: RemoteStoreResource) -> list[dict[str, Any]]:
    from remote_store_dagster import _remote_store_adapter as adapter

    fs = adapter.s3fs_filesystem(resource.get_store("lake"))
    prefix = resource.stores["lake"].root_path + "/"
    return list(fs.call_s3("list_multipart_uploads", Bucket=BUCKET, Prefix=prefix).get("Uploads", []))


# --------------------------------------------------------------------------- stale siblings


def test_stale_sibling_delete_only_when_another_format_can_exist(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    value: dict[str, Any] = {"v": pa.table({"x": [1]})}

    @asset(name="thing")
    def thing() -> Any:
        return value["v"]

    instance = DagsterInstance.ephemeral()
    resources = {"io_manager": io_manager(resource)}
    proxy.counts.clear()
    assert materialize([thing], resources=resources, instance=instance).success
    assert proxy.counts["DeleteObjects"] == 1  # first write this instance knows of: cannot know, so delete
    proxy.counts.clear()
    assert materialize([thing], resources=resources, instance=instance).success
    assert "DeleteObjects" not in proxy.counts  # same format as the recorded latest materialization
    value["v"] = {"now": "a pickle"}
    proxy.counts.clear()
    assert materialize([thing], resources=resources, instance=instance).success
    assert proxy.counts["DeleteObjects"] == 1  # another format than the recorded one: delete it
    assert not store.exists("thing/data.parquet"), "the stale Parquet file was not deleted"
    assert store.exists("thing/data.pickle")
    instance.wipe_assets([thing.key])
    value["v"] = pa.table({"x": [2]})
    proxy.counts.clear()
    assert materialize([thing], resources=resources, instance=instance).success
    assert proxy.counts["DeleteObjects"] == 1  # wiped: no record, so delete
    assert not store.exists("thing/data.pickle")


# --------------------------------------------------------------------------- provenance through the IO manager


def test_provenance_on_every_backend(
    remote_store: RemoteStoreResource, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    """head-object shows it on S3 (single PUT and multipart), the sidecar on local."""
    parts = StaticPartitionsDefinition(["small", "large"])

    @asset(key_prefix=["team"], partitions_def=parts)
    def events(context) -> pa.Table:  # type: ignore[no-untyped-def]  # dagster rejects a string annotation
        size = LARGE if context.partition_key == "large" else 1000
        return pa.table({"x": random_column(size)})

    @op
    def emit() -> bytes:
        return b"op output"

    @job(resource_defs={"io_manager": io_manager(remote_store, code_location="team-loc")})
    def op_job() -> None:
        emit()

    manager = io_manager(remote_store, code_location="team-loc")
    run_ids = {}
    for key in ("small", "large"):
        result = materialize([events], partition_key=key, resources={"io_manager": manager})
        run_ids[key] = result.run_id
    op_result = op_job.execute_in_process()

    store = remote_store.get_store("lake")
    found = {}
    for key in ("small", "large"):
        path = f"team/events/partition={key}/data.parquet"
        if backend_kind == "local":
            found[key] = Provenance.from_json(store.read_bytes(sidecar_path(path)))
        else:
            client = request.getfixturevalue(f"{backend_kind}_server").client()
            found[key] = Provenance.from_metadata(head_metadata(client, remote_store, path))
        assert found[key] == Provenance(
            run_id=run_ids[key],
            code_location="team-loc",
            asset_key="team/events",
            partition_key=key,
            version=__version__,
        )
    op_path = f"_runs/{op_result.run_id}/emit/result/data.bin"
    if backend_kind == "local":
        op_provenance = Provenance.from_json(store.read_bytes(sidecar_path(op_path)))
    else:
        client = request.getfixturevalue(f"{backend_kind}_server").client()
        op_provenance = Provenance.from_metadata(head_metadata(client, remote_store, op_path))
    assert op_provenance == Provenance(run_id=op_result.run_id, code_location="team-loc")


# --------------------------------------------------------------------------- progress in the run log


def test_slow_write_logs_progress_and_one_summary(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, resource = proxied
    monkeypatch.setattr(progress_module, "PROGRESS_INTERVAL_SECONDS", 0.2)
    schema = pa.schema([("x", pa.binary(1))])

    @asset
    def slow() -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            for _ in range(4):
                time.sleep(0.3)
                yield pa.record_batch([random_column(6 * MiB)], schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    instance = DagsterInstance.ephemeral()
    result = materialize([slow], resources={"io_manager": io_manager(resource)}, instance=instance)
    records = instance.all_logs(result.run_id)
    messages = [record.user_message for record in records]
    progress = [m for m in messages if m.startswith("asset slow: wrote") and "so far" in m]
    done = [m for m in messages if m.startswith("asset slow: wrote") and " -> s3://" in m]
    assert progress, messages
    # At most one progress line per interval (not one per write): consecutive lines >= 0.2 s apart.
    times = [
        r.timestamp for r in records if r.user_message.startswith("asset slow: wrote") and "so far" in r.user_message
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.2 - 0.02 for gap in gaps), gaps
    assert len(done) == 1, done
    assert f"{4 * 6 * MiB:,} rows" in done[0]
    assert "MiB/s" in done[0] and done[0].endswith("/slow/data.parquet")


def test_denied_stale_delete_names_the_permission(proxied: tuple[fp.FaultProxy, RemoteStoreResource]) -> None:
    proxy, resource = proxied
    proxy.rule = lambda request, count: fp.ACCESS_DENIED if request.operation == "DeleteObjects" else fp.PASS

    @asset
    def events() -> pa.Table:
        return pa.table({"x": [1]})

    result = materialize([events], resources={"io_manager": io_manager(resource)}, raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "asset events: S3 denied DeleteObjects (AccessDenied)" in message
    assert "s3:DeleteObject" in message
    assert resource.get_store("lake").exists("events/data.parquet")  # the data itself was published


def test_part_sizes_reach_s3s_object_limit_within_10000_parts() -> None:
    from remote_store_dagster._storage import _s3_upload as up

    assert up.part_size(1) == up.part_size(1000) == up.PART_BYTES
    assert up.part_size(1001) == 2 * up.PART_BYTES
    assert up.part_size(10_000) == min(512 * up.PART_BYTES, 5 * 1024 * MiB)  # at most S3's part limit
    assert all(up.part_size(n) >= 5 * MiB for n in range(1, up.MAX_PARTS + 1))
    assert sum(up.part_size(n) for n in range(1, up.MAX_PARTS + 1)) >= 5 * 1024**4  # S3's 5 TiB object limit


def test_buffered_parts_are_bounded_when_the_server_is_slower_than_the_producer(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """Back-pressure: the producer waits while PARTS_IN_FLIGHT parts upload, so Python holds a few parts, not all."""
    import tracemalloc

    from remote_store_dagster import _remote_store_adapter as adapter
    from remote_store_dagster._storage import _s3_upload as up

    _, resource = proxied
    store = resource.get_store("lake")
    real = adapter.s3fs_filesystem(store)

    class SlowNetwork:
        """The real client, with part uploads made slower than the producer (a slow link)."""

        def call_s3(self, method: str, **kwargs: Any) -> Any:
            if method == "upload_part":
                time.sleep(0.3)
            return real.call_s3(method, **kwargs)

    total = 32 * up.PART_BYTES
    chunk = os.urandom(MiB)
    tracemalloc.start()
    try:
        upload = up.S3Upload(SlowNetwork(), BUCKET, f"{resource.stores['lake'].root_path}/slow.bin", {})
        with up.guarded(upload):
            for _ in range(total // MiB):
                upload.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store.read_bytes("slow.bin")) == total
    # PARTS_IN_FLIGHT parts uploading + one filling, each with a transient copy in the request pipeline
    # (measured ~98 MiB traced peak for 4 x 8 MiB; without back-pressure all 32 parts are alive at once).
    assert peak <= 3 * (up.PARTS_IN_FLIGHT + 1) * up.PART_BYTES < total, peak / MiB


# --------------------------------------------------------------------------- failures the producer must see at once


@pytest.fixture
def proxied_no_retries(
    seaweedfs_server: SeaweedFSServer, unique_root: str
) -> Iterator[tuple[fp.FaultProxy, RemoteStoreResource]]:
    """Like ``proxied``, but one attempt per request: an injected 500 is not retried away inside botocore."""
    with fp.FaultProxy(seaweedfs_server.port) as proxy:
        options = {
            **seaweedfs_server.backend_options(BUCKET),
            "endpoint_url": proxy.endpoint_url,
            "client_options": {"config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}}},
        }
        resource = RemoteStoreResource(
            backends={"s3": {"type": "s3-pyarrow", "options": options}},
            stores={"lake": {"backend": "s3", "root_path": unique_root}},
        )
        yield proxy, resource
        resource.close()


def test_keyboard_interrupt_mid_upload_aborts_and_keeps_the_previous_object(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """Ctrl-C is not an ``Exception``: it must abort the multipart upload all the same, never complete it."""
    proxy, resource = proxied
    store = resource.get_store("lake")
    store.write("ki/data.bin", b"previous", overwrite=True)
    proxy.counts.clear()
    with pytest.raises(KeyboardInterrupt), storage_for(store).publish("ki/data.bin") as out:
        for _ in range(40):  # two 16 MiB parts handed to the uploader threads
            out.write(os.urandom(MiB))
        raise KeyboardInterrupt
    assert proxy.counts["CreateMultipartUpload"] == 1 and proxy.counts["UploadPart"] >= 1, dict(proxy.counts)
    assert proxy.counts["AbortMultipartUpload"] >= 1, dict(proxy.counts)
    assert "CompleteMultipartUpload" not in proxy.counts, dict(proxy.counts)
    assert seaweedfs_client_uploads(proxy, resource) == [], "the interrupted upload was left behind"
    assert store.read_bytes("ki/data.bin") == b"previous"


def test_a_failed_part_stops_the_producer_within_the_parts_in_flight(
    proxied_no_retries: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """A part that fails for good surfaces in the producer's next hand-off, not after the whole stream
    (a 50 GB producer must not keep encoding for an hour into an upload that is already lost)."""
    from remote_store_dagster._storage import _s3_upload as up

    proxy, resource = proxied_no_retries
    store = resource.get_store("lake")
    store.write("ff/data.bin", b"previous", overwrite=True)
    proxy.counts.clear()
    proxy.rule = lambda request, count: fp.ERROR_500 if request.operation == "UploadPart" else fp.PASS
    chunk = os.urandom(MiB)
    written = 0
    with (
        pytest.raises(OSError, match="injected by the test proxy"),
        storage_for(store).publish("ff/data.bin") as out,
    ):
        for _ in range(12 * up.PART_BYTES // MiB):  # twelve parts' worth
            out.write(chunk)
            written += len(chunk)
            time.sleep(0.005)  # a producer slower than the failing server
    proxy.rule = fp.pass_all
    # Parts 1 and 2 in flight, part 3 filling: the failure is raised when part 3 is handed over.
    assert written <= (up.PARTS_IN_FLIGHT + 1) * up.PART_BYTES, f"{written / MiB:.0f} MiB written after the failure"
    assert proxy.counts["AbortMultipartUpload"] >= 1 and "CompleteMultipartUpload" not in proxy.counts
    assert seaweedfs_client_uploads(proxy, resource) == []
    assert store.read_bytes("ff/data.bin") == b"previous"


def test_a_transient_abort_failure_is_retried(proxied: tuple[fp.FaultProxy, RemoteStoreResource]) -> None:
    """Every request of the first AbortMultipartUpload attempt fails (botocore's and s3fs's own retries
    included); the next attempt removes the upload."""
    from remote_store_dagster import _remote_store_adapter as adapter

    proxy, resource = proxied
    store = resource.get_store("lake")
    failing_aborts = {"left": 10**6}

    def rule(request: fp.Request, count: int) -> str:
        if request.operation == "AbortMultipartUpload" and failing_aborts["left"] > 0:
            failing_aborts["left"] -= 1
            return fp.ERROR_500
        return fp.PASS

    # How many requests one failing abort call sends (the client's own retries).
    proxy.rule = rule
    proxy.counts.clear()
    fs = adapter.s3fs_filesystem(store)
    key = f"{resource.stores['lake'].root_path}/ab/x.bin"
    with pytest.raises(OSError, match="injected by the test proxy"):
        fs.call_s3("abort_multipart_upload", Bucket=BUCKET, Key=key, UploadId="calibration")
    one_attempt = proxy.counts["AbortMultipartUpload"]
    assert one_attempt >= 1

    failing_aborts["left"] = one_attempt  # the whole first attempt fails, then the server recovers
    proxy.counts.clear()
    with (
        pytest.raises(RuntimeError, match="producer failed"),
        storage_for(store).publish("ab/x.bin") as out,
    ):
        out.write(os.urandom(PART_AND_A_BIT))  # one part sent
        raise RuntimeError("producer failed")
    proxy.rule = fp.pass_all
    assert proxy.counts["AbortMultipartUpload"] == one_attempt + 1, (one_attempt, dict(proxy.counts))
    assert seaweedfs_client_uploads(proxy, resource) == [], "one failed abort attempt left the upload behind"
    assert not store.exists("ab/x.bin")


@pytest.mark.parametrize("backend_kind", ["local", PLAIN_S3, "seaweedfs"], indirect=True)
def test_a_failed_write_leaves_the_previous_provenance(
    remote_store: RemoteStoreResource, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    """Provenance never names a run whose write failed: the sidecar is written only after the data
    is published (other backends), the metadata rides on the object (s3-pyarrow)."""
    store = remote_store.get_store("lake")
    dp = storage_for(store)
    path = "events/data.bin"
    first, second = (
        Provenance(run_id="run-ok", code_location="loc"),
        Provenance(run_id="run-failed", code_location="loc"),
    )
    with dp.publish(path, staging_prefix="", provenance=first) as out:
        out.write(b"previous")
    with (
        pytest.raises(RuntimeError, match="producer failed"),
        dp.publish(path, staging_prefix="", provenance=second) as out,
    ):
        out.write(b"partial")
        raise RuntimeError("producer failed")
    assert store.read_bytes(path) == b"previous"
    if backend_kind == "seaweedfs":
        found = Provenance.from_metadata(
            head_metadata(request.getfixturevalue("seaweedfs_server").client(), remote_store, path)
        )
    else:
        found = Provenance.from_json(store.read_bytes(sidecar_path(path)))
    assert found == first


# --------------------------------------------------------------------------- round trips on a slow link


def _slow(operations: set[str], seconds: float) -> fp.Rule:
    """A link where each request of ``operations`` takes ``seconds`` longer (a far server)."""

    def rule(request: fp.Request, count: int) -> str:
        if request.operation in operations:
            time.sleep(seconds)
        return fp.PASS

    return rule


def test_uploads_keep_several_parts_in_flight_without_expect_continue(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """On a far server throughput comes from parts in flight, and no part waits a round trip for ``100 Continue``."""
    from remote_store_dagster._storage import _s3_upload as up

    proxy, resource = proxied
    proxy.rule = _slow({"UploadPart"}, 0.3)
    body = os.urandom(10 * up.PART_BYTES)
    write_body(resource, "far/data.bin", body)
    assert resource.get_store("lake").read_bytes("far/data.bin") == body
    assert proxy.counts["UploadPart"] == 10
    assert proxy.peak_in_flight["UploadPart"] >= 4, proxy.peak_in_flight
    write_body(resource, "far/small.bin", b"x" * 1000)
    assert proxy.counts["PUT"] == 1  # the PutObject of the small one
    assert proxy.expect_continue["UploadPart"] == 0 and proxy.expect_continue["PUT"] == 0, proxy.expect_continue


def test_other_formats_are_deleted_only_after_the_new_object_is_published(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """Even with no materialization on record, the quiet DeleteObjects waits for the publish: until then
    the folder's other format is what readers find (a killed writer must not take it with it)."""
    proxy, resource = proxied
    proxy.rule = _slow({"PUT"}, 0.5)  # PutObject

    @asset
    def first() -> bytes:
        return b"first write"

    io_manager = RemoteStoreIOManager(remote_store=resource, store="lake", prefix="warehouse")
    assert materialize([first], resources={"io_manager": io_manager}).success
    events = [(op, what) for op, what, _ in proxy.timeline if op in ("PUT", "DeleteObjects")]
    assert events.index(("PUT", "answered")) < events.index(("DeleteObjects", "sent")), events


# --------------------------------------------------------------------------- integrity in transit


def test_a_byte_flipped_in_transit_never_reaches_the_object(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    """Each PutObject/UploadPart carries a CRC32C; the server refuses a body that does not match, the client resends."""
    from remote_store_dagster._storage import _s3_upload as up

    proxy, resource = proxied
    proxy.rule = lambda request, count: (
        fp.CORRUPT if request.operation in ("UploadPart", "PUT") and count == 1 else fp.PASS
    )
    body = os.urandom(3 * up.PART_BYTES)
    write_body(resource, "transit/big.bin", body)
    small = os.urandom(100_000)
    write_body(resource, "transit/small.bin", small)
    store = resource.get_store("lake")
    assert store.read_bytes("transit/big.bin") == body
    assert store.read_bytes("transit/small.bin") == small
    assert ("UploadPart", fp.CORRUPT) in proxy.injected() and ("PUT", fp.CORRUPT) in proxy.injected()
    assert proxy.counts["UploadPart"] == 4 and proxy.counts["PUT"] == 2  # one resend each


def test_a_link_that_keeps_corrupting_fails_the_write_and_keeps_the_previous_object(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    proxy, resource = proxied
    write_body(resource, "transit/data.bin", b"previous")
    proxy.rule = lambda request, count: fp.CORRUPT if request.operation == "PUT" else fp.PASS
    with pytest.raises(Exception, match=r"BadDigest|checksum|Content-Md5"):
        write_body(resource, "transit/data.bin", b"x" * 1000)
    assert resource.get_store("lake").read_bytes("transit/data.bin") == b"previous"


def test_a_server_that_refuses_checksum_parameters_gets_uploads_without_them(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    from remote_store_dagster._storage import _s3_upload as up

    proxy, resource = proxied
    up._CHECKSUMS_REJECTED.clear()

    def rule(request: fp.Request, count: int) -> str:
        carries = any(h.startswith("x-amz-checksum") or h == "x-amz-sdk-checksum-algorithm" for h in request.headers)
        return fp.NO_CHECKSUMS if carries else fp.PASS

    proxy.rule = rule
    try:
        body = os.urandom(2 * up.PART_BYTES)
        write_body(resource, "old-server/data.bin", body)
        write_body(resource, "old-server/small.bin", b"small")
        store = resource.get_store("lake")
        assert store.read_bytes("old-server/data.bin") == body
        assert store.read_bytes("old-server/small.bin") == b"small"
        refused = [operation for operation, action in proxy.injected() if action == fp.NO_CHECKSUMS]
        assert refused == ["CreateMultipartUpload"]  # learnt once; nothing after it carries checksums
    finally:
        up._CHECKSUMS_REJECTED.clear()
