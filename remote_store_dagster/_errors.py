"""Exceptions raised by the integration."""

from __future__ import annotations

__all__ = ["S3_PERMISSIONS", "RemoteStoreConfigError", "RemoteStoreIOError", "S3RefusedError", "s3_refusal_error"]


class RemoteStoreConfigError(ValueError):
    """Resource or IO manager configuration is invalid; the message names the field."""


class RemoteStoreIOError(RuntimeError):
    """An output could not be stored or an input could not be loaded.

    The message names the asset (and partition) and the cause.
    """


#: The IAM permission each S3 operation the integration sends needs.
S3_PERMISSIONS = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
}

_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_NOT_IMPLEMENTED_CODES = {"NotImplemented", "MethodNotAllowed"}


class S3RefusedError(PermissionError):
    """S3 denied an operation or does not implement it; the message names the operation and permission.

    Callers that know the asset prefix the message with it (``RemoteStoreIOError``).
    """

    def __init__(self, message: str, operation: str, code: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code


def _refusal_code(exc: BaseException) -> str | None:
    """``AccessDenied``/``NotImplemented``/... if ``exc`` (or an exception it chains) is S3 refusing."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code") or "")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _DENIED_CODES or code in _NOT_IMPLEMENTED_CODES:
                return code
            if status in (403, 501):
                return code or str(status)
        if isinstance(current, PermissionError) and not isinstance(current, S3RefusedError):
            return "AccessDenied"
        if isinstance(current, OSError) and current.errno == errno.ENOSYS:
            return "NotImplemented"
        current = current.__cause__ or current.__context__
    return None


def s3_refusal_error(exc: BaseException, operation: str, where: str) -> S3RefusedError | None:
    """An ``S3RefusedError`` naming ``operation`` and its IAM permission, or ``None`` if ``exc`` is another failure."""
    if isinstance(exc, S3RefusedError):
        return exc
    code = _refusal_code(exc)
    if code is None:
        return None
    permission = S3_PERMISSIONS.get(operation, "s3:*")
    if code in _NOT_IMPLEMENTED_CODES or code == "501":
        message = (
            f"S3 does not implement {operation} ({code}) for {where}: this server cannot be used for this "
            f"operation (it needs {permission} on a server that implements it)"
        )
    else:
        message = f"S3 denied {operation} ({code}) for {where}: the credentials need the IAM permission {permission}"
    return S3RefusedError(message, operation, code)
