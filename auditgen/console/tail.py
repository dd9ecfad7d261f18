"""The event tail: confirmed events streamed to open console pages as Server-Sent Events.

It costs nothing while no page is open: only the first subscriber asks the outbox to report settled
events, and the last one to leave stops it. A page gets at most BATCH events per FLUSH_SECONDS (the tail
is for eyes, not a copy of the stream), and a page whose connection cannot keep up is paused by Twisted's
producer flow control: its events are skipped and counted, never buffered without bound. Events of a
scenario run, the ones a person watches for, have a batch of their own, so background traffic at any
rate does not crowd them out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

FLUSH_SECONDS = 0.25
BATCH = 25  # events kept per page between flushes: at most 100 a second reach a page
KEEPALIVE_SECONDS = 15.0  # a comment line now and then, so idle proxies keep the stream open
SCENARIO_MARK = b'"scenario_id":'  # in the body of every event of a scenario run (details.scenario_id)


class Watchable(Protocol):
    """What the tail needs of the outbox: a callback for every event the broker confirmed."""

    def watch(self, callback: Callable[[bytes], None] | None) -> None: ...


class _Subscriber:
    """One open page: the newest events since the last flush, and whether its connection keeps up."""

    def __init__(self, request: Request, now: float) -> None:
        self.request = request
        self.pending: deque[bytes] = deque(maxlen=BATCH)
        self.scenario: deque[bytes] = deque(maxlen=BATCH)
        self.skipped = 0
        self.paused = False
        self.last_write = now

    # IPushProducer: Twisted pauses us while the connection's send buffer is full.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def offer(self, body: bytes) -> None:
        kept = self.scenario if SCENARIO_MARK in body else self.pending
        if len(kept) == BATCH:
            self.skipped += 1
        kept.append(body)

    def flush(self, now: float) -> None:
        if self.paused:
            self.skipped += len(self.pending) + len(self.scenario)
            self.pending.clear()
            self.scenario.clear()
            return
        out = [b"data: " + body + b"\n\n" for body in (*self.pending, *self.scenario)]
        self.pending.clear()
        self.scenario.clear()
        if self.skipped:
            out.append(b"event: skipped\ndata: %d\n\n" % self.skipped)
            self.skipped = 0
        if not out and now - self.last_write >= KEEPALIVE_SECONDS:
            out.append(b": keepalive\n\n")
        if out:
            self.last_write = now
            self.request.write(b"".join(out))


class EventTail(Resource):
    """GET: a text/event-stream of confirmed events, one JSON event per `data:` line."""

    isLeaf = True

    def __init__(self, outbox: Watchable, clock: IReactorTime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._outbox = outbox
        self._subscribers: list[_Subscriber] = []
        self._clock = clock
        self._flusher = LoopingCall(self._flush)
        self._flusher.clock = clock

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: pass events on as they come
        subscriber = _Subscriber(request, self._clock.seconds())
        request.registerProducer(subscriber, True)
        request.write(b"retry: 2000\n\n")
        self._subscribers.append(subscriber)
        if len(self._subscribers) == 1:
            self._outbox.watch(self._offer)
            self._flusher.start(FLUSH_SECONDS, now=False)
        request.notifyFinish().addBoth(self._gone, subscriber)
        return NOT_DONE_YET

    def close(self) -> None:
        """End every open stream (at shutdown, so the API port can close)."""
        for subscriber in list(self._subscribers):
            subscriber.request.unregisterProducer()
            subscriber.request.finish()

    def _offer(self, body: bytes) -> None:
        for subscriber in self._subscribers:
            subscriber.offer(body)

    def _flush(self) -> None:
        now = self._clock.seconds()
        for subscriber in self._subscribers:
            subscriber.flush(now)

    def _gone(self, result: Failure | None, subscriber: _Subscriber) -> None:
        self._subscribers.remove(subscriber)
        if not self._subscribers:
            self._outbox.watch(None)
            self._flusher.stop()
