"""One evaluation of the cleanup sensor: list, decide, delete, report, move the cursor.

The steps live in the sibling modules (``catalog`` reads Dagster, ``listing``
walks the store, ``plan`` and ``ownership`` decide, ``deleter`` deletes,
``report`` tells); this module only puts them in order.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dagster import AssetObservation, SensorResult

from remote_store_dagster._errors import RemoteStoreConfigError, RemoteStoreIOError
from remote_store_dagster._storage import ObjectInfo, Storage, storage_for
from remote_store_dagster.cleanup import listing, report
from remote_store_dagster.cleanup import plan as plan_mod
from remote_store_dagster.cleanup.catalog import Catalog, WipeCursor, next_cursor, retention_sort_key
from remote_store_dagster.cleanup.deleter import Deleter
from remote_store_dagster.cleanup.ownership import ProvenanceReader, decide_orphans, decide_wipes
from remote_store_dagster.cleanup.plan import Located, Plan, Policy
from remote_store_dagster.resources import StoreResource

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dagster import SensorEvaluationContext

    from remote_store_dagster.cleanup.config import CleanupConfig

__all__ = ["RESOURCE_KEY", "Tick"]

RESOURCE_KEY = "remote_store"


class Tick:
    """One sensor evaluation; ``run`` is the whole of it."""

    def __init__(self, config: CleanupConfig, context: SensorEvaluationContext, resource: object) -> None:
        self.config = config
        self.context = context
        self.resource = resource
        self.where = config.where
        self.catalog = Catalog(config, context)
        self._sent = 0  # deletions of the plan already handed to the deleter

    def run(self) -> SensorResult:
        config, catalog = self.config, self.catalog
        storage = self._storage()
        defined = catalog.defined_assets()
        keep_last = catalog.keep_last(defined)
        cursor = catalog.cursor()
        wipes, high = catalog.wipes(cursor) if config.delete_wiped else ([], cursor.after)
        now = datetime.now(UTC)
        plan = Plan()
        deleter = Deleter(storage, config.prefix, dry_run=config.dry_run, where=self.where)
        reader: ProvenanceReader | None = None
        try:
            scopes = listing.scopes(config.prefix, config.delete_orphans, wipes, keep_last)
            located, listed = self._list(storage, scopes, plan, deleter, now)
            uploads = listing.pending_uploads(storage, config.prefix, self.context.log, self.where)
            plan_mod.leftovers(plan, config.prefix, [], uploads, now, config.leftover_grace)
            # The other policies need the whole listing (newest object of a folder, partition ranks).
            reader = ProvenanceReader(storage, _listed_infos(located))
            undecided = decide_wipes(plan, reader, located, wipes, catalog) if wipes else set()
            if config.delete_orphans:
                decide_orphans(plan, reader, located, set(defined), now, catalog)
            if keep_last:
                plan_mod.retention(plan, located, keep_last, retention_sort_key(defined))
            self._send_new(plan, deleter)
            deleter.abort_uploads(plan.aborts)
        except BaseException:
            deleter.discard_unsent()  # only bulk requests already sent (1000 keys each) can have run
            raise
        finally:
            outcome = deleter.close()
        outcome.lookups = reader.lookups if reader is not None else 0
        if outcome.errors:
            # The cursor does not move: the next tick retries (deleting is idempotent).
            raise RemoteStoreIOError(
                f"{self.where}: {len(outcome.errors)} deletion(s) failed, e.g. {'; '.join(outcome.errors[:5])}"
            )
        text = report.summary(config, plan, listed, outcome)
        self.context.log.info(text)
        report.log_paths(self.context.log, self.where, plan)
        new_cursor = cursor if config.dry_run else next_cursor(high, sorted(undecided))
        return self._result(text, new_cursor, report.observations(config, plan, set(defined)))

    def _storage(self) -> Storage:
        """The store's ``Storage``, after checking the resource and the capabilities cleanup needs."""
        resource = self.resource
        if not isinstance(resource, StoreResource):
            found = "nothing" if resource is None else type(resource).__name__
            raise RemoteStoreConfigError(
                f"{self.where}: needs a RemoteStoreResource or S3PyArrowResource bound to resource key "
                f"{self.config.resource_key!r}, found {found}"
            )
        try:
            storage = storage_for(resource.store_for(self.config.store))
        except RemoteStoreConfigError as exc:
            raise RemoteStoreConfigError(f"{self.where}: store: {exc}") from None
        missing = storage.missing_cleanup_capabilities()
        if missing:
            raise RemoteStoreConfigError(
                f"{self.where}: store {self.config.store!r} cannot {' or '.join(missing)}; "
                "the cleanup sensor needs both"
            )
        return storage

    def _list(
        self, storage: Storage, scopes: Sequence[str], plan: Plan, deleter: Deleter, now: datetime
    ) -> tuple[list[Located], int]:
        """List the scopes; leftovers go to the deleter at once (while the listing is still paging)."""
        config = self.config
        located: list[Located] = []
        listed = 0
        for scope in scopes:
            for obj in listing.iter_objects(storage, scope, now):
                listed += 1
                item = plan_mod.locate(config.prefix, obj)
                if plan_mod.is_leftover(config.prefix, item, now, config.leftover_grace):
                    plan.add(item, Policy.LEFTOVER)
                    self._send_new(plan, deleter)
                elif not item.top_reserved:
                    located.append(item)
        return located, listed

    def _send_new(self, plan: Plan, deleter: Deleter) -> None:
        """Hand every deletion added to ``plan`` since the last call to the deleter."""
        for path in itertools.islice(plan.deletions, self._sent, None):
            deleter.add(path)
        self._sent = len(plan.deletions)

    def _result(self, text: str, cursor: WipeCursor, events: list[AssetObservation]) -> SensorResult:
        return SensorResult(skip_reason=text, cursor=cursor.to_json(), asset_events=events)


def _listed_infos(located: Sequence[Located]) -> dict[str, ObjectInfo]:
    """The listing as the storage's provenance source wants it (sidecars are checked against it)."""
    return {item.obj.path: ObjectInfo(item.obj.path, item.obj.size, item.obj.modified) for item in located}
