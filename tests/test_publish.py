"""The publish protocol's request pattern, counted at a proxy in front of SeaweedFS."""

from __future__ import annotations

import os
from collections.abc import Iterator

import _fault_proxy as fp
import pytest
from conftest import BUCKET

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster._publish import SMALL_OBJECT_BYTES, data_path_for, open_publish_stream
from remote_store_dagster.testing import SeaweedFSServer


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


def test_small_output_is_one_put_without_multipart_round_trips(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    data_path = data_path_for(store)
    proxy.counts.clear()
    with open_publish_stream(data_path, "a/data.bin") as out:
        out.write(b"x" * 1000)
        out.write(b"y" * 1000)
        assert out.tell() == 2000
    assert dict(proxy.counts) == {"PUT": 1}
    assert store.read_bytes("a/data.bin") == b"x" * 1000 + b"y" * 1000


def test_small_output_that_fails_sends_nothing(proxied: tuple[fp.FaultProxy, RemoteStoreResource]) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    store.write("a/data.bin", b"previous", overwrite=True)
    proxy.counts.clear()
    with (
        pytest.raises(RuntimeError, match="producer failed"),
        open_publish_stream(data_path_for(store), "a/data.bin") as out,
    ):
        out.write(b"partial")
        raise RuntimeError("producer failed")
    assert sum(proxy.counts.values()) == 0
    assert store.read_bytes("a/data.bin") == b"previous"


def test_large_output_streams_as_one_identified_multipart_upload(
    proxied: tuple[fp.FaultProxy, RemoteStoreResource],
) -> None:
    proxy, resource = proxied
    store = resource.get_store("lake")
    body = os.urandom(SMALL_OBJECT_BYTES + 3 * 1024 * 1024)
    proxy.counts.clear()
    with open_publish_stream(data_path_for(store), "big/data.bin") as out:
        for start in range(0, len(body), 1024 * 1024):
            out.write(body[start : start + 1024 * 1024])
    counts = dict(proxy.counts)
    assert counts["ListMultipartUploads"] == 2  # before and after opening: that identifies our upload
    assert counts["CreateMultipartUpload"] == 1 and counts["CompleteMultipartUpload"] == 1
    assert counts["UploadPart"] >= 1 and "PUT" not in counts
    assert store.read_bytes("big/data.bin") == body
