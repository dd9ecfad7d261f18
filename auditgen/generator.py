"""The generator: a LoopingCall that puts one random event into the outbox every interval, and pauses
while the outbox is full."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.events import EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxFull


class Generator(Service):
    """Generates events at a fixed interval; an interval of 0 means it never runs."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, interval: float, factory: EventFactory, outbox: Outbox, metrics: Metrics
    ) -> None:
        self.interval = interval
        self.paused = False
        self._factory = factory
        self._outbox = outbox
        self._metrics = metrics
        self._call = LoopingCall(self._tick)
        self._call.clock = clock

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.interval > 0:
            d = self._call.start(self.interval, now=True)
            d.addErrback(lambda f: self.log.failure("event generator stopped", f))

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call.running:
            self._call.stop()

    def _tick(self) -> None:
        """One event, unless the outbox is full: then pause, never drop.

        Every error is caught here, because a LoopingCall whose body raises stops for good.
        """
        try:
            if self._outbox.full:
                self._pause(True)
                return
            self._pause(False)
            self._outbox.add(self._factory.generate()).addErrback(self._not_stored)
        except OutboxFull:
            self._pause(True)
        except Exception:
            self.log.failure("could not generate an event")

    def _pause(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        self._metrics.generator_paused.set(int(paused))
        if paused:
            self.log.warn("the outbox is full: generation paused until the broker catches up")
        else:
            self.log.info("the outbox has room again: generation resumed")

    def _not_stored(self, failure: Failure) -> None:
        self.log.failure("a generated event could not be stored", failure)
