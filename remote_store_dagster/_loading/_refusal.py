"""S3 refusing a load (a bucket or IAM policy, a server without the operation), named.

A refused HEAD, GET or listing would otherwise surface as PyArrow's bare
``OSError: ... AWS Error ACCESS_DENIED during HeadObject operation`` or s3fs'
``PermissionError: Access Denied``. ``named_refusals`` turns either into a
``RemoteStoreIOError`` that names the asset and partition, the S3 operation and
the IAM permission it needs (``_errors.s3_refusal_error`` words it).
"""

from __future__ import annotations

import contextlib
import errno
import re
from typing import TYPE_CHECKING

import pyarrow as pa

from remote_store_dagster._errors import RemoteStoreIOError, S3RefusedError, s3_refusal_error

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["guarded_stream", "named_refusals", "refusal"]

#: PyArrow's S3 errors carry no status or code attribute, only this text; it names the
#: operation PyArrow sent (a read may send a HeadObject, a GetObject or both).
_PYARROW_REFUSAL = re.compile(
    r"AWS Error (?:(?P<denied>ACCESS_DENIED|\[code 403\])|(?P<missing>NOT_IMPLEMENTED|\[code 501\]))"
    r".*? during (?P<operation>\w+) operation"
)


def refusal(exc: BaseException, operation: str, where: str) -> S3RefusedError | None:
    """``exc`` as S3 refusing ``operation`` on ``where`` (``None``: it is another failure).

    ``operation`` is what the caller sent; PyArrow's message, when it names one, wins.
    """
    match = _PYARROW_REFUSAL.search(str(exc)) if isinstance(exc, OSError) else None
    if match is not None:
        operation = match["operation"]
        exc = PermissionError(str(exc)) if match["denied"] else OSError(errno.ENOSYS, str(exc))
    return s3_refusal_error(exc, operation, where)


@contextlib.contextmanager
def named_refusals(label: str, operation: str, where: str) -> Iterator[None]:
    """Inside, S3 refusing a request raises a ``RemoteStoreIOError`` that starts with ``label``."""
    try:
        yield
    except RemoteStoreIOError:
        raise
    except Exception as exc:
        refused = refusal(exc, operation, where)
        if refused is None:
            raise
        raise RemoteStoreIOError(f"{label}: {refused}") from exc


def guarded_stream(reader: pa.RecordBatchReader, label: str, where: str) -> pa.RecordBatchReader:
    """``reader``, with a failure while the consumer reads it named: a refusal as ``named_refusals`` does,
    a damaged object (a page checksum that does not match, a truncated file) as ``cannot load``."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            with named_refusals(label, "GetObject", where):
                yield from reader
        except (OSError, pa.ArrowException) as exc:
            raise RemoteStoreIOError(f"{label}: cannot load {where}: {exc}") from exc

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
