"""Scenarios mixed into generation: a `make` for the Generator that now and then emits a scenario's events.

The rate is per 1,000 generated events, not per hour: the decision to start a scenario is drawn once per
event from the mix's own seeded stream, so a seed makes the same scenarios at the same places of the
sequence whatever the generation rate (only timestamps follow the clock).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from auditgen.events import SOURCE_GENERATED, Catalog
from auditgen.events.grounding import Grounding
from auditgen.scenarios import SCENARIOS, Plan, Run, Scenario, StampedFactory, plan
from auditgen.scenarios.engine import stamp

MAX_SCENARIO_RATE = 1000.0  # scenarios per 1,000 events: at most every event starts or continues one


class ScenarioMix:
    """Calls `inner` for each event, except that with probability rate/1000 the next events are a
    scenario's (picked uniformly, with its default parameters), emitted one per call and stamped by the
    clock; once its last event is handed out, `report` gets the run (ground truth)."""

    def __init__(
        self,
        inner: Callable[[], Mapping[str, Any]],
        catalog: Catalog,
        rng: random.Random,
        rate: float,
        report: Callable[[Run], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        scenarios: Sequence[Scenario] = SCENARIOS,
        grounding: Grounding | None = None,
    ) -> None:
        """grounding: the generator's fit to its world, if it has one: runs draw their parameters from
        the world and share the generator's ledger (accounts, session numbers)."""
        if not 0 <= rate <= MAX_SCENARIO_RATE:
            raise ValueError(f"rate must be from 0 to {MAX_SCENARIO_RATE:g} scenarios per 1,000 events")
        self._inner = inner
        self._factory = StampedFactory(catalog, rng, grounding)
        self._rng = rng
        self._probability = rate / 1000.0
        self._report = report
        self._now = now
        self._scenarios = tuple(scenarios)
        self._plan: Plan | None = None
        self._shift = timedelta(0)
        self._handed = 0

    def __call__(self) -> Mapping[str, Any]:
        if self._plan is None:
            if not (self._probability and self._rng.random() < self._probability):
                return self._inner()
            scenario = self._rng.choice(self._scenarios)
            self._plan = plan(scenario, {}, self._factory, SOURCE_GENERATED)
            # Stamped by the clock, moved back as far as the scenario needs (off_hours_admin: to a night).
            now = self._now()
            self._shift = self._plan.start(now) - now
            self._handed = 0
        p = self._plan
        event = p.events[self._handed]
        stamp(event, self._now() + self._shift)
        self._handed += 1
        if self._handed == len(p.events):
            self._plan = None
            self._report(p.finish("generator"))
        return event
