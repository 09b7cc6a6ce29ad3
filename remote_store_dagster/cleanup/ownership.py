"""Whose data is this, written by which run: the provenance decisions of orphans and wipes.

Provenance is read only for data files a policy is about to decide on (never
for live assets), each at most once a tick, ``parallelism`` lookups at a time.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from remote_store_dagster._provenance import SIDECAR_NAME
from remote_store_dagster.cleanup import plan as plan_mod
from remote_store_dagster.cleanup.plan import Decision, Ownership, Policy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from remote_store_dagster._provenance import Provenance
    from remote_store_dagster._storage import ObjectInfo, Storage
    from remote_store_dagster.cleanup.catalog import Catalog
    from remote_store_dagster.cleanup.plan import AssetPath, Located, Plan, RunFacts, Wipe

__all__ = ["ProvenanceReader", "decide_orphans", "decide_wipes"]

#: Why a tick kept what a policy looked at (shown in the tick text).
KEPT_FOREIGN = "orphan folders of another code location"
KEPT_UNSTAMPED = "orphan folders without provenance (see delete_unstamped_orphans)"
KEPT_UNKNOWN_LOCATION = "orphan folders (this sensor's code location is unknown)"
KEPT_RUNNING = "wiped objects of runs still running (decided on a later tick)"


class ProvenanceReader:
    """Provenance of data files, read only when a policy asks, each at most once a tick.

    Where it lives is the storage's business (S3 user metadata, read ``parallelism``
    ``HeadObject`` at once; sidecar files elsewhere).
    """

    def __init__(self, storage: Storage, listed: Mapping[str, ObjectInfo]) -> None:
        self.source = storage.provenance_source(listed)
        self.parallelism = self.source.parallelism
        self.lookups = 0
        self._cache: dict[str, Provenance | None] = {}

    def get_many(self, items: Sequence[Located]) -> list[Provenance | None]:
        missing = list(dict.fromkeys(item.obj.path for item in items if item.obj.path not in self._cache))
        self.lookups += len(missing)
        if len(missing) > 1 and self.parallelism > 1:
            with ThreadPoolExecutor(max_workers=min(self.parallelism, len(missing))) as pool:
                for path, provenance in zip(missing, pool.map(self.source.read, missing), strict=True):
                    self._cache[path] = provenance
        else:
            for path in missing:
                self._cache[path] = self.source.read(path)
        return [self._cache[item.obj.path] for item in items]


def decide_orphans(
    plan: Plan,
    reader: ProvenanceReader,
    located: Sequence[Located],
    defined: set[AssetPath],
    now: datetime,
    catalog: Catalog,
) -> None:
    """Orphan folders whose every data file this code location wrote (stop at the first that it did not)."""
    config = catalog.config
    candidates = plan_mod.orphan_candidates(located, defined, now, config.orphan_grace)
    if not candidates:
        return
    location = catalog.location
    if location is None and not config.delete_unstamped_orphans:
        plan.kept[KEPT_UNKNOWN_LOCATION] += len(candidates)
        catalog.context.log.warning(
            f"{config.where}: cannot tell which code location it cleans up for, so it keeps every "
            f"orphaned folder ({len(candidates)}); pass build_cleanup_sensor(code_location=...) "
            "or run it in a code location (dagster dev / the daemon)"
        )
        return
    accepted = {Ownership.OURS} | ({Ownership.UNSTAMPED} if config.delete_unstamped_orphans else set())
    for asset, items in sorted(candidates.items()):
        verdict = _folder_owner(reader, items, location, asset, accepted)
        if verdict is Ownership.OURS:
            for item in items:
                plan.add(item, Policy.ORPHAN)
        elif verdict is Ownership.FOREIGN:
            plan.kept[KEPT_FOREIGN] += 1
        else:
            plan.kept[KEPT_UNSTAMPED] += 1


def _folder_owner(
    reader: ProvenanceReader,
    items: Sequence[Located],
    location: str | None,
    asset: AssetPath,
    accepted: set[Ownership],
) -> Ownership:
    """``OURS`` if every data file is accepted; else the first refusal (one lookup first, then chunks)."""
    data = sorted((item for item in items if item.is_data_file), key=lambda item: item.obj.path)
    step = reader.parallelism
    # One lookup first (a foreign folder costs one request), then bounded parallel chunks.
    for start, stop in [(0, 1), *((i, i + step) for i in range(1, len(data), step))]:
        verdicts = {plan_mod.ownership(p, location, asset) for p in reader.get_many(data[start:stop])}
        bad = verdicts - accepted
        if bad:
            return Ownership.FOREIGN if Ownership.FOREIGN in bad else Ownership.UNSTAMPED
    return Ownership.OURS


def decide_wipes(
    plan: Plan,
    reader: ProvenanceReader,
    located: Sequence[Located],
    wipes: Sequence[Wipe],
    catalog: Catalog,
) -> set[int]:
    """Add wiped objects to ``plan``; returns the storage ids of wipes still undecided."""
    by_asset = plan_mod.wipes_by_asset(wipes)
    covered: list[tuple[Located, Wipe]] = []
    for item in located:
        if item.asset in by_asset:
            wipe = plan_mod.covering_wipe(by_asset[item.asset], item)
            if wipe is not None:
                covered.append((item, wipe))
    if not covered:
        return set()
    by_time = _TimeRule(catalog)
    decisions = _data_decisions(reader, covered, catalog, by_time)
    by_folder: dict[str, list[Decision]] = defaultdict(list)
    for path, decision in decisions.items():
        by_folder[posixpath.dirname(path)].append(decision)
    undecided: set[int] = set()
    for item, wipe in covered:
        path = item.obj.path
        if item.is_data_file:
            decision = decisions[path]
        elif posixpath.basename(path) == SIDECAR_NAME and by_folder.get(posixpath.dirname(path)):
            decision = _sidecar_decision(by_folder[posixpath.dirname(path)])  # follows the data it describes
        else:
            decision = by_time(item, wipe)
        if decision is Decision.DELETE:
            plan.add(item, Policy.WIPED)
        elif decision is Decision.WAIT:
            undecided.add(wipe.storage_id)
            plan.kept[KEPT_RUNNING] += 1
    return undecided


def _data_decisions(
    reader: ProvenanceReader,
    covered: Sequence[tuple[Located, Wipe]],
    catalog: Catalog,
    by_time: _TimeRule,
) -> dict[str, Decision]:
    """Each covered data file: by the run its provenance names, else by the time rule."""
    location = catalog.location
    runs: dict[str, RunFacts | None] = {}
    data = [(item, wipe) for item, wipe in covered if item.is_data_file]
    provenances = reader.get_many([item for item, _ in data])
    decisions: dict[str, Decision] = {}
    for (item, wipe), provenance in zip(data, provenances, strict=True):
        decision: Decision | None = None
        if provenance is not None:
            if provenance.run_id not in runs:
                runs[provenance.run_id] = catalog.run_facts(provenance.run_id)
            assert item.asset is not None
            decision = plan_mod.wiped_by_run(item.asset, provenance, wipe, runs[provenance.run_id], location)
        decisions[item.obj.path] = decision if decision is not None else by_time(item, wipe)
    return decisions


def _sidecar_decision(folder: Sequence[Decision]) -> Decision:
    if Decision.WAIT in folder:
        return Decision.WAIT
    return Decision.KEEP if Decision.KEEP in folder else Decision.DELETE


class _TimeRule:
    """``plan.wiped_by_time`` with the paths kept after each wipe, read once per wipe."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._kept: dict[int, set[str]] = {}

    def __call__(self, item: Located, wipe: Wipe) -> Decision:
        if wipe.storage_id not in self._kept:
            self._kept[wipe.storage_id] = self._catalog.kept_after_wipe(wipe)
        return plan_mod.wiped_by_time(item, wipe, self._kept[wipe.storage_id])
