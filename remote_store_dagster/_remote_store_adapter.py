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

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

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


def is_s3_pyarrow(store: Store) -> bool:
    return store_backend(store).name == S3_PYARROW


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
    filesystem with ``background_writes=False`` (same throughput here) and the
    token, and install it where the backend looks for its lazy instance.
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
    # Same client with delayed open: a body written and closed in one go becomes a
    # single PutObject (no multipart round trips) -- used for small, in-memory outputs.
    b._rsd_single_put_fs = S3FileSystem(**kwargs, allow_delayed_open=True)


def single_put_filesystem(store: Store) -> pafs.S3FileSystem | None:
    """The delayed-open twin of the data-path filesystem, if ``tune_s3_pyarrow`` built one."""
    return getattr(store_backend(store), "_rsd_single_put_fs", None)


def pyarrow_filesystem(store: Store) -> pafs.S3FileSystem:
    from pyarrow.fs import S3FileSystem

    return store.unwrap(S3FileSystem)


def s3fs_filesystem(store: Store) -> s3fs.S3FileSystem:
    import s3fs as _s3fs

    return store.unwrap(_s3fs.S3FileSystem)


def delete_quietly(store: Store, paths: list[str]) -> None:
    """Delete ``paths`` if they exist; on s3-pyarrow in one ``DeleteObjects`` request.

    ``Store.delete(missing_ok=True)`` costs a HEAD plus a DELETE per path on
    S3; a quiet bulk delete of absent keys is one request and a no-op.
    """
    if not paths:
        return
    if is_s3_pyarrow(store):
        _, errors = s3_delete_objects(store, paths)
        if errors:
            raise OSError(f"could not delete {'; '.join(errors)}")
        return
    for path in paths:
        store.delete(path, missing_ok=True)


# --- cleanup sensor control path (s3fs) ------------------------------------------------------

#: S3 accepts at most this many keys in one ``DeleteObjects`` request.
S3_DELETE_BATCH = 1000
#: Bulk delete requests in flight at once.
S3_DELETE_PARALLELISM = 4


def s3_key(store: Store, path: str) -> str:
    """The bucket key of a store-relative ``path`` (``""`` = the store root)."""
    root = store_root(store)
    path = path.strip("/")
    return f"{root}/{path}" if root and path else (root or path)


def s3_list_objects(store: Store, path: str) -> Iterator[tuple[str, int, datetime]]:
    """(store-relative path, size, last modified) of every object below folder ``path``.

    One flat, paginated ``ListObjectsV2`` over the key prefix: 1 request per
    1000 keys, however deep the folders are. Folder markers are skipped.
    """
    fs = s3fs_filesystem(store)
    root = store_root(store)
    base = s3_key(store, path)
    kwargs: dict[str, Any] = {"Bucket": backend_bucket(store), "Prefix": f"{base}/" if base else ""}
    strip = len(root) + 1 if root else 0
    while True:
        response = fs.call_s3("list_objects_v2", **kwargs)
        for item in response.get("Contents", []):
            key = str(item["Key"])
            if key.endswith("/"):
                continue
            yield key[strip:], int(item.get("Size", 0)), item["LastModified"]
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token


def s3_delete_objects(store: Store, paths: Sequence[str]) -> tuple[int, list[str]]:
    """Delete store-relative ``paths`` with bulk ``DeleteObjects`` (1000 keys per request).

    Up to ``S3_DELETE_PARALLELISM`` requests are in flight at once (a request is
    mostly server time). Returns (number of requests, error messages); absent
    keys are not errors.
    """
    from concurrent.futures import ThreadPoolExecutor

    fs = s3fs_filesystem(store)
    bucket = backend_bucket(store)
    batches = [paths[start : start + S3_DELETE_BATCH] for start in range(0, len(paths), S3_DELETE_BATCH)]

    def delete(batch: Sequence[str]) -> list[str]:
        response = fs.call_s3(
            "delete_objects",
            Bucket=bucket,
            Delete={"Objects": [{"Key": s3_key(store, p)} for p in batch], "Quiet": True},
        )
        return [
            f"{error.get('Key')}: {error.get('Code')} {error.get('Message', '')}".strip()
            for error in response.get("Errors", []) or []
            if error.get("Code") != "NoSuchKey"
        ]

    errors: list[str] = []
    if len(batches) > 1:
        with ThreadPoolExecutor(max_workers=S3_DELETE_PARALLELISM) as pool:
            for batch_errors in pool.map(delete, batches):
                errors.extend(batch_errors)
    elif batches:
        errors.extend(delete(batches[0]))
    if paths:
        fs.invalidate_cache()
    return len(batches), errors


def s3_list_multipart_uploads(store: Store, path: str) -> Iterator[tuple[str, str, datetime]]:
    """(store-relative key, upload id, initiated) of incomplete multipart uploads below ``path``."""
    fs = s3fs_filesystem(store)
    root = store_root(store)
    base = s3_key(store, path)
    strip = len(root) + 1 if root else 0
    kwargs: dict[str, Any] = {"Bucket": backend_bucket(store), "Prefix": f"{base}/" if base else ""}
    while True:
        response = fs.call_s3("list_multipart_uploads", **kwargs)
        for upload in response.get("Uploads", []) or []:
            yield str(upload["Key"])[strip:], str(upload["UploadId"]), upload["Initiated"]
        if not response.get("IsTruncated"):
            return
        kwargs["KeyMarker"] = response.get("NextKeyMarker")
        kwargs["UploadIdMarker"] = response.get("NextUploadIdMarker")


def s3_multipart_upload_parts(store: Store, path: str, upload_id: str) -> tuple[int, datetime | None]:
    """(bytes held by the uploaded parts, time of the newest part) of an incomplete upload.

    ``(0, None)`` when it has no parts (or is gone). Part times show whether a
    writer is still active; some servers (moto) report a fixed ``Initiated``.
    """
    fs = s3fs_filesystem(store)
    kwargs: dict[str, Any] = {"Bucket": backend_bucket(store), "Key": s3_key(store, path), "UploadId": upload_id}
    total = 0
    newest: datetime | None = None
    while True:
        try:
            response = fs.call_s3("list_parts", **kwargs)
        except FileNotFoundError:
            return total, newest
        for part in response.get("Parts", []) or []:
            total += int(part.get("Size", 0))
            modified = part.get("LastModified")
            if modified is not None and (newest is None or modified > newest):
                newest = modified
        if not response.get("IsTruncated"):
            return total, newest
        kwargs["PartNumberMarker"] = response.get("NextPartNumberMarker")


def s3_abort_multipart_upload(store: Store, path: str, upload_id: str) -> None:
    """Abort one multipart upload; an upload that is already gone is fine."""
    fs = s3fs_filesystem(store)
    with contextlib.suppress(FileNotFoundError):
        fs.call_s3(
            "abort_multipart_upload", Bucket=backend_bucket(store), Key=s3_key(store, path), UploadId=upload_id
        )


def s3_list_prefix(store: Store, prefix: str) -> Iterator[tuple[str, int]]:
    """(store-relative path, size) of every object whose store-relative path starts with ``prefix``.

    Like ``s3_list_objects`` but the prefix need not end at a folder, so a load
    of January's daily partitions lists ``<asset>/partition=2024-01-`` only.
    """
    fs = s3fs_filesystem(store)
    root = store_root(store)
    key_prefix = f"{root}/{prefix}" if root else prefix
    kwargs: dict[str, Any] = {"Bucket": backend_bucket(store), "Prefix": key_prefix}
    strip = len(root) + 1 if root else 0
    while True:
        response = fs.call_s3("list_objects_v2", **kwargs)
        for item in response.get("Contents", []):
            key = str(item["Key"])
            if not key.endswith("/"):
                yield key[strip:], int(item.get("Size", 0))
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token
