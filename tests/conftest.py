"""Shared fixtures: real S3 servers (moto, SeaweedFS, s3rver) on 127.0.0.1 and a store on each backend.

Every test that takes ``remote_store`` runs on the ``local`` backend and on
``s3-pyarrow`` against moto, SeaweedFS and s3rver. Each test
gets its own root path, so tests never see each other's objects.

Backend kinds (``backend_kind``): ``local``; ``moto`` and ``seaweedfs``
(``s3-pyarrow`` on that server); ``plain_s3`` (remote-store's plain ``s3``
backend, s3fs only, on SeaweedFS: the non-S3-PyArrow write path through
``pyarrow_fs(store)`` + staging + ``Store.move``); ``memory`` (lives only as long
as one registry, i.e. one run: a test on it must write and read within one run).
A test module widens or narrows the kinds with
``pytest.mark.parametrize("backend_kind", [...], indirect=True)`` or ``pytestmark``.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from remote_store_dagster import RemoteStoreResource
from remote_store_dagster.testing import MotoServer, S3rverServer, S3Server, SeaweedFSServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

BUCKET = "rsd-test"
S3_BACKENDS = ("moto", "seaweedfs", "s3rver")
ALL_BACKENDS = ("local", *S3_BACKENDS)
#: remote-store's plain ``s3`` backend (no PyArrow data path) on SeaweedFS.
PLAIN_S3 = "plain_s3"
MEMORY = "memory"
#: Backends that persist across runs: every round-trip test can run on them.
PERSISTENT_BACKENDS = (*ALL_BACKENDS, PLAIN_S3)
#: S3 server fixture behind each S3 backend kind.
SERVER_OF = {"moto": "moto", "seaweedfs": "seaweedfs", "s3rver": "s3rver", PLAIN_S3: "seaweedfs"}

os.environ.update(
    {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[SeaweedFSServer]:
    server = SeaweedFSServer()
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def s3rver_server() -> Iterator[S3rverServer]:
    """s3rver: no ListMultipartUploads, AbortMultipartUpload or UploadPartCopy (the compatibility floor)."""
    server = S3rverServer()
    server.start()
    server.create_bucket(BUCKET)
    yield server
    server.cleanup()


@pytest.fixture
def s3_server(request: pytest.FixtureRequest, backend_kind: str) -> S3Server:
    """The server behind an S3 ``backend_kind``."""
    if backend_kind not in SERVER_OF:
        pytest.fail(f"s3_server requested for the {backend_kind} backend")
    return server_for(request, backend_kind)


def server_for(request: pytest.FixtureRequest, kind: str) -> S3Server:
    """The (session) S3 server behind backend ``kind``."""
    return request.getfixturevalue(f"{SERVER_OF[kind]}_server")  # type: ignore[no-any-return]


@pytest.fixture
def unique_root() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def backend_spec(kind: str, request: pytest.FixtureRequest, local_dir: Path) -> dict[str, Any]:
    if kind == "local":
        return {"type": "local", "options": {"root": str(local_dir)}}
    if kind == MEMORY:
        return {"type": "memory"}
    server = server_for(request, kind)
    backend_type = "s3" if kind == PLAIN_S3 else "s3-pyarrow"
    return {"type": backend_type, "options": server.backend_options(BUCKET)}


@pytest.fixture
def make_remote_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_root: str
) -> Callable[..., RemoteStoreResource]:
    """``make_remote_store(kind, root_path=...)`` -> resource with one store named ``lake``."""

    def make(kind: str, root_path: str | None = None) -> RemoteStoreResource:
        local_dir = tmp_path / "local-backend"
        local_dir.mkdir(exist_ok=True)
        return RemoteStoreResource(
            backends={"main": backend_spec(kind, request, local_dir)},
            stores={"lake": {"backend": "main", "root_path": root_path if root_path is not None else unique_root}},
        )

    return make


@pytest.fixture(params=ALL_BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def remote_store(
    backend_kind: str, make_remote_store: Callable[..., RemoteStoreResource]
) -> Iterator[RemoteStoreResource]:
    """A ``RemoteStoreResource`` with store ``lake`` on each of the three backends."""
    resource = make_remote_store(backend_kind)
    yield resource
    resource.close()
