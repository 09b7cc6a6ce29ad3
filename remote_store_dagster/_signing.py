"""Signed pickles: an HMAC-SHA256 in front of each pickle, checked before anything is unpickled.

Unpickling runs code, so whoever can write to the bucket could otherwise run code
in every step that loads a pickle. With ``pickle_signing_key`` set, the IO manager
writes ``MAGIC + HMAC-SHA256(key, pickle) + pickle`` and refuses to unpickle
anything whose signature is missing or wrong. The signature lives in the object
itself (not in S3 metadata, which the same writer could forge along with the
data), so it costs no request and works on every backend.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["MAGIC", "SignatureError", "sign", "unwrap"]

MAGIC = b"RSD-PICKLE-HMAC-SHA256\n"
_DIGEST_BYTES = hashlib.sha256().digest_size


class SignatureError(ValueError):
    """A pickle's signature is missing or does not match the key."""


def sign(payload: bytes, key: str) -> bytes:
    """The header to write before ``payload``: magic and HMAC-SHA256 of it under ``key``."""
    return MAGIC + hmac.new(key.encode(), payload, hashlib.sha256).digest()


def unwrap(data: bytes, key: str | None) -> bytes:
    """The pickle inside ``data``, verified when ``key`` is set.

    With a key: raises ``SignatureError`` when the signature is missing or wrong.
    Without one: signed and unsigned pickles both load (a signed one unverified).
    """
    signed = data.startswith(MAGIC)
    if key is None:
        return data[len(MAGIC) + _DIGEST_BYTES :] if signed else data
    if not signed:
        raise SignatureError("the stored pickle is not signed, and pickle_signing_key is set")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST_BYTES]
    payload = data[len(MAGIC) + _DIGEST_BYTES :]
    expected = hmac.new(key.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(digest, expected):
        raise SignatureError(
            "the stored pickle's signature does not match pickle_signing_key (tampered, or signed with another key)"
        )
    return payload
