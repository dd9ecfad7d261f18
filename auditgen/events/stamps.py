"""The events' timestamps: UTC as ISO 8601 text with microseconds and a Z, as the older service wrote them.

Every event has one, and `datetime.now(UTC).isoformat()` was a fifth of the cost of making an event; the
date and time to the second change once a second, so they are formatted once a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


def stamp(now: datetime) -> str:
    """The text of a datetime: a naive one is taken as UTC, an aware one converted."""
    if now.tzinfo is None:
        return now.isoformat(timespec="microseconds") + "Z"
    if now.tzinfo is UTC:
        return now.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" becomes "Z"
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def seconds(now: datetime) -> float:
    """Seconds since the epoch of a datetime read as stamp() reads it (a naive one as UTC)."""
    return (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).timestamp()


class ClockStamps:
    """The stamps of a given clock (a test's fixed now, a scenario's placeholder)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def __call__(self) -> str:
        return stamp(self._now())


class WallStamps:
    """The wall clock's stamps; `clock` gives nanoseconds since the epoch (time.time_ns, or a test's)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, nanos = divmod(self._clock(), 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{nanos // 1000:06d}Z"
