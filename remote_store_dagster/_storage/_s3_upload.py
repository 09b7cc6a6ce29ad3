"""Our own S3 upload for the s3-pyarrow data path, driven through the s3fs control-path client.

Owned by ``_storage._s3`` (it is the only caller that hands it an s3fs
client). Why not PyArrow's ``S3FileSystem.open_output_stream``:

* it cannot set S3 user metadata: Arrow's ``ObjectMetadataSetter`` passes only
  ACL, Cache-Control, Content-Type, Content-Language and Expires and silently
  drops ``x-amz-meta-*``, so provenance could not ride on the object;
* it does not tell us its upload id, and closing it after an error *completes*
  the upload, so making a failed write harmless needed ``ListMultipartUploads``
  (not implemented on s3rver, often not granted by IAM) and a quarantine of
  streams that could not be aborted.

Here we create the upload, so we know its id, and only this module's clean exit
ever sends ``CompleteMultipartUpload``. Parquet encoding (the producer, in the
caller's thread) overlaps with the upload: filled parts go to a small pool of
uploader threads, and the producer blocks while ``PARTS_IN_FLIGHT`` parts are
queued or uploading, so memory stays bounded by ``PARTS_IN_FLIGHT + 1`` parts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from remote_store_dagster._errors import s3_refusal_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Outputs up to this size are sent with one PutObject (atomic, 1 request).
SMALL_OBJECT_BYTES = 8 * MiB
#: Size of the first 1000 parts; it doubles every 1000 parts (S3: at most 10,000 parts of 5 MiB..5 GiB),
#: so one object can reach ~8 TiB, above S3's 5 TiB object limit (PyArrow's fixed 10 MiB parts stop at ~97.7 GiB).
PART_BYTES = 8 * MiB
PARTS_PER_SIZE_STEP = 1000
MAX_PART_BYTES = 5 * 1024 * MiB
MAX_PARTS = 10_000
#: Parts uploading at once. On a cloud link one connection carries ~100 MB/s and each request waits
#: a round trip, so throughput comes from several parts in flight; 4 x 8 MiB holds the same memory
#: as the 2 x 16 MiB this replaced (loopback SeaweedFS: 2 threads 121 MiB/s, 4 threads 112).
PARTS_IN_FLIGHT = 4
#: Each attempt already includes botocore's and s3fs's own retries; two bound a dead server's wait.
ABORT_ATTEMPTS = 2


#: Endpoints that refused checksum parameters (this process sends them no more).
_CHECKSUMS_REJECTED: set[str] = set()
_CHECKSUM_REFUSALS = {"InvalidRequest", "InvalidArgument", "NotImplemented", "XAmzContentChecksumMismatch"}


def _checksums_accepted(endpoint: str) -> bool:
    return endpoint not in _CHECKSUMS_REJECTED


def _crc32c(body: io.BytesIO) -> str:
    """S3's ``x-amz-checksum-crc32c`` of a part's bytes (awscrt reads the buffer in place, at memory speed)."""
    import base64

    from awscrt import checksums

    with body.getbuffer() as view:
        value = checksums.crc32c(view)
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def _rejects_checksums(exc: BaseException | None) -> bool:
    """The server refused a request because of its checksum parameters (not because the bytes differed).

    s3fs raises ``OSError`` from botocore's ``ClientError``: the S3 error code is on the cause.
    """
    while exc is not None:
        response = getattr(exc, "response", None)
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
        if code in _CHECKSUM_REFUSALS and "checksum" in message.lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def part_size(part_number: int) -> int:
    """Size of part ``part_number`` (1-based): 16 MiB, doubling every 1000 parts, at most 5 GiB."""
    return int(min(PART_BYTES * 2 ** ((part_number - 1) // PARTS_PER_SIZE_STEP), MAX_PART_BYTES))


class S3Upload(io.RawIOBase):
    """A write-only sink whose bytes appear at ``bucket/key`` only when ``publish()`` succeeds.

    ``metadata`` becomes the object's S3 user metadata on either path (PutObject or
    CreateMultipartUpload). After any failure call ``discard()``: it aborts the
    multipart upload (if one was started) and nothing is ever completed.
    ``on_write(nbytes)`` is called for every write (progress reporting).
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        metadata: Mapping[str, str],
        *,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._metadata = dict(metadata)
        self._on_write = on_write
        # Which server the checksum support learnt below applies to.
        self._endpoint = str(getattr(s3, "endpoint_url", None) or "aws") + "/" + bucket
        self._buffer = io.BytesIO()
        self._written = 0
        self._upload_id: str | None = None
        self._parts: list[tuple[int, Future[dict[str, str]]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
        self._failure: BaseException | None = None
        self._finished = False

    # --------------------------------------------------------------- io.RawIOBase

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        if self._finished:
            raise ValueError("I/O operation on closed file")
        self._buffer.write(view)
        self._written += size
        if self._buffer.tell() >= part_size(len(self._parts) + 1):
            self._send_buffer()
        if self._on_write is not None:
            self._on_write(size)
        return size

    def tell(self) -> int:
        return self._written

    # --------------------------------------------------------------- protocol

    @property
    def upload_id(self) -> str | None:
        """The multipart upload's id (``None`` while the output is small enough for one PutObject)."""
        return self._upload_id

    def publish(self) -> None:
        """Make the object visible: one PutObject, or the last part and CompleteMultipartUpload."""
        if self._finished:
            raise ValueError("I/O operation on closed file")
        self._finished = True
        if self._upload_id is None and self._buffer.tell() <= SMALL_OBJECT_BYTES:
            self._buffer.seek(0)
            self._checked("PutObject", "put_object", self._buffer, Metadata=self._metadata)
            self._buffer = io.BytesIO()
            return
        if self._buffer.tell() or not self._parts:
            self._send_buffer()
        parts = [{"PartNumber": number, **future.result()} for number, future in self._parts]
        self._shutdown_pool()
        self._call(
            "CompleteMultipartUpload",
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )

    def discard(self) -> None:
        """Abandon the write: wait for in-flight parts to stop, then abort the upload (bounded retries).

        If every abort attempt fails, the upload stays incomplete (readers never see it)
        and the cleanup sensor aborts it later: nothing here can complete it.
        """
        self._finished = True
        self._buffer = io.BytesIO()
        for _, future in self._parts:
            future.cancel()
        self._shutdown_pool()
        if self._upload_id is None:
            return
        for attempt in range(ABORT_ATTEMPTS):
            try:
                self._s3.call_s3("abort_multipart_upload", Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
                return
            except FileNotFoundError:
                return  # already gone (aborted or completed by a retry): nothing to reclaim
            except Exception as exc:
                log.warning("abort of multipart upload for %s failed (attempt %d): %s", self._key, attempt + 1, exc)
            if attempt + 1 < ABORT_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
        log.warning(
            "multipart upload %s for %s was left incomplete; the cleanup sensor will abort it",
            self._upload_id,
            self._key,
        )

    # --------------------------------------------------------------- internals

    def _checked(self, operation: str, method: str, body: io.BytesIO | None = None, **kwargs: Any) -> Any:
        """``_call`` with a CRC32C of ``body`` (or, to create an upload, the algorithm) where the server takes it.

        The server recomputes the checksum of what it received and refuses a mismatch
        (``BadDigest``), so a byte changed in transit never becomes part of the object.
        A server that rejects checksum parameters is remembered, and the request is sent
        again without them.
        """
        extra: dict[str, Any] = {}
        if _checksums_accepted(self._endpoint):
            if body is not None:
                extra["ChecksumCRC32C"] = _crc32c(body)
            elif operation == "CreateMultipartUpload":
                extra["ChecksumAlgorithm"] = "CRC32C"
        if body is not None:
            kwargs["Body"] = body
        try:
            return self._call(operation, method, **kwargs, **extra)
        except Exception as exc:
            if not extra or not _rejects_checksums(exc):
                raise
        _CHECKSUMS_REJECTED.add(self._endpoint)
        log.warning("%s rejects S3 checksum parameters; uploads there go without them", self._endpoint)
        if body is not None:
            body.seek(0)
        return self._call(operation, method, **kwargs)

    def _call(self, operation: str, method: str, **kwargs: Any) -> Any:
        try:
            return self._s3.call_s3(method, Bucket=self._bucket, Key=self._key, **kwargs)
        except Exception as exc:
            refusal = s3_refusal_error(exc, operation, f"s3://{self._bucket}/{self._key}")
            if refusal is not None:
                raise refusal from exc
            raise

    def _send_buffer(self) -> None:
        """Hand the buffered bytes to an uploader thread as one part (blocks while the pool is full)."""
        if self._upload_id is None:
            response = self._checked("CreateMultipartUpload", "create_multipart_upload", Metadata=self._metadata)
            self._upload_id = str(response["UploadId"])
            self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="rsd-upload")
        if self._buffer.tell() > MAX_PART_BYTES:  # one huge write: split, every part stays >= 2.5 GiB
            data = self._buffer.getvalue()
            self._buffer = io.BytesIO()
            start = 0
            while len(data) - start > MAX_PART_BYTES:
                self._submit(io.BytesIO(data[start : start + MAX_PART_BYTES // 2]))
                start += MAX_PART_BYTES // 2
            self._submit(io.BytesIO(data[start:]))
            return
        # Hand the buffer over without a copy. A file-like body is also what botocore streams
        # without copying (measured: a bytes body costs one extra copy per part, a bytearray 2.7).
        body, self._buffer = self._buffer, io.BytesIO()
        self._submit(body)

    def _submit(self, body: io.BytesIO) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"s3://{self._bucket}/{self._key}: more than {MAX_PARTS} parts; the object is too large")
        self._slots.acquire()  # back-pressure: blocks while PARTS_IN_FLIGHT parts are uploading
        if self._failure is not None:  # fail fast, in the producer's thread
            self._slots.release()
            raise self._failure
        assert self._pool is not None
        future = self._pool.submit(self._upload_part, number, body)
        future.add_done_callback(self._part_done)
        self._parts.append((number, future))

    def _upload_part(self, number: int, body: io.BytesIO) -> dict[str, str]:
        """Send one part; what CompleteMultipartUpload must list of it (ETag, checksum if sent)."""
        body.seek(0)
        response = self._checked("UploadPart", "upload_part", body, UploadId=self._upload_id, PartNumber=number)
        done = {"ETag": str(response["ETag"])}
        if response.get("ChecksumCRC32C"):
            done["ChecksumCRC32C"] = str(response["ChecksumCRC32C"])
        return done

    def _part_done(self, future: Future[dict[str, str]]) -> None:
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()
        self._slots.release()

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@contextlib.contextmanager
def guarded(upload: S3Upload) -> Any:
    """``publish()`` on clean exit, ``discard()`` (abort) on any exception, then re-raise."""
    try:
        yield upload
    except BaseException:
        upload.discard()
        raise
    try:
        upload.publish()
    except BaseException:
        upload.discard()
        raise
