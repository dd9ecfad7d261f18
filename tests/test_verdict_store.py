"""The verdict store on a Clock: what a restart keeps (campaigns, runs, verdicts, unexpected alerts), a
pending run decided at its deadline after the restart, a campaign that goes on, and flushed()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from auditgen.metrics import Metrics
from auditgen.verdicts.campaigns import Campaigns, parse_campaign
from auditgen.verdicts.store import FLUSH_SECONDS, VerdictStore
from auditgen.verdicts.verdicts import Tracker
from tests.support.verdicts import FakeStarter


def service(directory: Path, clock: Clock, starter: FakeStarter | None = None) -> tuple[Any, ...]:
    """Tracker, campaigns and store as the service wires them, with what the directory holds restored."""
    tracker = Tracker(clock, metrics=Metrics(), timeout=60.0)
    store = VerdictStore(str(directory), clock)
    starter = starter or FakeStarter()
    campaigns = Campaigns(clock, tracker, starter, on_change=store.campaign_changed)
    store.restore(tracker, campaigns)
    store.attach(tracker)
    return tracker, campaigns, store, starter


def test_a_restart_keeps_verdicts_and_decides_the_pending_run_at_its_deadline(tmp_path: Path) -> None:
    """Before: a campaign of two runs, one detected, one pending, an unexpected alert. After a restart
    the detected run keeps its verdict and time to detect, the pending one is missed at its deadline (as
    if never stopped) and the campaign finishes."""
    clock = Clock()
    tracker, campaigns, store, _ = service(tmp_path, clock)
    campaign = campaigns.start(parse_campaign({"scenarios": {"a": 2}}))
    clock.advance(0)
    clock.advance(0)
    first, second = campaign.runs
    clock.advance(2.0)
    tracker.receive({"event_id": first.event_ids[0]}, "http")
    tracker.receive({"event_id": "background"}, "http")
    clock.advance(FLUSH_SECONDS)
    tracker.stop()
    campaigns.stop()
    store.close()

    later = Clock()
    later.advance(30.0)
    tracker, campaigns, store, starter = service(tmp_path, later)
    restored = campaigns.get(campaign.campaign_id)
    assert restored is not None
    shown = restored.describe(tracker, later.seconds())
    assert shown["state"] == "running"
    assert [(r["verdict"], r["time_to_detect_seconds"]) for r in shown["runs"]] == [
        ("detected", 2.0),
        ("pending", None),
    ]
    assert (tracker.unexpected_count, shown["unexpected_alerts"]["count"]) == (1, 1)
    later.advance(30.0)  # the second run's deadline: 0 + 60
    assert tracker.run(second.scenario_id).verdict == "missed"
    assert restored.state == "finished"
    assert starter.sent == []  # nothing was sent again
    later.advance(FLUSH_SECONDS)
    store.close()


def test_runs_not_yet_sent_are_sent_after_a_restart(tmp_path: Path) -> None:
    """A campaign stopped while the outbox was full goes on after the restart, with new run ids."""
    clock = Clock()
    busy = FakeStarter()
    busy.busy = True
    tracker, campaigns, store, _ = service(tmp_path, clock, busy)
    campaign = campaigns.start(parse_campaign({"scenarios": {"a": 1, "b": 1}}))
    old_ids = list(campaign.scenario_ids)
    clock.advance(FLUSH_SECONDS)
    campaigns.stop()
    store.close()

    later = Clock()
    tracker, campaigns, store, starter = service(tmp_path, later)
    later.advance(0)
    later.advance(0)
    restored = campaigns.get(campaign.campaign_id)
    assert restored is not None
    assert starter.sent == ["a", "b"]
    assert restored.scenario_ids != old_ids
    later.advance(60.0)
    assert restored.state == "finished"
    tracker.stop()
    store.close()


def test_flushed_fires_once_the_changes_are_written(tmp_path: Path) -> None:
    """flushed() waits for the next write when something changed, and fires at once otherwise."""
    clock = Clock()
    tracker, _, store, _ = service(tmp_path, clock)
    fired: list[bool] = []
    store.flushed().addCallback(lambda _: fired.append(True))
    assert fired == [True]
    tracker.receive({"event_id": "nobody"}, "amqp")
    store.flushed().addCallback(lambda _: fired.append(True))
    assert fired == [True]
    clock.advance(FLUSH_SECONDS)
    assert fired == [True, True]
    store.close()


def test_the_service_restores_on_start_and_stores_on_stop(tmp_path: Path) -> None:
    """VerdictService (as makeService builds it) with a spool directory: a run tracked before a stop is
    known again after the next start."""
    import random

    from auditgen.events import Catalog
    from auditgen.outbox import Outbox
    from auditgen.scenarios import ScenarioRunner
    from auditgen.verdicts.alerts import AlertFormat
    from auditgen.verdicts.service import VerdictService
    from tests.support.verdicts import FakeRun

    def build(clock: Clock) -> VerdictService:
        metrics = Metrics()
        runner = ScenarioRunner(Catalog.builtin(), random.Random(1))
        outbox = Outbox(10, metrics, clock)
        return VerdictService(
            clock, metrics, runner, outbox, AlertFormat(), 60.0, 1024, store_dir=str(tmp_path)
        )

    clock = Clock()
    first = build(clock)
    first.startService()
    run = FakeRun()
    first.report(run)
    first.stopService()
    assert clock.getDelayedCalls() == []
    second = build(Clock())
    second.startService()
    restored = second.tracker.run(run.scenario_id)
    assert restored is not None and restored.verdict == "pending"
    second.stopService()


def test_forgotten_runs_leave_the_store_and_finished_campaigns_send_nothing(tmp_path: Path) -> None:
    """Runs outside campaigns that the tracker forgets are deleted (the store does not grow without end);
    a finished campaign read back sends nothing again."""
    from tests.support.verdicts import FakeRun

    clock = Clock()
    tracker, campaigns, store, _ = service(tmp_path, clock)
    tracker._keep_decided = 1
    campaign = campaigns.start(parse_campaign({"scenarios": {"a": 1}}))
    clock.advance(0)
    loose = [FakeRun(), FakeRun()]
    for run in loose:
        tracker.track(run)
    clock.advance(60.0)
    assert campaign.state == "finished"
    store.close()
    later = Clock()
    tracker, campaigns, store, starter = service(tmp_path, later)
    later.advance(1.0)
    assert starter.sent == []
    assert campaigns.get(campaign.campaign_id) is not None
    known = [tracker.run(run.scenario_id) is not None for run in loose]
    assert known.count(True) <= 1
    store.close()
