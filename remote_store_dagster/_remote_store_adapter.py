"""The one place that reaches into remote-store internals.

remote-store (0.33) has no public API for: the table of registered backend
classes (needed to validate options before first use), eager backend
construction inside a ``Registry``, tuning the PyArrow ``S3FileSystem`` the
hybrid backend builds (session token, ``background_writes``), or getting the
s3fs control-path client except through ``unwrap``. Upstream ADR-0042 proposes
retiring ``S3PyArrowBackend`` and ``unwrap(s3fs.S3FileSystem)``; when that
lands, only this module has to change.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    import s3fs
    from remote_store import Backend, Registry, Store

S3_PYARROW = "s3-pyarrow"


def registered_backend_class(backend_type: str) -> type[Backend] | None:
    """The class remote-store instantiates for ``type=backend_type``."""
    from remote_store import _registry

    _registry._register_builtin_backends()
    return _registry._BACKEND_FACTORIES.get(backend_type)


def registered_backend_types() -> list[str]:
    from remote_store import _registry

    _registry._register_builtin_backends()
    return sorted(_registry._BACKEND_FACTORIES)


def accepted_options(backend_cls: type[Backend]) -> tuple[set[str], set[str]]:
    """(all keyword options, required options) of a backend constructor."""
    params = list(inspect.signature(backend_cls.__init__).parameters.values())[1:]
    names = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    required = {
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    names.discard("retry")  # set through the spec's own ``retry`` field
    return names, required


def instantiate_backend(registry: Registry, backend_name: str) -> Backend:
    """Build a backend now instead of on first store access."""
    return registry._get_backend(backend_name)


def store_backend(store: Store) -> Backend:
    return store._backend


def backend_kind(store: Store) -> str:
    """The ``type`` of the backend a store runs on (``s3-pyarrow``, ``local``, ...)."""
    return str(store_backend(store).name)


def backend_bucket(store: Store) -> str:
    return str(store_backend(store)._bucket)  # type: ignore[attr-defined]


def store_root(store: Store) -> str:
    """The store's root path inside its backend (no leading/trailing slash)."""
    return str(store._root).strip("/")


def tune_s3_pyarrow(backend: Backend, *, session_token: str | None = None) -> None:
    """Give the hybrid backend a PyArrow filesystem built for streaming.

    The backend builds ``S3FileSystem`` with ``background_writes=True``, which
    queues upload parts in memory (measured: ~388 MB held for a 256 MB upload,
    ~109 MB without) and has no way to pass a session token. We build the same
    filesystem with ``background_writes=False`` and the token, and install it
    where the backend looks for its lazy instance. (The IO manager's own writes
    do not use PyArrow's output stream any more, see ``_s3_upload``.)
    """
    from pyarrow.fs import S3FileSystem

    if backend.name != S3_PYARROW:
        return
    b: Any = backend
    kwargs: dict[str, Any] = {"anonymous": False, "background_writes": False}
    if b._key is not None:
        kwargs["access_key"] = b._key
    if b._secret is not None:
        kwargs["secret_key"] = b._secret
    if session_token:
        kwargs["session_token"] = session_token
    if b._region_name is not None:
        kwargs["region"] = b._region_name
    endpoint: str | None = b._endpoint_url
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = rest.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint
    if b._tls_ca_bundle is not None:
        kwargs["tls_ca_file_path"] = b._tls_ca_bundle
    if b._retry is not None:
        from pyarrow.fs import AwsStandardS3RetryStrategy

        kwargs["retry_strategy"] = AwsStandardS3RetryStrategy(max_attempts=b._retry.max_attempts)
    b._pa_fs_instance = S3FileSystem(**kwargs)


def pyarrow_filesystem(store: Store) -> pafs.S3FileSystem:
    from pyarrow.fs import S3FileSystem

    return store.unwrap(S3FileSystem)


def s3fs_filesystem(store: Store) -> s3fs.S3FileSystem:
    """The store's s3fs control-path client, on this process's shared botocore session."""
    import s3fs as _s3fs

    fs = store.unwrap(_s3fs.S3FileSystem)
    share_botocore_session(fs)
    return fs


_SHARED_SESSIONS: dict[tuple[int, str], Any] = {}


def share_botocore_session(fs: s3fs.S3FileSystem) -> None:
    """Give a fresh s3fs client this process's aiobotocore session for its settings.

    remote-store builds a new s3fs instance per registry (``skip_instance_cache``), so every run
    (and every cleanup sensor tick) created a new session and re-parsed botocore's endpoint and
    S3 service models: 100-250 ms each time, more than a small output takes to write. A session
    holds no connections and is reusable; clients (credentials, endpoint, pools) stay per
    instance. ``session`` is s3fs's own constructor parameter; setting it before the first
    connect is what passing it would do. Keyed by process (fsspec's loop and sessions do not
    survive a fork) and by the extra session kwargs s3fs would pass (``profile`` ...).
    """
    if fs.session is not None or fs._s3 is not None:  # already connected: nothing to share
        return
    import os

    import aiobotocore.session  # type: ignore[import-untyped]

    key = (os.getpid(), repr(sorted(fs.kwargs.items())))
    session = _SHARED_SESSIONS.get(key)
    if session is None:
        session = _SHARED_SESSIONS.setdefault(key, aiobotocore.session.AioSession(**fs.kwargs))
    fs.session = session
