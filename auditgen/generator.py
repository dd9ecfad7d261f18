"""The generator: a LoopingCall that puts random events into the outbox at a rate in a traffic shape, and
holds back while the outbox is full."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxFull
from auditgen.shapes import ShapeSettings
from auditgen.spool import SpoolError

TICK = 0.01  # at high rates, events go out every 10 ms: smooth within a second, cheap per event
CATCH_UP = 0.1  # the most a single (late) tick makes, in seconds of the schedule
RATE_WINDOW = 5.0  # seconds over which the achieved rate is reported, at least
RATE_WINDOW_GAPS = 4  # ... and at least this many mean gaps between events, so a slow rate is seen too
SHAPE_FIELDS = frozenset(f.name for f in fields(ShapeSettings))


class Generator(Service):
    """Generates events at `rate` per second (0: never) in a traffic shape, exactly on average and smoothly.

    `rate` is the peak; the shape scales it over time (auditgen.shapes). Each tick makes as many events
    as the integral of the shaped rate says are due since the schedule started, so late ticks never make
    the rate drift. While the outbox is full the events due are not made at all (nothing to drop, no
    memory grows) and the schedule restarts from now once there is room, so no burst follows a pause.
    The operator can change the rate and shape or pause it at any time (configure); that also restarts
    the schedule from now, and while off or paused no tick is scheduled at all.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        make: Callable[[], Mapping[str, Any]],
        outbox: Outbox,
        metrics: Metrics,
        *,
        shape: ShapeSettings | None = None,
        arrivals: random.Random | None = None,
    ) -> None:
        """`make` returns the next event of the stream (EventFactory.generate, or a mix built on it);
        `arrivals` draws Poisson arrival times, apart from the events' own random stream so that their
        contents do not depend on the shape."""
        self.rate = rate
        self.shape = shape or ShapeSettings()
        self.held = False  # paused by the operator (PUT /generator)
        self.paused = False  # paused by itself, while the outbox is full
        self._clock = clock
        self._make = make
        self._outbox = outbox
        self._metrics = metrics
        self._arrivals = arrivals or random.Random()
        self._curve = self.shape.curve(clock.seconds())
        self._call = LoopingCall(self._tick)
        self._call.clock = clock
        self._start = 0.0
        self._total = 0  # events made since the generator was created
        self._total_at_start = 0  # _total when the schedule (re)started: it owes the events since
        self._arrived = 0
        self._next_arrival = 0.0
        self._history: deque[tuple[float, int]] = deque()
        metrics.generator_rate.set_function(self.achieved_rate)
        metrics.generator_target_rate.set_function(self.target_rate)

    @property
    def interval(self) -> float:
        """Seconds between ticks: one event per tick up to 100/s, then a batch every TICK; random
        arrivals are looked for ten times per mean gap, so that they keep their randomness."""
        if self.rate <= 0:
            return 0.0
        gap = 1.0 / self.rate
        return max(gap / 10 if self._curve.poisson else gap, TICK)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._curve = self.shape.curve(self._clock.seconds())
        self._reschedule()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call.running:
            self._call.stop()

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Apply checked changes of rate, paused, shape and shape parameters at once, from now.

        A new shape (or new parameters) starts its curve now, so bursts begin with an on phase; a change
        of rate alone keeps the curve where it is. Logs one line saying what changed.
        """
        unknown = set(changes) - {"rate", "paused"} - SHAPE_FIELDS
        if unknown:
            raise ValueError(f"not a generator setting: {', '.join(sorted(unknown))}")
        before = self.settings()
        shape = replace(self.shape, **{k: v for k, v in changes.items() if k in SHAPE_FIELDS})
        self.rate = float(changes.get("rate", self.rate))
        self.held = bool(changes.get("paused", self.held))
        if shape != self.shape:
            self.shape = shape
            self._curve = shape.curve(self._clock.seconds())
        after = self.settings()
        changed = [f"{key} {before[key]} -> {value}" for key, value in after.items() if value != before[key]]
        if changed:
            self.log.info(
                "generator changed: {changed}", event="generator.changed", changed=", ".join(changed)
            )
            self._reschedule()

    def settings(self) -> dict[str, Any]:
        """What the operator can set: rate, paused, shape and every shape parameter."""
        return {"rate": self.rate, "paused": self.held, **asdict(self.shape)}

    def state(self) -> dict[str, Any]:
        """The settings, and what the generator does with them now."""
        return {
            **self.settings(),
            "outbox_full": self.paused,
            "target_rate": self.target_rate(),
            "achieved_rate": self.achieved_rate(),
        }

    def target_rate(self) -> float:
        """Events per second the shape asks for now; 0 while off or paused by the operator."""
        return 0.0 if self.held else self.rate * self._curve.level(self._clock.seconds())

    def achieved_rate(self) -> float:
        """Events generated per second over the last rate_window() seconds (0 while the loop is stopped)."""
        if len(self._history) < 2 or not self._call.running:
            return 0.0
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def rate_window(self) -> float:
        """Seconds the achieved rate is averaged over: RATE_WINDOW, or RATE_WINDOW_GAPS mean gaps between
        events when that is longer, so that a slow rate (one event every 5 s) is not read as 0."""
        return max(RATE_WINDOW, RATE_WINDOW_GAPS / self.rate) if self.rate > 0 else RATE_WINDOW

    def _reschedule(self) -> None:
        """(Re)start the loop from now at the interval the settings need; no loop while off or held."""
        if self._call.running:
            self._call.stop()
        if self.running and self.rate > 0 and not self.held:
            self._restart_schedule()
            d = self._call.start(self.interval, now=True)
            d.addErrback(lambda f: self.log.failure("event generator stopped", f, event="generator.stopped"))

    def _restart_schedule(self) -> None:
        self._start = self._clock.seconds()
        self._total_at_start = self._total
        self._arrived = 0
        self._next_arrival = self._arrivals.expovariate(1.0) if self._curve.poisson else 0.0

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
                    stored = self._outbox.put(self._make())
                    if stored is not None:
                        stored.addErrback(self._not_stored)
                    self._total += 1
            self._record(now)
        except OutboxFull:
            self._pause(True)
        except Exception:
            self.log.failure("could not generate an event", event="generator.failed")

    def _due(self, now: float) -> int:
        """Events owed by the schedule now; a debt of over a second (a stalled machine) is forgiven
        rather than paid in a burst, and a late tick catches up at most CATCH_UP seconds' worth."""
        expected = self.rate * self._curve.area(self._start, now)
        made = self._total - self._total_at_start
        if expected - made > max(1.0, self.rate):
            self._restart_schedule()
            expected, made = 0.0, 0
        return min(self._owed(expected) - made, max(1, math.ceil(self.rate * CATCH_UP)))

    def _owed(self, expected: float) -> int:
        """Events due since the schedule started, when `expected` are due on average.

        Evenly spaced: one at each whole number `expected` reaches, the first at once (unless the shape
        is at zero then, as in a burst's off phase). Poisson: one at each sum of exponential gaps.
        """
        if self._curve.poisson:
            while self._next_arrival <= expected:
                self._arrived += 1
                self._next_arrival += self._arrivals.expovariate(1.0)
            return self._arrived
        if expected <= 0 and self._curve.level(self._start) == 0:
            return 0
        return int(expected + 1e-9) + 1

    def _record(self, now: float) -> None:
        """Keep the ticks of the window, and the last one before it, so that the window is always covered
        whole: a tick a little later than the one a window ago must not push that one out."""
        self._history.append((now, self._total))
        start = now - self.rate_window()
        while len(self._history) > 1 and self._history[1][0] <= start:
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
