"""What the IO manager asks of the Dagster context it runs in, answered without failing.

Contexts built outside a run (``build_output_context`` in unit tests) raise on
``step_context``; each probe here turns that into "cannot tell".
"""

from __future__ import annotations

from typing import Any

from remote_store_dagster._provenance import run_code_location

__all__ = ["add_partition_metadata", "is_step_retry", "latest_recorded_output", "step_run_code_location"]


def step_run_code_location(context: Any) -> str | None:
    """The code location of the run an output context belongs to (``None`` if unknown).

    ``OutputContext.step_context`` raises for contexts built outside a run (unit tests).
    """
    try:
        return run_code_location(context.step_context.dagster_run)
    except Exception:
        return None


def is_step_retry(context: Any) -> bool:
    """True if this output's step ran before in this run (``True`` when the context cannot tell)."""
    try:
        return bool(context.step_context.previous_attempt_count > 0)
    except Exception:
        return True


def latest_recorded_output(context: Any, partition_key: str | None) -> tuple[str, str] | None:
    """(``remote_store/store``, ``remote_store/path``) of the latest recorded materialization of an asset output.

    The metadata of the asset (partition)'s latest materialization in the Dagster
    instance: one indexed event-log query. ``None`` whenever the instance cannot tell
    (no record, wiped, contexts built outside a run).
    """
    try:
        step_context = context.step_context
        from dagster import AssetRecordsFilter

        records_filter = AssetRecordsFilter(
            asset_key=context.asset_key, asset_partitions=[partition_key] if partition_key is not None else None
        )
        records = step_context.instance.fetch_materializations(records_filter, limit=1).records
    except Exception:
        return None
    if not records:
        return None
    materialization = records[0].asset_materialization
    if materialization is None:
        return None
    metadata = materialization.metadata
    store, path = metadata.get("remote_store/store"), metadata.get("remote_store/path")
    if store is None or path is None:
        return None
    return str(getattr(store, "value", store)), str(getattr(path, "value", path))


def add_partition_metadata(context: Any, partition_key: str, metadata: dict[str, Any]) -> bool:
    """Attach ``metadata`` to one partition's materialization of a ranged output; ``False`` if it cannot.

    ``OutputContext.add_output_metadata`` applies to every partition of the range.
    The step context's partition-scoped asset metadata (what ``AssetExecutionContext.
    add_asset_metadata(partition_key=...)`` writes) is merged over it per partition.
    """
    try:
        context.step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition_key)
    except Exception:
        return False
    return True
