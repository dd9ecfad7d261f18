"""Campaigns on a Clock: the request's shapes and errors, interleaving, sending while the outbox is busy,
the state, the summary (rates and percentiles), and JUnit XML."""

from __future__ import annotations

import random
from typing import Any
from xml.etree import ElementTree

import pytest
from twisted.internet.task import Clock

from auditgen.events import Catalog
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import Run, ScenarioRunner
from auditgen.validation import BadRequest
from auditgen.verdicts.campaigns import (
    Busy,
    Campaigns,
    RunSpec,
    parse_campaign,
    percentile,
)
from auditgen.verdicts.junit import junit_xml
from auditgen.verdicts.starter import OutboxStarter, PacedRun
from auditgen.verdicts.verdicts import Handover, Tracker
from tests.support.verdicts import FakeStarter


def campaigns(clock: Clock) -> tuple[Campaigns, Tracker, FakeStarter]:
    tracker = Tracker(clock, metrics=Metrics(), timeout=60.0)
    starter = FakeStarter()
    return Campaigns(clock, tracker, starter), tracker, starter


def test_request_shapes_are_interleaved() -> None:
    """Counts by name and a list of entries both work; runs alternate between scenarios."""
    request = parse_campaign({"scenarios": {"a": 3, "b": 2}})
    assert [r.scenario for r in request.runs] == ["a", "b", "a", "b", "a"]
    request = parse_campaign(
        {
            "scenarios": [
                {"name": "a", "count": 2, "parameters": {"x": 1}, "expect": "quiet"},
                {"name": "b"},
            ],
            "detection_timeout_seconds": 5,
        }
    )
    assert [(r.scenario, r.expect) for r in request.runs] == [("a", "quiet"), ("b", None), ("a", "quiet")]
    assert (request.timeout, request.runs[0].parameters) == (5.0, {"x": 1})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "scenarios must be an object of counts"),
        ({"scenarios": {}}, "scenarios must name from 1 to 20 scenarios (or entries), not 0"),
        ({"scenarios": {"a": 0}}, "scenarios.a must be a whole number of runs from 1 to 50, not 0"),
        ({"scenarios": {"a": True}}, "scenarios.a must be a whole number"),
        ({"scenarios": {"a": 2.5}}, "scenarios.a must be a whole number"),
        ({"scenarios": {"a": 51}}, "scenarios.a must be a whole number of runs from 1 to 50, not 51"),
        (
            {"scenarios": [{"name": "a"}] * 21},
            "scenarios must name from 1 to 20 scenarios (or entries), not 21",
        ),
        ({"scenarios": [{"count": 1}]}, "scenarios[0].name must be a scenario's name"),
        ({"scenarios": [{"name": "a", "expect": "maybe"}]}, "scenarios[0].expect must be alert or quiet"),
        (
            {"scenarios": [{"name": "a", "delivery": "slow"}]},
            "scenarios[0].delivery must be instant or paced",
        ),
        ({"scenarios": [{"name": "a", "parameters": []}]}, "scenarios[0].parameters must be an object"),
        ({"scenarios": [{"name": "a", "colour": 1}]}, "scenarios[0]: unknown field 'colour'"),
        (
            {"scenarios": {"a": 1}, "detection_timeout_seconds": 0},
            "detection_timeout_seconds must be a number",
        ),
        ({"scenarios": {"a": 1}, "extra": 1}, "unknown field 'extra'"),
        (
            {"scenarios": {"a": 1}, "detection_timeout_seconds": None},
            "detection_timeout_seconds must be a number",
        ),
        ({"scenarios": [{"name": "a", "delivery": None}]}, "scenarios[0].delivery must be instant or paced"),
        ({"scenarios": [{"name": "a", "expect": None}]}, "scenarios[0].expect must be alert or quiet"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: dict[str, Any], error: str) -> None:
    """Every mistake in a campaign request is a BadRequest naming the field."""
    with pytest.raises(BadRequest) as raised:
        parse_campaign(body)
    assert error in str(raised.value)


def test_a_bad_scenario_starts_nothing() -> None:
    """Runs are prepared before the campaign exists: one unknown scenario and nothing is sent."""
    clock = Clock()
    c, _, starter = campaigns(clock)
    with pytest.raises(BadRequest):
        c.start(parse_campaign({"scenarios": {"a": 1, "unknown": 1}}))
    clock.advance(10)
    assert (starter.sent, list(c)) == ([], [])


def test_campaign_runs_to_its_end_and_waits_while_busy() -> None:
    """Runs are sent one per turn, retried while busy; the campaign finishes with the last verdict."""
    clock = Clock()
    c, tracker, starter = campaigns(clock)
    starter.busy = True
    campaign = c.start(parse_campaign({"scenarios": {"a": 2, "b": 1}, "detection_timeout_seconds": 10}))
    clock.advance(0)
    assert (starter.sent, starter.prepared) == ([], 2)  # the first run of each entry, to check it
    shown = campaign.describe(tracker, clock.seconds())
    assert (shown["state"], shown["runs_sent"], shown["time_left_seconds"]) == ("running", 0, None)
    assert [r["sent"] for r in shown["runs"]] == [False, False, False]
    starter.busy = False
    clock.advance(1.0)
    clock.advance(0)
    clock.advance(0)
    assert (starter.sent, starter.prepared) == (["a", "b", "a"], 3)
    tracker.receive({"event_id": campaign.runs[0].event_ids[0]}, "http")
    assert campaign.describe(tracker, clock.seconds())["time_left_seconds"] == 10.0
    clock.advance(10.0)
    shown = campaign.describe(tracker, clock.seconds())
    assert (shown["state"], shown["passed"]) == ("finished", False)
    assert [r["verdict"] for r in shown["runs"]] == ["detected", "missed", "missed"]
    total = shown["summary"]["total"]
    assert (total["runs"], total["detected"], total["missed"], total["detection_rate"]) == (3, 1, 2, 1 / 3)
    assert shown["summary"]["scenarios"]["b"]["detection_rate"] == 0.0
    assert clock.getDelayedCalls() == []


def test_expect_quiet_passes_with_no_alert_and_unexpected_alerts_are_shown() -> None:
    """A campaign of quiet runs passes when nothing fires; an alert for no run is listed, not a failure."""
    clock = Clock()
    c, tracker, _ = campaigns(clock)
    campaign = c.start(parse_campaign({"scenarios": [{"name": "near_miss", "count": 2, "expect": "quiet"}]}))
    clock.advance(0)
    clock.advance(0)
    tracker.receive({"event_id": "background"}, "amqp")
    clock.advance(60)
    shown = campaign.describe(tracker, clock.seconds())
    assert (shown["passed"], shown["summary"]["total"]["quiet"]) == (True, 2)
    assert shown["summary"]["total"]["detection_rate"] is None
    assert shown["unexpected_alerts"]["count"] == 1
    assert shown["unexpected_alerts"]["kept"][0]["event_ids"] == ["background"]


def test_percentiles_are_nearest_rank() -> None:
    """p50 and p95 of time to detect take the nearest rank; none without values."""
    values = [float(n) for n in range(1, 21)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile([], 0.5)) == (10.0, 19.0, None)


def test_junit_has_a_case_per_run_and_failures_for_missed_and_false_alarm() -> None:
    """JUnit XML: one testcase per run; missed and false_alarm are failures, pending is skipped."""
    campaign = {
        "campaign_id": "c1",
        "created": "2026-12-07T00:00:00Z",
        "runs": [
            {
                "scenario": "a",
                "scenario_id": "1",
                "expect": "alert",
                "verdict": "detected",
                "time_to_detect_seconds": 1.5,
            },
            {
                "scenario": "a",
                "scenario_id": "2",
                "expect": "alert",
                "verdict": "missed",
                "time_to_detect_seconds": None,
            },
            {
                "scenario": "b",
                "scenario_id": "3",
                "expect": "quiet",
                "verdict": "false_alarm",
                "time_to_detect_seconds": 2.0,
            },
            {
                "scenario": "b",
                "scenario_id": "4",
                "expect": "quiet",
                "verdict": "quiet",
                "time_to_detect_seconds": None,
            },
            {
                "scenario": "b",
                "scenario_id": "5",
                "expect": "quiet",
                "verdict": "pending",
                "time_to_detect_seconds": None,
            },
        ],
    }
    root = ElementTree.fromstring(junit_xml(campaign))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    cases = suite.findall("testcase")
    assert [c.find("failure") is not None for c in cases] == [False, True, True, False, False]
    assert cases[0].get("time") == "1.500"
    assert cases[4].find("skipped") is not None


def test_outbox_starter_runs_each_entry_in_its_delivery() -> None:
    """The starter over the runner: an entry's delivery is its scenario's unless the entry names one. An
    instant run's events go to the outbox as one and the run is reported, its Handover complete; a paced
    run starts its schedule (one event now) with a Handover that knows when it ends. Unknown scenarios,
    delivery among the parameters and paced without a clock are bad requests; a full outbox is Busy."""
    clock = Clock()
    outbox = Outbox(8, Metrics(), clock)
    reported: list[str] = []

    class Reporter:
        full = False

        def report(self, run: Any) -> None:
            reported.append(run.scenario_id)

    runner = ScenarioRunner(Catalog.builtin(), random.Random(1), Reporter(), clock=clock, outbox=outbox)
    starter = OutboxStarter(runner, outbox)
    instant = starter.prepare(RunSpec("brute_force", {"attempts": 5}))
    assert isinstance(instant, Run)
    assert isinstance(starter.prepare(RunSpec("brute_force", delivery="paced")), PacedRun)
    assert isinstance(starter.prepare(RunSpec("failed_logins_spread_out")), PacedRun)
    assert isinstance(starter.prepare(RunSpec("failed_logins_spread_out", delivery="instant")), Run)
    with pytest.raises(BadRequest, match="no scenario"):
        starter.prepare(RunSpec("nope"))
    with pytest.raises(BadRequest, match="delivery goes beside the parameters"):
        starter.prepare(RunSpec("brute_force", {"delivery": "paced"}))
    clockless = OutboxStarter(ScenarioRunner(Catalog.builtin(), random.Random(1)), outbox)
    with pytest.raises(BadRequest, match="failed_logins_spread_out: delivery paced is not available here"):
        clockless.prepare(RunSpec("failed_logins_spread_out"))

    handovers: list[Handover] = []
    starter.send(instant).addCallback(handovers.append)
    assert (len(outbox), reported) == (5, [instant.scenario_id])
    assert (set(handovers[0].accepted), handovers[0].paced) == (set(instant.expected["event_ids"]), False)
    paced = starter.prepare(RunSpec("brute_force", {"attempts": 4, "window_seconds": 30}, "paced"))
    starter.send(paced).addCallback(handovers.append)
    assert len(outbox) == 6 and list(handovers[1].accepted) == paced.expected["event_ids"][:1]
    assert handovers[1].ends is not None and 15 <= handovers[1].ends - clock.seconds() <= 30
    with pytest.raises(Busy):
        starter.send(starter.prepare(RunSpec("brute_force", {"attempts": 5})))
    clock.advance(30)
    assert len(outbox) == 8 and list(handovers[1].accepted) == paced.expected["event_ids"][:3]
    with pytest.raises(Busy):  # full: a paced run would only wait for room
        starter.send(starter.prepare(RunSpec("failed_logins_spread_out")))


def test_runs_drawn_together_get_apart_keys_where_their_parameters_allow() -> None:
    """Runs prepared while others hold their keys are drawn again for a user and host no running run
    has (a pipeline counting by user and host would otherwise see two runs as one); keys the caller
    fixed are kept; a run's keys are free again once its detection time has passed."""
    clock = Clock()
    outbox = Outbox(1000, Metrics(), clock)
    runner = ScenarioRunner(Catalog.builtin(), random.Random(3), clock=clock, outbox=outbox)
    starter = OutboxStarter(runner, outbox, clock, hold=60.0)
    host = "web-01.prod.example.com"
    runs = [starter.prepare(RunSpec("brute_force", {"host": host})) for _ in range(8)]
    users = [run.expected["keys"]["user_id"] for run in runs]
    assert len(set(users)) == len(users), users  # 8 of the catalog's 10 users, every one once
    fixed = [starter.prepare(RunSpec("brute_force", {"host": host, "user": "alice"})) for _ in range(2)]
    assert [run.expected["keys"]["user_id"] for run in fixed] == ["alice", "alice"]
    clock.advance(31 + 60)  # brute_force's 30 s, then the hold
    again = starter.prepare(RunSpec("brute_force", {"host": host, "user": users[0]}))
    assert again.expected["keys"]["user_id"] == users[0]
    unseparated = OutboxStarter(ScenarioRunner(Catalog.builtin(), random.Random(3)), outbox)
    drawn = [
        unseparated.prepare(RunSpec("brute_force", {"host": host})).expected["keys"]["user_id"]
        for _ in range(8)
    ]
    assert len(set(drawn)) < len(drawn)  # without the clock, the same draws repeat users
