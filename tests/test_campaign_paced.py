"""Paced runs in campaigns, on a Clock, with a stand-in pipeline that alerts by arrival time: a paced run
is judged only after its schedule ends (plus the timeout), an alert mid-run detects it with the time to
detect of the event it names, a paced near miss stays quiet, an entry's delivery overrides its
scenario's, and with a store a paced run goes on across a restart and is scored as one run."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from auditgen import app
from auditgen.config import load_settings
from auditgen.events import Catalog
from auditgen.verdicts.campaigns import Campaign
from auditgen.verdicts.verdicts import TrackedRun
from tests.support.verdicts import ScoredPipeline

TIMEOUT = 10.0


def sent(campaign: Campaign, n: int) -> TrackedRun:
    run = campaign.runs[n]
    assert run is not None, f"run {n} not sent"
    return run


def test_a_paced_run_gets_no_verdict_before_its_schedule_ends_plus_the_timeout() -> None:
    """A paced brute force nobody alerts on is pending through its whole schedule and the timeout after
    its last event (an instant run's rule, judged from the first event, would call it missed long
    before), then missed; time_left_seconds counts down to that deadline from the start."""
    p = ScoredPipeline(timeout=TIMEOUT, alerting=False)
    campaign = p.start_campaign(
        {
            "scenarios": [
                {"name": "brute_force", "delivery": "paced", "parameters": {"window_seconds": 60}},
            ],
            "detection_timeout_seconds": TIMEOUT,
        }
    )
    p.clock.advance(0)
    run = sent(campaign, 0)
    assert (run.delivery, run.finished) == ("paced", None)
    assert run.ends is not None and 30 <= run.ends - p.clock.seconds() <= 60
    ends = run.ends
    shown = campaign.describe(p.tracker, p.clock.seconds())
    assert shown["time_left_seconds"] == pytest.approx(ends + TIMEOUT - p.clock.seconds())
    assert shown["runs"][0]["delivery"] == "paced" and shown["runs"][0]["ends_at"] is not None
    p.run_until(ends + TIMEOUT - 0.001)
    assert len(p.arrived(run.scenario_id)) == 5
    assert (run.verdict, run.finished, campaign.state) == ("pending", ends, "running")
    p.run_until(ends + TIMEOUT)
    assert (run.verdict, campaign.state) == ("missed", "finished")


def test_an_alert_mid_run_detects_a_paced_attack_timed_from_the_event_it_names() -> None:
    """The rule fires on the 3rd of 5 paced failures, 0.5 s after it arrived: the run stays pending while
    its last failures are still to come, then is detected at its end with a time to detect of 0.5 s
    (from that event's confirm, not the run's last)."""
    p = ScoredPipeline(timeout=TIMEOUT, alert_delay=0.5)
    campaign = p.start_campaign(
        {
            "scenarios": [
                {
                    "name": "brute_force",
                    "delivery": "paced",
                    "parameters": {"attempts": 5, "window_seconds": 40},
                }
            ],
            "detection_timeout_seconds": TIMEOUT,
        }
    )
    p.clock.advance(0)
    run = sent(campaign, 0)
    assert run.ends is not None
    while len(p.arrived(run.scenario_id)) < 3:
        p.run_until(min(c.getTime() for c in p.clock.getDelayedCalls()))
    third = p.arrived(run.scenario_id)[2]
    p.run_until(third + 0.5)
    assert (run.alerts, run.first_alert) == (1, third + 0.5)
    assert (run.verdict, len(p.arrived(run.scenario_id))) == ("pending", 3)
    p.run_until(run.ends - 0.001)
    assert run.verdict == "pending"
    p.run_until(run.ends)
    assert (run.verdict, campaign.state) == ("detected", "finished")
    assert run.time_to_detect == pytest.approx(0.5)
    p.run_until(run.ends + 0.5)
    assert run.alerts == 3  # the 4th and 5th failures' alerts are counted too


def test_a_paced_near_miss_stays_quiet_beside_an_instant_attack() -> None:
    """failed_logins_spread_out (paced by its file, failures 65 s or more apart) beside an instant brute
    force: the brute force is detected at once, the campaign goes on running until the near miss's
    last failure plus the timeout, and the near miss is quiet: the rule never saw 3 within 60 s."""
    p = ScoredPipeline(timeout=TIMEOUT)
    campaign = p.start_campaign(
        {
            "scenarios": {"failed_logins_spread_out": 1, "brute_force": 1},
            "detection_timeout_seconds": TIMEOUT,
        }
    )
    p.clock.advance(0)
    p.clock.advance(0)
    near_miss, attack = sent(campaign, 0), sent(campaign, 1)
    assert (near_miss.delivery, near_miss.expect, attack.delivery) == ("paced", "quiet", "instant")
    p.run_until(p.clock.seconds() + 1)
    assert attack.verdict == "detected" and campaign.state == "running"
    assert near_miss.ends is not None
    p.run_until(near_miss.ends + TIMEOUT - 0.001)
    assert (near_miss.verdict, campaign.state) == ("pending", "running")
    p.run_until(near_miss.ends + TIMEOUT)
    assert (near_miss.verdict, campaign.state, campaign.passed) == ("quiet", "finished", True)
    times = p.arrived(near_miss.scenario_id)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and min(gaps) >= 65


def test_an_entrys_delivery_overrides_its_scenarios_both_ways() -> None:
    """failed_logins_spread_out asked instant arrives at once and trips the rule (a false alarm: why it
    is paced by default); brute_force asked paced arrives over its window and is still detected."""
    p = ScoredPipeline(timeout=TIMEOUT)
    campaign = p.start_campaign(
        {
            "scenarios": [
                {"name": "failed_logins_spread_out", "delivery": "instant"},
                {"name": "brute_force", "delivery": "paced", "parameters": {"window_seconds": 30}},
            ],
            "detection_timeout_seconds": TIMEOUT,
        }
    )
    p.clock.advance(0)
    p.clock.advance(0)
    spread, attack = sent(campaign, 0), sent(campaign, 1)
    assert (spread.delivery, attack.delivery) == ("instant", "paced")
    p.run_until(p.clock.seconds() + 120)
    assert (spread.verdict, attack.verdict) == ("false_alarm", "detected")
    spread_times, attack_times = p.arrived(spread.scenario_id), p.arrived(attack.scenario_id)
    assert max(spread_times) - min(spread_times) == 0
    assert max(attack_times) - min(attack_times) >= 15


def test_with_a_store_a_paced_run_goes_on_after_a_restart_and_is_scored_as_one(tmp_path: Path) -> None:
    """Stopped after the first of three spread-out failures: the runner stores the rest of the schedule,
    the verdict store the campaign and its pending run. Restarted 100 s later on the same directory, the
    tracker follows the resumed run again: no verdict before its shifted end plus the timeout, then quiet,
    and the campaign finishes; every event arrived once."""
    first = ScoredPipeline(timeout=TIMEOUT, store_dir=str(tmp_path))
    first.start()
    campaign = first.start_campaign(
        {
            "scenarios": [{"name": "failed_logins_spread_out", "parameters": {"attempts": 3}}],
            "detection_timeout_seconds": TIMEOUT,
        }
    )
    first.clock.advance(0)
    run = sent(campaign, 0)
    event_ids = run.event_ids
    first.clock.advance(1)
    first.stop()
    assert len(first.arrived(run.scenario_id)) == 1
    assert not first.clock.getDelayedCalls()
    first.clock.advance(100)

    second = ScoredPipeline(timeout=TIMEOUT, store_dir=str(tmp_path), clock=first.clock)
    second.start()
    restored = second.campaigns.get(campaign.campaign_id)
    assert restored is not None
    resumed = second.tracker.run(run.scenario_id)
    assert resumed is not None and restored.runs[0] is resumed
    assert (resumed.verdict, resumed.finished, resumed.delivery) == ("pending", None, "paced")
    assert resumed.ends is not None and resumed.ends > second.clock.seconds() + 60
    shown = restored.describe(second.tracker, second.clock.seconds())
    assert shown["time_left_seconds"] == pytest.approx(resumed.ends + TIMEOUT - second.clock.seconds())
    second.run_until(resumed.ends + TIMEOUT - 0.001)
    assert len(second.arrived(run.scenario_id)) == 2
    assert (resumed.verdict, restored.state) == ("pending", "running")
    second.run_until(resumed.ends + TIMEOUT)
    assert (resumed.verdict, restored.state, restored.passed) == ("quiet", "finished", True)
    arrived = [e["event_id"] for _, e in first.arrivals + second.arrivals]
    assert arrived == list(event_ids)
    second.stop()


def test_in_the_service_the_verdicts_start_before_the_scenario_runner() -> None:
    """The tree starts the verdict service before the runner (and stops it after): the paced runs the
    runner resumes are followed by their verdicts from their first event on."""
    root = app.build(load_settings({}, {}, {}), Catalog.builtin(), MemoryReactorClock())
    assert root.parts is not None
    children = list(root)
    assert children.index(root.parts.verdicts) < children.index(root.parts.scenarios)
