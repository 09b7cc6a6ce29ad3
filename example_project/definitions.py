"""The example code location: ``dagster dev -w workspace.yaml`` (or ``./scripts/dev``) loads ``defs``.

Storage comes from the ``RS_S3_*`` environment variables (``./scripts/dev`` sets them
for its embedded S3 server); see ``example_project/resources.py``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from example_project.assets import ALL_ASSETS, DAILY, daily_sensor_readings, readings_daily_stats
from example_project.checks import ALL_CHECKS
from example_project.resources import PREFIX, STORE, build_remote_store
from remote_store_dagster import RemoteStoreIOManager, build_cleanup_sensor

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Partitions of daily_sensor_readings the cleanup sensor keeps (older ones are reported / deleted).
KEEP_DAILY_PARTITIONS = 30


def cleanup_dry_run(env: Mapping[str, str]) -> bool:
    """Dry run unless ``RS_EXAMPLE_CLEANUP_DRY_RUN`` is 0/false/no."""
    return env.get("RS_EXAMPLE_CLEANUP_DRY_RUN", "true").strip().lower() not in ("0", "false", "no", "off")


def build_defs(env: Mapping[str, str] | None = None) -> Definitions:
    env = os.environ if env is None else env
    remote_store = build_remote_store(env)

    daily_readings_job = define_asset_job(
        "daily_readings_job",
        selection=AssetSelection.assets(daily_sensor_readings, readings_daily_stats),
        partitions_def=DAILY,
        description="Materializes one day of sensor readings and their statistics.",
    )
    daily_readings_schedule = build_schedule_from_partitioned_job(
        daily_readings_job,
        name="daily_readings_schedule",
        hour_of_day=0,
        minute_of_hour=30,
        description="Every night at 00:30 UTC: yesterday's partition of the sensors group.",
        default_status=DefaultScheduleStatus.STOPPED,
    )
    cleanup = build_cleanup_sensor(
        "remote_store_cleanup",
        store=STORE,
        prefix=PREFIX,
        leftover_grace=timedelta(hours=1),
        delete_wiped=True,
        # Safe with other code locations below the same prefix: an orphaned folder is deleted only
        # when the provenance of every data file in it names this code location (the IO manager
        # stamps the run's code location, "example_project" in workspace.yaml); data of other
        # locations, other tools or older versions is kept (delete_unstamped_orphans stays off).
        delete_orphans=True,
        keep_last_partitions={"daily_sensor_readings": KEEP_DAILY_PARTITIONS},
        dry_run=cleanup_dry_run(env),
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
    )
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[daily_readings_job],
        schedules=[daily_readings_schedule],
        sensors=[cleanup],
        resources={
            "remote_store": remote_store,
            "io_manager": RemoteStoreIOManager(remote_store=remote_store, store=STORE, prefix=PREFIX),
        },
    )


defs = build_defs()
