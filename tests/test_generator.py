"""The generator's timing and resilience, on a Clock."""

from __future__ import annotations

import uuid
from typing import Any

from auditgen.events import SOURCE_GENERATED, Catalog, EventFactory
from tests.support.generator import make, run_for, running, seeded_run


def test_one_event_at_start_and_one_per_interval() -> None:
    """The first event comes at once, then one every interval, each marked as generated."""
    clock, outbox, generator = make(2.5)
    generator.startService()
    assert len(outbox) == 1
    clock.advance(2.4)
    assert len(outbox) == 1
    clock.advance(0.1)
    assert len(outbox) == 2
    clock.pump([2.5] * 4)
    assert len(outbox) == 6
    entry = outbox.take()
    assert entry is not None and b'"source_service":"audit-event-generator"' in entry.body
    assert SOURCE_GENERATED == "audit-event-generator"
    generator.stopService()
    assert clock.getDelayedCalls() == []


def test_interval_zero_generates_nothing() -> None:
    """EVENT_GENERATION_INTERVAL_SECONDS=0 turns generation off: nothing is scheduled."""
    clock, outbox, generator = make(0)
    generator.startService()
    clock.advance(100)
    assert len(outbox) == 0
    assert clock.getDelayedCalls() == []
    generator.stopService()


def test_a_failing_tick_does_not_stop_the_loop() -> None:
    """An exception while generating is logged and the next tick still runs (a LoopingCall would die)."""

    class Flaky:
        calls = 0

        def generate(self) -> dict[str, Any]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("template bug")
            return EventFactory(Catalog.builtin()).generate()

    clock, outbox, generator = make(1.0, factory=Flaky())
    generator.startService()
    clock.pump([1.0] * 3)
    assert len(outbox) == 3
    generator.stopService()


def test_full_outbox_pauses_generation_without_dropping_and_resumes() -> None:
    """A full outbox pauses the generator (gauge set, nothing dropped); it resumes once there is room."""
    clock, outbox, generator = make(1.0, capacity=2)
    generator.startService()
    clock.pump([1.0] * 3)
    assert len(outbox) == 2
    registry = outbox._metrics.registry
    assert generator.paused
    assert registry.get_sample_value("audit_events_generator_generator_paused") == 1
    dropped = registry.get_sample_value("audit_events_generator_dropped_total", {"reason": "outbox_full"})
    assert dropped is None
    entry = outbox.take()
    assert entry is not None
    outbox.settle(entry)
    clock.advance(1.0)
    assert len(outbox) == 2
    assert not generator.paused
    assert registry.get_sample_value("audit_events_generator_generator_paused") == 0
    generator.stopService()


def test_rate_is_exact_on_average_and_smooth_within_a_second() -> None:
    """AUDITGEN_RATE=2000: 2,000 events in each second, spread over the ticks (no burst at the top of a
    second), and the achieved-rate gauge says so."""
    clock, outbox, generator = running(2000.0)
    counts = []
    for _ in range(50):  # 5 s in 100 ms slices
        before = len(outbox)
        run_for(clock, 0.1, 0.01)
        counts.append(len(outbox) - before)
    assert len(outbox) == 10_001  # one at the start, then 2,000 a second
    assert min(counts) >= 195 and max(counts) <= 205, counts
    assert abs(generator.achieved_rate() - 2000) < 40
    generator.stopService()


def test_achieved_rate_at_one_event_every_5_s_reads_the_rate_however_late_each_tick() -> None:
    """At the default interval (5 s) the gauge and GET /generator read 0.2 after every tick, whichever
    ticks come a little late (a real reactor's are): a window of 5 s lost the tick before a later one."""
    clock, outbox, generator = make(5.0)
    registry = outbox._metrics.registry
    generator.startService()
    readings = []
    for k in range(1, 25):
        late = 0.01 * (k % 3)  # 0, 10 and 20 ms late in turn: later than the tick before, then on time
        clock.advance(5.0 * k + late - clock.seconds())
        readings.append(generator.state()["achieved_rate"])
        readings.append(registry.get_sample_value("audit_events_generator_generator_rate"))
    assert all(abs(r - 0.2) < 0.002 for r in readings), readings
    generator.stopService()


def test_late_ticks_do_not_make_the_rate_drift() -> None:
    """Ticks that arrive late (a busy reactor) are caught up from the clock, so the average holds."""
    clock, outbox, generator = running(500.0)
    run_for(clock, 10.0, 0.037)
    assert abs(len(outbox) - 5000) <= 25
    generator.stopService()


def test_a_long_stall_is_forgiven_not_paid_back_in_a_burst() -> None:
    """After the clock jumps 5 s (a stalled machine), the next tick makes a tick's worth, not 5 s worth."""
    clock, outbox, generator = running(1000.0)
    run_for(clock, 1.0, 0.01)
    before = len(outbox)
    clock.advance(5.0)
    assert len(outbox) - before <= 1
    run_for(clock, 1.0, 0.01)
    assert abs(len(outbox) - before - 1000) <= 31
    generator.stopService()


def test_low_rates_tick_once_per_event() -> None:
    """A rate of 0.5/s is one event every 2 s, from the start."""
    clock, outbox, generator = make(2.0)
    assert generator.interval == 2.0
    generator.startService()
    clock.pump([1.0] * 10)
    assert len(outbox) == 6
    generator.stopService()


def test_a_tick_that_fills_the_outbox_pauses_at_once_without_refusals() -> None:
    """A tick owing more events than there is room for makes only as many as fit, and pauses then (not
    one tick later); the outbox never has to refuse one."""
    clock, outbox, generator = running(1000.0, capacity=5)
    assert len(outbox) == 1 and not generator.paused
    clock.advance(0.01)  # 10 due, room for 4
    assert len(outbox) == 5 and generator.paused
    dropped = outbox._metrics.registry.get_sample_value(
        "audit_events_generator_dropped_total", {"reason": "outbox_full"}
    )
    assert dropped is None
    generator.stopService()


def test_resuming_after_a_full_outbox_makes_no_burst() -> None:
    """Events not made while paused are not made up for afterwards: memory and the broker see no spike."""
    clock, outbox, generator = running(1000.0, capacity=50)
    run_for(clock, 1.0, 0.01)
    assert generator.paused and len(outbox) == 50
    while (entry := outbox.take()) is not None:
        outbox.settle(entry)
    clock.advance(0.01)
    assert not generator.paused
    assert len(outbox) <= 11
    generator.stopService()


def test_the_same_seed_makes_the_same_events_whatever_the_rate() -> None:
    """AUDITGEN_SEED: two runs with one seed match event for event, ids included, at 5/s and at 5,000/s;
    another seed (or none) gives other events, and the ids are still version-4 UUIDs."""
    slow = seeded_run("load-test-7", 5.0, 300)
    fast = seeded_run("load-test-7", 5000.0, 300)
    assert slow == fast
    other = seeded_run("load-test-8", 5000.0, 300)
    assert {e["event_id"] for e in other}.isdisjoint(e["event_id"] for e in slow)
    assert seeded_run(None, 5000.0, 10) != seeded_run(None, 5000.0, 10)
    assert all(uuid.UUID(e["event_id"]).version == 4 for e in slow)
