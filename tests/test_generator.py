"""The generator's timing and resilience, on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from auditgen.events import SOURCE_GENERATED, Catalog, EventFactory
from auditgen.generator import Generator
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox


def make(interval: float, capacity: int = 100, factory: Any = None) -> tuple[Clock, Outbox, Generator]:
    clock = Clock()
    metrics = Metrics()
    outbox = Outbox(capacity, metrics, clock)
    generator = Generator(clock, interval, factory or EventFactory(Catalog.builtin()), outbox, metrics)
    return clock, outbox, generator


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
