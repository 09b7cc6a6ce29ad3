"""Asset checks that load their asset through the IO manager (bytes and a pyarrow Table)."""

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from example_project.assets import EVENT_KINDS, REPORT_HEADER, events_by_kind, report_csv


@asset_check(
    asset=report_csv,
    description="report.csv is non-empty CSV with the expected header (loaded as raw bytes).",
)
def report_csv_has_header(report_csv: bytes) -> AssetCheckResult:
    first_line = report_csv.split(b"\n", 1)[0]
    return AssetCheckResult(
        passed=first_line == REPORT_HEADER and report_csv.count(b"\n") > 1,
        metadata={"header": first_line.decode(errors="replace"), "bytes": len(report_csv)},
    )


@asset_check(
    asset=events_by_kind,
    description="Every event kind is known and every (kind, hour) group counts at least one event.",
)
def events_by_kind_is_consistent(events_by_kind: pa.Table) -> AssetCheckResult:
    kinds = set(pc.unique(events_by_kind["kind"]).to_pylist())
    unknown = sorted(kinds - set(EVENT_KINDS))
    empty_groups = pc.sum(pc.less(events_by_kind["events"], 1)).as_py() or 0
    return AssetCheckResult(
        passed=not unknown and empty_groups == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "groups": events_by_kind.num_rows,
            "events": pc.sum(events_by_kind["events"]).as_py(),
            "unknown_kinds": ", ".join(unknown) or "none",
            "empty_groups": empty_groups,
        },
    )


ALL_CHECKS = [report_csv_has_header, events_by_kind_is_consistent]
