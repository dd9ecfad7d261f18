"""The confirm window: what was published on the current channel and is not yet confirmed by the broker.

Messages are numbered by delivery tag as they are published (1, 2, ... per channel). A Basic.Ack settles
them in the outbox; a Basic.Nack puts them back in it; a Basic.Return (no queue took the message) is matched
by message_id, since pika misattributes returns when publishes are pipelined, and the message is parked on
its ack, to go back to the outbox after a growing delay. Nothing leaves except through an ack: a lost
channel puts everything in flight and parked back in the outbox, in order.

The window logs one line when the broker starts refusing (nacks) and one when it stops, and the same for
returns, never one line per message.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from auditgen.amqp.connection import Backoff
from auditgen.metrics import Metrics
from auditgen.outbox import Entry, Outbox


class ConfirmWindow:
    """At most `size` entries in flight, by delivery tag; settles, retries and parks them in the outbox.

    `wake` is called after confirms and when parked entries go back, so the owner publishes more.
    """

    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics,
        clock: IReactorTime,
        log: Logger,
        wake: Callable[[], None],
        size: int = 1000,
        redeclares: bool = True,
        return_backoff: Backoff | None = None,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._wake = wake
        self._size = size
        self._redeclares = redeclares  # whether a return makes the owner declare the topology again
        self._unconfirmed: dict[int, tuple[Entry, float]] = {}  # delivery tag -> entry, time sent
        self._next_tag = 1
        self._returned: set[str] = set()  # message_ids returned and not yet acked
        self._return_reason = ""
        self._parked: list[Entry] = []  # returned (unroutable) entries waiting for their next attempt
        self._unpark_call: IDelayedCall | None = None
        self._return_backoff = return_backoff or Backoff()
        self._resent: set[str] = set()  # event_ids of returned entries sent again, until one is acked
        self._unroutable = False
        self._nacking = False  # the broker's last confirm was a nack: further nacks are logged at debug
        metrics.unconfirmed.set_function(lambda: len(self._unconfirmed))

    def __len__(self) -> int:
        """Entries published on the current channel and not yet confirmed."""
        return len(self._unconfirmed)

    @property
    def parked(self) -> int:
        """Returned entries waiting for their next attempt."""
        return len(self._parked)

    @property
    def resend_at(self) -> float | None:
        """When the parked entries go back to the outbox (clock seconds), if any are parked."""
        return None if self._unpark_call is None else self._unpark_call.getTime()

    def new_channel(self) -> None:
        """A new channel numbers its deliveries from 1."""
        self._next_tag = 1

    def fill(self) -> list[Entry]:
        """Take waiting entries from the outbox while the window has room; the caller publishes them, in
        this order, on the current channel."""
        room = self._size - len(self._unconfirmed)
        taken: list[Entry] = []
        if room <= 0:
            return taken
        now = self._clock.seconds()
        unconfirmed, take, tag = self._unconfirmed, self._outbox.take, self._next_tag
        while room > 0 and (entry := take()) is not None:
            unconfirmed[tag] = (entry, now)
            taken.append(entry)
            tag += 1
            room -= 1
        self._next_tag = tag
        return taken

    def confirmed(self, last: int, multiple: bool, nack: bool) -> None:
        """Basic.Ack or Basic.Nack for one delivery tag, or for every tag up to it (multiple)."""
        if multiple:
            tags = []
            for tag in self._unconfirmed:  # in publish order
                if tag > last:
                    break
                tags.append(tag)
        else:
            tags = [last]
        now = self._clock.seconds()
        again = []
        returned = []
        acked = []
        sent_at: dict[float, int] = {}  # acked events by when they were sent (a fill sends many at once)
        for tag in tags:
            item = self._unconfirmed.pop(tag, None)
            if item is None:
                continue
            entry, sent = item
            if nack:
                again.append(entry)
            elif entry.event_id in self._returned:
                # Acked after a Basic.Return: no queue took it. Send it again, after a while.
                self._returned.discard(entry.event_id)
                returned.append(entry)
            else:
                acked.append(entry)
                sent_at[sent] = sent_at.get(sent, 0) + 1
        if acked:  # observed first: settling wakes whoever waits for these confirms
            for sent, count in sent_at.items():
                self._metrics.confirm_latency.observe(now - sent, count)
            self._outbox.settle(*acked)
            if self._resent:
                for entry in acked:
                    self._routed_again(entry)
        if nack:
            self._metrics.published_failure.inc(len(again))
        self._note_nacks(nack, len(again))
        if again:
            self._outbox.retry(again)
        if returned:
            self._park(returned)
        self._wake()

    def returned(self, message_id: str | None, reason: str) -> None:
        """A Basic.Return: the message with this id reached no queue; its ack will park it."""
        if message_id:
            self._returned.add(message_id)
        self._return_reason = reason
        self._metrics.returned.inc()

    def reset(self) -> list[Entry]:
        """The channel is gone: everything parked and in flight, in that order, for the outbox."""
        self._cancel_unpark()
        requeued = self._parked + [entry for entry, _ in self._unconfirmed.values()]
        self._parked = []
        self._unconfirmed.clear()
        self._returned.clear()
        self._resent.clear()
        self._unroutable = False
        return requeued

    def _note_nacks(self, nack: bool, count: int) -> None:
        """One line when the broker starts refusing and one when it accepts again; each nack at debug."""
        if nack:
            emit = self._log.debug if self._nacking else self._log.warn
            emit(
                "the broker refused (nack) {count} events; sending them again",
                event="rabbitmq.nack",
                count=count,
            )
        elif self._nacking:
            self._log.info("the broker confirms events again", event="rabbitmq.nacks_ended")
        self._nacking = nack

    def _park(self, entries: list[Entry]) -> None:
        """Returned entries wait and go back to the outbox after a growing delay, never dropped: a return
        that declaring cannot fix (RABBITMQ_DECLARE=false, no matching binding) must not spin."""
        self._resent.difference_update(e.event_id for e in entries)
        self._parked += entries
        if not self._unroutable:
            self._unroutable = True
            self._log.warn(
                "{reason}{declared}; sending them again with backoff (up to 30 s) until a queue takes them",
                event="rabbitmq.unroutable",
                reason=self._return_reason,
                declared="; declared the topology again" if self._redeclares else "",
            )
        if self._unpark_call is None:
            self._unpark_call = self._clock.callLater(self._return_backoff.next(), self._unpark)

    def _unpark(self) -> None:
        self._unpark_call = None
        entries, self._parked = self._parked, []
        self._resent.update(e.event_id for e in entries)
        self._outbox.retry(entries)
        self._wake()

    def _routed_again(self, entry: Entry) -> None:
        """A returned entry sent again was taken by a queue: once all are, routing works again."""
        self._resent.discard(entry.event_id)
        if not self._resent and not self._parked and self._unroutable:
            self._unroutable = False
            self._return_backoff.reset()
            self._log.info("returned events were delivered; routing works again", event="rabbitmq.routable")

    def _cancel_unpark(self) -> None:
        if self._unpark_call is not None and self._unpark_call.active():
            self._unpark_call.cancel()
        self._unpark_call = None
