"""Credentials from the AWS default chain: no key or secret in config, one identity on both paths.

The s3-pyarrow backend talks to S3 twice over: PyArrow's C++ SDK (reads, the data path) and
s3fs/botocore (our uploads, listings, deletes). Every request here goes through a recording
proxy in front of moto (which accepts any key), so the tests see which access key, signing
region and session token each client actually signed with, by its User-Agent
(``aws-sdk-cpp`` = PyArrow, ``Botocore`` = s3fs).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from _fault_proxy import PASS, FaultProxy, Request
from dagster import AssetIn, asset, materialize

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource, S3PyArrowResource
from remote_store_dagster._remote_store_adapter import default_chain_credentials

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from remote_store_dagster.testing import MotoServer

BUCKET = "rsd-test"  # created by conftest's session moto server
CHAIN_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
ENV_KEY, ENV_SECRET = "AKIAENVCHAIN00000001", "env-secret-must-not-leak-0001"
PROFILE_KEY, PROFILE_SECRET, PROFILE_TOKEN = "AKIAPROFILE000000002", "profile-secret-must-not-leak", "profile-token-xyz"
SHADOW_KEY = "AKIASHADOWDEFAULT003"


class Recorder:
    """Per client (PyArrow / s3fs): the access keys, signing regions and token presence seen."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, str | None, bool, str]] = []

    def rule(self, request: Request, count: int) -> str:
        agent = request.headers.get("user-agent", "")
        client = "pyarrow" if "aws-sdk-cpp" in agent else "s3fs" if "Botocore" in agent else agent[:20]
        match = re.search(r"Credential=([^/]+)/\d+/([^/]+)/s3/", request.headers.get("authorization", ""))
        key, region = (match.group(1), match.group(2)) if match else (None, None)
        token = "x-amz-security-token" in request.headers
        self.requests.append((client, key, region, token, request.operation))
        return PASS

    def identities(self) -> dict[str, set[tuple[str | None, str | None, bool]]]:
        out: dict[str, set[tuple[str | None, str | None, bool]]] = {}
        for client, key, region, token, _ in self.requests:
            out.setdefault(client, set()).add((key, region, token))
        return out


@pytest.fixture
def recorder(moto_server: MotoServer) -> Iterator[tuple[Recorder, FaultProxy]]:
    rec = Recorder()
    with FaultProxy(moto_server.port, rule=rec.rule) as proxy:
        yield rec, proxy


@pytest.fixture
def clean_chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS credentials anywhere: no variables, empty shared files (not the user's ~/.aws)."""
    for var in CHAIN_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    return tmp_path


def _write_profiles(folder: Path, *, default_key: str | None = None, region: str = "eu-west-1") -> None:
    lines = []
    if default_key:
        lines += ["[default]", f"aws_access_key_id = {default_key}", "aws_secret_access_key = shadow-secret", ""]
    lines += [
        "[rsd-chain]",
        f"aws_access_key_id = {PROFILE_KEY}",
        f"aws_secret_access_key = {PROFILE_SECRET}",
        f"aws_session_token = {PROFILE_TOKEN}",
    ]
    (folder / "credentials").write_text("\n".join(lines) + "\n")
    (folder / "config").write_text(f"[profile rsd-chain]\nregion = {region}\n")


def _web_identity(monkeypatch: pytest.MonkeyPatch, folder: Path, moto_server: MotoServer) -> None:
    """IRSA's variables; STS is moto (AWS_ENDPOINT_URL_STS), which accepts any token."""
    token = folder / "web-identity-token"
    token.write_text("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyc2QifQ.c2lnbmF0dXJl")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/rsd-dagster")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "rsd-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _round_trip(proxy: FaultProxy, client_options: dict[str, Any] | None = None) -> Any:
    """Through the IO manager: a small and a multipart write (s3fs), a downstream load (PyArrow)."""
    options: dict[str, Any] = {"bucket": BUCKET, "endpoint_url": proxy.endpoint_url}
    if client_options:
        options["client_options"] = client_options
    store = RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": options}},
        stores={"lake": {"backend": "s3", "root_path": f"cred-{uuid.uuid4().hex[:8]}"}},
    )

    @asset
    def small() -> pa.Table:
        return pa.table({"x": list(range(100))})

    @asset
    def large() -> pa.RecordBatchReader:
        import numpy as np

        schema = pa.schema([("v", pa.float64())])
        batches = (
            pa.record_batch([pa.array(np.random.default_rng(i).random(262_144))], schema=schema) for i in range(5)
        )
        return pa.RecordBatchReader.from_batches(schema, batches)  # 10 MiB: a multipart upload

    @asset(ins={"small": AssetIn(), "large": AssetIn()})
    def reader(small: pa.Table, large: pa.Table) -> pa.Table:
        return pa.table({"rows": [small.num_rows + large.num_rows]})

    result = materialize(
        [small, large, reader],
        resources={"io_manager": RemoteStoreIOManager(remote_store=store, store="lake")},
    )
    assert result.success
    return result


def _assert_one_identity(rec: Recorder, key: str | None, region: str, token: bool) -> str:
    seen = rec.identities()
    assert set(seen) == {"pyarrow", "s3fs"}, f"expected requests from both clients, got {seen}"
    used = {identity for identities in seen.values() for identity in identities}
    assert len(used) == 1, f"the two paths signed differently: {seen}"
    (used_key, used_region, used_token) = used.pop()
    assert used_key is not None, "unsigned requests"
    if key is not None:
        assert used_key == key
    assert used_region == region
    assert used_token is token
    ops = {op for _, _, _, _, op in rec.requests}
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= ops  # s3fs wrote
    return used_key


def test_env_vars_sign_both_paths(
    recorder: tuple[Recorder, FaultProxy], clean_chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, proxy = recorder
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    _round_trip(proxy)
    _assert_one_identity(rec, ENV_KEY, "us-east-1", token=False)


def test_aws_profile_from_shared_files_signs_both_paths(
    recorder: tuple[Recorder, FaultProxy], clean_chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE with AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE: its key, token and region."""
    rec, proxy = recorder
    _write_profiles(clean_chain, default_key=SHADOW_KEY, region="eu-west-1")
    monkeypatch.setenv("AWS_PROFILE", "rsd-chain")
    _round_trip(proxy)
    _assert_one_identity(rec, PROFILE_KEY, "eu-west-1", token=True)


def test_profile_option_reaches_pyarrow_too(
    recorder: tuple[Recorder, FaultProxy], clean_chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``client_options={"profile": ...}`` is s3fs's option; PyArrow has none and used the default profile."""
    rec, proxy = recorder
    _write_profiles(clean_chain, default_key=SHADOW_KEY, region="eu-west-1")
    _round_trip(proxy, client_options={"profile": "rsd-chain"})
    _assert_one_identity(rec, PROFILE_KEY, "eu-west-1", token=True)


def _caller_arn(moto_server: MotoServer, access_key: str) -> str:
    """Whose key this is, by moto's STS (which does not check signatures: any secret will do)."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key="not-checked",
        region_name="us-east-1",
    )
    return str(sts.get_caller_identity()["Arn"])


def _assert_one_role(rec: Recorder, moto_server: MotoServer) -> str:
    """Both paths signed (region us-east-1, with a session token) as the same assumed role.

    Each client asks STS for its own session (botocore's refresh is per client), so the keys may
    differ; the identity behind them may not.
    """
    seen = rec.identities()
    assert set(seen) == {"pyarrow", "s3fs"}, seen
    roles = set()
    for identities in seen.values():
        for key, region, token in identities:
            assert key is not None, f"unsigned requests: {seen}"
            assert (region, token) == ("us-east-1", True), seen
            roles.add(_caller_arn(moto_server, key))
    assert len(roles) == 1, f"the two paths signed as different identities: {roles}"
    role = roles.pop()
    assert role.startswith("arn:aws:sts::123456789012:assumed-role/rsd-dagster/"), role
    return role


def test_web_identity_signs_both_paths(
    recorder: tuple[Recorder, FaultProxy],
    clean_chain: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """IRSA variables and a custom STS endpoint: PyArrow's own chain ignored the endpoint and sent unsigned requests."""
    rec, proxy = recorder
    _web_identity(monkeypatch, clean_chain, moto_server)
    with caplog.at_level(logging.WARNING):
        _round_trip(proxy)
    _assert_one_role(rec, moto_server)
    assert "temporary assume-role-with-web-identity credentials" in caplog.text


def test_web_identity_beats_static_default_profile_on_both_paths(
    recorder: tuple[Recorder, FaultProxy],
    clean_chain: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoServer,
) -> None:
    """An image with ~/.aws/credentials on an IRSA pod: botocore takes the role, the C++ SDK took the file's keys."""
    rec, proxy = recorder
    _write_profiles(clean_chain, default_key=SHADOW_KEY)
    _web_identity(monkeypatch, clean_chain, moto_server)
    _round_trip(proxy)
    _assert_one_role(rec, moto_server)
    assert SHADOW_KEY not in {key for _, key, _, _, _ in rec.requests}


def test_s3pyarrow_resource_filesystems_share_the_identity(
    recorder: tuple[Recorder, FaultProxy], clean_chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, proxy = recorder
    _write_profiles(clean_chain, region="eu-west-1")
    monkeypatch.setenv("AWS_PROFILE", "rsd-chain")
    resource = S3PyArrowResource(bucket=BUCKET, endpoint_url=proxy.endpoint_url)
    try:
        path = f"{BUCKET}/cred-{uuid.uuid4().hex[:8]}/x.bin"
        with resource.pyarrow_filesystem().open_output_stream(path) as out:
            out.write(b"written by pyarrow")
        assert resource.s3fs_filesystem().cat_file(path) == b"written by pyarrow"
        resource.s3fs_filesystem().pipe_file(path, b"written by s3fs")
        with resource.pyarrow_filesystem().open_input_stream(path) as stream:
            assert stream.read() == b"written by s3fs"
        assert set(rec.identities()) == {"pyarrow", "s3fs"}
        assert {i for ids in rec.identities().values() for i in ids} == {(PROFILE_KEY, "eu-west-1", True)}
        shown = repr(resource) + repr(resource.get_store())
    finally:
        resource.close()
    assert PROFILE_SECRET not in shown and PROFILE_TOKEN not in shown


def test_secrets_never_in_logs_metadata_or_repr(
    recorder: tuple[Recorder, FaultProxy],
    clean_chain: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, proxy = recorder
    _write_profiles(clean_chain, region="eu-west-1")
    monkeypatch.setenv("AWS_PROFILE", "rsd-chain")
    # INFO: what a deployment logs. (botocore's own DEBUG wire log prints request headers, the
    # session token included: never enable DEBUG for botocore in production.)
    with caplog.at_level(logging.INFO):
        result = _round_trip(proxy)
        chain = default_chain_credentials()
    assert chain is not None and chain.access_key == PROFILE_KEY
    shown = [caplog.text, repr(chain), str(chain), *capfd.readouterr()]
    for event in result.all_events:
        shown.append(repr(event))
    for mat in result.get_asset_materialization_events():
        shown.append(repr(mat.materialization.metadata))
    text = "\n".join(shown)
    assert PROFILE_SECRET not in text
    assert PROFILE_TOKEN not in text


def test_no_chain_credentials_leaves_both_clients_alone(clean_chain: Path) -> None:
    assert default_chain_credentials() is None
