"""RemoteStoreResource and S3PyArrowResource against real servers (moto and SeaweedFS subprocesses).

Covers: construction from plain dicts / typed specs / ``EnvVar`` / ``${VAR}``, a round trip on
each backend, the typed escape hatches, bad config failing at resource initialisation with one
message naming the field, secrets never leaking, and the registry lifecycle (in-process and under
the multiprocess executor with a persistent instance).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
import pytest
import s3fs
from dagster import (
    ConfigurableResource,
    DagsterEventType,
    Definitions,
    EnvVar,
    InitResourceContext,
    MaterializeResult,
    asset,
    define_asset_job,
    execute_job,
    instance_for_test,
    materialize,
    multiprocess_executor,
    reconstructable,
)
from dagster._serdes import serialize_value
from remote_store import BackendUnavailable, Registry, Store

from remote_store_dagster import (
    BackendSpec,
    RemoteStoreConfigError,
    RemoteStoreResource,
    RetrySpec,
    S3PyArrowResource,
    StoreSpec,
)
from remote_store_dagster import resources as resources_module
from remote_store_dagster.resources import build_registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from remote_store_dagster.testing import S3Server

BUCKET = "rsd-test"
SECRET = "SuperSecret-4711"


# --------------------------------------------------------------------------- helpers


def round_trip(store: Store, payload: bytes = b"hello remote-store\n") -> None:
    """Write, read, list, delete through the Store API and check every step."""
    store.write("rt/a.txt", payload)
    store.write("rt/sub/b.bin", b"\x00\x01\x02" * 1000, overwrite=True)
    assert store.read_bytes("rt/a.txt") == payload
    with store.read("rt/sub/b.bin") as fh:
        assert fh.read() == b"\x00\x01\x02" * 1000
    listed = {str(info.path): info.size for info in store.list_files("rt", recursive=True)}
    assert listed == {"rt/a.txt": len(payload), "rt/sub/b.bin": 3000}
    store.write("rt/a.txt", b"replaced", overwrite=True)
    assert store.read_bytes("rt/a.txt") == b"replaced"
    store.delete("rt/a.txt")
    assert not store.exists("rt/a.txt")
    assert {str(info.path) for info in store.list_files("rt", recursive=True)} == {"rt/sub/b.bin"}
    store.delete("rt/sub/b.bin")
    assert not store.exists("rt/sub/b.bin")
    # SeaweedFS keeps the emptied folder and lists it as a nameless zero-byte "rt/sub" entry;
    # what matters is that no file is left.
    assert [str(info.path) for info in store.list_files("rt", recursive=True) if info.name] == []


def s3_options(server: S3Server, **overrides: Any) -> dict[str, Any]:
    return {**server.backend_options(BUCKET), **overrides}


def error_chain(err: Any) -> Iterator[Any]:
    """A SerializableErrorInfo and its causes/contexts."""
    while err is not None:
        yield err
        err = err.cause or err.context


def config_error_message(result: Any) -> str:
    """The RemoteStoreConfigError message of a run that failed during resource init."""
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.RESOURCE_INIT_FAILURE]
    assert failures, [e.event_type_value for e in result.all_events]
    assert [e.event_type for e in result.all_events if e.event_type == DagsterEventType.STEP_START] == []
    messages = [
        err.message
        for event in failures
        for err in error_chain(event.event_specific_data.error)
        if err.cls_name == "RemoteStoreConfigError"
    ]
    assert len(messages) == 1, messages
    # SerializableErrorInfo.message is "<module>.<Class>: <text>\n".
    prefix = "remote_store_dagster._errors.RemoteStoreConfigError: "
    assert messages[0].startswith(prefix), messages[0]
    return str(messages[0])[len(prefix) :].rstrip("\n")


def assert_one_message(exc: BaseException, starts_with: str) -> None:
    text = str(exc)
    assert text.startswith(starts_with), text
    assert len(text.splitlines()) == 1, text
    # No chained exception is printed under it.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


def assert_no_secret_in_tree(root: Path, secret: str) -> None:
    """No file under ``root`` (sqlite event log, run storage, compute logs) contains ``secret``."""
    checked = 0
    for path in root.rglob("*"):
        if path.is_file():
            checked += 1
            assert secret.encode() not in path.read_bytes(), path
    assert checked > 0


# --------------------------------------------------------------------------- construction + round trip


def test_round_trip_plain_dicts(remote_store: RemoteStoreResource, backend_kind: str) -> None:
    """The conftest fixture builds the resource from plain dicts; specs are coerced."""
    assert isinstance(remote_store.backends["main"], BackendSpec)
    assert isinstance(remote_store.stores["lake"], StoreSpec)
    store = remote_store.get_store("lake")
    assert store.supports is not None
    expected_type = "local" if backend_kind == "local" else "s3-pyarrow"
    assert remote_store.backends["main"].type == expected_type
    round_trip(store)


def test_round_trip_typed_specs_in_an_asset(
    backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path, unique_root: str
) -> None:
    if backend_kind == "local":
        spec = BackendSpec(type="local", options={"root": str(tmp_path)})
    else:
        server: S3Server = request.getfixturevalue(f"{backend_kind}_server")
        spec = BackendSpec(type="s3-pyarrow", options=s3_options(server), retry=RetrySpec(max_attempts=2))
    resource = RemoteStoreResource(
        backends={"main": spec}, stores={"lake": StoreSpec(backend="main", root_path=unique_root)}
    )

    @asset
    def round_tripper(remote_store: RemoteStoreResource) -> MaterializeResult:
        store = remote_store.get_store("lake")
        round_trip(store)
        store.write("kept.txt", b"kept")
        files = [str(i.path) for i in store.list_files("", recursive=True) if i.name]  # see round_trip
        return MaterializeResult(metadata={"files": ", ".join(files)})

    result = materialize([round_tripper], resources={"remote_store": resource})
    assert result.success
    mat = result.asset_materializations_for_node("round_tripper")[0]
    assert mat.metadata["files"].value == "kept.txt"
    # Outside Dagster the resource builds its own registry and sees the asset's write.
    assert resource.get_store("lake").read_bytes("kept.txt") == b"kept"
    resource.close()
    if backend_kind == "local":
        assert (tmp_path / unique_root / "kept.txt").read_bytes() == b"kept"


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_remote_store_resource_env_placeholders(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, unique_root: str
) -> None:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    monkeypatch.setenv("RSD_T_ENDPOINT", server.endpoint_url)
    monkeypatch.setenv("RSD_T_KEY", server.access_key)
    monkeypatch.setenv("RSD_T_SECRET", server.secret_key)
    monkeypatch.delenv("RSD_T_BUCKET", raising=False)
    monkeypatch.setenv("RSD_T_ROOT", unique_root)
    resource = RemoteStoreResource(
        backends={
            "s3": {
                "type": "s3-pyarrow",
                "options": {
                    "bucket": "${RSD_T_BUCKET:-rsd-test}",  # unset: the default applies
                    "endpoint_url": "${RSD_T_ENDPOINT}",
                    "key": "${RSD_T_KEY}",
                    "secret": "${RSD_T_SECRET}",
                    "region_name": "${RSD_T_REGION:-us-east-1}",
                },
            }
        },
        # typed spec fields take Dagster EnvVar
        stores={"lake": {"backend": "s3", "root_path": EnvVar("RSD_T_ROOT")}},
    )
    # The definition keeps the placeholders (so the UI shows names, not values).
    assert resource.backends["s3"].options["endpoint_url"] == "${RSD_T_ENDPOINT}"

    @asset
    def env_asset(remote_store: RemoteStoreResource) -> None:
        store = remote_store.get_store("lake")
        round_trip(store)
        store.write("marker.txt", b"env", overwrite=True)

    assert materialize([env_asset], resources={"remote_store": resource}).success
    # The placeholders were resolved: the object is where the env vars say.
    fs = s3fs.S3FileSystem(
        key=server.access_key, secret=server.secret_key, client_kwargs={"endpoint_url": server.endpoint_url}
    )
    assert fs.cat(f"{BUCKET}/{unique_root}/marker.txt") == b"env"
    # And outside a run (EnvVar unresolved by Dagster) the resource resolves it itself.
    assert resource.get_store("lake").read_bytes("marker.txt") == b"env"
    resource.close()


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_s3_pyarrow_resource_env_var(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, unique_root: str
) -> None:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    monkeypatch.setenv("RSD_T_KEY", server.access_key)
    monkeypatch.setenv("RSD_T_SECRET", server.secret_key)
    monkeypatch.setenv("RSD_T_ENDPOINT", server.endpoint_url)
    resource = S3PyArrowResource(
        bucket=BUCKET,
        key=EnvVar("RSD_T_KEY"),
        secret=EnvVar("RSD_T_SECRET"),
        endpoint_url=EnvVar("RSD_T_ENDPOINT"),
        region_name="us-east-1",
        root_path=unique_root,
    )

    @asset
    def s3_asset(s3: S3PyArrowResource) -> None:
        assert s3.secret == server.secret_key  # Dagster resolved the EnvVar for the run
        round_trip(s3.get_store())
        s3.get_store().write("from-run.txt", b"run")

    assert materialize([s3_asset], resources={"s3": resource}).success
    # Outside a run the EnvVars are resolved by the resource (SeaweedFS checks the credentials).
    assert resource.get_store().read_bytes("from-run.txt") == b"run"
    resource.close()


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_s3_pyarrow_resource_plain_values(kind: str, request: pytest.FixtureRequest, unique_root: str) -> None:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    resource = S3PyArrowResource(
        bucket=BUCKET,
        key=server.access_key,
        secret=server.secret_key,
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        root_path=unique_root,
    )
    round_trip(resource.get_store())


def test_s3_pyarrow_resource_from_run_config(
    seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch, unique_root: str
) -> None:
    """``configure_at_launch``: the fields come from plain run config (dicts), secrets from env."""
    monkeypatch.setenv("RSD_T_SECRET", seaweedfs_server.secret_key)

    @asset
    def launched(s3: S3PyArrowResource) -> None:
        s3.get_store().write("launched.txt", b"cfg")

    run_config = {
        "resources": {
            "s3": {
                "config": {
                    "bucket": BUCKET,
                    "key": seaweedfs_server.access_key,
                    "secret": {"env": "RSD_T_SECRET"},
                    "endpoint_url": seaweedfs_server.endpoint_url,
                    "region_name": "us-east-1",
                    "root_path": unique_root,
                }
            }
        }
    }
    result = materialize([launched], resources={"s3": S3PyArrowResource.configure_at_launch()}, run_config=run_config)
    assert result.success
    check = S3PyArrowResource(
        bucket=BUCKET,
        key=seaweedfs_server.access_key,
        secret=seaweedfs_server.secret_key,
        endpoint_url=seaweedfs_server.endpoint_url,
        root_path=unique_root,
    )
    assert check.get_store().read_bytes("launched.txt") == b"cfg"


# --------------------------------------------------------------------------- escape hatches


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_escape_hatches_read_what_the_store_wrote(kind: str, request: pytest.FixtureRequest, unique_root: str) -> None:
    server: S3Server = request.getfixturevalue(f"{kind}_server")
    resource = S3PyArrowResource(
        bucket=BUCKET,
        key=server.access_key,
        secret=server.secret_key,
        endpoint_url=server.endpoint_url,
        root_path=unique_root,
    )
    payload = os.urandom(200_000)

    @asset
    def hatch(s3: S3PyArrowResource) -> MaterializeResult:
        s3.get_store().write("dir/data.bin", payload)
        pa_fs = s3.pyarrow_filesystem()
        assert type(pa_fs) is pafs.S3FileSystem
        with pa_fs.open_input_stream(f"{BUCKET}/{unique_root}/dir/data.bin") as fh:
            assert fh.read() == payload
        return MaterializeResult(metadata={"size": pa_fs.get_file_info(f"{BUCKET}/{unique_root}/dir/data.bin").size})

    result = materialize([hatch], resources={"s3": resource})
    assert result.success
    assert result.asset_materializations_for_node("hatch")[0].metadata["size"].value == len(payload)

    pa_fs = resource.pyarrow_filesystem()
    assert isinstance(pa_fs, pafs.S3FileSystem)
    path = f"{BUCKET}/{unique_root}/dir/data.bin"
    assert pa_fs.get_file_info(path).size == len(payload)
    with pa_fs.open_input_file(path) as fh:
        fh.seek(1000)
        assert fh.read(5000) == payload[1000:6000]

    fs = resource.s3fs_filesystem()
    assert isinstance(fs, s3fs.S3FileSystem)
    assert fs.cat_file(path) == payload
    assert fs.ls(f"{BUCKET}/{unique_root}/dir") == [path]
    # Control path: what s3fs deletes, the store no longer sees.
    fs.rm(path)
    assert not resource.get_store().exists("dir/data.bin")


# --------------------------------------------------------------------------- bad config


BAD_CONFIGS: dict[str, tuple[Callable[[S3Server], dict[str, Any]], str]] = {
    "unknown_backend_type": (
        lambda srv: {"backends": {"s3": {"type": "s3-arrow", "options": s3_options(srv)}}},
        "backends.s3.type: unknown backend type 's3-arrow'",
    ),
    "store_names_missing_backend": (
        lambda srv: {
            "backends": {"s3": {"type": "s3-pyarrow", "options": s3_options(srv)}},
            "stores": {"lake": {"backend": "s4"}},
        },
        "stores.lake.backend: names backend 's4', which is not defined",
    ),
    "empty_bucket": (
        lambda srv: {"backends": {"s3": {"type": "s3-pyarrow", "options": s3_options(srv, bucket="")}}},
        "backends.s3.options.bucket: must not be empty",
    ),
    "missing_bucket": (
        lambda srv: {
            "backends": {
                "s3": {
                    "type": "s3-pyarrow",
                    "options": {k: v for k, v in s3_options(srv).items() if k != "bucket"},
                }
            }
        },
        "backends.s3.options.bucket: required option missing",
    ),
    "bucket_from_empty_default": (
        lambda srv: {"backends": {"s3": {"type": "s3-pyarrow", "options": s3_options(srv, bucket="${RSD_T_UNSET:-}")}}},
        "backends.s3.options.bucket: must not be empty",
    ),
    "unknown_option": (
        lambda srv: {"backends": {"s3": {"type": "s3-pyarrow", "options": s3_options(srv, endpoint="http://x")}}},
        "backends.s3.options.endpoint: unknown option for backend type 's3-pyarrow'",
    ),
    "retry_on_backend_without_retry": (
        lambda srv: {"backends": {"s3": {"type": "local", "options": {"root": "/tmp"}, "retry": {"max_attempts": 2}}}},
        "backends.s3.retry: backend type 'local' does not take a retry policy",
    ),
    "unset_env_var": (
        lambda srv: {"backends": {"s3": {"type": "s3-pyarrow", "options": s3_options(srv, bucket="${RSD_T_UNSET}")}}},
        "backends.s3.options.bucket: environment variable 'RSD_T_UNSET' is not set",
    ),
}


def _bad_resource(case: str, server: S3Server) -> tuple[RemoteStoreResource, str]:
    make, expected = BAD_CONFIGS[case]
    cfg = make(server)
    cfg.setdefault("stores", {"lake": {"backend": "s3", "root_path": "bad"}})
    return RemoteStoreResource(**cfg), expected


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_at_resource_init(case: str, moto_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSD_T_UNSET", raising=False)
    resource, expected = _bad_resource(case, moto_server)  # constructing does not fail: init does

    ran = []

    @asset
    def never_runs(remote_store: RemoteStoreResource) -> None:
        ran.append(True)

    result = materialize([never_runs], resources={"remote_store": resource}, raise_on_error=False)
    assert not result.success
    assert ran == []
    message = config_error_message(result)
    assert message.startswith(expected), message
    assert len(message.splitlines()) == 1

    # Directly: the registry property and build_registry give the same single message.
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        _ = resource.registry
    assert_one_message(exc_info.value, expected)
    assert resource._registry is None
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        build_registry(resource.backends, resource.stores)
    assert str(exc_info.value) == message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"bucket": ""}, "S3PyArrowResource.bucket: must not be empty"),
        ({"bucket": "  "}, "S3PyArrowResource.bucket: must not be empty"),
        ({"bucket": "${RSD_T_UNSET}"}, "S3PyArrowResource.bucket: environment variable 'RSD_T_UNSET' is not set"),
    ],
)
def test_s3_pyarrow_resource_bad_config(
    fields: dict[str, Any], expected: str, moto_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RSD_T_UNSET", raising=False)
    resource = S3PyArrowResource(
        endpoint_url=moto_server.endpoint_url, key=moto_server.access_key, secret=SECRET, **fields
    )

    @asset
    def never_runs(s3: S3PyArrowResource) -> None:
        raise AssertionError("must not run")

    result = materialize([never_runs], resources={"s3": resource}, raise_on_error=False)
    assert not result.success
    message = config_error_message(result)
    assert message.startswith(expected), message
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        resource.get_store()
    assert_one_message(exc_info.value, expected)
    assert SECRET not in str(exc_info.value)


def test_bad_spec_keys_and_unknown_store() -> None:
    """A misspelt spec key is refused at construction (pydantic would drop it silently)."""
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        RemoteStoreResource(backends={"s3": {"type": "s3-pyarrow", "option": {"secret": SECRET}}}, stores={})
    assert_one_message(exc_info.value, "backends.s3.option: unknown field")
    assert SECRET not in str(exc_info.value)
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        RemoteStoreResource(backends={}, stores={"lake": {"backend": "s3", "root": "x"}})
    assert_one_message(exc_info.value, "stores.lake.root: unknown field")

    resource = RemoteStoreResource(backends={"m": {"type": "memory"}}, stores={"lake": {"backend": "m"}})
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        resource.get_store("lkae")
    assert_one_message(exc_info.value, "store 'lkae' is not defined; defined stores: lake")
    resource.get_store("lake").write("x", b"1")
    assert resource.get_store("lake").read_bytes("x") == b"1"
    resource.close()


# --------------------------------------------------------------------------- secrets


def test_secrets_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSD_T_SECRET", SECRET)
    resources: list[Any] = [
        RemoteStoreResource(
            backends={
                "s3": {
                    "type": "s3-pyarrow",
                    "options": {
                        "bucket": "b-b-b",
                        "key": "AKIA-visible-not",
                        "secret": SECRET,
                        "client_options": {"token": SECRET, "client_kwargs": {"aws_session_token": SECRET}},
                    },
                },
                "env": {"type": "s3-pyarrow", "options": {"bucket": "b-b-b", "secret": "${RSD_T_SECRET}"}},
            },
            stores={"lake": {"backend": "s3"}},
        ),
        S3PyArrowResource(
            bucket="b-b-b", key=SECRET, secret=SECRET, session_token=SECRET, client_options={"token": SECRET}
        ),
        S3PyArrowResource(bucket="b-b-b", key=EnvVar("RSD_T_SECRET"), secret=EnvVar("RSD_T_SECRET")),
    ]
    for resource in resources:
        for text in (repr(resource), str(resource), f"{resource}", f"{resource!r}"):
            assert SECRET not in text, text
            assert "***" in text or "RSD_T_SECRET" in text
    # The placeholder name is shown (it is not a secret), the masked value is not.
    assert "${RSD_T_SECRET}" in repr(resources[0])
    assert "b-b-b" in repr(resources[1])


def test_secrets_not_in_ui_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Dagster UI shows of the resources (the code location's snapshot) names the
    variables, never their values."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    monkeypatch.setenv("RSD_T_SECRET", SECRET)

    @asset
    def uses_both(remote_store: RemoteStoreResource, s3: S3PyArrowResource) -> None: ...

    defs = Definitions(
        assets=[uses_both],
        resources={
            "remote_store": RemoteStoreResource(
                backends={"s3": {"type": "s3-pyarrow", "options": {"bucket": "b-b-b", "secret": "${RSD_T_SECRET}"}}},
                stores={"lake": {"backend": "s3"}},
            ),
            "s3": S3PyArrowResource(bucket="b-b-b", secret=EnvVar("RSD_T_SECRET")),
        },
    )
    snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "${RSD_T_SECRET}" in snapshot
    assert "RSD_T_SECRET" in snapshot.replace("${RSD_T_SECRET}", "")
    assert SECRET not in snapshot


def test_secrets_not_in_run_logs_events_or_output(
    moto_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    unique_root: str,
) -> None:
    """moto accepts any secret, so a run can really use one and we can look for it everywhere."""
    monkeypatch.setenv("RSD_T_SECRET", SECRET)
    remote = RemoteStoreResource(
        backends={
            "plain": {"type": "s3-pyarrow", "options": s3_options(moto_server, secret=SECRET)},
            "placeholder": {"type": "s3-pyarrow", "options": s3_options(moto_server, secret="${RSD_T_SECRET}")},
        },
        stores={
            "a": {"backend": "plain", "root_path": unique_root},
            "b": {"backend": "placeholder", "root_path": unique_root},
        },
    )
    s3_plain = S3PyArrowResource(
        bucket=BUCKET,
        key=moto_server.access_key,
        secret=SECRET,
        endpoint_url=moto_server.endpoint_url,
        root_path=unique_root,
    )
    s3_env = S3PyArrowResource(
        bucket=BUCKET,
        key=moto_server.access_key,
        secret=EnvVar("RSD_T_SECRET"),
        endpoint_url=moto_server.endpoint_url,
        root_path=unique_root,
    )

    @asset
    def chatty(
        context,  # type: ignore[no-untyped-def]  # a string annotation (PEP 563) confuses Dagster
        remote_store: RemoteStoreResource,
        s3_plain: S3PyArrowResource,
        s3_env: S3PyArrowResource,
    ) -> MaterializeResult:
        remote_store.get_store("a").write("x.txt", b"a")
        assert remote_store.get_store("b").read_bytes("x.txt") == b"a"
        assert s3_env.get_store().read_bytes("x.txt") == b"a"
        assert s3_plain.s3fs_filesystem().cat_file(f"{BUCKET}/{unique_root}/x.txt") == b"a"
        # The things a user would naturally log.
        for obj in (remote_store, s3_plain, s3_env, remote_store.registry, remote_store.get_store("a")):
            context.log.info(f"using {obj!r} / {obj}")
            print(f"stdout: {obj!r}")
        return MaterializeResult(
            metadata={
                "remote_store": repr(remote_store),
                "s3_plain": repr(s3_plain),
                "s3_env": str(s3_env),
                "store": repr(remote_store.get_store("b")),
            }
        )

    # A failing run too: the secret plus an unknown option.
    bad = RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": s3_options(moto_server, secret=SECRET, scret=SECRET)}},
        stores={"lake": {"backend": "s3"}},
    )

    @asset
    def bad_asset(remote_store: RemoteStoreResource) -> None:
        pass

    home = tmp_path / "dagster-home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        ok = materialize(
            [chatty],
            resources={"remote_store": remote, "s3_plain": s3_plain, "s3_env": s3_env},
            instance=instance,
        )
        assert ok.success
        failed = materialize([bad_asset], resources={"remote_store": bad}, instance=instance, raise_on_error=False)
        assert not failed.success
        assert config_error_message(failed).startswith("backends.s3.options.scret: unknown option")
        for run_id in (ok.run_id, failed.run_id):
            entries = instance.all_logs(run_id)
            assert len(entries) > 5
            for entry in entries:
                assert SECRET not in serialize_value(entry)
            run = instance.get_run_by_id(run_id)
            assert run is not None
            assert SECRET not in serialize_value(run)
        # The logs above really contain what we looked at (the check is not vacuous).
        logged = " ".join(e.user_message for e in instance.all_logs(ok.run_id))
        assert "S3PyArrowResource(bucket='rsd-test', key='***', secret='***'" in logged
        metadata = ok.asset_materializations_for_node("chatty")[0].metadata
        assert "'secret': '***'" in metadata["remote_store"].value
        assert "'secret': '${RSD_T_SECRET}'" in metadata["remote_store"].value
    out, err = capfd.readouterr()
    assert "stdout: RemoteStoreResource(" in out
    assert SECRET not in out
    assert SECRET not in err
    # Nothing Dagster persisted (event log db, run db, compute logs) holds it.
    assert_no_secret_in_tree(home, SECRET)


def test_secret_not_in_config_error_text(moto_server: S3Server) -> None:
    """Each bad option fails with its own error naming the problem, and no error text holds the secret."""
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"secret": SECRET, "bogus": 1}, RemoteStoreConfigError, "backends.s3.options.bogus: unknown option"),
        ({"secret": SECRET, "bucket": ""}, RemoteStoreConfigError, "backends.s3.options.bucket: must not be empty"),
        (
            {"secret": SECRET, "bucket": "${RSD_T_UNSET}"},
            RemoteStoreConfigError,
            "backends.s3.options.bucket: environment variable 'RSD_T_UNSET' is not set",
        ),
        # Not a URL: accepted at init by remote-store, refused at first use, naming the endpoint.
        ({"secret": SECRET, "endpoint_url": "not a url at all"}, BackendUnavailable, "Invalid endpoint"),
        ({"password": SECRET}, RemoteStoreConfigError, "backends.s3.options.password: unknown option"),
    ]
    for overrides, expected, starts in cases:
        resource = RemoteStoreResource(
            backends={"s3": {"type": "s3-pyarrow", "options": s3_options(moto_server, **overrides)}},
            stores={"lake": {"backend": "s3"}},
        )
        with pytest.raises(expected) as exc_info:
            resource.get_store("lake").exists("x")
        text = "".join(__import__("traceback").format_exception(exc_info.value))
        assert str(exc_info.value).startswith(starts), (overrides, str(exc_info.value))
        assert SECRET not in text, text
        resource.close()
    with pytest.raises(RemoteStoreConfigError) as exc_info:
        RemoteStoreResource(backends={"s3": {"type": "s3-pyarrow", "secret": SECRET}}, stores={})
    assert SECRET not in str(exc_info.value)


# --------------------------------------------------------------------------- lifecycle


def test_registry_built_once_per_run_and_closed_after(
    backend_kind: str,
    make_remote_store: Callable[..., RemoteStoreResource],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    unique_root: str,
) -> None:
    builds: list[Registry] = []
    real_build = resources_module.build_registry

    def counting_build(*args: Any, **kwargs: Any) -> Registry:
        registry = real_build(*args, **kwargs)
        builds.append(registry)
        return registry

    monkeypatch.setattr(resources_module, "build_registry", counting_build)
    resource = make_remote_store(backend_kind)
    seen: dict[str, Any] = {}

    @asset
    def first(remote_store: RemoteStoreResource) -> None:
        seen["first"] = remote_store
        seen["registry"] = remote_store.registry
        assert remote_store.registry is remote_store.registry
        store = remote_store.get_store("lake")
        seen["store"] = store
        seen["backend"] = store._backend
        store.write("first.txt", b"1")

    @asset(deps=[first])
    def second(remote_store: RemoteStoreResource) -> None:
        assert remote_store.registry is seen["registry"]
        assert remote_store.get_store("lake").read_bytes("first.txt") == b"1"

    result = materialize([first, second], resources={"remote_store": resource})
    assert result.success
    # One registry for the whole in-process run, built in setup_for_execution (not lazily).
    assert builds == [seen["registry"]]
    # ...and closed in teardown.
    assert seen["first"]._registry is None
    assert seen["registry"]._backends == {}
    if backend_kind != "local":
        assert seen["backend"]._closed is True
        with pytest.raises(BackendUnavailable):
            seen["store"].read_bytes("first.txt")
    # The user's resource object is untouched: it never built a registry.
    assert resource._registry is None


def test_s3_pyarrow_resource_closed_after_run(seaweedfs_server: S3Server, unique_root: str) -> None:
    resource = S3PyArrowResource(
        bucket=BUCKET,
        key=seaweedfs_server.access_key,
        secret=seaweedfs_server.secret_key,
        endpoint_url=seaweedfs_server.endpoint_url,
        root_path=unique_root,
    )
    seen: dict[str, Any] = {}

    @asset
    def uses_s3(s3: S3PyArrowResource) -> None:
        store = s3.get_store()
        assert s3.get_store()._backend is store._backend  # one backend per run
        store.write("x", b"x")
        seen["resource"], seen["store"] = s3, store

    assert materialize([uses_s3], resources={"s3": resource}).success
    assert seen["resource"]._registry is None
    assert seen["store"]._backend._closed is True
    with pytest.raises(BackendUnavailable):
        seen["store"].exists("x")


def test_registry_outside_dagster_is_lazy_and_closable(seaweedfs_server: S3Server, unique_root: str) -> None:
    resource = RemoteStoreResource(
        backends={"s3": BackendSpec(type="s3-pyarrow", options=s3_options(seaweedfs_server))},
        stores={"lake": StoreSpec(backend="s3", root_path=unique_root)},
    )
    assert resource._registry is None
    registry = resource.registry
    assert resource.registry is registry
    backend = resource.get_store("lake")._backend
    resource.close()
    assert backend._closed is True
    assert resource._registry is None
    # A fresh registry is built on next use.
    assert resource.get_store("lake").exists("nothing") is False
    resource.close()


class LakeClient(ConfigurableResource):  # type: ignore[type-arg]
    """A user resource that nests RemoteStoreResource."""

    remote_store: RemoteStoreResource
    store: str = "lake"

    def put(self, path: str, data: bytes) -> None:
        self.remote_store.get_store(self.store).write(path, data, overwrite=True)

    def get(self, path: str) -> bytes:
        return self.remote_store.get_store(self.store).read_bytes(path)


def test_nested_resource(backend_kind: str, make_remote_store: Callable[..., RemoteStoreResource]) -> None:
    resource = make_remote_store(backend_kind)
    seen: dict[str, Any] = {}

    @asset
    def via_nested(lake: LakeClient) -> None:
        lake.put("nested.txt", b"nested")
        seen["nested"] = lake.remote_store
        seen["backend"] = lake.remote_store.get_store("lake")._backend

    @asset(deps=[via_nested])
    def direct(remote_store: RemoteStoreResource) -> bytes:
        return remote_store.get_store("lake").read_bytes("nested.txt")

    result = materialize(
        [via_nested, direct],
        resources={"lake": LakeClient(remote_store=resource), "remote_store": resource},
    )
    assert result.success
    assert result.output_for_node("direct") == b"nested"
    # The nested resource went through setup/teardown too.
    assert seen["nested"]._registry is None
    if backend_kind != "local":
        assert seen["backend"]._closed is True
    assert resource.get_store("lake").read_bytes("nested.txt") == b"nested"
    resource.close()


# --------------------------------------------------------------------------- multiprocess executor
# Module level so that ``reconstructable`` can load the job in the step subprocesses. The servers'
# endpoints come from the environment (``${VAR}`` and ``EnvVar``), which the subprocesses inherit.


class RecordingRemoteStore(RemoteStoreResource):
    """RemoteStoreResource that records its (real) setup and teardown to files."""

    record_dir: str

    def _record(self, event: str, **data: Any) -> None:
        payload = {"event": event, "pid": os.getpid(), "resource": id(self), **data}
        Path(self.record_dir, f"{event}-{os.getpid()}-{uuid.uuid4().hex}.json").write_text(json.dumps(payload))

    def setup_for_execution(self, context: InitResourceContext) -> None:
        super().setup_for_execution(context)
        self._record("setup", registry=id(self._registry))

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        registry = self._registry
        assert registry is not None
        backends = list(registry._backends.values())
        super().teardown_after_execution(context)
        self._record(
            "teardown",
            registry=id(registry),
            backends=len(backends),
            closed=[bool(getattr(b, "_closed", False)) for b in backends],
            registry_cleared=self._registry is None,
        )


def _mp_backend(endpoint_var: str) -> dict[str, Any]:
    return {
        "type": "s3-pyarrow",
        "options": {
            "bucket": BUCKET,
            "endpoint_url": f"${{{endpoint_var}}}",
            "key": "${RSD_MP_KEY}",
            "secret": "${RSD_MP_SECRET}",
            "region_name": "us-east-1",
        },
    }


MP_REMOTE_STORE = RecordingRemoteStore(
    backends={"moto": _mp_backend("RSD_MP_MOTO_ENDPOINT"), "weed": _mp_backend("RSD_MP_WEED_ENDPOINT")},
    stores={
        "moto": {"backend": "moto", "root_path": EnvVar("RSD_MP_ROOT")},
        "weed": {"backend": "weed", "root_path": EnvVar("RSD_MP_ROOT")},
    },
    record_dir=EnvVar("RSD_MP_RECORD_DIR"),
)


@asset
def mp_upstream(remote_store: RecordingRemoteStore, s3: S3PyArrowResource) -> MaterializeResult:
    registry = remote_store.registry
    assert registry is remote_store.registry
    for name in ("moto", "weed"):
        remote_store.get_store(name).write("mp/up.txt", f"{name}:{os.getpid()}".encode(), overwrite=True)
    # S3PyArrowResource on the same bucket/root (SeaweedFS) sees the RemoteStoreResource's write.
    assert s3.get_store().read_bytes("mp/up.txt") == f"weed:{os.getpid()}".encode()
    return MaterializeResult(metadata={"pid": os.getpid(), "registry": id(registry)})


@asset(deps=[mp_upstream])
def mp_downstream(lake: LakeClient, s3: S3PyArrowResource) -> MaterializeResult:
    up = lake.get("mp/up.txt")
    root = os.environ["RSD_MP_ROOT"]
    with s3.pyarrow_filesystem().open_input_stream(f"{BUCKET}/{root}/mp/up.txt") as fh:
        assert fh.read() == up
    moto_up = lake.remote_store.get_store("moto").read_bytes("mp/up.txt")
    lake.put("mp/down.txt", up + b"|" + moto_up + f"|{os.getpid()}".encode())
    return MaterializeResult(metadata={"pid": os.getpid(), "registry": id(lake.remote_store.registry)})


mp_job = define_asset_job(
    "mp_job",
    selection=[mp_upstream, mp_downstream],
    executor_def=multiprocess_executor.configured({"max_concurrent": 2}),
)

mp_defs = Definitions(
    assets=[mp_upstream, mp_downstream],
    jobs=[mp_job],
    resources={
        "remote_store": MP_REMOTE_STORE,
        "lake": LakeClient(remote_store=MP_REMOTE_STORE, store="weed"),
        "s3": S3PyArrowResource(
            bucket=BUCKET,
            key=EnvVar("RSD_MP_KEY"),
            secret=EnvVar("RSD_MP_SECRET"),
            endpoint_url=EnvVar("RSD_MP_WEED_ENDPOINT"),
            region_name="us-east-1",
            root_path=EnvVar("RSD_MP_ROOT"),
        ),
    },
)


def get_mp_job() -> Any:
    return mp_defs.resolve_job_def("mp_job")


def test_multiprocess_executor_with_persistent_instance(
    moto_server: S3Server,
    seaweedfs_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unique_root: str,
) -> None:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    assert moto_server.access_key == seaweedfs_server.access_key
    assert moto_server.secret_key == seaweedfs_server.secret_key
    monkeypatch.setenv("RSD_MP_MOTO_ENDPOINT", moto_server.endpoint_url)
    monkeypatch.setenv("RSD_MP_WEED_ENDPOINT", seaweedfs_server.endpoint_url)
    monkeypatch.setenv("RSD_MP_KEY", seaweedfs_server.access_key)
    monkeypatch.setenv("RSD_MP_SECRET", seaweedfs_server.secret_key)
    monkeypatch.setenv("RSD_MP_ROOT", unique_root)
    monkeypatch.setenv("RSD_MP_RECORD_DIR", str(record_dir))
    # The step processes import this test module by name; ``reconstructable`` records the
    # working directory they resolve it from.
    monkeypatch.chdir(Path(__file__).parent)

    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        with execute_job(reconstructable(get_mp_job), instance=instance) as result:
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            step_pids = {e.step_key: e.pid for e in result.all_events if e.event_type == DagsterEventType.STEP_START}
            up_meta = result.asset_materializations_for_node("mp_upstream")[0].metadata
            down_meta = result.asset_materializations_for_node("mp_downstream")[0].metadata
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        assert run.is_success
        # Persistent: the run and its materializations are in the instance's storage.
        assert instance.get_latest_materialization_event(mp_downstream.key) is not None

    # Each step ran in its own process, not in the test process.
    assert set(step_pids) == {"mp_upstream", "mp_downstream"}
    pids = {step_pids["mp_upstream"], step_pids["mp_downstream"]}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert up_meta["pid"].value == step_pids["mp_upstream"]
    assert down_meta["pid"].value == step_pids["mp_downstream"]

    records = [json.loads(p.read_text()) for p in record_dir.glob("*.json")]
    setups = [r for r in records if r["event"] == "setup"]
    teardowns = [r for r in records if r["event"] == "teardown"]
    # Exactly one registry built in each step process (upstream: top-level; downstream: nested)...
    step_setups = {pid: [r for r in setups if r["pid"] == pid] for pid in pids}
    assert all(len(found) == 1 for found in step_setups.values()), step_setups
    # ...it is the one the asset used (built in setup_for_execution, not lazily)...
    assert step_setups[step_pids["mp_upstream"]][0]["registry"] == up_meta["registry"].value
    assert step_setups[step_pids["mp_downstream"]][0]["registry"] == down_meta["registry"].value
    # (``with execute_job(...) as result`` also initialises the resources in the test process,
    # for loading outputs: those registries must be closed as well.)
    assert {r["pid"] for r in setups} <= {*pids, os.getpid()}
    # ...and every registry built was closed in teardown, in its process, with both backends closed.
    assert sorted((r["pid"], r["registry"]) for r in teardowns) == sorted((r["pid"], r["registry"]) for r in setups)
    for r in teardowns:
        assert r["backends"] == 2
        assert r["closed"] == [True, True]
        assert r["registry_cleared"] is True

    # The data really went to both servers.
    check = RemoteStoreResource(
        backends={
            "weed": {"type": "s3-pyarrow", "options": s3_options(seaweedfs_server)},
            "moto": {"type": "s3-pyarrow", "options": s3_options(moto_server)},
        },
        stores={
            "weed": {"backend": "weed", "root_path": unique_root},
            "moto": {"backend": "moto", "root_path": unique_root},
        },
    )
    up_pid = step_pids["mp_upstream"]
    assert check.get_store("moto").read_bytes("mp/up.txt") == f"moto:{up_pid}".encode()
    assert check.get_store("weed").read_bytes("mp/down.txt") == (
        f"weed:{up_pid}|moto:{up_pid}|{step_pids['mp_downstream']}".encode()
    )
    check.close()


def test_optional_option_resolving_to_empty_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from remote_store_dagster import _remote_store_adapter as adapter

    monkeypatch.delenv("RSD_UNSET_ENDPOINT", raising=False)
    resource = RemoteStoreResource(
        backends={
            "s3": {"type": "s3-pyarrow", "options": {"bucket": "b-x", "endpoint_url": "${RSD_UNSET_ENDPOINT:-}"}}
        },
        stores={"lake": {"backend": "s3"}},
    )
    backend = adapter.store_backend(resource.get_store("lake"))
    assert "endpoint_url=None" in repr(backend)
    resource.close()


# --------------------------------------------------------------------------- password, session token

PASSWORD = "Passw0rd-0815-xyz"
TOKEN = "SessionTok-0815-xyz"


def test_password_and_session_token_never_in_errors_logs_or_ui(
    moto_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    unique_root: str,
) -> None:
    """A session token used by a real run (moto accepts any), a password on an ``sftp`` backend that
    cannot start: neither value reaches repr, error text, run logs, stored events or the UI snapshot."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    monkeypatch.setenv("RSD_T_TOKEN", TOKEN)
    monkeypatch.setenv("RSD_T_PASSWORD", PASSWORD)
    s3_token = S3PyArrowResource(
        bucket=BUCKET,
        key=moto_server.access_key,
        secret=moto_server.secret_key,
        session_token=TOKEN,
        endpoint_url=moto_server.endpoint_url,
        root_path=unique_root,
    )
    s3_env_token = S3PyArrowResource(
        bucket=BUCKET,
        key=moto_server.access_key,
        secret=moto_server.secret_key,
        session_token=EnvVar("RSD_T_TOKEN"),
        endpoint_url=moto_server.endpoint_url,
        root_path=unique_root,
    )
    remote = RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": s3_options(moto_server, client_options={"token": TOKEN})}},
        stores={"lake": {"backend": "s3", "root_path": unique_root}},
    )
    sftp = RemoteStoreResource(
        backends={"ftp": {"type": "sftp", "options": {"host": "127.0.0.1", "port": 1, "password": PASSWORD}}},
        stores={"lake": {"backend": "ftp"}},
    )
    sftp_env = RemoteStoreResource(
        backends={"ftp": {"type": "sftp", "options": {"host": "127.0.0.1", "password": "${RSD_T_PASSWORD}"}}},
        stores={"lake": {"backend": "ftp"}},
    )
    secrets = (TOKEN, PASSWORD)

    def clean(text: str) -> None:
        for value in secrets:
            assert value not in text, text

    for resource in (s3_token, s3_env_token, remote, sftp, sftp_env):
        clean(f"{resource!r} {resource}")
    assert "session_token='***'" in repr(s3_token) and "'password': '***'" in repr(sftp)

    @asset
    def with_token(context, s3: S3PyArrowResource, s3_env: S3PyArrowResource, remote_store: RemoteStoreResource):  # type: ignore[no-untyped-def]
        s3.get_store().write("t.txt", b"t")
        assert s3_env.get_store().read_bytes("t.txt") == b"t"
        assert remote_store.get_store("lake").read_bytes("t.txt") == b"t"
        for obj in (s3, s3_env, remote_store, s3.get_store(), s3.pyarrow_filesystem(), s3.s3fs_filesystem()):
            context.log.info(f"using {obj!r}")
            print(f"stdout: {obj!r}")

    @asset
    def with_password(remote_store: RemoteStoreResource) -> None:
        remote_store.get_store("lake").exists("x")

    home = tmp_path / "dagster-home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:
        ok = materialize(
            [with_token], resources={"s3": s3_token, "s3_env": s3_env_token, "remote_store": remote}, instance=instance
        )
        assert ok.success
        failed = materialize([with_password], resources={"remote_store": sftp}, instance=instance, raise_on_error=False)
        assert not failed.success
        failures = [
            e for e in failed.all_events if e.is_failure or e.event_type == DagsterEventType.RESOURCE_INIT_FAILURE
        ]
        assert failures, "the sftp backend must fail (no server, or no paramiko)"
        for run_id in (ok.run_id, failed.run_id):
            entries = instance.all_logs(run_id)
            assert len(entries) > 5
            for entry in entries:
                clean(serialize_value(entry))
            run = instance.get_run_by_id(run_id)
            assert run is not None
            clean(serialize_value(run))
        logged = " ".join(e.user_message for e in instance.all_logs(ok.run_id))
        assert "session_token='***'" in logged  # the check above looked at the resource's text
    with pytest.raises(Exception) as exc_info:  # noqa: PT011 - whatever sftp raises, it must not echo the password
        sftp.get_store("lake").exists("x")
    clean("".join(__import__("traceback").format_exception(exc_info.value)))
    out, err = capfd.readouterr()
    assert "stdout: S3PyArrowResource(" in out
    clean(out + err)
    assert_no_secret_in_tree(home, TOKEN)
    assert_no_secret_in_tree(home, PASSWORD)

    snapshot = serialize_value(
        RepositorySnap.from_def(
            Definitions(
                assets=[with_token], resources={"s3": s3_env_token, "s3_env": s3_env_token, "remote_store": sftp_env}
            ).get_repository_def()
        )
    )
    assert "RSD_T_TOKEN" in snapshot and "${RSD_T_PASSWORD}" in snapshot
    clean(snapshot)
    for resource in (s3_token, s3_env_token, remote, sftp, sftp_env):
        resource.close()


# --------------------------------------------------------------------------- escape hatch identity


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_escape_hatches_are_the_very_objects_the_store_uses(
    kind: str, request: pytest.FixtureRequest, unique_root: str
) -> None:
    """Not a look-alike filesystem: the same object the store's data path (PyArrow) and control
    path (s3fs) use, before, inside and after a run."""
    from remote_store_dagster._storage import storage_for

    server: S3Server = request.getfixturevalue(f"{kind}_server")
    resource = S3PyArrowResource(
        bucket=BUCKET,
        key=server.access_key,
        secret=server.secret_key,
        endpoint_url=server.endpoint_url,
        root_path=unique_root,
    )
    seen: dict[str, bool] = {}

    def check(s3: S3PyArrowResource, label: str) -> None:
        store = s3.get_store()
        pa_fs, fs = s3.pyarrow_filesystem(), s3.s3fs_filesystem()
        seen[label] = (
            pa_fs is s3.pyarrow_filesystem()
            and pa_fs is store.unwrap(pafs.S3FileSystem)
            and pa_fs is storage_for(store).filesystem
            and fs is s3.s3fs_filesystem()
            and fs is store.unwrap(s3fs.S3FileSystem)
        )

    @asset
    def hatch(s3: S3PyArrowResource) -> None:
        check(s3, "in a run")

    check(resource, "outside a run")
    assert materialize([hatch], resources={"s3": resource}).success
    assert seen == {"outside a run": True, "in a run": True}
    resource.close()
