"""Dagster resources over remote-store: a whole ``Registry``, or one S3-PyArrow store."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster import Config, ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field, PrivateAttr
from remote_store import (
    BackendConfig,
    Registry,
    RegistryConfig,
    RetryPolicy,
    Store,
    StoreProfile,
    resolve_env,
)

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._errors import RemoteStoreConfigError

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    import s3fs

__all__ = ["BackendSpec", "RemoteStoreResource", "RetrySpec", "S3PyArrowResource", "StoreResource", "StoreSpec"]

#: Option names whose values are credentials: never shown in repr, logs or errors.
SENSITIVE_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "password",
        "token",
        "session_token",
        "account_key",
        "sas_token",
        "connection_string",
        "client_secret",
        "access_key",
        "secret_key",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


class RetrySpec(Config):
    """Retry policy for transient backend errors (remote-store's ``RetryPolicy``)."""

    max_attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 1.0
    timeout: float | None = None


class BackendSpec(Config):
    """One remote-store backend: ``type`` plus constructor ``options``.

    Option values may be ``${VAR}`` / ``${VAR:-default}``; they are resolved
    when the resource starts, so definitions load without the variables set.
    """

    type: str = Field(description="remote-store backend type: s3-pyarrow, s3, local, memory, ...")
    options: dict[str, Any] = Field(default={}, description="Backend constructor options.")
    retry: RetrySpec | None = Field(default=None, description="Retry policy for transient errors.")


class StoreSpec(Config):
    """A named store: a backend plus the root path every key is relative to."""

    backend: str = Field(description="Name of a backend in `backends`.")
    root_path: str = Field(default="", description="Prefix of every path in this store.")


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options with credential values replaced by ``***``, at any nesting depth.

    ``${VAR}`` placeholders are shown as written: they name a variable, not a value.
    """

    def mask(key: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: mask(str(k), v) for k, v in value.items()}
        if key.lower() in SENSITIVE_OPTIONS and value and not _is_placeholder(value):
            return "***"
        return value

    return {k: mask(str(k), v) for k, v in options.items()}


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}") and "${" not in value[2:]


def _env_value(value: Any) -> Any:
    """A Dagster ``EnvVar`` left unresolved (resource used outside a run) -> its value."""
    if isinstance(value, EnvVar):
        return value.get_value()
    return value


def _resolve_options(field: str, options: Mapping[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in options.items():
        try:
            resolved[name] = resolve_env({name: _env_value(value)})[name]
        except KeyError as exc:
            var = str(exc.args[0]).split("'")[1] if "'" in str(exc.args[0]) else str(exc.args[0])
            raise RemoteStoreConfigError(
                f"{field}.{name}: environment variable {var!r} is not set (use ${{{var}:-default}} for a fallback)"
            ) from None
    return resolved


def _validate_options(field: str, backend_type: str, options: Mapping[str, Any], *, has_retry: bool = False) -> None:
    backend_cls = adapter.registered_backend_class(backend_type)
    if backend_cls is None:
        raise RemoteStoreConfigError(
            f"{field}.type: unknown backend type {backend_type!r}; "
            f"registered types: {', '.join(adapter.registered_backend_types())}"
        )
    if has_retry and "retry" not in inspect.signature(backend_cls.__init__).parameters:
        raise RemoteStoreConfigError(
            f"{field}.retry: backend type {backend_type!r} does not take a retry policy; remove `retry`"
        )
    accepted, required = adapter.accepted_options(backend_cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        also = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise RemoteStoreConfigError(
            f"{field}.options.{unknown[0]}: unknown option for backend type {backend_type!r}{also}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    missing = sorted(required - set(options))
    if missing:
        raise RemoteStoreConfigError(
            f"{field}.options.{missing[0]}: required option missing for backend type {backend_type!r}"
        )
    for name, value in options.items():
        if name in required and isinstance(value, str) and not value.strip():
            raise RemoteStoreConfigError(f"{field}.options.{name}: must not be empty")


def build_registry(
    backends: Mapping[str, BackendSpec],
    stores: Mapping[str, StoreSpec],
    *,
    session_tokens: Mapping[str, str | None] | None = None,
) -> Registry:
    """Validate specs, resolve ``${VAR}``, and build every backend eagerly.

    Eager construction means a bad option fails when the resource starts, not
    halfway through the first write.
    """
    backend_configs: dict[str, BackendConfig] = {}
    for name, spec in backends.items():
        field = f"backends.{name}"
        backend_type = _env_value(spec.type)
        options = _resolve_options(f"{field}.options", spec.options)
        _validate_options(field, backend_type, options, has_retry=spec.retry is not None)
        # An optional option that resolved to "" (``${RS_S3_ENDPOINT:-}``) means "not set".
        options = {key: value for key, value in options.items() if value != ""}
        retry = RetryPolicy(**spec.retry.model_dump()) if spec.retry else None
        backend_configs[name] = BackendConfig(type=backend_type, options=options, retry=retry)
    profiles: dict[str, StoreProfile] = {}
    for name, store_spec in stores.items():
        backend_name = _env_value(store_spec.backend)
        if backend_name not in backend_configs:
            raise RemoteStoreConfigError(
                f"stores.{name}.backend: names backend {backend_name!r}, which is not defined; "
                f"defined backends: {', '.join(sorted(backend_configs)) or '(none)'}"
            )
        profiles[name] = StoreProfile(backend=backend_name, root_path=_env_value(store_spec.root_path) or "")
    registry = Registry(RegistryConfig(backends=backend_configs, stores=profiles))
    try:
        for name in backend_configs:
            try:
                backend = adapter.instantiate_backend(registry, name)
            except (ValueError, TypeError) as exc:
                # Backend constructors validate values (empty bucket, bad endpoint...);
                # their messages name the problem but never echo option values.
                raise RemoteStoreConfigError(f"backends.{name}.options: {exc}") from None
            adapter.tune_s3_pyarrow(backend, session_token=(session_tokens or {}).get(name))
    except BaseException:
        registry.close()
        raise
    return registry


def _coerce_specs(field: str, value: Any, spec_cls: type[Config]) -> Any:
    if not isinstance(value, Mapping):
        return value
    specs: dict[str, Any] = {}
    for name, spec in value.items():
        if isinstance(spec, Mapping):
            # pydantic would silently drop a misspelt key ("option"); refuse it, naming
            # the key but never echoing its value (it may hold credentials).
            unknown = sorted(set(spec) - set(spec_cls.model_fields))
            if unknown:
                accepted = ", ".join(spec_cls.model_fields)
                raise RemoteStoreConfigError(f"{field}.{name}.{unknown[0]}: unknown field; accepted: {accepted}")
            spec = spec_cls(**spec)
        specs[name] = spec
    return specs


class StoreResource(ConfigurableResource):  # type: ignore[type-arg]
    """What the IO manager and the cleanup sensor need of a resource: a ``Store`` by profile name.

    ``RemoteStoreResource`` (a registry of named stores) and ``S3PyArrowResource``
    (one bucket, one store) both are one, so either plugs in wherever a store is needed.
    """

    def store_for(self, name: str) -> Store:
        """The store called ``name`` (a resource with one store may ignore the name)."""
        raise NotImplementedError

    def describe_store(self, name: str) -> str:
        """How messages refer to that store."""
        return f"store {name!r}"


class RemoteStoreResource(StoreResource):
    """A remote-store ``Registry`` as a Dagster resource.

    The registry (and every backend in it) is built once per process when
    Dagster starts the resource and closed when the run's step finishes.

    ```python
    RemoteStoreResource(
        backends={"s3": {"type": "s3-pyarrow", "options": {"bucket": "${RS_S3_BUCKET}"}}},
        stores={"lake": {"backend": "s3", "root_path": "dagster"}},
    )
    ```
    """

    backends: dict[str, BackendSpec] = Field(description="Backends by name.")
    stores: dict[str, StoreSpec] = Field(description="Stores by name.")

    _registry: Registry | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        data["backends"] = _coerce_specs("backends", data.get("backends", {}), BackendSpec)
        data["stores"] = _coerce_specs("stores", data.get("stores", {}), StoreSpec)
        super().__init__(**data)

    def __repr__(self) -> str:
        backends = ", ".join(
            f"{name!r}: BackendSpec(type={spec.type!r}, options={_masked(spec.options)!r})"
            for name, spec in self.backends.items()
        )
        stores = ", ".join(
            f"{name!r}: StoreSpec(backend={spec.backend!r}, root_path={spec.root_path!r})"
            for name, spec in self.stores.items()
        )
        return f"RemoteStoreResource(backends={{{backends}}}, stores={{{stores}}})"

    __str__ = __repr__

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._registry = build_registry(self.backends, self.stores)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    @property
    def registry(self) -> Registry:
        """The live registry; built on first use outside a Dagster run (e.g. in a notebook)."""
        if self._registry is None:
            self._registry = build_registry(self.backends, self.stores)
        return self._registry

    def get_store(self, name: str) -> Store:
        if name not in self.stores:
            raise RemoteStoreConfigError(
                f"store {name!r} is not defined; defined stores: {', '.join(sorted(self.stores)) or '(none)'}"
            )
        return self.registry.get_store(name)

    def store_for(self, name: str) -> Store:
        if not name:
            raise RemoteStoreConfigError(
                f"store: name one of the RemoteStoreResource's stores ({', '.join(sorted(self.stores)) or 'none'})"
            )
        return self.get_store(name)

    def close(self) -> None:
        """Close the registry if one was built outside Dagster's lifecycle."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None


class S3PyArrowResource(StoreResource):
    """One S3 bucket (and root path) on remote-store's hybrid S3-PyArrow backend.

    PyArrow's C++ S3 filesystem carries the data; s3fs carries listing and
    deletes. Pass credentials as ``EnvVar`` so the UI shows only their names.
    """

    bucket: str = Field(description="S3 bucket name.")
    key: str | None = Field(default=None, description="Access key id (use EnvVar).")
    secret: str | None = Field(default=None, description="Secret access key (use EnvVar).")
    session_token: str | None = Field(default=None, description="Session token (use EnvVar).")
    endpoint_url: str | None = Field(default=None, description="Custom endpoint, e.g. http://127.0.0.1:8333.")
    region_name: str | None = Field(default=None, description="AWS region.")
    root_path: str = Field(default="", description="Prefix of every path in the store.")
    client_options: dict[str, Any] = Field(default={}, description="Extra s3fs options.")

    _registry: Registry | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        shown = {
            "bucket": self.bucket,
            "key": "***" if self.key else None,
            "secret": "***" if self.secret else None,
            "session_token": "***" if self.session_token else None,
            "endpoint_url": self.endpoint_url,
            "region_name": self.region_name,
            "root_path": self.root_path,
            "client_options": _masked(self.client_options),
        }
        return "S3PyArrowResource(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__

    def _backend_spec(self) -> BackendSpec:
        options: dict[str, Any] = {"bucket": _env_value(self.bucket) or ""}
        for name in ("key", "secret", "endpoint_url", "region_name"):
            value = _env_value(getattr(self, name))
            if value:
                options[name] = value
        client_options = dict(self.client_options)
        session_token = _env_value(self.session_token)
        if session_token:
            client_options["token"] = session_token
        if client_options:
            options["client_options"] = client_options
        return BackendSpec(type=adapter.S3_PYARROW, options=options)

    def _build(self) -> Registry:
        try:
            return build_registry(
                {"s3": self._backend_spec()},
                {"store": StoreSpec(backend="s3", root_path=_env_value(self.root_path) or "")},
                session_tokens={"s3": _env_value(self.session_token)},
            )
        except RemoteStoreConfigError as exc:
            # Name this resource's own fields, not the internal one-backend registry's.
            message = str(exc)
            for internal in ("backends.s3.options.", "backends.s3."):
                if message.startswith(internal):
                    message = "S3PyArrowResource." + message[len(internal) :]
                    break
            raise RemoteStoreConfigError(message) from None

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._registry = self._build()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def store_for(self, name: str) -> Store:
        """Its one store, whatever ``name`` says: the bucket and root path are the store."""
        return self.get_store()

    def describe_store(self, name: str) -> str:
        return f"bucket {self.bucket!r}"

    def get_store(self) -> Store:
        """The store (built on first use outside a Dagster run)."""
        if self._registry is None:
            self._registry = self._build()
        return self._registry.get_store("store")

    def close(self) -> None:
        """Close the backend if one was built outside Dagster's lifecycle."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def pyarrow_filesystem(self) -> pafs.S3FileSystem:
        """The PyArrow filesystem of the data path (paths are ``bucket/key``)."""
        return adapter.pyarrow_filesystem(self.get_store())

    def s3fs_filesystem(self) -> s3fs.S3FileSystem:
        """The s3fs filesystem of the control path (listing, metadata, deletes)."""
        return adapter.s3fs_filesystem(self.get_store())
