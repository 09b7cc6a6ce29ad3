"""The example's storage: one ``s3-pyarrow`` backend configured by the ``RS_S3_*`` environment variables.

Option values are ``${VAR}`` references, resolved when a run starts, so the
Dagster UI shows the variable names, never the credentials. Options whose
variable is unset are left out, so AWS's default credential chain and endpoint
apply on real S3.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from remote_store_dagster import RemoteStoreResource

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Store profile used by the IO manager and the cleanup sensor.
STORE = "lake"
#: Root folder of the store inside the bucket (``RS_EXAMPLE_ROOT`` overrides it).
DEFAULT_ROOT = "dagster-example"
#: IO manager prefix below the store root.
PREFIX = ""

_OPTIONAL_OPTIONS = {
    "key": "RS_S3_KEY",
    "secret": "RS_S3_SECRET",
    "endpoint_url": "RS_S3_ENDPOINT",
    "region_name": "RS_S3_REGION",
}


def backend_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``s3-pyarrow`` options as ``${VAR}`` references (bucket always, the rest when set)."""
    env = os.environ if env is None else env
    options: dict[str, Any] = {"bucket": "${RS_S3_BUCKET}"}
    for option, var in _OPTIONAL_OPTIONS.items():
        if env.get(var):
            options[option] = f"${{{var}}}"
    return options


def build_remote_store(env: Mapping[str, str] | None = None) -> RemoteStoreResource:
    env = os.environ if env is None else env
    return RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": backend_options(env)}},
        stores={STORE: {"backend": "s3", "root_path": env.get("RS_EXAMPLE_ROOT", DEFAULT_ROOT)}},
    )
