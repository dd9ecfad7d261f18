"""What the verdict tests share: fakes (scenario runs without events, a starter, alerts as the platform
sends them) and ScoredPipeline, campaigns over the real runner and tracker on a Clock with a stand-in
pipeline that alerts by arrival time."""

from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from auditgen.events import Catalog
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.scenarios.runs import RUN_STORE_FILE, RunStore
from auditgen.validation import BadRequest
from auditgen.verdicts.alerts import AlertFormat
from auditgen.verdicts.campaigns import Busy, Campaign, RunSpec, parse_campaign
from auditgen.verdicts.service import VerdictService
from auditgen.verdicts.verdicts import Handover, ScenarioRun
from tests.support.analysis import Rules

_ids = itertools.count(1)


@dataclass
class FakeRun:
    """A scenario run as scoring sees it: ids of its events, its keys, and optionally what it expects."""

    scenario: str = "brute_force"
    events: int = 3
    keys: dict[str, str] = field(default_factory=lambda: {"user_id": "mallory", "server_hostname": "web-01"})
    expect: str | None = None
    scenario_id: str = field(default_factory=lambda: f"run-{next(_ids)}")
    event_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.event_ids:
            self.event_ids = [f"{self.scenario_id}-e{n}" for n in range(self.events)]

    @property
    def expected(self) -> dict[str, Any]:
        return {"rule": self.scenario, "keys": self.keys, "event_ids": self.event_ids}


def platform_alert(event_id: str, user: str = "mallory", host: str = "web-01") -> dict[str, Any]:
    """An alert shaped like the platform analysis service's (/work/shared/examples)."""
    return {
        "alert_id": f"alert-{event_id}",
        "alert_name": "Multiple Failed Login Attempts",
        "triggered_by": {"actor_type": "USER", "actor_id": user},
        "impacted_resource": {"resource_type": "SERVER", "server_hostname": host},
        "correlation_id": event_id,
        "raw_event_data": {"event_id": event_id, "user_id": user, "server_hostname": host},
    }


class FakeStarter:
    """Prepares FakeRuns; refuses to send while busy; every event is confirmed as soon as it is sent."""

    def __init__(self) -> None:
        self.busy = False
        self.sent: list[str] = []
        self.prepared = 0

    def prepare(self, spec: RunSpec) -> ScenarioRun:
        self.prepared += 1
        if spec.scenario == "unknown":
            raise BadRequest("no scenario 'unknown'")
        return FakeRun(scenario=spec.scenario, keys={"user_id": f"u{len(self.sent)}"})

    def send(self, run: ScenarioRun) -> Deferred[Handover]:
        if self.busy:
            raise Busy("outbox full")
        self.sent.append(run.scenario)
        return succeed(Handover(dict.fromkeys(run.expected["event_ids"])))


class ScoredPipeline:
    """Campaigns over the real runner, outbox and tracker on a Clock, and a stand-in pipeline: each event
    is taken (and confirmed) the moment it is accepted, the platform's two rules see it then (counted by
    arrival time, tests/support/analysis.py) and each alert they raise reaches the tracker `alert_delay`
    seconds later. `alerting=False`: a pipeline with no rules at all."""

    START = 1_796_000_000.0  # clock seconds: some day in 2026

    def __init__(
        self,
        timeout: float = 10.0,
        alert_delay: float = 0.5,
        alerting: bool = True,
        seed: int = 1,
        clock: Clock | None = None,
        store_dir: str | None = None,
    ) -> None:
        if clock is None:
            clock = Clock()
            clock.advance(self.START)
        self.clock = clock
        self.metrics = Metrics()
        self.outbox = Outbox(10_000, self.metrics, clock)
        store = None if store_dir is None else RunStore(os.path.join(store_dir, RUN_STORE_FILE))
        self.runner = ScenarioRunner(
            Catalog.builtin(), random.Random(seed), clock=clock, outbox=self.outbox, store=store
        )
        self.verdicts = VerdictService(
            clock, self.metrics, self.runner, self.outbox, AlertFormat(), timeout, 4096, store_dir=store_dir
        )
        self.tracker = self.verdicts.tracker
        self.campaigns = self.verdicts.campaigns
        self.rules = Rules() if alerting else None
        self.alert_delay = alert_delay
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.alerts: list[dict[str, Any]] = []
        self.outbox.set_listener(self._take)

    def start(self) -> None:
        """As the service starts them: the verdicts first, then the runner (which resumes paced runs)."""
        self.verdicts.startService()
        self.runner.startService()

    def stop(self) -> None:
        """As the service stops them: the runner first (storing its paced runs), the verdicts last."""
        self.runner.stopService()
        self.verdicts.stopService()

    def _take(self) -> None:
        while (entry := self.outbox.take()) is not None:
            event = json.loads(entry.body)
            self.arrivals.append((self.clock.seconds(), event))
            self.outbox.settle(entry)
            for alert in [] if self.rules is None else self.rules.see(event, self.clock.seconds()):
                self.alerts.append(alert)
                self.clock.callLater(self.alert_delay, self.tracker.receive, alert, "amqp")

    def start_campaign(self, body: dict[str, Any]) -> Campaign:
        return self.campaigns.start(parse_campaign(body))

    def run_until(self, until: float) -> None:
        """Let the clock run to `until` (clock seconds), call by call."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= until]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(max(0.0, until - self.clock.seconds()))

    def arrived(self, scenario_id: str) -> list[float]:
        """When the run's events arrived."""
        return [t for t, e in self.arrivals if e.get("details", {}).get("scenario_id") == scenario_id]
