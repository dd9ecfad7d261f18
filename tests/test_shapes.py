"""Traffic shapes: the curves themselves, and the generator making events in each shape, on a Clock."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime
from typing import cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent

from auditgen.generator import Generator
from auditgen.outbox import Outbox
from auditgen.shapes import DAY, Bursts, Daily, ShapeSettings
from tests.support.generator import run_for, running, seeded_run


def at_utc(hour: int, minute: int = 0) -> Clock:
    """A Clock whose seconds() is that time of a day in UTC (27 November 2026)."""
    clock = Clock()
    clock.advance(datetime(2026, 11, 27, hour, minute, tzinfo=UTC).timestamp())
    return clock


def tick_counts(clock: Clock, outbox: Outbox, seconds: float, step: float = 0.01) -> list[tuple[float, int]]:
    """Advance in steps; the clock's time after each step and the events made in it."""
    counts = []
    for _ in range(round(seconds / step)):
        before = len(outbox)
        clock.advance(step)
        counts.append((clock.seconds(), len(outbox) - before))
    return counts


def test_bursts_curve_is_on_then_off_and_its_area_counts_on_time_only() -> None:
    """Bursts: full level for on_seconds from the origin, zero for off_seconds, over and over."""
    curve = Bursts(on_seconds=10, off_seconds=50, origin=1000)
    assert [curve.level(1000 + t) for t in (0, 9.9, 10, 59.9, 60, 70)] == [1, 1, 0, 0, 1, 0]
    assert curve.area(1000, 1060) == 10
    assert curve.area(1005, 1065) == 10
    assert curve.area(1010, 1060) == 0
    assert curve.area(1000, 1000 + 600) == 100


def test_daily_curve_peaks_at_the_peak_hour_and_bottoms_out_twelve_hours_later() -> None:
    """Daily: level 1 at the peak hour (UTC), min_ratio twelve hours away, the mean of the two six hours
    away; over a whole day its area is that mean times a day."""
    curve = Daily(peak_hour=14, min_ratio=0.2)
    midnight = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    assert curve.level(midnight + 14 * 3600) == pytest.approx(1.0)
    assert curve.level(midnight + 2 * 3600) == pytest.approx(0.2)
    assert curve.level(midnight + 20 * 3600) == pytest.approx(0.6)
    assert curve.level(midnight + 8 * 3600) == pytest.approx(0.6)
    assert curve.area(midnight, midnight + DAY) == pytest.approx(0.6 * DAY)
    assert curve.area(midnight + 13.5 * 3600, midnight + 14.5 * 3600) == pytest.approx(3600, rel=0.01)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("shape", "square", "expected one of constant, poisson, bursts, daily"),
        ("burst_on_seconds", 0.0, "greater than 0"),
        ("burst_off_seconds", -1.0, "0 or more"),
        ("daily_peak_hour", 24.0, "from 0 to less than 24"),
        ("daily_min_ratio", 1.5, "from 0 to 1"),
        ("daily_min_ratio", float("nan"), "from 0 to 1"),
    ],
)
def test_shape_settings_refuse_values_no_shape_can_use(field: str, value: object, expected: str) -> None:
    """Each shape parameter is checked where the settings are made, whoever makes them."""
    with pytest.raises(ValueError, match=expected):
        ShapeSettings(**{field: value})  # type: ignore[arg-type]


def test_poisson_arrivals_average_the_rate_and_vary_from_tick_to_tick() -> None:
    """Poisson: the count over 20 s is the rate within a few standard deviations, and the events per
    10 ms tick vary about as much as a Poisson count does (variance close to the mean), where the
    constant shape makes exactly the same number every tick."""
    clock, outbox, generator = running(1000.0, shape=ShapeSettings("poisson"), arrivals="p")
    counts = [n for _, n in tick_counts(clock, outbox, 20.0)]
    generator.stopService()
    assert abs(sum(counts) - 20_000) < 4 * 20_000**0.5
    assert 7 < statistics.variance(counts) < 13, statistics.variance(counts)

    clock, outbox, generator = running(1000.0)
    run_for(clock, 0.1, 0.01)
    steady = [n for _, n in tick_counts(clock, outbox, 1.0)]
    generator.stopService()
    assert statistics.variance(steady) == 0


def test_poisson_arrivals_repeat_with_the_same_seed() -> None:
    """With AUDITGEN_SEED the arrival times are reproducible too: the same counts tick for tick."""

    def run(seed: str) -> list[int]:
        clock, outbox, generator = running(50.0, shape=ShapeSettings("poisson"), arrivals=seed)
        counts = [n for _, n in tick_counts(clock, outbox, 10.0)]
        generator.stopService()
        return counts

    assert run("s") == run("s")
    assert run("s") != run("t")


def test_low_rate_poisson_gaps_are_irregular_and_average_the_rate() -> None:
    """At 2 events/s the loop looks for arrivals every 50 ms, so gaps keep their spread (an exponential
    gap's standard deviation equals its mean) and 1,000 s make about 2,000 events."""
    clock, outbox, generator = running(2.0, shape=ShapeSettings("poisson"), arrivals="g")
    assert generator.interval == pytest.approx(0.05)
    times = [t for t, n in tick_counts(clock, outbox, 1000.0, step=0.05) for _ in range(n)]
    generator.stopService()
    assert abs(len(times) - 2000) < 4 * 2000**0.5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.8 < statistics.stdev(gaps) / statistics.mean(gaps) < 1.2


def test_bursts_make_nothing_while_off_and_the_rate_times_on_seconds_while_on() -> None:
    """Bursts at 100/s, 2 s on and 3 s off: each on phase makes 200 events (the first also the one at
    the start), spread over it; the off phases make none; over four cycles the total is exact."""
    shape = ShapeSettings("bursts", burst_on_seconds=2, burst_off_seconds=3)
    clock, outbox, generator = running(100.0, shape=shape)
    assert len(outbox) == 1
    counts = tick_counts(clock, outbox, 20.0)
    generator.stopService()
    phase = [(t % 5, n) for t, n in counts]
    assert sum(n for p, n in phase if 2.005 < p < 4.995) == 0
    for cycle in range(4):
        made = sum(n for t, n in counts if cycle * 5 < t < cycle * 5 + 2.005)
        assert made == 200, (cycle, made)
    assert max(n for _, n in counts) == 1
    assert len(outbox) == 801


@pytest.mark.parametrize(
    ("hour", "level"),
    [(14, 1.0), (2, 0.2), (20, 0.6), (8, 0.6)],
)
def test_daily_rate_follows_the_curve_at_each_hour(hour: int, level: float) -> None:
    """Daily with the peak at 14:00 UTC and a trough of 0.2: a minute from the given UTC hour makes the
    peak rate times the curve's level there, and the target-rate gauge says so."""
    shape = ShapeSettings("daily", daily_peak_hour=14, daily_min_ratio=0.2)
    clock, outbox, generator = running(100.0, shape=shape, clock=at_utc(hour))
    assert generator.target_rate() == pytest.approx(100 * level)
    registry = outbox._metrics.registry
    gauge = registry.get_sample_value("audit_events_generator_generator_target_rate")
    assert gauge == pytest.approx(100 * level)
    run_for(clock, 60.0, 0.01)
    generator.stopService()
    assert len(outbox) == pytest.approx(6000 * level, rel=0.005)


def test_events_are_the_same_whatever_the_shape() -> None:
    """With one AUDITGEN_SEED, the sequence of events (ids included) is the same in every shape: the
    shapes draw arrival times from their own random stream, never from the events'."""
    constant = seeded_run("shape-test", 500.0, 300)
    for name in ("poisson", "bursts", "daily"):
        assert seeded_run("shape-test", 500.0, 300, shape=ShapeSettings(name)) == constant, name


def started(shape: ShapeSettings | None = None, rate: float = 1000.0) -> tuple[Clock, Outbox, Generator]:
    """A generator at `rate`, started and run for a second."""
    clock, outbox, generator = running(rate, shape=shape)
    run_for(clock, 1.0, 0.01)
    return clock, outbox, generator


def test_a_rate_change_takes_effect_at_once_without_a_burst() -> None:
    """configure(rate): from 1000/s to 10/s the next second makes 10 (plus the one at the change), and
    back up to 2000/s the next 100 ms make about 200: no catching up, no burst."""
    clock, outbox, generator = started()
    before = len(outbox)
    generator.configure({"rate": 10.0})
    assert generator.interval == 0.1
    run_for(clock, 1.0, 0.01)
    assert len(outbox) - before == 11
    before = len(outbox)
    generator.configure({"rate": 2000.0})
    run_for(clock, 0.1, 0.01)
    assert 195 <= len(outbox) - before <= 205
    generator.stopService()
    assert clock.getDelayedCalls() == []


def test_pause_and_rate_zero_stop_the_loop_and_resume_makes_no_burst() -> None:
    """configure(paused=True) or rate 0: nothing is made and nothing is scheduled; resuming starts from
    now (one event at once, then the rate), not with what the pause left undone."""
    clock, outbox, generator = started()
    registry = outbox._metrics.registry
    generator.configure({"paused": True})
    assert clock.getDelayedCalls() == []
    before = len(outbox)
    clock.advance(10.0)
    assert len(outbox) == before
    assert generator.target_rate() == 0
    assert generator.achieved_rate() == 0
    assert registry.get_sample_value("audit_events_generator_generator_target_rate") == 0
    generator.configure({"paused": False})
    assert len(outbox) == before + 1
    run_for(clock, 0.1, 0.01)
    assert len(outbox) - before <= 101
    generator.configure({"rate": 0.0})
    assert clock.getDelayedCalls() == []
    generator.stopService()


def test_a_stopped_generator_is_not_restarted_by_a_change() -> None:
    """After stopService (shutdown), a change is recorded but schedules nothing."""
    clock, _, generator = started()
    generator.stopService()
    generator.configure({"rate": 5.0, "paused": False})
    assert generator.rate == 5.0
    assert clock.getDelayedCalls() == []


def test_choosing_bursts_starts_an_on_phase_and_a_rate_change_keeps_the_phase() -> None:
    """Switching to bursts starts its cycle now with an on phase; changing only the rate later leaves
    the cycle where it was (the next off phase still comes on time)."""
    clock, outbox, generator = started()
    generator.configure({"shape": "bursts", "burst_on_seconds": 1.0, "burst_off_seconds": 1.0})
    run_for(clock, 0.5, 0.01)
    before = len(outbox)
    generator.configure({"rate": 500.0})
    run_for(clock, 0.5, 0.01)
    assert len(outbox) - before == 251
    before = len(outbox)
    run_for(clock, 0.98, 0.01)
    assert len(outbox) == before
    generator.stopService()


def test_one_log_line_per_change_naming_what_changed() -> None:
    """Each change that alters something logs one line with the old and new values; a change to the
    values already set logs nothing."""
    _, _, generator = started()
    seen: list[LogEvent] = []
    generator.log = Logger(observer=cast(ILogObserver, seen.append))
    generator.configure({"rate": 20.0, "shape": "daily"})
    generator.configure({"rate": 20.0})
    generator.stopService()
    assert [formatEvent(e) for e in seen] == [
        "generator changed: rate 1000.0 -> 20.0, shape constant -> daily"
    ]


def test_unknown_settings_are_refused_before_anything_changes() -> None:
    """configure is all or nothing: a name it does not know, or a value a shape refuses, changes nothing."""
    _, _, generator = started()
    with pytest.raises(ValueError, match="not a generator setting: speed"):
        generator.configure({"rate": 5.0, "speed": 3})
    with pytest.raises(ValueError, match="greater than 0"):
        generator.configure({"rate": 5.0, "burst_on_seconds": 0.0})
    generator.stopService()
    assert generator.rate == 1000.0
