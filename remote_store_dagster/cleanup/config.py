"""What one cleanup sensor runs with: its arguments, checked once when it is built."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["CleanupConfig"]


@dataclass(frozen=True)
class CleanupConfig:
    """The validated arguments of one cleanup sensor (what every tick of it runs with)."""

    name: str
    store: str
    prefix: str
    leftover_grace: timedelta
    delete_wiped: bool
    delete_orphans: bool
    orphan_grace: timedelta
    keep_last_partitions: Mapping[str, int]
    dry_run: bool
    code_location: str | None
    delete_unstamped_orphans: bool
    resource_key: str = "remote_store"

    @property
    def where(self) -> str:
        """How messages name this sensor."""
        return f"cleanup sensor {self.name!r}"

    @property
    def scope_text(self) -> str:
        """``store 'lake' below warehouse/``: where this sensor works, for tick texts."""
        return f"store {self.store!r} below {self.prefix + '/' if self.prefix else 'its root'}"
