"""Compatibility: the IAM permissions our docs recommend (on moto with IAM enforced) and s3rver's gaps.

moto enforces IAM in server mode once ``/moto-api/reset-auth`` lowers its
``INITIAL_NO_AUTH_ACTION_COUNT``: every request is then signature-checked and
its action matched against the caller's IAM policies. The users below get
exactly the policies of ``POLICIES`` (the table in the docs), each scoped to
the store root, and each use (read-only loads, IO manager writes, the cleanup
sensor) runs through real Dagster with those credentials only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import _fault_proxy as fp
import botocore.exceptions
import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.io_manager import RemoteStoreIOManager
from remote_store_dagster.testing import MotoServer, S3rverServer

BUCKET = "rsd-iam"
ROOT = "lake"
PREFIX = "warehouse"
GRACE = timedelta(seconds=1)
LARGE_ROWS = 1_500_000  # ~12 MiB of Parquet: over the 8 MiB single-PutObject limit, so a multipart upload
FAILING_ROWS = 5_000_000  # ~40 MiB: at least two 16 MiB parts are on the server before the producer fails


def _statement(sid: str, actions: list[str], resource: str) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}


BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
OBJECTS_ARN = f"arn:aws:s3:::{BUCKET}/{ROOT}/*"

# The documented policies (docs/operations/iam.md), per use, for a store rooted at s3://BUCKET/ROOT.
READ = [
    _statement("ListTheStore", ["s3:ListBucket"], BUCKET_ARN),
    _statement("ReadObjects", ["s3:GetObject"], OBJECTS_ARN),
]
WRITE = [
    *READ,
    _statement("WriteObjects", ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], OBJECTS_ARN),
]
CLEANUP = [
    *READ,
    _statement("ListUploads", ["s3:ListBucketMultipartUploads"], BUCKET_ARN),
    _statement(
        "CleanObjects", ["s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"], OBJECTS_ARN
    ),
]
# moto authorizes DeleteObjects (bulk delete) as s3:DeleteObject on the *bucket* ARN, where AWS checks each key's
# ARN. This statement grants nothing on AWS; on moto it stands in for the per-key check.
MOTO_BULK_DELETE = _statement("MotoBulkDelete", ["s3:DeleteObject"], BUCKET_ARN)
POLICIES: dict[str, list[dict[str, Any]]] = {
    "admin": [_statement("All", ["s3:*"], "*")],
    "reader": READ,
    "writer": [*WRITE, MOTO_BULK_DELETE],
    "cleaner": [*CLEANUP, MOTO_BULK_DELETE],
    "cleaner_without_upload_listing": [s for s in CLEANUP if s["Sid"] != "ListUploads"] + [MOTO_BULK_DELETE],
}


def _doc(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


@dataclass
class IamMoto:
    server: MotoServer
    keys: dict[str, tuple[str, str]]  # user -> (access key, secret)

    def resource(self, user: str, endpoint_url: str | None = None) -> RemoteStoreResource:
        key, secret = self.keys[user]
        options = {
            **self.server.backend_options(BUCKET),
            "key": key,
            "secret": secret,
            "endpoint_url": endpoint_url or self.server.endpoint_url,
        }
        return RemoteStoreResource(
            backends={"s3": {"type": "s3-pyarrow", "options": options}},
            stores={"lake": {"backend": "s3", "root_path": ROOT}},
        )

    def io_manager(self, user: str) -> RemoteStoreIOManager:
        return RemoteStoreIOManager(remote_store=self.resource(user), store="lake", prefix=PREFIX)

    def client(self, user: str = "admin") -> Any:
        import boto3

        key, secret = self.keys[user]
        return boto3.client(
            "s3",
            endpoint_url=self.server.endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=self.server.region,
        )


@pytest.fixture(scope="module")
def iam_moto() -> Iterator[IamMoto]:
    """Its own moto server (enforcing IAM changes the whole server), with one IAM user per policy."""
    import boto3

    server = MotoServer()
    server.start()
    try:
        server.create_bucket(BUCKET)
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
        )
        keys = {}
        for user, statements in POLICIES.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-policy", PolicyDocument=_doc(statements))
            created = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (created["AccessKeyId"], created["SecretAccessKey"])
        request = urllib.request.Request(  # not form-encoded: moto reads the raw body
            f"{server.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        yield IamMoto(server, keys)
    finally:
        server.stop()


@pytest.fixture
def asset_name() -> str:
    return f"a{uuid.uuid4().hex[:10]}"


def _table(rows: int, tag: str = "v1") -> pa.Table:
    """Random doubles: Parquet cannot compress them, so LARGE_ROWS really is ~12 MiB on the wire."""
    return pa.table({"x": np.random.default_rng(rows).random(rows), "tag": [tag] * rows})


def _asset(name: str, value: Callable[[], Any]) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def produce() -> Any:
        return value()

    return produce


def _load_with(io_manager: RemoteStoreIOManager, name: str) -> pa.Table:
    """Load asset ``name`` through ``io_manager`` (a real Dagster run)."""
    loaded: dict[str, pa.Table] = {}

    @dg.asset(name=f"{name}_reader", ins={"upstream": dg.AssetIn(key=name)})
    def reader(upstream: pa.Table) -> None:
        loaded["table"] = upstream

    result = dg.materialize([dg.SourceAsset(key=name), reader], resources={"io_manager": io_manager})
    assert result.success
    return loaded["table"]


def _load(iam_moto: IamMoto, user: str, name: str) -> pa.Table:
    """Load asset ``name`` with ``user``'s credentials only."""
    return _load_with(iam_moto.io_manager(user), name)


def _failure(result: Any) -> str:
    """The full text (with causes) of the first step failure of a run."""
    return str(result.get_step_failure_events()[0].event_specific_data.error.to_string())


def _object_key(name: str) -> str:
    return f"{ROOT}/{PREFIX}/{name}/data.parquet"


# --- moto really enforces the policies -------------------------------------------------------------


def test_moto_enforces_iam_policies(iam_moto: IamMoto) -> None:
    """The premise of every test below: a permission missing from the policy is refused."""
    reader, writer = iam_moto.client("reader"), iam_moto.client("writer")
    writer.put_object(Bucket=BUCKET, Key=f"{ROOT}/probe", Body=b"x")
    assert reader.get_object(Bucket=BUCKET, Key=f"{ROOT}/probe")["Body"].read() == b"x"
    for call in (
        lambda: reader.put_object(Bucket=BUCKET, Key=f"{ROOT}/probe", Body=b"y"),
        lambda: writer.put_object(Bucket=BUCKET, Key="outside-the-root", Body=b"y"),
        lambda: writer.list_multipart_uploads(Bucket=BUCKET),
        lambda: iam_moto.client("cleaner_without_upload_listing").list_multipart_uploads(Bucket=BUCKET),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    iam_moto.client("cleaner").list_multipart_uploads(Bucket=BUCKET)  # granted
    bad = dict(iam_moto.keys)
    bad["admin"] = (bad["admin"][0], "wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError):
        IamMoto(iam_moto.server, bad).client().list_objects_v2(Bucket=BUCKET)


# --- (a) read-only loads -------------------------------------------------------------------------


def test_read_only_policy_loads_and_cannot_write(iam_moto: IamMoto, asset_name: str) -> None:
    table = _table(1000)
    assert dg.materialize(
        [_asset(asset_name, lambda: table)], resources={"io_manager": iam_moto.io_manager("admin")}
    ).success

    assert _load(iam_moto, "reader", asset_name).equals(table)

    refused = dg.materialize(
        [_asset(asset_name, lambda: _table(10, "v2"))],
        resources={"io_manager": iam_moto.io_manager("reader")},
        raise_on_error=False,
    )
    assert not refused.success
    assert "AccessDenied" in _failure(refused) or "Access Denied" in _failure(refused), _failure(refused)
    assert _load(iam_moto, "admin", asset_name).equals(table)  # unchanged


# --- (b) writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1000, LARGE_ROWS], ids=["small", "large"])
def test_write_policy_publishes_without_listing_multipart_uploads(
    iam_moto: IamMoto, asset_name: str, rows: int
) -> None:
    """The write policy has no s3:ListBucketMultipartUploads: small (PutObject) and large (multipart) publish."""
    for tag in ("v1", "v2"):  # a first write and an overwrite
        table = _table(rows, tag)
        result = dg.materialize(
            [_asset(asset_name, lambda table=table: table)],  # type: ignore[misc]
            resources={"io_manager": iam_moto.io_manager("writer")},
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        assert _load(iam_moto, "writer", asset_name).equals(table)
    head = iam_moto.client().head_object(Bucket=BUCKET, Key=_object_key(asset_name))
    assert head["ContentLength"] > (8 << 20 if rows == LARGE_ROWS else 0)


def test_write_policy_failed_large_write_keeps_the_previous_version(iam_moto: IamMoto, asset_name: str) -> None:
    """A producer that fails after several parts: the upload is aborted with s3:AbortMultipartUpload."""
    good = _table(1000)
    assert dg.materialize(
        [_asset(asset_name, lambda: good)], resources={"io_manager": iam_moto.io_manager("writer")}
    ).success
    before = iam_moto.client().get_object(Bucket=BUCKET, Key=_object_key(asset_name))["Body"].read()

    def failing() -> Iterator[pa.RecordBatch]:
        yield from _table(FAILING_ROWS).to_batches(max_chunksize=200_000)
        raise RuntimeError("producer failed mid-stream")

    schema = _table(1).schema
    result = dg.materialize(
        [_asset(asset_name, lambda: pa.RecordBatchReader.from_batches(schema, failing()))],
        resources={"io_manager": iam_moto.io_manager("writer")},
        raise_on_error=False,
    )
    assert not result.success
    client = iam_moto.client()
    assert client.get_object(Bucket=BUCKET, Key=_object_key(asset_name))["Body"].read() == before
    pending = client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{ROOT}/{PREFIX}/{asset_name}/")
    assert pending.get("Uploads", []) == []  # aborted, not left for the sensor


# --- (c) the cleanup sensor ----------------------------------------------------------------------


def _leftovers(iam_moto: IamMoto, asset_name: str) -> tuple[str, str]:
    """A stale staging object and a stale incomplete multipart upload below the prefix."""
    client = iam_moto.client()
    staging = f"{ROOT}/{PREFIX}/_staging/{uuid.uuid4().hex}.data.parquet"
    client.put_object(Bucket=BUCKET, Key=staging, Body=b"leftover")
    key = _object_key(asset_name)
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    time.sleep(GRACE.total_seconds() + 0.2)
    return staging, upload_id


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _tick(resource: RemoteStoreResource) -> tuple[str, str]:
    """One cleanup tick with ``resource``: (the tick's report, its WARNING lines)."""
    sensor = build_cleanup_sensor(store="lake", prefix=PREFIX, leftover_grace=GRACE)
    warnings = _Lines()
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, resources={"remote_store": resource}, definitions=dg.Definitions(sensors=[sensor])
        ) as ctx,
    ):
        ctx.log.addHandler(warnings)  # the sensor's run log (an InstigationLogger; does not reach the root logger)
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or "", "\n".join(warnings.lines)


def _exists(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except botocore.exceptions.ClientError:
        return False
    return True


def _uploads(client: Any, asset_name: str) -> list[str]:
    response = client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{ROOT}/{PREFIX}/{asset_name}/")
    return [u["UploadId"] for u in response.get("Uploads", [])]


def test_cleanup_policy_deletes_leftovers_and_aborts_uploads(iam_moto: IamMoto, asset_name: str) -> None:
    staging, upload_id = _leftovers(iam_moto, asset_name)
    report, warnings = _tick(iam_moto.resource("cleaner"))
    client = iam_moto.client()
    assert not _exists(client, staging), report
    assert upload_id not in _uploads(client, asset_name), report
    assert "aborted 1 incomplete multipart upload" in report, report
    assert warnings == ""


def test_cleanup_without_upload_listing_permission_warns_and_still_deletes(iam_moto: IamMoto, asset_name: str) -> None:
    """IAM without s3:ListBucketMultipartUploads (moto answers AccessDenied): objects go, uploads stay, a warning."""
    staging, upload_id = _leftovers(iam_moto, asset_name)
    report, warnings = _tick(iam_moto.resource("cleaner_without_upload_listing"))
    client = iam_moto.client()
    assert not _exists(client, staging), report
    assert staging.removeprefix(f"{ROOT}/") in report
    assert upload_id in _uploads(client, asset_name)
    assert "cannot list incomplete multipart uploads" in warnings
    assert "Access Denied" in warnings or "AccessDenied" in warnings, warnings


@pytest.mark.parametrize("answer", [fp.ACCESS_DENIED, fp.NOT_IMPLEMENTED])
def test_cleanup_through_proxy_denying_list_multipart_uploads(iam_moto: IamMoto, asset_name: str, answer: str) -> None:
    """The same through the fault proxy, for a server/IAM combination moto cannot express (and s3rver's 501)."""

    def deny_listing(request: fp.Request, count: int) -> str:
        return answer if request.operation == "ListMultipartUploads" else fp.PASS

    staging, upload_id = _leftovers(iam_moto, asset_name)
    with fp.FaultProxy(iam_moto.server.port, rule=deny_listing) as proxy:
        report, warnings = _tick(iam_moto.resource("cleaner", endpoint_url=proxy.endpoint_url))
        assert ("ListMultipartUploads", answer) in proxy.injected()
    client = iam_moto.client()
    assert not _exists(client, staging), report
    assert staging.removeprefix(f"{ROOT}/") in report
    assert upload_id in _uploads(client, asset_name)
    assert "cannot list incomplete multipart uploads" in warnings
    assert ("Access Denied" if answer == fp.ACCESS_DENIED else "not implemented") in warnings, warnings


# --- s3rver's gaps, pinned ----------------------------------------------------------------------


def test_s3rver_operations_we_rely_on_and_its_gaps(s3rver_server: S3rverServer) -> None:
    """What the docs say about s3rver 3.7.1: if a new version changes any of it, this test says so."""
    client = s3rver_server.client()
    bucket = "rsd-test"
    base = f"compat-{uuid.uuid4().hex[:8]}"

    def code(call: Callable[[], Any]) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call()
        return str(info.value.response["Error"]["Code"])

    client.put_object(Bucket=bucket, Key=f"{base}/a", Body=b"a", Metadata={"rsd-run-id": "r1"})
    assert client.head_object(Bucket=bucket, Key=f"{base}/a")["Metadata"] == {"rsd-run-id": "r1"}
    client.copy_object(Bucket=bucket, Key=f"{base}/b", CopySource={"Bucket": bucket, "Key": f"{base}/a"})
    assert client.head_object(Bucket=bucket, Key=f"{base}/b")["Metadata"] == {"rsd-run-id": "r1"}

    key = f"{base}/big"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"rsd-run-id": "r2"})["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"],
        }
        for n, body in ((1, b"x" * (5 << 20)), (2, b"y"))
    ]
    assert code(lambda: client.list_multipart_uploads(Bucket=bucket)) == "NotImplemented"
    assert code(lambda: client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)) == "MethodNotAllowed"
    assert (
        code(
            lambda: client.upload_part_copy(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=3,
                CopySource={"Bucket": bucket, "Key": f"{base}/a"},
            )
        )
        == "NotImplemented"
    )
    assert not _exists_in(client, bucket, key)  # parts are invisible until completed
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    head = client.head_object(Bucket=bucket, Key=key)
    assert (head["ContentLength"], head["Metadata"]) == ((5 << 20) + 1, {"rsd-run-id": "r2"})

    aborted = client.create_multipart_upload(Bucket=bucket, Key=f"{base}/aborted")["UploadId"]
    assert code(lambda: client.abort_multipart_upload(Bucket=bucket, Key=f"{base}/aborted", UploadId=aborted)) == (
        "MethodNotAllowed"
    )

    # Delimiter listings miss a folder whose objects all lie two or more levels deeper (s3rver bug).
    client.put_object(Bucket=bucket, Key=f"{base}/deep/x/y", Body=b"y")
    folders = client.list_objects_v2(Bucket=bucket, Prefix=f"{base}/", Delimiter="/").get("CommonPrefixes", [])
    assert f"{base}/deep/" not in [f["Prefix"] for f in folders]
    flat = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{base}/")["Contents"]]
    assert f"{base}/deep/x/y" in flat

    deleted = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in flat] + [{"Key": f"{base}/absent"}]}
    )
    assert not deleted.get("Errors")
    assert client.list_objects_v2(Bucket=bucket, Prefix=f"{base}/").get("KeyCount") == 0


def _exists_in(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError:
        return False
    return True


_CHECKSUM_PROBE = """
import sys
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.fs as pfs
fs = pfs.S3FileSystem(access_key="S3RVER", secret_key="S3RVER", endpoint_override=sys.argv[1], scheme="http",
                      region="us-east-1")
path = f"rsd-test/{sys.argv[2]}/small.parquet"
pq.write_table(pa.table({"a": list(range(10))}), path, filesystem=fs)
with fs.open_input_stream(path) as f:
    body = f.read()
print(len(body), body[:4] == body[-4:] == b"PAR1")
"""


@pytest.mark.parametrize("setting", [None, "when_required"])
def test_s3rver_needs_when_required_checksums_for_pyarrow(s3rver_server: S3rverServer, setting: str | None) -> None:
    """Without ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` PyArrow's write 'succeeds' on s3rver, but the
    object holds the aws-chunked framing (CRC trailer included), not the Parquet file: silent corruption."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if setting:
        env["AWS_REQUEST_CHECKSUM_CALCULATION"] = setting
    probe = subprocess.run(
        [sys.executable, "-c", _CHECKSUM_PROBE, s3rver_server.endpoint_url, f"ck-{uuid.uuid4().hex[:8]}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    _size, is_parquet = probe.stdout.split()
    assert is_parquet == ("True" if setting else "False"), probe.stdout


# --- the IO manager on s3rver: small and large outputs, a failed write ----------------------------


@pytest.fixture
def s3rver_io_manager(s3rver_server: S3rverServer) -> Iterator[RemoteStoreIOManager]:
    resource = RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": s3rver_server.backend_options("rsd-test")}},
        stores={"lake": {"backend": "s3", "root_path": f"compat-{uuid.uuid4().hex[:8]}"}},
    )
    yield RemoteStoreIOManager(remote_store=resource, store="lake", prefix=PREFIX)
    resource.close()


def _s3rver_key(io_manager: RemoteStoreIOManager, name: str) -> str:
    return f"{io_manager.remote_store.stores['lake'].root_path}/{PREFIX}/{name}/data.parquet"


@pytest.mark.parametrize("rows", [1000, LARGE_ROWS], ids=["small", "large"])
def test_s3rver_publishes_small_and_large_outputs(
    s3rver_server: S3rverServer, s3rver_io_manager: RemoteStoreIOManager, asset_name: str, rows: int
) -> None:
    """No ListMultipartUploads on s3rver: a large output is one multipart upload we drive ourselves."""
    for tag in ("v1", "v2"):
        table = _table(rows, tag)
        result = dg.materialize(
            [_asset(asset_name, lambda table=table: table)],  # type: ignore[misc]
            resources={"io_manager": s3rver_io_manager},
            raise_on_error=False,
        )
        assert result.success, _failure(result)
        head = s3rver_server.client().head_object(Bucket="rsd-test", Key=_s3rver_key(s3rver_io_manager, asset_name))
        assert head["ContentLength"] > (8 << 20 if rows == LARGE_ROWS else 0)
        assert _load_with(s3rver_io_manager, asset_name).equals(table)


def test_s3rver_failed_large_write_keeps_the_previous_version(
    s3rver_server: S3rverServer, s3rver_io_manager: RemoteStoreIOManager, asset_name: str
) -> None:
    """The previous object stays byte-identical; the dead upload's parts stay on s3rver's disk (it cannot abort
    or list them), invisible to readers."""
    assert dg.materialize(
        [_asset(asset_name, lambda: _table(1000))], resources={"io_manager": s3rver_io_manager}
    ).success
    client = s3rver_server.client()
    key = _s3rver_key(s3rver_io_manager, asset_name)
    before = client.get_object(Bucket="rsd-test", Key=key)["Body"].read()

    def failing() -> Iterator[pa.RecordBatch]:
        yield from _table(FAILING_ROWS).to_batches(max_chunksize=200_000)
        raise RuntimeError("producer failed mid-stream")

    schema = _table(1).schema
    result = dg.materialize(
        [_asset(asset_name, lambda: pa.RecordBatchReader.from_batches(schema, failing()))],
        resources={"io_manager": s3rver_io_manager},
        raise_on_error=False,
    )
    assert not result.success
    assert "producer failed mid-stream" in _failure(result)
    assert client.get_object(Bucket="rsd-test", Key=key)["Body"].read() == before
    listed = [
        o["Key"] for o in client.list_objects_v2(Bucket="rsd-test", Prefix=key.rsplit("/", 1)[0] + "/")["Contents"]
    ]
    assert listed == [key]
    [(_, _, parts, size)] = s3rver_server.pending_uploads("rsd-test", key.rsplit("/", 1)[0] + "/")
    assert parts >= 2 and size >= 32 << 20  # really mid-upload; s3rver refused the abort
