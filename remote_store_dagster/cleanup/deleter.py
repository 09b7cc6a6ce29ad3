"""The one way out of a tick: every deletion and abort passes the scope guard here, before it is sent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from remote_store_dagster._errors import RemoteStoreIOError
from remote_store_dagster._layout import STAGING_DIR, join

if TYPE_CHECKING:
    from collections.abc import Sequence

    from remote_store_dagster._storage import Storage
    from remote_store_dagster.cleanup.plan import Abort

__all__ = ["Deleter", "Outcome"]


@dataclass
class Outcome:
    """What the deletions of a tick cost and which of them failed."""

    delete_requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    lookups: int = 0  # provenance reads (HeadObject / sidecar GET)


class Deleter:
    """Deletes as paths come in (the storage's bulk deleter), nothing in a dry run.

    ``_guard`` is the only scope check of the cleanup sensor: a path outside
    ``<prefix>/``, or with an empty, ``.`` or ``..`` segment, is a bug in a
    policy, never a reason to delete, and stops the tick before it is sent.
    """

    def __init__(self, storage: Storage, prefix: str, *, dry_run: bool, where: str) -> None:
        self.prefix = prefix
        self.where = where
        self.dry_run = dry_run
        self.storage = storage
        keep = frozenset({prefix, join(prefix, STAGING_DIR)})
        self.bulk = None if dry_run else storage.bulk_deleter(keep)
        self.outcome = Outcome()
        self.started = time.perf_counter()

    def _guard(self, path: str) -> None:
        segments = path.split("/")
        if (self.prefix and not path.startswith(self.prefix + "/")) or any(s in ("", ".", "..") for s in segments):
            raise RemoteStoreIOError(f"{self.where}: refusing to delete outside {self.prefix!r}: {[path]}")

    def add(self, path: str) -> None:
        """Delete ``path`` (sent with the next full batch, or at ``close``)."""
        self._guard(path)
        if self.bulk is not None:
            self.bulk.add(path)

    def discard_unsent(self) -> None:
        """Forget deletions not yet sent (the tick is failing): ``close`` then only waits."""
        if self.bulk is not None:
            self.bulk.discard_unsent()

    def abort_uploads(self, aborts: Sequence[Abort]) -> None:
        """Abort incomplete multipart uploads; failures are collected like failed deletions."""
        for abort in aborts:
            self._guard(abort.upload.path)
        if self.dry_run:
            return
        for abort in aborts:
            try:
                self.storage.abort_upload(abort.upload.path, abort.upload.upload_id)
            except Exception as exc:
                self.outcome.errors.append(f"abort {abort.upload.path} ({abort.upload.upload_id}): {exc}")

    def close(self) -> Outcome:
        """Send what is left and wait for every request."""
        outcome = self.outcome
        if self.bulk is not None:
            requests, errors = self.bulk.close()
            outcome.delete_requests += requests
            outcome.errors.extend(errors)
        outcome.seconds = time.perf_counter() - self.started
        return outcome
