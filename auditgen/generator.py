"""The generator: a LoopingCall that puts one random event into the outbox every interval."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from auditgen.events import EventFactory
from auditgen.outbox import Outbox, OutboxFull


class Generator(Service):
    """Generates events at a fixed interval; an interval of 0 means it never runs."""

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float, factory: EventFactory, outbox: Outbox) -> None:
        self.interval = interval
        self._factory = factory
        self._outbox = outbox
        self._call = LoopingCall(self._tick)
        self._call.clock = clock
        self._full = False

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
        """One event; every error is caught here, because a LoopingCall whose body raises stops for good."""
        try:
            self._outbox.add(self._factory.generate())
        except OutboxFull as e:
            if not self._full:
                self.log.warn("generated events are being dropped: {reason}", reason=str(e))
            self._full = True
            return
        except Exception:
            self.log.failure("could not generate an event")
            return
        if self._full:
            self.log.info("the outbox has room again; generated events are accepted")
        self._full = False
