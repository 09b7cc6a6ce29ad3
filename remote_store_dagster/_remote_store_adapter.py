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
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    import s3fs
    from remote_store import Backend, Registry, Store

S3_PYARROW = "s3-pyarrow"

log = logging.getLogger(__name__)


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
    region = b._region_name
    if b._key is None and b._secret is None and not b._client_options.get("anon"):
        chain = default_chain_credentials(b._client_options.get("profile"))
        if chain is not None:
            region = region or chain.region
            if chain.pyarrow_own_chain:
                log.debug("s3-pyarrow: PyArrow resolves %s credentials itself (same source as botocore)", chain.method)
            else:
                kwargs.update(access_key=chain.access_key, secret_key=chain.secret_key)
                if chain.token:
                    kwargs["session_token"] = chain.token
            if chain.static:
                # s3fs gets exactly these too, instead of resolving the chain a second time.
                b._key, b._secret = chain.access_key, chain.secret_key
                if chain.token:
                    b._client_options = {**b._client_options, "token": chain.token}
    elif b._client_options.get("anon"):
        kwargs["anonymous"] = True
    if b._key is not None and "access_key" not in kwargs and not kwargs["anonymous"]:
        kwargs["access_key"] = b._key
    if b._secret is not None and "secret_key" not in kwargs and not kwargs["anonymous"]:
        kwargs["secret_key"] = b._secret
    if session_token:
        kwargs["session_token"] = session_token
    if region is not None:
        kwargs["region"] = region
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


#: botocore credential methods whose source PyArrow's AWS SDK (C++) reads the same way and refreshes
#: itself: web identity (IRSA), ECS/EKS container credentials, EC2 instance metadata.
_SHARED_REFRESHING_SOURCES = frozenset({"assume-role-with-web-identity", "container-role", "iam-role"})


@dataclass(frozen=True)
class ChainCredentials:
    """What botocore's default chain resolved; ``repr`` never shows the secret or the token."""

    method: str
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(repr=False)
    region: str | None
    #: Long-lived keys (environment, shared files): both paths are given these exact keys.
    static: bool
    #: Temporary credentials PyArrow's own chain fetches from the same source and refreshes.
    pyarrow_own_chain: bool
    expiry: str | None = None


def default_chain_credentials(profile: str | None = None) -> ChainCredentials | None:
    """Resolve the AWS default credential chain once, the way s3fs (botocore) will.

    With no key or secret configured, PyArrow's C++ SDK and s3fs's botocore each walk their own
    chain, and the chains differ: botocore takes a web identity (IRSA) before static keys in
    ``~/.aws/credentials``, the C++ SDK the other way round; only botocore knows SSO, ``role_arn``
    + ``source_profile`` profiles, custom STS endpoints (``AWS_ENDPOINT_URL_STS``) and a ``profile``
    passed to s3fs; and a C++ chain that finds nothing sends unsigned requests. So botocore decides,
    and PyArrow follows:

    * static keys (environment, shared credentials/config file, ``credential_process`` without
      expiry): both paths get exactly these keys;
    * temporary credentials from a web identity, container or instance-metadata source, when the
      C++ SDK would reach the same source (no static keys shadowing it in its profile, no custom
      STS endpoint, no ``profile`` option): PyArrow keeps its own chain, which refreshes them;
    * any other temporary credentials: PyArrow gets botocore's current ones (a WARNING names
      their expiry; a step running past it must be retried).

    Returns ``None`` when the chain finds nothing (both paths then behave as before).
    """
    import botocore.credentials
    import botocore.session

    session = botocore.session.Session(profile=profile)
    credentials = session.get_credentials()
    if credentials is None:
        return None
    refreshing = isinstance(credentials, botocore.credentials.RefreshableCredentials)
    frozen = credentials.get_frozen_credentials()
    method = str(credentials.method)
    region = session.get_config_variable("region")
    expiry = None
    if refreshing:
        expiry_time = getattr(credentials, "_expiry_time", None)
        expiry = expiry_time.isoformat() if expiry_time is not None else None
    own_chain = refreshing and method in _SHARED_REFRESHING_SOURCES and _cpp_chain_reaches_same_source(profile)
    if refreshing and not own_chain:
        log.warning(
            "s3-pyarrow: PyArrow's data path uses temporary %s credentials resolved by botocore, valid until %s; "
            "steps running past that fail and must be retried (use static keys, IRSA or instance roles "
            "for longer steps)",
            method,
            expiry or "unknown",
        )
    return ChainCredentials(
        method=method,
        access_key=frozen.access_key,
        secret_key=frozen.secret_key,
        token=frozen.token,
        region=str(region) if region else None,
        static=not refreshing,
        pyarrow_own_chain=own_chain,
        expiry=expiry,
    )


def _cpp_chain_reaches_same_source(profile: str | None) -> bool:
    """Whether the C++ SDK's default chain ends at the source botocore used (see above)."""
    import configparser

    if profile is not None:
        return False  # PyArrow cannot be given a profile; only AWS_PROFILE reaches it
    if os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL"):
        return False
    name = os.environ.get("AWS_DEFAULT_PROFILE") or os.environ.get("AWS_PROFILE") or "default"
    home = os.path.expanduser("~")
    files = (
        (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials"), name),
        (os.environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"), f"profile {name}"),
    )
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        for candidate in {section, name}:
            if parser.has_section(candidate) and (
                parser.has_option(candidate, "aws_access_key_id") or parser.has_option(candidate, "credential_process")
            ):
                return False  # the C++ chain reads these before web identity / metadata
    return True


def pyarrow_filesystem(store: Store) -> pafs.S3FileSystem:
    from pyarrow.fs import S3FileSystem

    return store.unwrap(S3FileSystem)


def s3fs_filesystem(store: Store) -> s3fs.S3FileSystem:
    """The store's s3fs control-path client, on this process's shared botocore session."""
    import s3fs as _s3fs

    fs = store.unwrap(_s3fs.S3FileSystem)
    share_botocore_session(fs)
    return fs


_SHARED_SESSIONS: dict[tuple[int, str, str], Any] = {}


def _aws_environment_digest() -> str:
    """A digest (not the values: they include secrets) of every ``AWS_*`` variable."""
    import hashlib

    aws = sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    return hashlib.sha256(repr(aws).encode()).hexdigest()


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
    import aiobotocore.session  # type: ignore[import-untyped]

    key = (os.getpid(), repr(sorted(fs.kwargs.items())), _aws_environment_digest())
    session = _SHARED_SESSIONS.get(key)
    if session is None:
        session = _SHARED_SESSIONS.setdefault(key, aiobotocore.session.AioSession(**fs.kwargs))
    fs.session = session
