"""Campaign runs through the scenario runner and the outbox, instant or paced as POST /scenarios/{name}
runs them; the campaign needs only the Starter protocol of auditgen.verdicts.campaigns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from auditgen.checks import CheckError
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.scenarios import Plan, Run, ScenarioRunner, UnknownScenario
from auditgen.scenarios.runs import Tracked
from auditgen.validation import BadRequest
from auditgen.verdicts.campaigns import Busy, RunSpec
from auditgen.verdicts.verdicts import Handover, ScenarioRun


@dataclass
class PacedRun:
    """A paced run planned and not yet started, as scoring sees it: its events' ids and what a rule
    should make of them (their timestamps are set as each is handed over)."""

    plan: Plan

    @property
    def scenario(self) -> str:
        return self.plan.scenario.name

    @property
    def scenario_id(self) -> str:
        return self.plan.scenario_id

    @property
    def expected(self) -> Mapping[str, Any]:
        return {**self.plan.expectation(), "event_ids": [e["event_id"] for e in self.plan.events]}


def pace(runner: ScenarioRunner, plan: Plan) -> tuple[Tracked, Handover]:
    """Start a paced run with a Handover that hears of each event as it is accepted (the first may be
    before this returns) and knows when the last is due."""
    handover = Handover()
    tracked = runner.pace(plan, follow=handover.accept)
    handover.ends = tracked.due[-1]
    return tracked, handover


def resumed(tracked: Tracked) -> Handover:
    """The Handover of a paced run the runner resumes after a restart: its events accepted before the
    stop (their confirms lost with the process: counted when followed), then each one as it comes."""
    handover = Handover(ends=tracked.due[-1])
    for event in tracked.plan.events[: tracked.accepted]:
        handover.accept(event["event_id"], None)
    tracked.follow(handover.accept)
    return handover


_REDRAWS = 20  # plans drawn again for keys no run holds; past that, the run shares keys with another
_GROUPED_BY = ("user_id", "server_hostname")  # what the platform's rules count by


def _grouping(keys: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a pipeline groups a run's events by: its user and host where it names them, else every key."""
    if all(k in keys for k in _GROUPED_BY):
        return tuple(str(keys[k]) for k in _GROUPED_BY)
    return tuple(sorted((k, str(v)) for k, v in keys.items()))


class OutboxStarter:
    """Prepares a run with the runner, in the delivery its entry asks for or else its scenario's. An
    instant run (all its events at once, stamped within a window ending now) goes to the outbox as one,
    as POST /scenarios/{name} does, and is reported once accepted; a paced one is handed to the runner,
    which hands each event over at its time."""

    def __init__(
        self, runner: ScenarioRunner, outbox: Outbox, clock: IReactorTime | None = None, hold: float = 60.0
    ) -> None:
        """With a clock, runs drawn at the same time get different grouping keys where their parameters
        allow it (hold: seconds after a run's last event that its keys stay taken, its detection time)."""
        self._runner = runner
        self._outbox = outbox
        self._clock = clock
        self._hold = hold
        self._taken: dict[tuple[Any, ...], float] = {}  # grouping keys -> until when a run holds them

    def prepare(self, spec: RunSpec) -> Run | PacedRun:
        try:
            self._runner.scenario(spec.scenario)
        except UnknownScenario as e:
            raise BadRequest(str(e.args[0])) from None
        if "delivery" in spec.parameters:
            raise BadRequest(f"{spec.scenario}: delivery goes beside the parameters, not among them")
        body = dict(spec.parameters)
        if spec.delivery is not None:
            body["delivery"] = spec.delivery
        try:
            plan, delivery = self._apart(spec.scenario, body)
        except CheckError as e:
            raise BadRequest(str(e)) from None
        return PacedRun(plan) if delivery == "paced" else self._runner.instant(plan)

    def _apart(self, scenario: str, body: Mapping[str, Any]) -> tuple[Plan, str]:
        """A plan whose grouping keys no other run holds now, drawn again a few times if need be.

        A pipeline groups by these keys (user and host): two runs of one campaign that share them are one
        run to it, so a near miss beside a brute force with the same user and host would trip the rule,
        and the near miss would read as a false alarm. Keys the caller fixed are kept as given."""
        plan, delivery = self._runner.plan(scenario, body)
        if self._clock is None:
            return plan, delivery
        now = self._clock.seconds()
        self._taken = {keys: until for keys, until in self._taken.items() if until > now}
        keys = _grouping(plan.expectation()["keys"])
        for _ in range(_REDRAWS):
            if keys not in self._taken:
                break
            plan, delivery = self._runner.plan(scenario, body)
            keys = _grouping(plan.expectation()["keys"])
        self._taken[keys] = now + plan.duration + self._hold
        return plan, delivery

    def send(self, run: ScenarioRun) -> Deferred[Handover]:
        assert isinstance(run, Run | PacedRun)
        if self._runner.full:
            raise Busy("ground-truth outbox full")
        if isinstance(run, PacedRun):
            if self._outbox.full:  # a paced run would wait for room on its own: start none meanwhile
                raise Busy("outbox full")
            return succeed(pace(self._runner, run.plan)[1])
        try:
            stored = self._outbox.add_many(run.events, wait=True)
        except OutboxFull as e:
            raise Busy(str(e)) from None
        return stored.addCallback(self._accepted, run)

    def _accepted(self, entries: list[Entry], run: Run) -> Handover:
        self._runner.report(run)
        return Handover({entry.event_id: entry.confirmed for entry in entries})

    def resumed(self, scenario_id: str) -> Handover | None:
        """The Handover of a paced run the runner resumes after a restart, if it resumes that one."""
        tracked = self._runner.resuming().get(scenario_id)
        return None if tracked is None else resumed(tracked)


def campaign_parameters(runner: ScenarioRunner) -> dict[str, dict[str, Any]]:
    """What a campaign entry may give as `parameters`, by scenario, for the OpenAPI document: every
    scenario's parameters without `delivery` (which goes beside them, in the entry)."""
    shown: dict[str, dict[str, Any]] = {}
    for name, schema in runner.parameter_schemas().items():
        properties = {k: v for k, v in schema.get("properties", {}).items() if k != "delivery"}
        shown[name] = {**schema, "properties": properties}
    return shown
