"""The S3 server launchers in ``remote_store_dagster.testing`` (on the session servers)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from remote_store_dagster.testing import (
    S3RVER_ENV,
    MotoServer,
    S3rverServer,
    S3Server,
    S3ServerError,
    SeaweedFSServer,
    port_is_free,
)

BUCKET = "rsd-test"


def _client(server: S3Server, secret: str | None = None) -> object:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key,
        region_name=server.region,
    )


@pytest.mark.parametrize("kind", ["moto", "seaweedfs", "s3rver"])
def test_server_runs_on_loopback_with_bucket(kind: str, request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    assert server.endpoint_url.startswith("http://127.0.0.1:")
    assert server.pid is not None
    assert not port_is_free(server.port)
    client = _client(server)
    assert BUCKET in [b["Name"] for b in client.list_buckets()["Buckets"]]  # type: ignore[attr-defined]
    server.create_bucket(BUCKET)  # idempotent
    client.put_object(Bucket=BUCKET, Key="launcher/x", Body=b"x")  # type: ignore[attr-defined]
    assert client.get_object(Bucket=BUCKET, Key="launcher/x")["Body"].read() == b"x"  # type: ignore[attr-defined]
    client.delete_object(Bucket=BUCKET, Key="launcher/x")  # type: ignore[attr-defined]
    assert server.backend_options(BUCKET) == {
        "bucket": BUCKET,
        "endpoint_url": server.endpoint_url,
        "key": server.access_key,
        "secret": server.secret_key,
        "region_name": server.region,
    }


def test_seaweedfs_checks_credentials(seaweedfs_server: SeaweedFSServer) -> None:
    """SeaweedFS is a real S3 server: wrong credentials are refused (tests relying on it prove
    that the right credentials were resolved)."""
    client = _client(seaweedfs_server, secret="wrong-secret")
    with pytest.raises(botocore.exceptions.ClientError) as exc_info:
        client.list_objects_v2(Bucket=BUCKET)  # type: ignore[attr-defined]
    assert exc_info.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}


def test_seaweedfs_ports_are_distinct(seaweedfs_server: SeaweedFSServer) -> None:
    ports = list(seaweedfs_server._ports.values())
    assert len(set(ports)) == len(ports) >= 12
    assert seaweedfs_server._ports["s3.port"] == seaweedfs_server.port
    assert seaweedfs_server.data_dir is not None
    assert seaweedfs_server.data_dir.is_dir()


def test_port_in_use_is_refused(moto_server: MotoServer) -> None:
    with pytest.raises(S3ServerError, match=f"port {moto_server.port} on 127.0.0.1 is already in use"):
        MotoServer(port=moto_server.port).start()


def test_missing_executable_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("sys.executable", os.path.join(str(tmp_path), "nope", "python"))
    server = SeaweedFSServer(data_dir=None, log_path=Path(str(tmp_path), "weed.log"))
    try:
        with pytest.raises(S3ServerError, match="weed"):
            server.start()
    finally:
        server.cleanup()
    assert server.data_dir is not None
    assert not server.data_dir.exists()


def test_s3rver_keeps_data_across_restart_on_the_same_port(tmp_path: Path) -> None:
    server = S3rverServer(data_dir=tmp_path / "data", log_path=tmp_path / "s3rver.log")
    try:
        server.start()
        port = server.port
        server.create_bucket(BUCKET)
        server.create_bucket(BUCKET)  # idempotent (s3rver says BucketAlreadyExists)
        client = server.client()
        client.put_object(Bucket=BUCKET, Key="k/v", Body=b"v", Metadata={"rsd-run-id": "r"})
        upload_id = client.create_multipart_upload(Bucket=BUCKET, Key="k/big")["UploadId"]
        client.upload_part(Bucket=BUCKET, Key="k/big", UploadId=upload_id, PartNumber=1, Body=b"abc")
        assert server.pending_uploads(BUCKET) == [("k/big", upload_id, 1, 3)]
        assert server.pending_uploads(BUCKET, prefix="other/") == []
        server.restart()
        assert server.port == port
        head = server.client().head_object(Bucket=BUCKET, Key="k/v")
        assert head["Metadata"] == {"rsd-run-id": "r"}
        server.kill()
        assert server.pid is not None and port_is_free(port)
    finally:
        server.cleanup()
    assert (tmp_path / "data").is_dir()  # a caller's data_dir is never removed


def test_s3rver_knows_only_its_access_key(s3rver_server: S3rverServer) -> None:
    client = S3rverServer(port=s3rver_server.port, access_key="someone-else").client()
    with pytest.raises(botocore.exceptions.ClientError) as exc_info:
        client.list_objects_v2(Bucket=BUCKET)
    assert exc_info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_s3rver_not_installed_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(S3RVER_ENV, str(tmp_path / "missing" / "s3rver.js"))
    server = S3rverServer(log_path=tmp_path / "s3rver.log")
    try:
        with pytest.raises(S3ServerError, match=r"s3rver not found .*scripts/test installs it"):
            server.start()
    finally:
        server.cleanup()
