"""The generator: a LoopingCall that puts random events into the outbox at a steady rate, and holds back
while the outbox is full."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxFull
from auditgen.spool import SpoolError

TICK = 0.01  # at high rates, events go out every 10 ms: smooth within a second, cheap per event
CATCH_UP = 0.1  # the most a single (late) tick makes, in seconds of the schedule
RATE_WINDOW = 5.0  # seconds over which the achieved rate is reported


class Generator(Service):
    """Generates `rate` events per second (0: never), exactly on average and smoothly.

    Each tick makes as many events as the clock says are due since the start, so late ticks never make
    the rate drift. While the outbox is full the events due are not made at all (nothing to drop, no
    memory grows) and the schedule restarts from now once there is room, so no burst follows a pause.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        make: Callable[[], Mapping[str, Any]],
        outbox: Outbox,
        metrics: Metrics,
    ) -> None:
        """`make` returns the next event of the stream (EventFactory.generate, or a mix built on it)."""
        self.rate = rate
        self.paused = False
        self._clock = clock
        self._make = make
        self._outbox = outbox
        self._metrics = metrics
        self._call = LoopingCall(self._tick)
        self._call.clock = clock
        self._start = 0.0
        self._made = 0
        self._history: deque[tuple[float, int]] = deque()
        self._total = 0
        metrics.generator_rate.set_function(self.achieved_rate)

    @property
    def interval(self) -> float:
        """Seconds between ticks: one event per tick up to 100/s, then a batch every TICK."""
        return max(1.0 / self.rate, TICK) if self.rate > 0 else 0.0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.rate > 0:
            self._restart_schedule()
            d = self._call.start(self.interval, now=True)
            d.addErrback(lambda f: self.log.failure("event generator stopped", f, event="generator.stopped"))

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call.running:
            self._call.stop()

    def achieved_rate(self) -> float:
        """Events generated per second over the last few seconds."""
        if len(self._history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def _restart_schedule(self) -> None:
        self._start = self._clock.seconds()
        self._made = 0

    def _tick(self) -> None:
        """The events due now, unless the outbox is full: then pause, never drop.

        Every error is caught here, because a LoopingCall whose body raises stops for good.
        """
        try:
            now = self._clock.seconds()
            if self._outbox.full:
                self._pause(True)
            else:
                self._pause(False)
                for _ in range(self._due(now)):
                    if self._outbox.full:
                        self._pause(True)
                        break
                    self._outbox.add(self._make()).addErrback(self._not_stored)
                    self._made += 1
                    self._total += 1
            self._record(now)
        except OutboxFull:
            self._pause(True)
        except Exception:
            self.log.failure("could not generate an event", event="generator.failed")

    def _due(self, now: float) -> int:
        """Events owed by the schedule now; a debt of over a second (a stalled machine) is forgiven
        rather than paid in a burst, and a late tick catches up at most CATCH_UP seconds' worth."""
        due = int((now - self._start) * self.rate + 1e-9) + 1 - self._made
        if due > max(1.0, self.rate):
            self._restart_schedule()
            return 1
        return min(due, max(1, math.ceil(self.rate * CATCH_UP)))

    def _record(self, now: float) -> None:
        self._history.append((now, self._total))
        while self._history and self._history[0][0] < now - RATE_WINDOW:
            self._history.popleft()

    def _pause(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        self._metrics.generator_paused.set(int(paused))
        if paused:
            self.log.warn(
                "the outbox is full: generation paused until the broker catches up", event="generator.paused"
            )
        else:
            self._restart_schedule()  # no burst to make up for the pause
            self.log.info("the outbox has room again: generation resumed", event="generator.resumed")

    def _not_stored(self, failure: Failure) -> None:
        """A spool failure was logged once for its whole batch by the spool: here it is a detail."""
        if failure.check(SpoolError):
            self.log.debug(
                "a generated event could not be stored: {reason}",
                event="generator.not_stored",
                reason=failure.getErrorMessage(),
            )
        else:
            self.log.failure("a generated event could not be stored", failure, event="generator.not_stored")
