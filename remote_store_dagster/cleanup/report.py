"""What a tick tells the user: the tick text, the debug path list, and one observation per asset."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from dagster import AssetKey, AssetObservation, MetadataValue

from remote_store_dagster.cleanup import plan as plan_mod
from remote_store_dagster.cleanup.plan import Policy

if TYPE_CHECKING:
    from logging import Logger

    from remote_store_dagster.cleanup.config import CleanupConfig
    from remote_store_dagster.cleanup.deleter import Outcome
    from remote_store_dagster.cleanup.plan import Abort, AssetPath, Deletion, Plan

__all__ = ["log_paths", "observations", "summary"]

#: Paths shown in the tick text and per asset in an observation.
SAMPLE_IN_TEXT = 10
SAMPLE_IN_OBSERVATION = 50
#: Paths written to the tick's debug log.
DEBUG_PATHS = 2000


def summary(config: CleanupConfig, plan: Plan, listed: int, outcome: Outcome) -> str:
    """The tick text: counts and bytes per policy, a sample of paths, requests, what was kept and why."""
    kept = "; ".join(f"{n} {reason}" for reason, n in sorted(plan.kept.items()))
    tail = (f" Kept: {kept}." if kept else "") + (
        f" {_count(outcome.lookups, 'provenance lookup')}." if outcome.lookups else ""
    )
    dry = "[dry run] " if config.dry_run else ""
    if not plan.deletions and not plan.aborts:
        return f"{dry}Nothing to clean up in {config.scope_text} ({_count(listed, 'object')} listed).{tail}"
    deletions = list(plan.deletions.values())
    verb = "Would delete" if config.dry_run else "Deleted"
    head = f"{dry}{verb} {_count(len(deletions), 'object')} ({_bytes(sum(d.obj.size for d in deletions))})"
    if plan.aborts:
        verb_uploads = "would abort" if config.dry_run else "aborted"
        upload_bytes = sum(a.upload.size for a in plan.aborts)
        uploads = _count(len(plan.aborts), "incomplete multipart upload")
        head += f" and {verb_uploads} {uploads} ({_bytes(upload_bytes)})"
    sample = sorted(plan.deletions)[:SAMPLE_IN_TEXT] + [a.upload.path for a in plan.aborts][:SAMPLE_IN_TEXT]
    more = len(plan.deletions) + len(plan.aborts) - len(sample)
    text = f"{head} in {config.scope_text}; {'; '.join(_by_policy(plan))}. Paths: {', '.join(sample)}"
    if more > 0:
        text += f" (+{more} more)"
    if not config.dry_run:
        text += f". {_count(outcome.delete_requests, 'delete request')} in {outcome.seconds:.2f}s"
    return text + "." + tail


def _by_policy(plan: Plan) -> list[str]:
    """``wiped: 3 objects (3.3 KiB) [assets: a, b]`` for each policy that chose something."""
    deletions = list(plan.deletions.values())
    parts = []
    for policy in Policy:
        chosen = [d for d in deletions if d.policy is policy]
        uploads = len(plan.aborts) if policy is Policy.LEFTOVER else 0
        if not chosen and not uploads:
            continue
        assets = sorted({"/".join(d.asset) for d in chosen if d.asset})
        part = f"{policy.value}: {_count(len(chosen), 'object')} ({_bytes(sum(d.obj.size for d in chosen))})"
        if uploads:
            part += f" + {_count(uploads, 'upload')}"
        if assets:
            part += f" [assets: {', '.join(assets[:10])}{', ...' if len(assets) > 10 else ''}]"
        parts.append(part)
    return parts


def log_paths(log: Logger, where: str, plan: Plan) -> None:
    """Every deleted path (up to ``DEBUG_PATHS``) to the tick's debug log."""
    if plan.deletions:
        paths = sorted(plan.deletions)
        more = f" (+{len(paths) - DEBUG_PATHS} more)" if len(paths) > DEBUG_PATHS else ""
        log.debug(f"{where}: paths: {', '.join(paths[:DEBUG_PATHS])}{more}")


def observations(config: CleanupConfig, plan: Plan, defined: set[AssetPath]) -> list[AssetObservation]:
    """One observation per affected asset that this code location defines.

    Assets it does not define (orphans, wiped assets removed from code) get
    none: an observation would bring them back into the asset catalog.
    """
    by_asset: dict[AssetPath, list[Deletion]] = defaultdict(list)
    for deletion in plan.deletions.values():
        if deletion.asset in defined:
            by_asset[deletion.asset].append(deletion)
    aborts_by_asset: dict[AssetPath, list[Abort]] = defaultdict(list)
    for abort in plan.aborts:
        if abort.asset in defined:
            aborts_by_asset[abort.asset].append(abort)
    return [
        _observation(config, asset, by_asset.get(asset, []), aborts_by_asset.get(asset, []))
        for asset in sorted(set(by_asset) | set(aborts_by_asset))
    ]


def _observation(
    config: CleanupConfig, asset: AssetPath, deletions: list[Deletion], aborts: list[Abort]
) -> AssetObservation:
    deletions = sorted(deletions, key=lambda d: d.obj.path)
    policies = Counter(d.policy.value for d in deletions)
    partitions = sorted({_partition_key(config.prefix, d) for d in deletions} - {""})
    size = sum(d.obj.size for d in deletions)
    metadata: dict[str, Any] = {
        "remote_store/cleanup_sensor": config.name,
        "remote_store/store": config.store,
        "remote_store/dry_run": config.dry_run,
        "remote_store/deleted_objects": len(deletions),
        "remote_store/deleted_bytes": size,
        "remote_store/aborted_uploads": len(aborts),
        "remote_store/aborted_upload_bytes": sum(a.upload.size for a in aborts),
        "remote_store/policies": ", ".join(f"{p}: {n}" for p, n in sorted(policies.items())) or Policy.LEFTOVER.value,
        "remote_store/deleted_paths": MetadataValue.json(
            [d.obj.path for d in deletions[:SAMPLE_IN_OBSERVATION]]
            + [a.upload.path for a in aborts[:SAMPLE_IN_OBSERVATION]]
        ),
    }
    if partitions:
        metadata["remote_store/deleted_partitions"] = MetadataValue.json(partitions[:SAMPLE_IN_OBSERVATION])
    verb = "would delete" if config.dry_run else "deleted"
    description = (
        f"Cleanup sensor {config.name!r} {verb} {_count(len(deletions), 'object')} ({_bytes(size)})"
        + (f" and {_count(len(aborts), 'incomplete upload')}" if aborts else "")
        + (" [dry run]" if config.dry_run else "")
    )
    return AssetObservation(asset_key=AssetKey(list(asset)), description=description, metadata=metadata)


def _partition_key(prefix: str, deletion: Deletion) -> str:
    located = plan_mod.locate(prefix, deletion.obj)
    return located.partition_key if located.partition else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    exponent = min(int(math.log(count, 1024)), 4)
    return f"{count / 1024**exponent:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][exponent]}"
