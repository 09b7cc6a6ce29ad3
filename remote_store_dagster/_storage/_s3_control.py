"""The S3 control path: listing, bulk deletes, metadata and multipart uploads through s3fs's client.

Every call here is one S3 API request (or a paging loop of them) on the s3fs
client of the hybrid backend, with store-relative paths mapped onto bucket keys.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

    import s3fs

#: S3 accepts at most this many keys in one ``DeleteObjects`` request.
DELETE_BATCH = 1000
#: Bulk delete requests in flight at once.
DELETE_PARALLELISM = 4
#: Bulk delete requests a pipelined deleter lets queue up before ``add`` blocks.
DELETE_QUEUE = 2 * DELETE_PARALLELISM
#: ``HeadObject`` requests in flight at once when the cleanup sensor reads provenance.
HEAD_PARALLELISM = 16


class S3Control:
    """The s3fs client of one store, with its bucket and root: store paths in, S3 requests out."""

    def __init__(self, fs: s3fs.S3FileSystem, bucket: str, root: str) -> None:
        self.fs = fs
        self.bucket = bucket
        self.root = root.strip("/")

    def upload_client(self) -> s3fs.S3FileSystem:
        """The s3fs client, connected, with no ``Expect: 100-continue`` on uploads.

        botocore asks for ``100-continue`` on every PutObject/UploadPart with a file-like
        body, and aiohttp then waits for the server's interim answer before sending the
        body: one extra round trip per part (10-30 ms on a cloud link). Our bodies are
        small enough (<= one part) that a refused request costs less than that wait.
        """
        self.fs.connect()
        client = self.fs.s3
        if not getattr(client, "_rsd_no_expect_continue", False):
            client.meta.events.register("before-sign.s3.PutObject", _drop_expect_continue)
            client.meta.events.register("before-sign.s3.UploadPart", _drop_expect_continue)
            client._rsd_no_expect_continue = True
        return self.fs

    def key(self, path: str) -> str:
        """The bucket key of a store-relative ``path`` (``""`` = the store root)."""
        path = path.strip("/")
        return f"{self.root}/{path}" if self.root and path else (self.root or path)

    def _relative(self, key: str) -> str:
        return key[len(self.root) + 1 :] if self.root else key

    def call(self, operation: str, **kwargs: Any) -> Any:
        return self.fs.call_s3(operation, Bucket=self.bucket, **kwargs)

    def list_keys(self, prefix: str, *, start_after: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(store-relative path, size, last modified) of every object whose path starts with ``prefix``.

        One flat, paginated ``ListObjectsV2``: 1 request per 1000 keys however deep
        the folders are, in key order. ``prefix`` need not end at a folder. Folder
        markers are skipped. ``start_after``: only paths after this one (``StartAfter``).
        """
        kwargs: dict[str, Any] = {"Prefix": f"{self.root}/{prefix}" if self.root else prefix}
        if start_after:
            kwargs["StartAfter"] = self.key(start_after)
        while True:
            response = self.call("list_objects_v2", **kwargs)
            for item in response.get("Contents", []):
                key = str(item["Key"])
                if not key.endswith("/"):
                    yield self._relative(key), int(item.get("Size", 0)), item["LastModified"]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def head_metadata(self, path: str) -> dict[str, str] | None:
        """The S3 user metadata of one object (``HeadObject``), ``None`` if the object is gone."""
        try:
            response = self.call("head_object", Key=self.key(path))
        except FileNotFoundError:
            return None
        return {str(k): str(v) for k, v in (response.get("Metadata") or {}).items()}

    def delete_batch(self, paths: Sequence[str]) -> list[str]:
        """One ``DeleteObjects`` (at most ``DELETE_BATCH`` paths); error texts, absent keys excluded."""
        response = self.call("delete_objects", Delete={"Objects": [{"Key": self.key(p)} for p in paths], "Quiet": True})
        return [
            f"{error.get('Key')}: {error.get('Code')} {error.get('Message', '')}".strip()
            for error in response.get("Errors", []) or []
            if error.get("Code") != "NoSuchKey"
        ]

    def multipart_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime]]:
        """(store-relative key, upload id, initiated) of incomplete multipart uploads below folder ``prefix``."""
        base = self.key(prefix)
        kwargs: dict[str, Any] = {"Prefix": f"{base}/" if base else ""}
        while True:
            response = self.call("list_multipart_uploads", **kwargs)
            for upload in response.get("Uploads", []) or []:
                yield self._relative(str(upload["Key"])), str(upload["UploadId"]), upload["Initiated"]
            if not response.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = response.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = response.get("NextUploadIdMarker")

    def upload_parts(self, path: str, upload_id: str) -> tuple[int, datetime | None]:
        """(bytes held by the uploaded parts, time of the newest part) of an incomplete upload.

        ``(0, None)`` when it has no parts (or is gone). Part times show whether a
        writer is still active; some servers (moto) report a fixed ``Initiated``.
        """
        kwargs: dict[str, Any] = {"Key": self.key(path), "UploadId": upload_id}
        total = 0
        newest: datetime | None = None
        while True:
            try:
                response = self.call("list_parts", **kwargs)
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

    def abort(self, path: str, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.call("abort_multipart_upload", Key=self.key(path), UploadId=upload_id)


class S3BulkDeleter:
    """Deletes store-relative paths with bulk ``DeleteObjects`` while the caller is still adding.

    Every 1000 added paths become one request on a small thread pool (at most
    ``DELETE_PARALLELISM`` in flight); ``add`` blocks when ``DELETE_QUEUE``
    requests are pending, so memory stays bounded however many keys a listing
    yields. ``close`` sends the rest and waits; errors (absent keys are none) are
    collected, never raised mid-way, so the caller decides what a failure means.
    """

    parallelism = DELETE_PARALLELISM

    def __init__(self, control: S3Control) -> None:
        self._control = control
        self._pool = ThreadPoolExecutor(max_workers=DELETE_PARALLELISM, thread_name_prefix="rsd-delete")
        self._slots = threading.BoundedSemaphore(DELETE_QUEUE)
        self._batch: list[str] = []
        self._futures: list[Future[list[str]]] = []
        self.requests = 0

    def add(self, path: str) -> None:
        self._batch.append(path)
        if len(self._batch) >= DELETE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._slots.acquire()
        self.requests += 1

        def run() -> list[str]:
            try:
                return self._control.delete_batch(batch)
            except Exception as exc:  # reported with the others; the caller decides
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
        errors: list[str] = []
        for future in self._futures:
            errors.extend(future.result())
        self._pool.shutdown(wait=True)
        if self.requests:
            self._control.fs.invalidate_cache()
        return self.requests, errors


def _drop_expect_continue(request: Any, **kwargs: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]
