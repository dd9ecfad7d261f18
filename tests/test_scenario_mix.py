"""Scenarios mixed into generation, on a Clock; and the ground truth's retry when its outbox is full."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from twisted.internet.task import Clock

from auditgen.config import ConfigError, load_settings
from auditgen.events import SOURCE_GENERATED, Catalog, EventFactory
from auditgen.generator import Generator
from auditgen.groundtruth import RETRY_SECONDS, GroundTruth
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenario_mix import ScenarioMix
from auditgen.scenarios import SCENARIOS, Run
from auditgen.spool import Spool, SpoolError
from auditgen.world import build
from tests.support import detect
from tests.support.web import FailingSpool, SlowSpool

CATALOG = Catalog.builtin()
WORLD = build("mix", 12, 10)
START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()


def clock_now(clock: Clock) -> Any:
    return lambda: datetime.fromtimestamp(clock.seconds(), UTC)


def mix(
    rate: float, seed: str, clock: Clock, runs: list[Run], world: bool = False, **kwargs: Any
) -> ScenarioMix:
    """The generator's mix; with world, the generator and its runs draw from WORLD, with one ledger."""
    factory = EventFactory(
        CATALOG, random.Random(f"{seed}/generator"), now=clock_now(clock), world=WORLD if world else None
    )
    return ScenarioMix(
        factory.generate,
        CATALOG,
        random.Random(seed),
        rate,
        runs.append,
        clock_now(clock),
        grounding=factory.grounding,
        **kwargs,
    )


def test_rate_zero_is_the_inner_stream_unchanged() -> None:
    """Off: every event comes from the wrapped make(), as without the mix."""
    clock, runs = Clock(), list[Run]()
    plain = EventFactory(CATALOG, random.Random("s/generator"), now=clock_now(clock)).generate
    mixed = mix(0, "s", clock, runs)
    assert [mixed() for _ in range(200)] == [plain() for _ in range(200)]
    assert runs == []


@pytest.mark.parametrize("world", [False, True], ids=["no-world", "world"])
def test_generated_scenarios_are_consecutive_stamped_by_the_clock_and_trip_their_rules(world: bool) -> None:
    """Run by the Generator on a Clock: each scenario's events come one per tick, in a row, stamped by the
    clock; its run is reported after its last event, with the window of those timestamps, and the rule
    computed from the events finds the expected keys; with a world too."""
    clock, runs = Clock(), list[Run]()
    clock.advance(START)
    metrics = Metrics()
    outbox = Outbox(100_000, metrics, clock)
    scenarios = [s for s in SCENARIOS if s.name != "off_hours_admin"]  # stamped at night: its own test
    make = mix(1000, "every", clock, runs, world, scenarios=scenarios)
    generator = Generator(clock, 2.0, make, outbox, metrics)
    generator.startService()
    for _ in range(400):
        clock.advance(0.5)
    generator.stopService()
    events = []
    while (entry := outbox.take()) is not None:
        events.append(json.loads(entry.body))
    assert len(runs) >= 20 and {r.scenario for r in runs} == {s.name for s in scenarios}
    position = 0
    for run in runs:
        ids = run.expected["event_ids"]
        mine = events[position : position + len(ids)]
        assert [e["event_id"] for e in mine] == ids, "a scenario's events are handed out in a row"
        position += len(ids)
        assert {e["details"]["scenario_id"] for e in mine} == {run.scenario_id}
        assert {e["source_service"] for e in mine} == {SOURCE_GENERATED}
        times = [detect.when(e).timestamp() for e in mine]
        assert times == [pytest.approx(times[0] + 0.5 * i) for i in range(len(times))], "one per tick"
        assert run.origin == "generator"
        detect.assert_expected(run.expected, run.scenario, mine, generous(run))


def generous(run: Run) -> dict[str, Any]:
    """Generated scenarios take the generator's pace, not their window: judge them by what they contain."""
    return {**run.parameters, "window_seconds": 3600.0, "delay_seconds": 3600.0}


def test_off_hours_admin_generated_by_day_is_moved_back_to_the_night() -> None:
    """Its events keep the clock's spacing but lie in the last night hour, so the rule still fires."""
    clock, runs = Clock(), list[Run]()
    clock.advance(START)  # noon
    make = mix(1000, "night", clock, runs, scenarios=[s for s in SCENARIOS if s.name == "off_hours_admin"])
    events = []
    while not runs:
        events.append(make())
        clock.advance(1.0)
    [run] = runs
    detect.assert_expected(run.expected, "off_hours_admin", events, run.parameters)
    assert all(detect.when(e).hour == run.parameters["hour"] for e in events)


def test_the_rate_is_per_thousand_events_and_the_sequence_is_the_same_at_any_pace() -> None:
    """About rate scenarios start per 1,000 events; with one seed, the same events (ids included) come out
    whether the clock moves fast or slow between them."""
    sequences = []
    for step in (0.001, 7.0):
        clock, runs = Clock(), list[Run]()
        clock.advance(START)
        make = mix(20, "pace", clock, runs)
        ids = []
        for _ in range(20_000):
            ids.append(make()["event_id"])
            clock.advance(step)
        sequences.append((ids, [r.scenario_id for r in runs]))
    assert sequences[0] == sequences[1]
    started = len(sequences[0][1])
    assert 250 <= started <= 500, f"{started} scenarios in 20,000 events at 20 per 1,000"


def test_a_rate_out_of_range_is_refused() -> None:
    """The mix and the setting both refuse rates outside 0..1000 per 1,000 events."""
    with pytest.raises(ValueError, match="from 0 to 1000"):
        mix(1001, "x", Clock(), [])
    with pytest.raises(ConfigError, match=r"AUDITGEN_SCENARIO_RATE.*from 0 to 1000"):
        load_settings({}, {"AUDITGEN_SCENARIO_RATE": "-1"}, {})
    assert load_settings({"scenario-rate": "2.5"}, {}, {}).scenarios.rate == 2.5
    assert load_settings({}, {}, {}).scenarios.rate == 0


def test_the_ground_truth_queue_must_not_be_the_event_queue() -> None:
    """Records among the events would reach the event consumers: start-up refuses it."""
    with pytest.raises(ConfigError, match="AUDITGEN_GROUND_TRUTH_QUEUE"):
        load_settings({"ground-truth-queue": "audit_events"}, {}, {})
    assert (
        load_settings({}, {"AUDITGEN_GROUND_TRUTH_QUEUE": "truth"}, {}).scenarios.ground_truth_queue
        == "truth"
    )
    assert load_settings({}, {}, {}).scenarios.ground_truth_queue is None


def test_a_record_the_full_outbox_cannot_take_waits_and_is_retried() -> None:
    """Nothing reported is lost: a record that does not fit is kept, in order, and offered again until it
    fits; meanwhile the ground truth says it is full, so the API runs nothing new."""
    clock = Clock()
    outbox = Outbox(1, Metrics(), clock)
    truth = GroundTruth(Metrics(), clock, outbox)
    truth.startService()
    made = [first_run(f"r{i}", clock) for i in range(3)]
    for run in made:
        truth.report(run)
    assert truth.full
    taken = []
    for _ in range(3):
        entry = outbox.take()
        assert entry is not None
        taken.append(json.loads(entry.body)["scenario_id"])
        outbox.settle(entry)
        assert outbox.take() is None, "offered again only after the retry delay"
        clock.advance(RETRY_SECONDS)
    assert taken == [r.scenario_id for r in made]
    assert not truth.full
    truth.stopService()
    assert not clock.getDelayedCalls()


def test_a_record_the_spool_could_not_store_is_kept_and_stored_on_the_retry() -> None:
    """Nothing reported is lost: a disk error on the record's write keeps it (the ground truth says it is
    full meanwhile), and it is written again after the retry delay."""
    clock = Clock()
    spool = SlowSpool()
    outbox = Outbox(10, Metrics(), clock, spool=cast(Spool, spool))
    truth = GroundTruth(Metrics(), clock, outbox)
    truth.startService()
    run = first_run("disk", clock)
    truth.report(run)
    spool.writes[0].errback(SpoolError("could not write the spool: disk I/O error"))
    assert truth.full and len(spool.writes) == 1
    clock.advance(RETRY_SECONDS)
    assert len(spool.writes) == 2, "written again after the retry delay"
    spool.writes[1].callback(1)
    entry = outbox.take()
    assert entry is not None and json.loads(entry.body)["scenario_id"] == run.scenario_id
    assert not truth.full
    truth.stopService()
    assert not clock.getDelayedCalls()


def test_a_record_whose_store_fails_at_once_is_retried_after_the_delay_not_in_a_loop() -> None:
    """A spool write that fails before store() returns puts the record back for the next try: report()
    returns, and the record is offered once per retry delay, never in a tight loop."""
    clock = Clock()
    spool = CountingFailingSpool()
    truth = GroundTruth(Metrics(), clock, Outbox(10, Metrics(), clock, spool=cast(Spool, spool)))
    truth.startService()
    truth.report(first_run("sync", clock))
    assert spool.writes == 1 and truth.full
    clock.advance(RETRY_SECONDS)
    assert spool.writes == 2 and truth.full
    truth.stopService()
    assert not clock.getDelayedCalls()


class CountingFailingSpool(FailingSpool):
    """A spool whose disk refuses every write at once, counting the writes."""

    writes = 0

    def store(self, *args: Any) -> Any:
        self.writes += 1
        return super().store(*args)


def first_run(seed: str, clock: Clock) -> Run:
    """The run of the first scenario a mix with this seed makes."""
    runs: list[Run] = []
    make = mix(1000, seed, clock, runs)
    while not runs:
        make()
    return runs[0]
