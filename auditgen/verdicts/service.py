"""The verdict parts as one service: the tracker, the campaigns, the store (with a spool) and the alerts
consumer's link, built from the settings; what the API mounts is `routes`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime

from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.verdicts.alerts import AlertFormat
from auditgen.verdicts.campaigns import Campaigns
from auditgen.verdicts.routes import VerdictRoutes
from auditgen.verdicts.starter import OutboxStarter
from auditgen.verdicts.store import VerdictStore
from auditgen.verdicts.verdicts import Tracker


class VerdictService(Service):
    """Restores what the store holds on start; cancels the deadlines and writes the store on stop."""

    def __init__(
        self,
        clock: IReactorTime,
        metrics: Metrics,
        runner: ScenarioRunner,
        outbox: Outbox,
        alert_format: AlertFormat,
        timeout: float,
        max_body_bytes: int,
        store_dir: str | None = None,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        """closing() says the service is shutting down: no campaign starts then (its events could not
        be published any more)."""
        self._clock = clock
        self.tracker = Tracker(clock, alert_format, metrics, timeout)
        self.store = VerdictStore(store_dir, clock) if store_dir is not None else None
        on_change = self.store.campaign_changed if self.store is not None else None
        self._starter = OutboxStarter(runner, outbox, clock, timeout)
        self.campaigns = Campaigns(clock, self.tracker, self._starter, on_change)
        self.routes = VerdictRoutes(self.tracker, self.campaigns, clock, max_body_bytes, closing)

    def report(self, run: Any) -> None:
        """A run the generator's mix made: score it too (no one waits for its confirms)."""
        self.tracker.track(run)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.store is not None:
            # Started before the scenario runner: the paced runs it will resume are followed first.
            self.store.restore(self.tracker, self.campaigns, self._starter.resumed)
            self.store.attach(self.tracker)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.campaigns.stop()
        self.tracker.stop()
        if self.store is not None:
            self.store.close()
