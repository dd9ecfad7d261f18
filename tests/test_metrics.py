"""Bounded metric labels: caller-chosen label values cannot grow the registry without limit."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from auditgen.metrics import OVERFLOW, BatchHistogram, Metrics

EVENTS = "audit_events_generator_events_total"
OVERFLOW_TOTAL = "audit_events_generator_metric_overflow_total"


def event_series(metrics: Metrics) -> list[str]:
    """The events_total sample lines of the registry's text output, as a scraper sees them."""
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith(EVENTS + "{")]


def count(metrics: Metrics, event_type: str, host: str, result: str) -> float | None:
    labels = {"event_type": event_type, "server_hostname": host, "action_result": result}
    return metrics.registry.get_sample_value(EVENTS, labels)


def test_distinct_hostnames_beyond_max_series_share_one_overflow_series() -> None:
    """5,000 hostnames make at most max_series + 1 series in the scraped output, and no count is lost."""
    metrics = Metrics(max_series=100)
    for i in range(5000):
        metrics.count_event("user_login", f"host-{i}.example.com", "SUCCESS")
    lines = event_series(metrics)
    assert len(lines) == 101
    assert count(metrics, OVERFLOW, OVERFLOW, OVERFLOW) == 4900
    assert metrics.registry.get_sample_value(OVERFLOW_TOTAL) == 4900
    total = sum(float(line.rsplit(" ", 1)[1]) for line in lines)
    assert total == 5000


def test_known_label_sets_keep_counting_exactly_after_the_limit() -> None:
    """A label set admitted before the limit was reached keeps its own exact count, never the overflow's."""
    metrics = Metrics(max_series=2)
    metrics.count_event("user_login", "web-01", "SUCCESS")
    metrics.count_event("sudo_command", "web-01", "SUCCESS")
    for i in range(50):
        metrics.count_event("user_login", f"new-{i}", "SUCCESS")
        metrics.count_event("user_login", "web-01", "SUCCESS")
    metrics.count_event("sudo_command", "web-01", "SUCCESS")
    assert count(metrics, "user_login", "web-01", "SUCCESS") == 51
    assert count(metrics, "sudo_command", "web-01", "SUCCESS") == 2
    assert count(metrics, "user_login", "new-0", "SUCCESS") is None
    assert count(metrics, OVERFLOW, OVERFLOW, OVERFLOW) == 50


def test_overflow_counter_counts_only_overflowing_increments() -> None:
    """The overflow counter stays 0 until a new label set meets the full limit, then counts each of those."""
    metrics = Metrics(max_series=3)
    for result in ("SUCCESS", "FAILURE", "STARTED"):
        metrics.count_event("x", "h", result)
    metrics.count_event("x", "h", "SUCCESS")
    assert metrics.registry.get_sample_value(OVERFLOW_TOTAL) == 0
    assert count(metrics, OVERFLOW, OVERFLOW, OVERFLOW) is None
    metrics.count_event("x", "h", "STOPPED")
    metrics.count_event("x", "h", "STOPPED")
    assert metrics.registry.get_sample_value(OVERFLOW_TOTAL) == 2
    assert count(metrics, OVERFLOW, OVERFLOW, OVERFLOW) == 2


def test_default_limit_is_a_thousand_series_and_must_be_positive() -> None:
    """The default matches AUDITGEN_METRICS_MAX_SERIES's; a limit below 1 is a programming error."""
    assert Metrics().max_series == 1000
    with pytest.raises(ValueError, match="at least 1"):
        Metrics(max_series=0)


def test_a_batch_histogram_reads_as_prometheus_clients_own_for_the_same_observations() -> None:
    """Observations taken in batches (count=n) expose the same buckets, count and sum as
    prometheus_client's Histogram given them one by one, bounds inclusive as `le` is."""
    buckets = (0.001, 0.01, 0.1, 1)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("latency_seconds", "Latency.", buckets, ours)
    single = Histogram("latency_seconds", "Latency.", buckets=buckets, registry=theirs)
    for amount, count in ((0.0005, 3), (0.01, 2), (0.5, 1), (7.0, 4), (0.001, 1)):
        batch.observe(amount, count)
        for _ in range(count):
            single.observe(amount)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(ours) == lines(theirs)
    assert 'latency_seconds_bucket{le="0.01"} 6.0' in lines(ours)
