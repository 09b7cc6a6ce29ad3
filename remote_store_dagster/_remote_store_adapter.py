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
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import datetime

    import pyarrow.fs as pafs
    import s3fs
    from remote_store import Backend, Registry, Store

    from remote_store_dagster._s3_upload import S3Upload

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


def s3_upload(
    store: Store, path: str, metadata: Mapping[str, str], on_write: Callable[[int], None] | None = None
) -> S3Upload:
    """An upload of store-relative ``path`` driven by us through the s3fs client (see ``_s3_upload``).

    PyArrow's output stream cannot set S3 user metadata and hides its upload id; we need both.
    """
    from remote_store_dagster._s3_upload import S3Upload

    return S3Upload(s3fs_filesystem(store), backend_bucket(store), s3_key(store, path), metadata, on_write=on_write)


def warm_up(store: Store) -> None:
    """Build the s3fs/botocore client now (imports, credentials, endpoint): ~0.8 s a process pays once.

    Called from resource setup so that the first output of a run does not pay it. No request is sent.
    ``pyarrow.dataset`` (multi-partition loads, ``pl.LazyFrame``) alone takes 0.2-0.3 s to import.
    """
    if is_s3_pyarrow(store):
        import pyarrow.dataset
        import pyarrow.parquet  # noqa: F401

        s3fs_filesystem(store).connect()


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


def step_run_code_location(context: Any) -> str | None:
    """The code location of the run an output context belongs to (``None`` if unknown).

    ``OutputContext.step_context`` raises for contexts built outside a run (unit tests).
    """
    from remote_store_dagster._provenance import run_code_location

    try:
        return run_code_location(context.step_context.dagster_run)
    except Exception:
        return None


def is_step_retry(context: Any) -> bool:
    """True if this output's step ran before in this run (``True`` when the context cannot tell)."""
    try:
        return bool(context.step_context.previous_attempt_count > 0)
    except Exception:
        return True


def latest_recorded_output(context: Any, partition_key: str | None) -> tuple[str, str] | None:
    """(``remote_store/store``, ``remote_store/path``) of the latest recorded materialization of an asset output.

    The metadata of the asset (partition)'s latest materialization in the Dagster
    instance: one indexed event-log query. ``None`` whenever the instance cannot tell
    (no record, wiped, contexts built outside a run).
    """
    try:
        step_context = context.step_context
        from dagster import AssetRecordsFilter

        records_filter = AssetRecordsFilter(
            asset_key=context.asset_key, asset_partitions=[partition_key] if partition_key is not None else None
        )
        records = step_context.instance.fetch_materializations(records_filter, limit=1).records
    except Exception:
        return None
    if not records:
        return None
    materialization = records[0].asset_materialization
    if materialization is None:
        return None
    metadata = materialization.metadata
    store, path = metadata.get("remote_store/store"), metadata.get("remote_store/path")
    if store is None or path is None:
        return None
    return str(getattr(store, "value", store)), str(getattr(path, "value", path))


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
            # AWS denies DeleteObjects per key (200 with AccessDenied entries): say so, so that
            # _errors.s3_refusal_error names the missing permission.
            denied = any(" AccessDenied" in error for error in errors)
            raise (PermissionError if denied else OSError)(f"could not delete {'; '.join(errors)}")
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
    path = path.strip("/")
    yield from _s3_list(store, f"{path}/" if path else "")


def s3_delete_objects(store: Store, paths: Sequence[str]) -> tuple[int, list[str]]:
    """Delete store-relative ``paths`` with bulk ``DeleteObjects`` (1000 keys per request).

    Up to ``S3_DELETE_PARALLELISM`` requests are in flight at once (a request is
    mostly server time). Returns (number of requests, error messages); absent
    keys are not errors.
    """
    from concurrent.futures import ThreadPoolExecutor

    batches = [paths[start : start + S3_DELETE_BATCH] for start in range(0, len(paths), S3_DELETE_BATCH)]

    def delete(batch: Sequence[str]) -> list[str]:
        return _s3_delete_batch(store, batch)

    errors: list[str] = []
    if len(batches) > 1:
        with ThreadPoolExecutor(max_workers=S3_DELETE_PARALLELISM) as pool:
            for batch_errors in pool.map(delete, batches):
                errors.extend(batch_errors)
    elif batches:
        errors.extend(delete(batches[0]))
    if paths:
        s3fs_filesystem(store).invalidate_cache()
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
        fs.call_s3("abort_multipart_upload", Bucket=backend_bucket(store), Key=s3_key(store, path), UploadId=upload_id)


#: ``HeadObject`` requests in flight at once when the cleanup sensor reads provenance.
S3_HEAD_PARALLELISM = 16
#: Bulk delete requests a pipelined deleter lets queue up before ``add`` blocks.
S3_DELETE_QUEUE = 2 * S3_DELETE_PARALLELISM


def s3_object_metadata(store: Store, path: str) -> dict[str, str] | None:
    """The S3 user metadata of one object (``HeadObject``), ``None`` if the object is gone.

    Keys come back without ``x-amz-meta-``; this is where the IO manager's
    provenance lives (``_provenance.Provenance.from_metadata``).
    """
    fs = s3fs_filesystem(store)
    try:
        response = fs.call_s3("head_object", Bucket=backend_bucket(store), Key=s3_key(store, path))
    except FileNotFoundError:
        return None
    return {str(k): str(v) for k, v in (response.get("Metadata") or {}).items()}


class S3BulkDeleter:
    """Deletes store-relative paths with bulk ``DeleteObjects`` while the caller is still adding.

    Every 1000 added paths become one request on a small thread pool (at most
    ``S3_DELETE_PARALLELISM`` in flight); ``add`` blocks when ``S3_DELETE_QUEUE``
    requests are pending, so memory stays bounded however many keys a listing
    yields. ``close`` sends the rest and waits; errors (absent keys are none) are
    collected, never raised mid-way, so the caller decides what a failure means.
    """

    def __init__(self, store: Store) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=S3_DELETE_PARALLELISM)
        self._slots = threading.BoundedSemaphore(S3_DELETE_QUEUE)
        self._batch: list[str] = []
        self._futures: list[Any] = []
        self.requests = 0
        self.errors: list[str] = []

    def add(self, path: str) -> None:
        self._batch.append(path)
        if len(self._batch) >= S3_DELETE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._slots.acquire()
        self.requests += 1

        def run() -> list[str]:
            try:
                return _s3_delete_batch(self._store, batch)
            except Exception as exc:  # reported with the others; the tick decides
                return [f"DeleteObjects of {len(batch)} keys (first {batch[0]}): {exc}"]
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(run))

    def discard_unsent(self) -> None:
        """Drop the batch not yet sent; requests already in flight still finish."""
        self._batch = []

    def close(self) -> tuple[int, list[str]]:
        """Send what is left, wait for every request; (requests, errors)."""
        self._flush()
        for future in self._futures:
            self.errors.extend(future.result())
        self._pool.shutdown(wait=True)
        if self.requests:
            s3fs_filesystem(self._store).invalidate_cache()
        return self.requests, self.errors


def _s3_delete_batch(store: Store, batch: Sequence[str]) -> list[str]:
    response = s3fs_filesystem(store).call_s3(
        "delete_objects",
        Bucket=backend_bucket(store),
        Delete={"Objects": [{"Key": s3_key(store, p)} for p in batch], "Quiet": True},
    )
    return [
        f"{error.get('Key')}: {error.get('Code')} {error.get('Message', '')}".strip()
        for error in response.get("Errors", []) or []
        if error.get("Code") != "NoSuchKey"
    ]


def s3_list_prefix(store: Store, prefix: str) -> Iterator[tuple[str, int]]:
    """(store-relative path, size) of every object whose store-relative path starts with ``prefix``.

    Like ``s3_list_objects`` but the prefix need not end at a folder, so a load
    of January's daily partitions lists ``<asset>/partition=2024-01-`` only.
    """
    for path, size, _ in _s3_list(store, prefix):
        yield path, size


def _s3_list(store: Store, prefix: str) -> Iterator[tuple[str, int, datetime]]:
    """The paging loop of both listings: store-relative ``prefix`` as a raw key prefix."""
    fs = s3fs_filesystem(store)
    root = store_root(store)
    kwargs: dict[str, Any] = {"Bucket": backend_bucket(store), "Prefix": f"{root}/{prefix}" if root else prefix}
    strip = len(root) + 1 if root else 0
    while True:
        response = fs.call_s3("list_objects_v2", **kwargs)
        for item in response.get("Contents", []):
            key = str(item["Key"])
            if not key.endswith("/"):
                yield key[strip:], int(item.get("Size", 0)), item["LastModified"]
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token
