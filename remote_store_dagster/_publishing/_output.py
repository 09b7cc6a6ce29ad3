"""One Dagster output, written: every target it covers, its provenance, and the metadata Dagster shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remote_store_dagster import _dagster_context as dagster_context
from remote_store_dagster._provenance import Provenance
from remote_store_dagster._publishing._metadata import Written, add_output_metadata
from remote_store_dagster._publishing._write import OtherFormats, WriteSettings, write_one

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dagster import OutputContext

    from remote_store_dagster._storage import Storage
    from remote_store_dagster._targets import Target

__all__ = ["OutputWriter"]


@dataclass(frozen=True)
class OutputWriter:
    """What the IO manager knows that a write needs: where, how, and whose name goes on it."""

    storage: Storage
    #: The store's profile name, recorded in metadata (the cleanup sensor compares it).
    store: str
    settings: WriteSettings
    #: Configured code location; ``None``: the run's.
    code_location: str | None

    def write(
        self, context: OutputContext, targets: Mapping[str, Target], values: Mapping[str, Any], range_uri: str
    ) -> list[Written]:
        """Publish ``values[key]`` at ``targets[key]`` for every key, then report them to Dagster."""
        written = []
        for key, target in targets.items():
            context.log.debug(f"writing {target.label}")

            def other_formats(path: str, target: Target = target) -> OtherFormats:
                return self._other_formats(context, target, path)

            written.append(
                write_one(
                    self.storage,
                    target,
                    values[key],
                    self.settings,
                    provenance=self._provenance(context, target.partition),
                    log=context.log.info,
                    other_formats=other_formats,
                )
            )
        if self.settings.pickle_signing_key is None and any(w.stats.fmt == "pickle" for w in written):
            context.log.warning(
                f"{written[0].target.label}: stored as an unsigned pickle; anyone who can write to the bucket can "
                "make steps that load it run their code. Set pickle_signing_key (an EnvVar) to sign pickles, or "
                "allow_pickle=False to store only tables and bytes."
            )
        add_output_metadata(context, self.store, written, range_uri)
        return written

    def _provenance(self, context: OutputContext, partition_key: str | None) -> Provenance:
        """What the cleanup sensor needs to know about who wrote this output (op outputs: run and location)."""
        location = self.code_location or dagster_context.step_run_code_location(context)
        if not context.has_asset_key:
            return Provenance(run_id=context.run_id, code_location=location)
        return Provenance(
            run_id=context.run_id,
            code_location=location,
            asset_key=context.asset_key.to_user_string(),
            partition_key=partition_key,
        )

    def _other_formats(self, context: OutputContext, target: Target, path: str) -> OtherFormats:
        """Whether the folder may hold this output in another format (then its siblings are deleted).

        The format follows the output's type, and every write deletes the other formats
        when the format may have changed. So another format can exist only if the last
        write stored another one: for an asset (partition) we ask the Dagster instance
        for its latest materialization's ``remote_store/store`` and ``remote_store/path``
        (one indexed query). An op output's folder is new per run, so only a step retry
        can find anything in it.
        """
        if not context.has_asset_key:
            return OtherFormats.RECORDED if dagster_context.is_step_retry(context) else OtherFormats.ABSENT
        recorded = dagster_context.latest_recorded_output(context, target.partition)
        if recorded is None:
            return OtherFormats.UNRECORDED
        return OtherFormats.ABSENT if recorded == (self.store, path) else OtherFormats.RECORDED
