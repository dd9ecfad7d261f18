"""Fakes shared by the verdict tests: scenario runs without events, and alerts as the platform sends them.
(To move into tests/support/ once that package lands.)"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed

from auditgen.validation import BadRequest
from auditgen.verdicts.campaigns import Busy, RunSpec
from auditgen.verdicts.verdicts import ScenarioRun

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


class Health:
    """A broker link that is always up, for an AuditAPI the test builds."""

    connected: bool = True
    blocked: bool = False
    unconfirmed: int = 0
    last_error: str | None = None
    address: str = "amqp://guest@127.0.0.1:5672/"


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

    def send(self, run: ScenarioRun) -> Deferred[Mapping[str, Deferred[Any] | None]]:
        if self.busy:
            raise Busy("outbox full")
        self.sent.append(run.scenario)
        return succeed({})
