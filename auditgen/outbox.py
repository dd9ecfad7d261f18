"""The outbox: every accepted event waits here until the broker confirms it.

Generated and triggered events take the same path: `add` accepts an event (or refuses it when full),
the publisher `take`s entries to send, `settle`s them on a broker ack and `retry`s them on a nack or a
lost connection. An entry leaves only through `settle`, which is what makes delivery at-least-once.

With a spool, an event counts as accepted only once it is committed to disk, and leaves the disk when
the broker confirms it; what an earlier run left is published first, in order.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.events import encode
from auditgen.metrics import Metrics
from auditgen.routing import RoutingKey
from auditgen.spool import Recovery, Spool, Stored


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
    seq: int | None = None
    routing_key: str | None = None  # computed when accepted; None: the publisher's default (the queue)


def _labels(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """The event's metric labels; records that are not audit events (scenario ground truth) may lack the
    last two."""
    return (event["event_type"], event.get("server_hostname", ""), event.get("action_result", ""))


class Outbox:
    """A bounded FIFO of entries waiting to be published, plus the count of those in flight."""

    log = Logger()

    def __init__(
        self,
        capacity: int,
        metrics: Metrics,
        clock: IReactorTime,
        spool: Spool | None = None,
        spool_max_bytes: int = 1 << 30,
        routing: RoutingKey | None = None,
    ) -> None:
        self.capacity = capacity
        self._routing = routing
        self.spool_max_bytes = spool_max_bytes
        self._metrics = metrics
        self._clock = clock
        self._spool = spool
        self._waiting: deque[Entry] = deque()
        self._in_flight = 0
        self._storing = 0
        self._bytes = 0
        self._spool_refused = False  # set when an event did not fit on disk, cleared by the next ack
        self._listener: Callable[[], None] | None = None
        self._watcher: Callable[[bytes], None] | None = None
        metrics.outbox_depth.set_function(lambda: len(self))
        metrics.spool_bytes.set_function(lambda: self._bytes)

    def __len__(self) -> int:
        return len(self._waiting) + self._in_flight + self._storing

    @property
    def waiting(self) -> int:
        """Entries not yet handed to the publisher."""
        return len(self._waiting)

    @property
    def full(self) -> bool:
        """No room for one more event (the generator pauses on this instead of dropping)."""
        return len(self) >= self.capacity or self._spool_refused

    def set_listener(self, listener: Callable[[], None] | None) -> None:
        """Who to tell when an entry becomes available (the publisher, to send it)."""
        self._listener = listener

    def watch(self, watcher: Callable[[bytes], None] | None) -> None:
        """Who to show every confirmed event's body (the console's tail, while a page is open)."""
        self._watcher = watcher

    def add(self, event: Mapping[str, Any], wait: bool = False) -> Deferred[Entry]:
        """Accept an event, or raise OutboxFull at once.

        The Deferred fires with the entry once it is stored (on disk, with a spool), which is when the
        event counts as accepted; with wait, entry.confirmed then fires on the broker's ack.
        """
        body = encode(event)
        self._make_room(1, len(body))
        return self._add(event, body, wait)

    def put(self, event: Mapping[str, Any]) -> Deferred[Entry] | None:
        """add() for a producer that neither waits nor needs the entry (the generator): None when the
        event is accepted at once (no spool), which spares a Deferred per event; else add()'s Deferred."""
        body = encode(event)
        self._make_room(1, len(body))
        if self._spool is not None:
            return self._add(event, body, False)
        self._accept(self._entry(event, body, False), _labels(event))
        return None

    def add_many(self, events: Sequence[Mapping[str, Any]], wait: bool = False) -> Deferred[list[Entry]]:
        """Accept all of the events or none (OutboxFull); fires once every one is stored."""
        bodies = [encode(event) for event in events]
        self._make_room(len(bodies), sum(map(len, bodies)))
        stored = [self._add(event, body, wait) for event, body in zip(events, bodies, strict=True)]
        return gatherResults(stored, consumeErrors=True).addErrback(_first_error)

    def _make_room(self, count: int, size: int) -> None:
        """Raise OutboxFull, counting the refused events, unless `count` events of `size` bytes fit."""
        if len(self) + count > self.capacity:
            raise self._refuse(count, f"outbox full ({self.capacity} events waiting for the broker)")
        if self._spool is not None and self._bytes + size > self.spool_max_bytes:
            self._spool_refused = True
            raise self._refuse(
                count, f"spool full ({self.spool_max_bytes} bytes of events waiting for the broker)"
            )

    def _add(self, event: Mapping[str, Any], body: bytes, wait: bool) -> Deferred[Entry]:
        entry = self._entry(event, body, wait)
        labels = _labels(event)
        if self._spool is None:
            self._accept(entry, labels)
            return succeed(entry)
        self._storing += 1
        self._bytes += len(body)
        stored = self._spool.store(entry.event_id, entry.event_type, entry.created, body, entry.routing_key)
        return stored.addCallbacks(
            self._stored, self._not_stored, callbackArgs=(entry, labels), errbackArgs=(entry,)
        )

    def _entry(self, event: Mapping[str, Any], body: bytes, wait: bool) -> Entry:
        routing = self._routing
        return Entry(
            event_id=event["event_id"],
            event_type=event["event_type"],
            body=body,
            created=self._clock.seconds(),
            confirmed=Deferred() if wait else None,
            routing_key=None if routing is None else routing.fixed or routing.render(event),
        )

    def _refuse(self, count: int, reason: str) -> OutboxFull:
        self._metrics.dropped.labels("outbox_full").inc(count)
        self._metrics.published_failure.inc(count)
        return OutboxFull(reason)

    def _stored(self, seq: int, entry: Entry, labels: tuple[str, str, str]) -> Entry:
        self._storing -= 1
        entry.seq = seq
        self._accept(entry, labels)
        return entry

    def _not_stored(self, failure: Any, entry: Entry) -> Any:
        self._storing -= 1
        self._bytes -= len(entry.body)
        self._metrics.dropped.labels("spool_error").inc()
        return failure

    def _accept(self, entry: Entry, labels: tuple[str, str, str]) -> None:
        self._waiting.append(entry)
        self._metrics.count_event(*labels)
        if self._listener is not None:
            self._listener()

    def take(self) -> Entry | None:
        """The oldest waiting entry, now in flight; None when nothing waits."""
        if not self._waiting:
            return None
        self._in_flight += 1
        return self._waiting.popleft()

    def settle(self, *entries: Entry) -> None:
        """The broker confirmed the entries (one ack may confirm hundreds): they leave the outbox (and
        the spool). Counted once, and first: settling wakes whoever waits for these confirms."""
        self._in_flight -= len(entries)
        self._metrics.published_success.inc(len(entries))
        for entry in entries:
            if self._spool is not None and entry.seq is not None:
                self._bytes -= len(entry.body)
                self._spool_refused = False
                self._spool.remove(entry.seq)
            if self._watcher is not None:
                self._watcher(entry.body)
            if entry.confirmed is not None:
                entry.confirmed.callback(None)

    def retry(self, entries: Iterable[Entry]) -> None:
        """Entries in flight go back to the head, in their order, for the next attempt."""
        back = list(entries)
        self._in_flight -= len(back)
        self._waiting.extendleft(reversed(back))

    def restore(self, recovery: Recovery) -> None:
        """Put what an earlier run left ahead of everything else, in its original order.

        Rows an older version left have no routing key: it is computed from the event, as if new.
        """
        entries = [
            Entry(r.event_id, r.event_type, r.body, r.created, seq=r.seq, routing_key=self._key_of(r))
            for r in recovery.rows
        ]
        self._bytes += sum(len(e.body) for e in entries)
        self._waiting.extendleft(reversed(entries))
        if entries and self._listener is not None:
            self._listener()

    def _key_of(self, row: Stored) -> str | None:
        if row.routing_key is not None or self._routing is None:
            return row.routing_key
        try:
            return self._routing.render(json.loads(row.body))
        except ValueError:  # not JSON (cannot happen to what we wrote): the publisher's default key
            return None


def _first_error(failure: Failure) -> Failure:
    """gatherResults wraps the first failure in FirstError; callers want the SpoolError itself."""
    error = failure.value
    return error.subFailure if isinstance(error, FirstError) else failure


class OutboxService(Service):
    """Opens the spool on start (replaying what is left) and closes it, committed, on stop.

    It stops after the publisher, so the acks of the final drain reach the disk.
    """

    log = Logger()

    def __init__(self, outbox: Outbox, spool: Spool | None, metrics: Metrics) -> None:
        self._outbox = outbox
        self._spool = spool
        self._metrics = metrics
        self._opened: Deferred[None] | None = None
        self.replayed = 0
        """Events an earlier run left in the spool, read back on start."""

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._spool is not None:
            self._opened = self._spool.open().addCallbacks(self._recovered, self._failed)

    def opened(self) -> Deferred[None]:
        """Fires once the spool was read back (at once without a spool, or before start); a spool that
        failed to open was logged and fires it too."""
        done: Deferred[None] = Deferred()
        if self._opened is None:
            done.callback(None)
        else:

            def fire(result: object) -> object:
                done.callback(None)
                return result

            self._opened.addBoth(fire)
        return done

    def _recovered(self, recovery: Recovery) -> None:
        assert self._spool is not None
        if recovery.damaged_file:
            self._metrics.spool_damaged.inc()
            self.log.error(
                "the spool file was damaged: moved it to {aside}; {count} events could still be read and "
                "will be published",
                event="spool.damaged",
                aside=recovery.damaged_file,
                count=len(recovery.rows),
            )
        self._outbox.restore(recovery)
        self.replayed = len(recovery.rows)
        self._metrics.spool_replayed.inc(len(recovery.rows))
        self.log.info(
            "spool {path}: {count} events left from an earlier run are published first",
            event="spool.replayed",
            path=str(self._spool.path),
            count=len(recovery.rows),
        )

    def _failed(self, failure: Any) -> None:
        self.log.failure(
            "cannot open the spool; events will not be accepted", failure, event="spool.open_failed"
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self._spool.close() if self._spool is not None else succeed(None)
