"""Who is at work now: people act in their working hours, in their own time zone.

Background traffic that puts people at their keyboards at 3 a.m. trips every off-hours rule and drowns the
off_hours_admin attack; so the world's choices prefer people on duty, and fall back to someone off duty
(on call) only where nobody with the account an event needs is at work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from auditgen.world.model import Person

_SLOT = 900  # every time zone's offset is a whole number of quarter hours (India's +5:30, Nepal's +5:45)


@cache
def zone(name: str) -> ZoneInfo | None:
    """The IANA time zone of that name, None if there is none such."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def at_work(person: Person, when: datetime) -> bool:
    """Whether `when` falls in the person's working hours, read in their time zone (UTC if unknown)."""
    local = when.astimezone(zone(person.timezone) or UTC)
    start, end = person.hours
    return start <= local.hour < end


class Duty:
    """The people off duty at the clock's present time, worked out once a quarter hour (this is read per
    event)."""

    def __init__(self, people: Iterable[Person], clock: Callable[[], float] = time.time) -> None:
        self._people = tuple(people)
        self._clock = clock
        self._slot: int | None = None
        self._off: frozenset[str] = frozenset()

    def off(self) -> frozenset[str]:
        """Names of the people not at work now; accounts of no person (root, services) are never in it."""
        slot = int(self._clock() // _SLOT)
        if slot != self._slot:
            self._slot = slot
            when = datetime.fromtimestamp(slot * _SLOT, UTC)
            self._off = frozenset(p.name for p in self._people if not at_work(p, when))
        return self._off
