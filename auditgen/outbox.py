"""The outbox: every accepted event waits here until the broker confirms it.

Generated and triggered events take the same path: `add` accepts an event (or refuses it when full),
the publisher `take`s entries to send, `settle`s them on a broker ack and `retry`s them on a nack or a
lost connection. An entry leaves only through `settle`, which is what makes delivery at-least-once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from auditgen.events import encode
from auditgen.metrics import Metrics


class OutboxFull(Exception):
    """The outbox holds its capacity; the event was not accepted."""


@dataclass(eq=False, slots=True)
class Entry:
    """One accepted event, encoded once, with a Deferred for a caller that waits for the confirm."""

    event_id: str
    event_type: str
    body: bytes
    created: float
    confirmed: Deferred[None] | None = None


class Outbox:
    """A bounded FIFO of entries waiting to be published, plus the count of those in flight."""

    def __init__(self, capacity: int, metrics: Metrics, clock: IReactorTime) -> None:
        self.capacity = capacity
        self._metrics = metrics
        self._clock = clock
        self._waiting: deque[Entry] = deque()
        self._in_flight = 0
        self._listener: Callable[[], None] | None = None
        metrics.outbox_depth.set_function(lambda: len(self))

    def __len__(self) -> int:
        return len(self._waiting) + self._in_flight

    @property
    def waiting(self) -> int:
        """Entries not yet handed to the publisher."""
        return len(self._waiting)

    def set_listener(self, listener: Callable[[], None] | None) -> None:
        """Who to tell when an entry becomes available (the publisher, to send it)."""
        self._listener = listener

    def add(self, event: Mapping[str, Any], wait: bool = False) -> Deferred[Entry]:
        """Accept an event, or raise OutboxFull at once.

        The Deferred fires with the entry once it is stored (on disk, with a spool), which is when the
        event counts as accepted; with wait, entry.confirmed then fires on the broker's ack.
        """
        if len(self) >= self.capacity:
            self._metrics.dropped.labels("outbox_full").inc()
            self._metrics.published_failure.inc()
            raise OutboxFull(f"outbox full ({self.capacity} events waiting for the broker)")
        entry = Entry(
            event_id=event["event_id"],
            event_type=event["event_type"],
            body=encode(event),
            created=self._clock.seconds(),
            confirmed=Deferred() if wait else None,
        )
        self._waiting.append(entry)
        self._metrics.events.labels(
            event["event_type"], event["server_hostname"], event["action_result"]
        ).inc()
        if self._listener is not None:
            self._listener()
        return succeed(entry)

    def take(self) -> Entry | None:
        """The oldest waiting entry, now in flight; None when nothing waits."""
        if not self._waiting:
            return None
        self._in_flight += 1
        return self._waiting.popleft()

    def settle(self, entry: Entry) -> None:
        """The broker confirmed the entry: it leaves the outbox."""
        self._in_flight -= 1
        self._metrics.published_success.inc()
        if entry.confirmed is not None:
            entry.confirmed.callback(None)

    def retry(self, entries: Iterable[Entry]) -> None:
        """Entries in flight go back to the head, in their order, for the next attempt."""
        back = list(entries)
        self._in_flight -= len(back)
        self._waiting.extendleft(reversed(back))
