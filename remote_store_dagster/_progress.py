"""Progress of long writes and loads in the run log.

One INFO line when a transfer ends (size, rows, time, rate, URI) and, while it
runs, a progress line at most every ``interval`` seconds, so that a 50 GB
stream is never silent in the run log for minutes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PROGRESS_INTERVAL_SECONDS", "Progress", "format_bytes"]

PROGRESS_INTERVAL_SECONDS = 15.0


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Counts bytes and rows of one transfer and reports them through ``log`` (an INFO logger call).

    ``verb`` is what is happening ("wrote", "loaded"), ``what`` names the asset
    (partition) and ``uri`` where the data is. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        verb: str,
        what: str,
        uri: str,
        *,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._verb = verb
        self._what = what
        self._uri = uri
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last_report = self._start
        self.bytes = 0
        self.rows: int | None = None

    def update(self, nbytes: int = 0, rows: int | None = None) -> None:
        """Add ``nbytes`` (and ``rows``); log a progress line if ``interval`` has passed."""
        self.bytes += nbytes
        if rows is not None:
            self.rows = (self.rows or 0) + rows
        now = self._clock()
        if now - self._last_report >= self._interval:
            self._last_report = now
            self._log(f"{self._what}: {self._verb} {self._totals(now)} so far ({self._uri})")

    def done(self, stored_bytes: int | None = None) -> None:
        """The closing INFO line; ``stored_bytes`` overrides the counted size (e.g. the object size)."""
        if stored_bytes is not None:
            self.bytes = stored_bytes
        self._log(f"{self._what}: {self._verb} {self._totals(self._clock())} -> {self._uri}")

    def _totals(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rows = f", {self.rows:,} rows" if self.rows is not None else ""
        rate = self.bytes / elapsed / (1024 * 1024)
        return f"{format_bytes(self.bytes)}{rows} in {elapsed:.1f}s ({rate:.1f} MiB/s)"
