"""Dagster integration for remote-store's hybrid S3-PyArrow backend."""

from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._version import __version__
from remote_store_dagster.cleanup import build_cleanup_sensor
from remote_store_dagster.io_manager import RemoteStoreIOManager
from remote_store_dagster.resources import (
    BackendSpec,
    RemoteStoreResource,
    RetrySpec,
    S3PyArrowResource,
    StoreSpec,
)

__all__ = [
    "BackendSpec",
    "RemoteStoreConfigError",
    "RemoteStoreIOError",
    "RemoteStoreIOManager",
    "RemoteStoreResource",
    "RetrySpec",
    "S3PyArrowResource",
    "StoreSpec",
    "__version__",
    "build_cleanup_sensor",
]
