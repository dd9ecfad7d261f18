"""Scenario delivery on a Clock: what a pipeline that counts by arrival time sees of each run.

A Pipeline here is a runner over an outbox whose "broker" takes every event the moment it is accepted,
noting the clock's time: the time the platform's analysis service would consume it.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import BUILTIN, NEAR_MISSES, Run, ScenarioRunner
from auditgen.scenarios.runs import RETRY_SECONDS, RunStore
from auditgen.world import build
from tests.support import detect

START = datetime(2026, 11, 27, 14, 30, tzinfo=UTC).timestamp()
# The attacks the platform's two rules are written for; it has none for the others (they would be missed).
PLATFORM_COVERS = {"brute_force", "privilege_escalation", "sensitive_file_tamper"}
WORLD = build("delivery", 12, 10)
WORLDS = pytest.mark.parametrize("world", [False, True], ids=["no-world", "world"])


class Reports:
    """The ground truth, as the runner reports it."""

    full = False

    def __init__(self) -> None:
        self.runs: list[Run] = []

    def report(self, run: Run) -> None:
        self.runs.append(run)


class Pipeline:
    """A runner over an outbox on a Clock; with consume, each accepted event is taken and confirmed at
    once, its arrival noted."""

    def __init__(
        self,
        seed: int = 1,
        capacity: int = 1000,
        consume: bool = True,
        store: RunStore | None = None,
        clock: Clock | None = None,
        world: bool = False,
    ) -> None:
        if clock is None:
            clock = Clock()
            clock.advance(START)
        self.clock = clock
        self.metrics = Metrics()
        self.outbox = Outbox(capacity, self.metrics, self.clock)
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.reports = Reports()
        grounding = (
            EventFactory(Catalog.builtin(), random.Random(seed), world=WORLD).grounding if world else None
        )
        self.runner = ScenarioRunner(
            Catalog.builtin(),
            random.Random(seed),
            self.reports,
            clock=self.clock,
            outbox=self.outbox,
            store=store,
            grounding=grounding,
        )
        self.runner.startService()
        if consume:
            self.outbox.set_listener(self.take)

    def take(self) -> None:
        while (entry := self.outbox.take()) is not None:
            self.arrivals.append((self.clock.seconds(), json.loads(entry.body)))
            self.outbox.settle(entry)

    def deliver(self, name: str, body: dict[str, Any] | None = None) -> str:
        """Run the scenario as POST /scenarios/{name} does, and let the clock run until it is reported."""
        plan, delivery = self.runner.plan(name, body or {})
        if delivery == "paced":
            self.runner.pace(plan)
        else:
            run = self.runner.instant(plan)
            self.outbox.add_many(run.events, wait=True)
            self.runner.report(run)
        while not any(r.scenario_id == plan.scenario_id for r in self.reports.runs):
            assert self.clock.getDelayedCalls(), "the run stalled"
            self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds())
        return plan.scenario_id

    def run(self, scenario_id: str) -> Run:
        return next(r for r in self.reports.runs if r.scenario_id == scenario_id)


@WORLDS
@pytest.mark.parametrize("seed", range(4))
def test_every_near_miss_stays_quiet_and_every_attack_fires_by_arrival_time(seed: int, world: bool) -> None:
    """Each built-in with its defaults and default delivery, evaluated by the platform's two rules counted
    by arrival time: no near miss trips either; each attack they cover trips one, on its own events only;
    every attack trips its own rule (tests/detect.py, written apart from the scenarios). Without a world
    and with one (its draws the world's)."""
    for scenario in BUILTIN:
        p = Pipeline(seed, world=world)
        run = p.run(p.deliver(scenario.name))
        alerts = detect.platform_alerts(p.arrivals)
        if scenario.expect == "quiet":
            assert alerts == [], f"{scenario.name} tripped the platform: {alerts}"
        elif scenario.name in PLATFORM_COVERS:
            assert alerts, f"{scenario.name} tripped neither platform rule"
            assert {event_id for _, event_id in alerts} <= set(run.expected["event_ids"])
        if scenario.expect == "alert":
            detect.assert_expected(run.expected, scenario.name, run.events, run.parameters)


QUIET_UNDER = {
    "failed_logins_below_threshold": lambda events: detect.brute_force(events),
    "failed_logins_spread_out": lambda events: detect.brute_force(events),
    "file_next_to_sensitive": lambda events: detect.sensitive_file_tamper(events),
    "admin_sudo_in_working_hours": lambda events: detect.off_hours_admin(events),
    "service_restarted_once": lambda events: detect.service_flapping(events, 2, 3600.0),
}


@WORLDS
@pytest.mark.parametrize("name", [s.name for s in NEAR_MISSES])
def test_every_near_miss_stays_quiet_under_the_rule_of_the_attack_it_resembles(
    name: str, world: bool
) -> None:
    """The independent rules of tests/detect.py, by timestamp, find nothing in any near miss, without a
    world and with one."""
    for seed in range(5):
        p = Pipeline(seed, world=world)
        run = p.run(p.deliver(name))
        assert run.expected["outcome"] == "quiet"
        assert QUIET_UNDER[name](run.events) == {}


def test_spread_out_failures_delivered_at_once_trip_an_arrival_time_rule() -> None:
    """Why paced delivery exists: the same near miss, delivered instant, arrives within one instant and
    the platform's rule fires although the timestamps lie 65 s apart."""
    p = Pipeline()
    p.deliver("failed_logins_spread_out", {"delivery": "instant"})
    assert detect.platform_alerts(p.arrivals)
    assert detect.brute_force([e for _, e in p.arrivals]) == {}


def test_a_paced_runs_events_arrive_at_their_offsets_stamped_then() -> None:
    """Each event is handed over at its offset from the start and stamped with that time; the ground truth
    is reported after the last, with the window of those stamps."""
    p = Pipeline()
    plan, delivery = p.runner.plan("brute_force", {"delivery": "paced", "attempts": 4, "window_seconds": 30})
    assert delivery == "paced"
    tracked = p.runner.pace(plan)
    schedule = tracked.schedule()
    assert [s["event_id"] for s in schedule] == [e["event_id"] for e in plan.events]
    assert schedule[0]["offset_seconds"] == 0 and 15 <= schedule[-1]["offset_seconds"] <= 30
    assert len(p.arrivals) == 1, "the first event is due at once"
    while p.clock.getDelayedCalls():
        assert not p.reports.runs, "reported before the last event"
        [due] = p.clock.getDelayedCalls()
        p.clock.advance(due.getTime() - p.clock.seconds())
    times = [t - START for t, _ in p.arrivals]
    assert times == pytest.approx([s["offset_seconds"] for s in schedule], abs=1e-6)
    for arrived, event in p.arrivals:
        assert detect.when(event).timestamp() == pytest.approx(arrived, abs=1e-6)
    [run] = p.reports.runs
    assert run.expected["event_ids"] == [e["event_id"] for _, e in p.arrivals]
    assert run.expected["window"]["start"] == p.arrivals[0][1]["timestamp"]


def status_of(p: Pipeline, scenario_id: str) -> dict[str, Any]:
    status = p.runner.status(scenario_id)
    assert status is not None
    return status


def test_the_run_says_where_it_stands() -> None:
    """planned before its first event, running between, done after the last; confirmed as acked."""
    p = Pipeline(consume=False)
    plan, _ = p.runner.plan("failed_logins_spread_out", {"attempts": 2, "gap_seconds": 100})
    p.runner.track(plan, "paced")  # tracked but not yet started: planned
    assert status_of(p, plan.scenario_id)["state"] == "planned"
    p.runner.pace(plan)
    status = status_of(p, plan.scenario_id)
    assert (status["state"], status["accepted"], status["confirmed"]) == ("running", 1, 0)
    entry = p.outbox.take()
    assert entry is not None
    p.outbox.settle(entry)
    assert status_of(p, plan.scenario_id)["events"][0]["confirmed"] is True
    p.clock.advance(150)
    status = status_of(p, plan.scenario_id)
    assert (status["state"], status["accepted"], status["confirmed"], status["total"]) == ("done", 2, 1, 2)
    assert p.runner.status("no-such-run") is None


def test_a_paced_event_that_finds_the_outbox_full_waits_and_nothing_is_dropped() -> None:
    """Room for one event, nothing consumed: the second waits (offered again every RETRY_SECONDS), later
    ones wait behind it, and every event is accepted once room comes back; no refusal is counted."""
    p = Pipeline(capacity=1, consume=False)
    plan, _ = p.runner.plan("service_restarted_once", {"restarts": 2, "window_seconds": 3})
    p.runner.pace(plan)
    p.clock.advance(10)
    assert status_of(p, plan.scenario_id)["accepted"] == 1
    taken = []
    for _ in range(3):
        entry = p.outbox.take()
        assert entry is not None
        taken.append(json.loads(entry.body)["event_id"])
        p.outbox.settle(entry)
        p.clock.advance(RETRY_SECONDS)
    entry = p.outbox.take()
    assert entry is not None
    taken.append(json.loads(entry.body)["event_id"])
    assert taken == [e["event_id"] for e in plan.events]
    assert len(p.reports.runs) == 1
    assert p.metrics.registry.get_sample_value("audit_events_dropped_total", {"reason": "outbox_full"}) in (
        None,
        0.0,
    )


def test_at_shutdown_a_paced_runs_remaining_events_are_handed_over_at_once() -> None:
    """Nothing answered for is lost: stopping the runner mid-run accepts the rest now, and reports."""
    p = Pipeline()
    plan, _ = p.runner.plan("failed_logins_spread_out", {"attempts": 5})
    p.runner.pace(plan)
    p.clock.advance(70)
    assert len(p.arrivals) == 1 or len(p.arrivals) == 2
    p.runner.stopService()
    assert [e["event_id"] for _, e in p.arrivals] == [e["event_id"] for e in plan.events]
    assert len(p.reports.runs) == 1
    assert not p.clock.getDelayedCalls()


def test_with_a_store_a_stopped_paced_run_resumes_at_the_next_start_and_says_it_was_interrupted(
    tmp_path: Path,
) -> None:
    """Stopped after two of four events: the rest of the schedule is stored (not handed over); a new
    runner on the same store, started 100 s later, sends the rest with their spacing, shifted by the
    100 s, and the record says so. Nothing is sent twice or lost."""
    store = RunStore(str(tmp_path / "spool" / "scenario-runs.json"))
    first = Pipeline(store=store)
    plan, _ = first.runner.plan("failed_logins_spread_out", {"attempts": 4, "gap_seconds": 70})
    first.runner.pace(plan)
    gaps = [b - a for a, b in zip(plan.offsets, plan.offsets[1:], strict=False)]
    first.clock.advance(gaps[0])
    assert len(first.arrivals) == 2
    first.runner.stopService()
    assert len(first.arrivals) == 2 and first.reports.runs == []
    assert not first.clock.getDelayedCalls()
    first.clock.advance(100)
    second = Pipeline(seed=2, store=store, clock=first.clock)  # the next process, on the same spool
    second.runner.startService()
    assert status_of(second, plan.scenario_id)["interrupted_seconds"] == 100
    while second.clock.getDelayedCalls():
        [due] = second.clock.getDelayedCalls()
        second.clock.advance(due.getTime() - second.clock.seconds())
    arrivals = first.arrivals + second.arrivals
    assert [e["event_id"] for _, e in arrivals] == [e["event_id"] for e in plan.events]
    times = [t for t, _ in arrivals]
    assert times[2] - times[1] == pytest.approx(gaps[1] + 100, abs=1e-6)
    assert times[3] - times[2] == pytest.approx(gaps[2], abs=1e-6)
    [run] = second.reports.runs
    assert run.expected["interrupted_seconds"] == pytest.approx(100)
    assert run.expected["outcome"] == "quiet"
    assert run.expected["event_ids"] == [e["event_id"] for e in plan.events]
    assert store.load() == []


def test_a_follower_is_told_of_each_paced_event_as_it_is_accepted() -> None:
    """pace(follow=...) tells the follower each event's id and confirm Deferred when it is accepted (the
    first at once), in order, and not before: what scores a paced run waits on these."""
    p = Pipeline(consume=False)
    plan, _ = p.runner.plan("failed_logins_spread_out", {"attempts": 3, "gap_seconds": 10})
    told: list[tuple[str, Any]] = []
    p.runner.pace(plan, follow=lambda event_id, confirmed: told.append((event_id, confirmed)))
    ids = [e["event_id"] for e in plan.events]
    assert [i for i, _ in told] == ids[:1]
    confirmed: list[bool] = []
    told[0][1].addCallback(lambda _: confirmed.append(True))
    entry = p.outbox.take()
    assert entry is not None and confirmed == []
    p.outbox.settle(entry)
    assert confirmed == [True]
    for n in (2, 3):
        [due] = p.clock.getDelayedCalls()
        p.clock.advance(due.getTime() - p.clock.seconds() - 0.001)
        assert len(told) == n - 1, "not before it is due"
        p.clock.advance(0.001)
        assert [i for i, _ in told] == ids[:n]
    assert all(d is not None for _, d in told)


def test_stored_runs_can_be_followed_before_the_runner_starts(tmp_path: Path) -> None:
    """resuming() reads the stored paced runs (shifted by the downtime) before start, once: a follower
    set then is told of every event handed over after the start, and of none before."""
    store = RunStore(str(tmp_path / "spool" / "scenario-runs.json"))
    first = Pipeline(store=store)
    plan, _ = first.runner.plan("failed_logins_spread_out", {"attempts": 3, "gap_seconds": 10})
    first.runner.pace(plan)
    first.runner.stopService()
    first.clock.advance(50)
    clock = first.clock
    without_store = ScenarioRunner(
        Catalog.builtin(), random.Random(2), Reports(), clock=clock, outbox=Outbox(10, Metrics(), clock)
    )
    runner = ScenarioRunner(
        Catalog.builtin(),
        random.Random(2),
        Reports(),
        clock=clock,
        outbox=Outbox(10, Metrics(), clock),
        store=store,
    )
    assert without_store.resuming() == {}
    resuming = runner.resuming()
    assert list(resuming) == [plan.scenario_id] and runner.resuming() is resuming
    tracked = resuming[plan.scenario_id]
    assert (tracked.accepted, tracked.interrupted_seconds) == (1, 50)
    told: list[str] = []
    tracked.follow(lambda event_id, _: told.append(event_id))
    assert told == [] and not clock.getDelayedCalls()
    runner.startService()
    while clock.getDelayedCalls():
        [due] = clock.getDelayedCalls()
        clock.advance(due.getTime() - clock.seconds())
    assert told == [e["event_id"] for e in plan.events][1:]
    assert store.load() == [] and runner.resuming() == {}
