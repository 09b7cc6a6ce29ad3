"""An injected clock for the cleanup sensor, so grace tests never race the wall clock.

The sensor reads ``datetime.now(UTC)`` once per tick (``cleanup.tick.datetime``).
Tests freeze that reading at a chosen instant; object and upload times still
come from the real servers. ``young_boundary`` separates "old" objects from
"young" ones by a whole second, because S3 reports modification times in
whole seconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from remote_store_dagster.cleanup import tick as tick_module

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest

#: How far before the young objects' grace would end a tick is evaluated.
MARGIN = timedelta(milliseconds=250)


@contextlib.contextmanager
def frozen_sensor_clock(monkeypatch: pytest.MonkeyPatch, at: datetime) -> Iterator[None]:
    """Every cleanup tick inside the block sees ``at`` as "now"."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return at.astimezone(tz) if tz is not None else at.replace(tzinfo=None)

    with monkeypatch.context() as patch:
        patch.setattr(tick_module, "datetime", Frozen)
        yield


def young_boundary() -> datetime:
    """Wait until the next whole second at least 0.5 s away, and return it.

    Everything written before the call has a (second-floored or exact) time
    at least 0.5 s before the boundary; everything written after it, at or
    after the boundary.
    """
    mark = time.time()
    boundary = math.ceil(mark + 0.5)
    while time.time() < boundary:
        time.sleep(max(0.0, boundary - time.time()) + 0.01)
    return datetime.fromtimestamp(boundary, tz=UTC)


def tick_time(boundary: datetime, grace: timedelta) -> datetime:
    """The instant at which objects older than ``boundary`` are past ``grace`` and younger ones are not."""
    return boundary + grace - MARGIN
