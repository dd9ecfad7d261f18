"""Traffic shapes: how the generator's rate varies over time (constant, Poisson arrivals, bursts, a day).

AUDITGEN_RATE is always the peak: a shape scales it by a level from 0 to 1 that varies over time, so the
generator never goes above the rate it was given. The generator makes the events the integral of
rate x level owes since its schedule started, which keeps every shape exact on average whatever the
ticks do; Poisson arrivals replace the evenly spaced thresholds of that integral by random ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

SHAPES = ("constant", "poisson", "bursts", "daily")
DAY = 86_400.0


class Curve(Protocol):
    """A shape's level over time; t is the clock's seconds (since the epoch, UTC, on a real reactor)."""

    @property
    def poisson(self) -> bool:
        """True: arrivals are random (exponential gaps); False: evenly spaced."""
        ...

    def level(self, t: float) -> float:
        """The fraction of the peak rate asked for at t, 0 to 1."""
        ...

    def area(self, t0: float, t1: float) -> float:
        """The integral of level over [t0, t1]: seconds' worth of the peak rate due in that span."""
        ...


@dataclass(frozen=True)
class Constant:
    """The same rate all the time; poisson=True draws exponential gaps between events at that rate."""

    poisson: bool = False

    def level(self, t: float) -> float:
        return 1.0

    def area(self, t0: float, t1: float) -> float:
        return t1 - t0


@dataclass(frozen=True)
class Bursts:
    """The peak rate for on_seconds, then nothing for off_seconds, repeated from origin (an on phase)."""

    on_seconds: float
    off_seconds: float
    origin: float
    poisson: bool = False

    def level(self, t: float) -> float:
        cycle = self.on_seconds + self.off_seconds
        return 1.0 if (t - self.origin) % cycle < self.on_seconds else 0.0

    def area(self, t0: float, t1: float) -> float:
        return self._on_time(t1 - self.origin) - self._on_time(t0 - self.origin)

    def _on_time(self, x: float) -> float:
        """Seconds spent in on phases from the origin to origin + x."""
        cycle = self.on_seconds + self.off_seconds
        cycles = math.floor(x / cycle)
        return cycles * self.on_seconds + min(x - cycles * cycle, self.on_seconds)


@dataclass(frozen=True)
class Daily:
    """A smooth 24-hour cosine in UTC: the peak rate at peak_hour, min_ratio of it twelve hours later."""

    peak_hour: float
    min_ratio: float
    poisson: bool = False

    def level(self, t: float) -> float:
        return self.min_ratio + (1 - self.min_ratio) * (1 + math.cos(self._angle(t))) / 2

    def area(self, t0: float, t1: float) -> float:
        swing = (1 - self.min_ratio) / 2
        wave = DAY / (2 * math.pi) * (math.sin(self._angle(t1)) - math.sin(self._angle(t0)))
        return (self.min_ratio + swing) * (t1 - t0) + swing * wave

    def _angle(self, t: float) -> float:
        """Where t is in the day, as an angle from the peak; reduced first, as epoch seconds are large."""
        return 2 * math.pi * ((t - self.peak_hour * 3600) % DAY) / DAY


# -- Parameters: the same checks for settings and for PUT /generator; each raises ValueError("expected …").
def shape_name(value: str) -> str:
    if value not in SHAPES:
        raise ValueError(f"expected one of {', '.join(SHAPES)}")
    return value


def on_seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def off_seconds(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def peak_hour(value: float) -> float:
    if not 0 <= value < 24:
        raise ValueError("expected an hour of the day in UTC, from 0 to less than 24 (14.5 is 14:30)")
    return value


def min_ratio(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("expected a fraction of the peak rate, from 0 to 1")
    return value


PARAMETERS = {
    "burst_on_seconds": on_seconds,
    "burst_off_seconds": off_seconds,
    "daily_peak_hour": peak_hour,
    "daily_min_ratio": min_ratio,
}
"""Each shape parameter (a field of ShapeSettings, a key of PUT /generator) and its check."""


@dataclass(frozen=True)
class ShapeSettings:
    """The chosen shape and the parameters of every shape, so switching back keeps what was set."""

    shape: str = "constant"
    burst_on_seconds: float = 10.0
    burst_off_seconds: float = 50.0
    daily_peak_hour: float = 14.0
    daily_min_ratio: float = 0.1

    def __post_init__(self) -> None:
        shape_name(self.shape)
        for name, check in PARAMETERS.items():
            check(getattr(self, name))

    def curve(self, origin: float) -> Curve:
        """The curve for these settings; bursts start with an on phase at origin."""
        if self.shape == "poisson":
            return Constant(poisson=True)
        if self.shape == "bursts":
            return Bursts(self.burst_on_seconds, self.burst_off_seconds, origin)
        if self.shape == "daily":
            return Daily(self.daily_peak_hour, self.daily_min_ratio)
        return Constant()
