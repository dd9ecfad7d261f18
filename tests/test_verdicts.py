"""Verdicts on a Clock: each verdict, the detection timeout, late alerts, alerts naming several runs, key
matching, time to detect and the metrics."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from auditgen.metrics import Metrics
from auditgen.verdicts.alerts import AlertFormat, parse_key_fields
from auditgen.verdicts.verdicts import Handover, Tracker, expectation
from tests.support.verdicts import FakeRun, platform_alert

KEYS = parse_key_fields("user_id=triggered_by.actor_id,server_hostname=impacted_resource.server_hostname")


def tracker(clock: Clock, **kwargs: Any) -> tuple[Tracker, Metrics]:
    metrics = Metrics()
    return Tracker(clock, AlertFormat(key_fields=KEYS), metrics, timeout=60.0, **kwargs), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_detected_on_the_first_alert_with_time_to_detect() -> None:
    """An alert naming an event of a run expecting one: detected at once, time to detect from the confirm."""
    clock = Clock()
    t, metrics = tracker(clock)
    run = FakeRun()
    confirms: dict[str, Deferred[Any]] = {e: Deferred() for e in run.event_ids}
    tracked = t.track(run, Handover(confirms))
    clock.advance(1.0)
    for d in confirms.values():
        d.callback(None)
    assert tracked.finished == 1.0
    clock.advance(2.5)
    assert t.receive(platform_alert(run.event_ids[-1]), "amqp")["matched"] == 1
    assert (tracked.verdict, tracked.time_to_detect) == ("detected", 2.5)
    assert (
        sample(
            metrics,
            "audit_events_generator_scenario_verdicts_total",
            scenario="brute_force",
            verdict="detected",
        )
        == 1
    )
    assert sample(metrics, "audit_events_generator_time_to_detect_seconds_sum", scenario="brute_force") == 2.5
    assert (
        sample(metrics, "audit_events_generator_alerts_received_total", source="amqp", result="matched") == 1
    )


def test_missed_only_after_the_timeout() -> None:
    """A run expecting an alert that gets none is pending until finished + timeout, then missed."""
    clock = Clock()
    t, metrics = tracker(clock)
    tracked = t.track(FakeRun())
    clock.advance(59.9)
    assert tracked.verdict == "pending"
    clock.advance(0.2)
    assert (tracked.verdict, tracked.time_to_detect) == ("missed", None)
    assert (
        sample(
            metrics,
            "audit_events_generator_scenario_verdicts_total",
            scenario="brute_force",
            verdict="missed",
        )
        == 1
    )


def test_quiet_and_false_alarm() -> None:
    """A run expecting quiet is quiet after the timeout without alert, and a false alarm with one."""
    clock = Clock()
    t, _ = tracker(clock)
    calm = t.track(FakeRun(expect="quiet"))
    noisy = t.track(FakeRun(expect="quiet", keys={"user_id": "bob"}))
    t.receive(platform_alert(noisy.event_ids[0]), "http")
    assert noisy.verdict == "false_alarm"
    clock.advance(60.0)
    assert calm.verdict == "quiet"


def test_the_timeout_counts_from_the_last_confirm_and_can_be_set_per_run() -> None:
    """The deadline is the last event's confirm plus the run's own timeout."""
    clock = Clock()
    t, _ = tracker(clock)
    run = FakeRun()
    confirms: dict[str, Deferred[Any]] = {e: Deferred() for e in run.event_ids}
    tracked = t.track(run, Handover(confirms), timeout=5.0)
    clock.advance(100.0)
    assert tracked.verdict == "pending"  # not finished: the broker has not confirmed every event
    for d in confirms.values():
        d.callback(None)
    clock.advance(4.9)
    assert tracked.verdict == "pending"
    clock.advance(0.1)
    assert tracked.verdict == "missed"


def test_an_alert_before_the_run_finished_decides_once_it_finishes() -> None:
    """An alert for the first event of a run still being confirmed decides it when the last confirm comes;
    time to detect is measured from the confirm of the event it named."""
    clock = Clock()
    t, _ = tracker(clock)
    run = FakeRun()
    confirms: dict[str, Deferred[Any]] = {e: Deferred() for e in run.event_ids}
    tracked = t.track(run, Handover(confirms))
    confirms[run.event_ids[0]].callback(None)
    clock.advance(3.0)
    t.receive(platform_alert(run.event_ids[0]), "amqp")
    assert tracked.verdict == "pending"
    clock.advance(10.0)
    for event_id in run.event_ids[1:]:
        confirms[event_id].callback(None)
    assert (tracked.verdict, tracked.time_to_detect) == ("detected", 3.0)


def test_late_alert_changes_no_verdict_and_is_counted() -> None:
    """An alert after the deadline is counted as late on the run; the run stays missed."""
    clock = Clock()
    t, metrics = tracker(clock)
    tracked = t.track(FakeRun())
    clock.advance(61.0)
    assert t.receive(platform_alert(tracked.event_ids[0]), "amqp")["late"] == 1
    assert (tracked.verdict, tracked.late_alerts, tracked.alerts) == ("missed", 1, 0)
    assert sample(metrics, "audit_events_generator_alerts_received_total", source="amqp", result="late") == 1


def test_an_alert_naming_several_runs_matches_each() -> None:
    """One alert naming events of two runs detects both."""
    clock = Clock()
    t, _ = tracker(clock)
    first, second = t.track(FakeRun()), t.track(FakeRun(keys={"user_id": "bob"}))
    t.receive({"event_ids": [first.event_ids[1], second.event_ids[2]]}, "http")
    assert (first.verdict, second.verdict) == ("detected", "detected")


def test_key_matching_within_the_window_only() -> None:
    """An alert naming no event matches a pending run with equal keys; a different host matches none, and
    after the run's deadline the keys match nothing."""
    clock = Clock()
    t, _ = tracker(clock)
    tracked = t.track(FakeRun())
    other_host = platform_alert("unknown", host="db-01")
    del other_host["correlation_id"], other_host["raw_event_data"]["event_id"]
    assert t.receive(other_host, "amqp")["unexpected"] == 1
    clock.advance(2.0)
    by_keys = platform_alert("unknown")
    del by_keys["correlation_id"], by_keys["raw_event_data"]["event_id"]
    t.receive(by_keys, "amqp")
    assert (tracked.verdict, tracked.time_to_detect) == ("detected", 2.0)  # from the last confirm (at 0)
    later = t.track(FakeRun(keys={"user_id": "eve", "server_hostname": "web-01"}))
    clock.advance(61.0)
    assert later.verdict == "missed"
    assert t.receive({**by_keys, "triggered_by": {"actor_id": "eve"}}, "amqp")["unexpected"] == 1


def test_unexpected_alerts_are_counted_and_a_few_kept() -> None:
    """Alerts that match no run are counted; only the last few are kept."""
    clock = Clock()
    t, metrics = tracker(clock, keep_unexpected=2)
    for n in range(5):
        t.receive({"event_id": f"nobody-{n}"}, "http")
    assert t.unexpected_count == 5
    assert [a["event_ids"] for a in t.unexpected] == [["nobody-3"], ["nobody-4"]]
    assert (
        sample(metrics, "audit_events_generator_alerts_received_total", source="http", result="unexpected")
        == 5
    )


def test_malformed_alerts_are_counted_and_the_rest_recorded() -> None:
    """A malformed alert is counted and reported; the good one beside it still decides its run."""
    clock = Clock()
    t, metrics = tracker(clock)
    tracked = t.track(FakeRun())
    result = t.receive([{"event_id": 3}, {"event_id": tracked.event_ids[0]}], "http")
    assert (result["matched"], result["malformed"]) == (1, 1)
    assert tracked.verdict == "detected"
    assert (
        sample(metrics, "audit_events_generator_alerts_received_total", source="http", result="malformed")
        == 1
    )


def test_unconfirmed_event_counts_from_its_acceptance() -> None:
    """A confirm Deferred that fails (the API stopped waiting) counts the event as confirmed when accepted."""
    clock = Clock()
    t, _ = tracker(clock)
    run = FakeRun(events=1)
    confirm: Deferred[Any] = Deferred()
    tracked = t.track(run, Handover({run.event_ids[0]: confirm}))
    clock.advance(1.0)
    confirm.cancel()
    confirm.addErrback(lambda _: None)
    assert (tracked.confirmed, tracked.finished) == ({run.event_ids[0]: 0.0}, 1.0)


def test_expectation_of_todays_runs_is_alert() -> None:
    """A run without `expect` expects an alert; a run's `expect` is read; other values are refused."""
    assert expectation(FakeRun()) == "alert"
    assert expectation(FakeRun(expect="quiet")) == "quiet"
    with pytest.raises(ValueError, match="alert or quiet"):
        expectation(FakeRun(expect="maybe"))


def test_a_scenario_files_near_miss_is_expected_quiet() -> None:
    """Runs of the scenario files carry their expectation as the expected detection's `outcome`: a near
    miss's run is scored against quiet, an attack's against an alert."""
    from auditgen.events import Catalog
    from auditgen.scenarios import ScenarioRunner

    runner = ScenarioRunner(Catalog.builtin(), random.Random(3))
    assert expectation(runner.run("failed_logins_below_threshold", {})) == "quiet"
    assert expectation(runner.run("brute_force", {})) == "alert"


def test_old_decided_runs_are_forgotten() -> None:
    """Beyond keep_decided, the oldest decided runs are dropped: an alert for them is unexpected."""
    clock = Clock()
    t, _ = tracker(clock, keep_decided=1)
    old, new = t.track(FakeRun()), t.track(FakeRun())
    clock.advance(61.0)
    assert (t.run(old.scenario_id), t.run(new.scenario_id)) == (None, new)
    assert t.receive({"event_id": old.event_ids[0]}, "http")["unexpected"] == 1


def test_listeners_hear_every_verdict_and_stop_cancels_deadlines() -> None:
    """Listeners get each decided run; stop() leaves no delayed call behind."""
    clock = Clock()
    t, _ = tracker(clock)
    heard: list[str] = []
    t.add_listener(lambda r: heard.append(r.verdict))
    t.track(FakeRun())
    clock.advance(60.0)
    t.track(FakeRun())
    t.stop()
    assert heard == ["missed"]
    assert clock.getDelayedCalls() == []


def test_a_paced_handover_is_finished_only_once_its_last_event_is_accepted_and_confirmed() -> None:
    """Tracked with a paced Handover, a run counts an event only once the handover says it was accepted:
    with two of three confirmed it is unfinished and undecided however long it takes; the third's
    confirm finishes it, and the timeout counts from then. The run shows its delivery and end."""
    clock = Clock()
    t, _ = tracker(clock)
    run = FakeRun(events=3)
    handover = Handover(ends=200.0)
    confirms = [Deferred[Any]() for _ in run.event_ids]
    handover.accept(run.event_ids[0], confirms[0])  # before tracking: replayed to the tracker
    tracked = t.track(run, handover)
    assert (tracked.delivery, tracked.ends, tracked.expected_deadline(0.0)) == ("paced", 200.0, 260.0)
    confirms[0].callback(None)
    clock.advance(100)
    handover.accept(run.event_ids[1], None)  # None: confirmed when accepted
    clock.advance(150)
    assert (tracked.finished, tracked.verdict, len(tracked.confirmed)) == (None, "pending", 2)
    assert tracked.expected_deadline(clock.seconds()) == 310.0  # later than planned: from now
    handover.accept(run.event_ids[2], confirms[2])
    clock.advance(5)
    confirms[2].callback(None)
    assert tracked.finished == 255.0
    clock.advance(59.9)
    assert tracked.verdict == "pending"
    clock.advance(0.1)
    assert tracked.verdict == "missed"


def test_an_alert_matched_by_keys_mid_run_is_timed_from_the_last_event_confirmed_before_it() -> None:
    """An alert naming no event, matched by keys while a paced run is under way, is timed from the run's
    last event confirmed before it arrived (not from events that came after it)."""
    clock = Clock()
    t, _ = tracker(clock)
    run = FakeRun(events=3)
    handover = Handover(ends=100.0)
    tracked = t.track(run, handover)
    handover.accept(run.event_ids[0], None)
    clock.advance(10)
    handover.accept(run.event_ids[1], None)
    clock.advance(2)
    alert = {"triggered_by": {"actor_id": "mallory"}, "impacted_resource": {"server_hostname": "web-01"}}
    assert t.receive(alert, "http")["matched"] == 1
    clock.advance(88)
    handover.accept(run.event_ids[2], None)
    assert (tracked.verdict, tracked.time_to_detect) == ("detected", 2.0)
