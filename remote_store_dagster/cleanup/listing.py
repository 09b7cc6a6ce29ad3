"""What a tick lists: only the folders its policies look at, page by page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from remote_store_dagster._layout import STAGING_DIR, asset_folder, join
from remote_store_dagster.cleanup.plan import AssetPath, StoredObject, Upload, Wipe, utc

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import datetime
    from logging import Logger

    from remote_store_dagster._storage import Storage

__all__ = ["iter_objects", "pending_uploads", "scopes"]


def scopes(prefix: str, delete_orphans: bool, wipes: Sequence[Wipe], keep_last: Mapping[AssetPath, int]) -> list[str]:
    """The folders this tick must list: only what its policies look at.

    Orphans need everything below the prefix. Otherwise: ``_staging`` (leftovers),
    the folders of assets wiped since the cursor and of ``keep_last_partitions``
    assets, so a steady-state tick costs requests in proportion to in-flight
    writes and new wipes, not to the number of stored objects.
    """
    if delete_orphans:
        return [prefix]
    wanted = {join(prefix, STAGING_DIR)}
    wanted.update(asset_folder(prefix, wipe.asset) for wipe in wipes)
    wanted.update(asset_folder(prefix, asset) for asset in keep_last)
    found: list[str] = []
    for scope in sorted(wanted):  # a parent sorts before its children: list it once
        if not any(scope.startswith(kept + "/") for kept in found):
            found.append(scope)
    return found


def iter_objects(storage: Storage, scope: str, now: datetime) -> Iterator[StoredObject]:
    """Every object below folder ``scope``, page by page (the caller acts before the next page)."""
    for info in storage.list_objects(scope):
        # Unknown time: never old enough to delete by age.
        modified = utc(info.modified) if info.modified is not None else now
        yield StoredObject(info.path, info.size, modified)


def pending_uploads(storage: Storage, prefix: str, log: Logger, where: str) -> list[Upload]:
    """Incomplete multipart uploads below the prefix; none (and a warning) where they cannot be listed."""
    try:
        pending = list(storage.pending_uploads(prefix))
    except Exception as exc:
        # Servers without ListMultipartUploads (s3rver) and IAM policies without
        # s3:ListBucketMultipartUploads: clean objects anyway, say what is not seen.
        log.warning(
            f"{where}: cannot list incomplete multipart uploads (needs s3:ListBucketMultipartUploads; "
            f"abort them with a bucket lifecycle rule instead): {exc}"
        )
        return []
    return [
        Upload(u.path, u.upload_id, utc(u.initiated), u.size, utc(u.last_part) if u.last_part else None)
        for u in pending
    ]
