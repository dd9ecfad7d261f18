"""The console's state snapshot: cumulative counts and current levels, as one small JSON object.

The page polls it every second or so and works out rates from the difference of two snapshots, so the
service keeps no history for it: a page that is not open costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime

from auditgen.metrics import PREFIX
from auditgen.web import Health


def _total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a counter's samples over all its label sets."""
    total = 0.0
    for metric in registry.collect():
        if metric.name == name:
            total += sum(s.value for s in metric.samples if s.name == f"{name}_total")
    return total


def _histogram(registry: CollectorRegistry, name: str) -> dict[str, Any]:
    """count, sum and the cumulative buckets ({upper bound: count}) of an unlabelled histogram."""
    buckets: dict[str, float] = {}
    count = total = 0.0
    for metric in registry.collect():
        if metric.name != name:
            continue
        for s in metric.samples:
            if s.name == f"{name}_bucket":
                buckets[s.labels["le"]] = s.value
            elif s.name == f"{name}_count":
                count = s.value
            elif s.name == f"{name}_sum":
                total = s.value
    return {"count": count, "sum": total, "buckets": buckets}


class ConsoleState:
    """Reads the registry, the broker link and the generator; owns nothing."""

    def __init__(
        self,
        registry: CollectorRegistry,
        broker: Health,
        clock: IReactorTime,
        outbox_capacity: int,
        generator_state: Callable[[], dict[str, Any]] | None = None,
        features: dict[str, bool] | None = None,
    ) -> None:
        self._registry = registry
        self._broker = broker
        self._clock = clock
        self._started = clock.seconds()
        self._capacity = outbox_capacity
        self._generator_state = generator_state
        self._features = features or {}

    def snapshot(self) -> dict[str, Any]:
        r = self._registry
        value = r.get_sample_value
        return {
            "time": self._clock.seconds(),
            "uptime_seconds": self._clock.seconds() - self._started,
            "accepted_total": _total(r, f"{PREFIX}_events"),
            "confirmed_total": value(f"{PREFIX}_published_success_total") or 0.0,
            "refused_total": _total(r, f"{PREFIX}_dropped"),
            "outbox_depth": value(f"{PREFIX}_outbox_events") or 0.0,
            "outbox_capacity": self._capacity,
            "spool_bytes": value(f"{PREFIX}_spool_bytes") or 0.0,
            "unconfirmed": self._broker.unconfirmed,
            "confirm_latency": _histogram(r, f"{PREFIX}_confirm_latency_seconds"),
            "broker": {
                "connected": self._broker.connected,
                "blocked": self._broker.blocked,
                "address": self._broker.address,
                "last_error": self._broker.last_error,
            },
            "generator": None if self._generator_state is None else self._generator_state(),
            "features": self._features,
        }
