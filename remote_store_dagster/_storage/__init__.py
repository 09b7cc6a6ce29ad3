"""The storage seam: everything the integration asks of a store, in one interface.

Two implementations answer it:

* ``S3PyArrowStorage`` (remote-store's ``s3-pyarrow`` backend): PyArrow's C++ S3
  filesystem reads, our own multipart upload publishes, s3fs lists, deletes in bulk
  and carries provenance as S3 user metadata.
* ``StoreApiStorage`` (every other backend): the ``Store`` API, a PyArrow view of
  the store for reads, staged writes moved into place, provenance in sidecars.

``storage_for`` is the one place that asks which backend a store runs on; the IO
manager, the loaders and the cleanup sensor only talk to ``Storage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remote_store_dagster import _remote_store_adapter as adapter
from remote_store_dagster._storage._base import (
    BulkDeleter,
    Located,
    ObjectInfo,
    PendingUpload,
    ProvenanceSource,
    Storage,
)

if TYPE_CHECKING:
    from remote_store import Store

__all__ = [
    "BulkDeleter",
    "Located",
    "ObjectInfo",
    "PendingUpload",
    "ProvenanceSource",
    "Storage",
    "storage_for",
]


def storage_for(store: Store) -> Storage:
    """The ``Storage`` that reaches ``store``'s objects by the fastest path its backend offers."""
    kind = adapter.backend_kind(store)
    if kind == adapter.S3_PYARROW:
        from remote_store_dagster._storage._s3 import S3PyArrowStorage

        return S3PyArrowStorage(store)
    from remote_store_dagster._storage import _store_api

    if kind == "local":
        return _store_api.local_storage(store)
    if kind == "s3":
        return _store_api.plain_s3_storage(store)
    return _store_api.generic_storage(store, kind)
