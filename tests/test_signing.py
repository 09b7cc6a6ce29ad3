"""Signed pickles: with ``pickle_signing_key`` set, a pickle whose signature is missing or wrong is never unpickled."""

import logging
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    EnvVar,
    asset,
    instance_for_test,
    materialize,
)

from remote_store_dagster import RemoteStoreIOManager, RemoteStoreResource
from remote_store_dagster._signing import MAGIC

KEY = "k3y-that-must-never-be-shown"
OTHER_KEY = "another-k3y"
#: Set by ``Evil.__reduce__`` when unpickled: proves whether the payload ran.
RAN: list[str] = []


class Evil:
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (RAN.append, ("evil payload ran",))


@pytest.fixture(params=["local", "seaweedfs"])
def resource(
    request: pytest.FixtureRequest, make_remote_store: Callable[..., RemoteStoreResource]
) -> RemoteStoreResource:
    return make_remote_store(str(request.param))


def _iom(resource: RemoteStoreResource, key: str | None) -> RemoteStoreIOManager:
    return RemoteStoreIOManager(remote_store=resource, store="lake", prefix="warehouse", pickle_signing_key=key)


@asset
def settings() -> list[int]:
    return [3, 4]


@asset
def uses_settings(settings: list[int]) -> int:
    return settings[0]


def _failure(result: Any) -> str:
    return str(result.get_step_failure_events()[0].event_specific_data.error.to_string())


def test_signed_pickles_round_trip(resource: RemoteStoreResource) -> None:
    result = materialize([settings, uses_settings], resources={"io_manager": _iom(resource, KEY)})
    assert result.success
    assert result.output_for_node("uses_settings") == 3
    stored = resource.get_store("lake").read_bytes("warehouse/settings/data.pickle")
    assert stored.startswith(MAGIC)
    assert KEY.encode() not in stored


def test_a_forged_pickle_is_refused_before_it_runs(resource: RemoteStoreResource) -> None:
    assert materialize([settings], resources={"io_manager": _iom(resource, KEY)}).success
    store = resource.get_store("lake")
    signed = store.read_bytes("warehouse/settings/data.pickle")
    # Whoever can write to the bucket swaps the payload but cannot compute the HMAC.
    forged = signed[: len(MAGIC) + 32] + pickle.dumps(Evil())
    store.write("warehouse/settings/data.pickle", forged, overwrite=True)
    RAN.clear()
    result = materialize(
        [settings.to_source_asset(), uses_settings], resources={"io_manager": _iom(resource, KEY)}, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "asset settings" in message and "signature does not match" in message
    assert RAN == []  # never unpickled
    assert KEY not in message


@pytest.mark.parametrize("writer_key", [None, OTHER_KEY], ids=["unsigned", "other-key"])
def test_unsigned_or_foreign_pickles_fail_naming_the_asset(
    resource: RemoteStoreResource, writer_key: str | None
) -> None:
    assert materialize([settings], resources={"io_manager": _iom(resource, writer_key)}).success
    result = materialize(
        [settings.to_source_asset(), uses_settings], resources={"io_manager": _iom(resource, KEY)}, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "asset settings" in message
    assert ("not signed" if writer_key is None else "does not match") in message
    assert KEY not in message and OTHER_KEY not in message


def test_without_a_key_signed_and_unsigned_pickles_load_and_unsigned_writes_warn(resource: RemoteStoreResource) -> None:
    assert materialize([settings], resources={"io_manager": _iom(resource, KEY)}).success
    result = materialize([settings.to_source_asset(), uses_settings], resources={"io_manager": _iom(resource, None)})
    assert result.output_for_node("uses_settings") == 3
    with instance_for_test() as instance:
        unsigned = materialize([settings], resources={"io_manager": _iom(resource, None)}, instance=instance)
        warnings = [
            entry.user_message
            for entry in instance.all_logs(unsigned.run_id)
            if entry.level == logging.WARNING and "unsigned pickle" in entry.user_message
        ]
    assert len(warnings) == 1 and "asset settings" in warnings[0] and "pickle_signing_key" in warnings[0]
    signed = materialize([settings], resources={"io_manager": _iom(resource, KEY)})
    assert signed.success


def test_a_tampered_partition_is_named_in_a_multi_partition_load(
    make_remote_store: Callable[..., RemoteStoreResource],
) -> None:
    resource = make_remote_store("seaweedfs")
    days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")

    @asset(partitions_def=days)
    def daily_config(context: AssetExecutionContext) -> dict[str, str]:
        return {"day": context.partition_key}

    @asset(ins={"daily_config": AssetIn(partition_mapping=None)})
    def all_configs(daily_config: dict[str, dict[str, str]]) -> int:
        return len(daily_config)

    iom = _iom(resource, KEY)
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert materialize([daily_config], partition_key=day, resources={"io_manager": iom}).success
    store = resource.get_store("lake")
    path = "warehouse/daily_config/partition=2024-01-02/data.pickle"
    signed = store.read_bytes(path)
    store.write(path, signed[: len(MAGIC) + 32] + pickle.dumps(Evil()), overwrite=True)
    RAN.clear()
    result = materialize(
        [daily_config.to_source_asset(), all_configs], resources={"io_manager": iom}, raise_on_error=False
    )
    assert not result.success
    message = _failure(result)
    assert "asset daily_config partition '2024-01-02'" in message and "signature" in message
    assert RAN == []


def test_the_key_can_come_from_an_env_var(resource: RemoteStoreResource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSD_TEST_PICKLE_KEY", KEY)
    iom = RemoteStoreIOManager(
        remote_store=resource, store="lake", prefix="warehouse", pickle_signing_key=EnvVar("RSD_TEST_PICKLE_KEY")
    )
    assert materialize([settings], resources={"io_manager": iom}).success
    assert resource.get_store("lake").read_bytes("warehouse/settings/data.pickle").startswith(MAGIC)
    assert KEY not in repr(iom)
