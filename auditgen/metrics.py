"""Prometheus metrics: one registry per service instance, so tests and several services never share counts."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site

PREFIX = "audit_events_generator"
OVERFLOW = "_overflow"  # every label of the one series that counts label sets beyond max_series


class BatchHistogram(Collector):
    """An unlabelled histogram that takes many equal observations at once.

    One multiple ack confirms hundreds of events published together, all with the same latency;
    prometheus_client's Histogram takes them one by one, each with locked increments, which cost 3% of
    the in-memory pipeline per event (measured). Read in the reactor's thread only, so it needs no lock.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*sorted(float(b) for b in buckets), math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float, count: int = 1) -> None:
        """Count `count` observations of `amount` (a bucket's bound is inclusive, as Prometheus's le)."""
        self._counts[bisect_left(self._bounds, amount)] += count
        self._sum += amount * count

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative = list(accumulate(self._counts))
        family.add_metric(
            [],
            [(floatToGoString(b), c) for b, c in zip(self._bounds, cumulative, strict=True)],  # type: ignore[no-untyped-call]
            self._sum,
        )
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)


class Metrics:
    """Every metric the service exports, registered in its own registry.

    max_series bounds the label sets of events_total: its labels come from callers (any hostname, any
    event type), and every label set is a time series kept forever by the registry and the scraper.
    """

    def __init__(self, max_series: int = 1000) -> None:
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, not {max_series}")
        self.max_series = max_series
        self._event_series: dict[tuple[str, str, str], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            f"{PREFIX}_events",
            "Events accepted into the outbox, generated or triggered.",
            ["event_type", "server_hostname", "action_result"],
            registry=r,
        )
        self.metric_overflow = Counter(
            f"{PREFIX}_metric_overflow",
            f"Events counted under the {OVERFLOW} label set of {PREFIX}_events_total because it already "
            "had max_series label sets.",
            registry=r,
        )
        self.published_success = Counter(
            f"{PREFIX}_published_success", "Events the broker confirmed (ack).", registry=r
        )
        self.published_failure = Counter(
            f"{PREFIX}_published_failure",
            "Publish attempts the broker refused (nack), and events dropped because the outbox was full.",
            registry=r,
        )
        self.dropped = Counter(
            f"{PREFIX}_dropped", "Events never accepted, by reason.", ["reason"], registry=r
        )
        self.connection_status = Gauge(
            f"{PREFIX}_rabbitmq_connection_status",
            "1 while the publisher's channel is open in confirm mode, else 0.",
            registry=r,
        )
        self.reconnects = Counter(
            f"{PREFIX}_rabbitmq_reconnects",
            "Connections established after the first one.",
            registry=r,
        )
        self.outbox_depth = Gauge(
            f"{PREFIX}_outbox_events", "Events in the outbox, waiting or unconfirmed.", registry=r
        )
        self.unconfirmed = Gauge(
            f"{PREFIX}_unconfirmed_messages", "Messages published and not yet confirmed.", registry=r
        )
        self.returned = Counter(
            f"{PREFIX}_returned",
            "Messages the broker returned as unroutable; they are published again.",
            registry=r,
        )
        self.confirm_latency = BatchHistogram(
            f"{PREFIX}_confirm_latency_seconds",
            "Time from publish to broker confirm.",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            r,
        )
        self.rabbitmq_blocked = Gauge(
            f"{PREFIX}_rabbitmq_blocked",
            "1 while the broker blocks publishing (its memory or disk alarm), else 0.",
            registry=r,
        )
        self.generator_rate = Gauge(
            f"{PREFIX}_generator_rate",
            "Events per second the generator achieved over the last 5 seconds.",
            registry=r,
        )
        self.generator_paused = Gauge(
            f"{PREFIX}_generator_paused", "1 while the generator waits for room in the outbox.", registry=r
        )
        self.spool_bytes = Gauge(f"{PREFIX}_spool_bytes", "Bytes of events in the durable spool.", registry=r)
        self.spool_replayed = Counter(
            f"{PREFIX}_spool_replayed", "Events left by an earlier run, published on start.", registry=r
        )
        self.spool_damaged = Counter(
            f"{PREFIX}_spool_damaged",
            "Spool files found damaged on start and moved aside (what could be read was kept).",
            registry=r,
        )
        self.generator_target_rate = Gauge(
            f"{PREFIX}_generator_target_rate",
            "Events per second the generator's rate and shape ask for now (0 while off or paused by the "
            "operator).",
            registry=r,
        )
        self.scenarios = Counter(
            f"{PREFIX}_scenarios",
            "Scenarios whose events were accepted, by scenario and origin (api or generator).",
            ["scenario", "origin"],
            registry=r,
        )

        self.scenario_verdicts = Counter(
            f"{PREFIX}_scenario_verdicts",
            "Scenario runs scored, by scenario and verdict (detected, missed, quiet, false_alarm).",
            ["scenario", "verdict"],
            registry=r,
        )
        self.time_to_detect = Histogram(
            f"{PREFIX}_time_to_detect_seconds",
            "From the broker's confirm of the event an alert names to the alert's arrival, per scenario.",
            ["scenario"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.alerts_received = Counter(
            f"{PREFIX}_alerts_received",
            "Alerts received, by source (amqp or http) and result (matched, late, unexpected, malformed).",
            ["source", "result"],
            registry=r,
        )
        self.alerts_consumer_connected = Gauge(
            f"{PREFIX}_alerts_consumer_connected",
            "1 while the alerts consumer has an open channel consuming its queue, else 0.",
            registry=r,
        )

    def count_event(self, event_type: str, server_hostname: str, action_result: str) -> None:
        """Count one accepted event; a label set beyond the first max_series goes to the overflow series."""
        labels = (event_type, server_hostname, action_result)
        child = self._event_series.get(labels)
        if child is None:
            if len(self._event_series) >= self.max_series:
                self.events.labels(OVERFLOW, OVERFLOW, OVERFLOW).inc()
                self.metric_overflow.inc()
                return
            # Kept, so the next event of the same kind skips prometheus_client's label lookup.
            child = self._event_series[labels] = self.events.labels(*labels)
        child.inc()


class MetricsResource(Resource):
    """The registry in the text format the scraper asks for (Prometheus or OpenMetrics)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        return render_metrics(self._registry, request)


def render_metrics(registry: CollectorRegistry, request: IRequest) -> bytes:
    """The registry in the format the scraper's Accept header asks for."""
    encoder, content_type = choose_encoder(request.getHeader("accept") or "")
    request.setHeader(b"content-type", content_type.encode())
    return encoder(registry)


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """No access-log line per scrape."""


def metrics_site(registry: CollectorRegistry) -> Site:
    """The metrics port's site: /metrics, and 404 elsewhere."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    return _QuietSite(root)  # type: ignore[no-untyped-call]
