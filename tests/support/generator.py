"""A generator on a Clock with a real outbox: made, started, run for a while, and what it made taken out."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from auditgen.events import Catalog, EventFactory, seeded_rng
from auditgen.generator import Generator
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.shapes import ShapeSettings


def make(
    interval: float,
    capacity: int = 100,
    factory: Any = None,
    shape: ShapeSettings | None = None,
    clock: Clock | None = None,
    arrivals: str | None = None,
) -> tuple[Clock, Outbox, Generator]:
    """A generator on a Clock (or the given one), its Poisson arrivals seeded with `arrivals`."""
    clock = clock or Clock()
    metrics = Metrics()
    outbox = Outbox(capacity, metrics, clock)
    rate = 1 / interval if interval else 0.0
    make_event = (factory or EventFactory(Catalog.builtin())).generate
    rng = seeded_rng(arrivals, "arrivals")
    generator = Generator(clock, rate, make_event, outbox, metrics, shape=shape, arrivals=rng)
    return clock, outbox, generator


def running(rate: float, capacity: int = 100_000, **kw: Any) -> tuple[Clock, Outbox, Generator]:
    """A generator at `rate` events per second (room for 100,000 by default), started."""
    clock, outbox, generator = make(1.0, capacity=capacity, **kw)
    generator.rate = rate
    generator.startService()
    return clock, outbox, generator


def run_for(clock: Clock, seconds: float, step: float) -> None:
    """Advance the clock in steps, as a real reactor's ticks would arrive."""
    for _ in range(round(seconds / step)):
        clock.advance(step)


def seeded_run(
    seed: str | None, rate: float, count: int, shape: ShapeSettings | None = None
) -> list[dict[str, Any]]:
    """The first `count` events a generator at `rate` makes with AUDITGEN_SEED=seed, timestamps dropped."""
    factory = EventFactory(Catalog.builtin(), seeded_rng(seed, "generator"))
    clock, outbox, generator = running(rate, factory=factory, shape=shape, arrivals=seed)
    while len(outbox) < count:
        clock.advance(0.01)
    generator.stopService()
    events = taken(outbox, count)
    for event in events:
        del event["timestamp"]
    return events


def taken(outbox: Outbox, count: int) -> list[dict[str, Any]]:
    """The first `count` events waiting in the outbox, taken out and decoded."""
    events = []
    for _ in range(count):
        entry = outbox.take()
        assert entry is not None
        events.append(json.loads(entry.body))
    return events
