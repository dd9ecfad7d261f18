"""auditgen-campaign without a service: the request it builds from a file and arguments, the scorecard it
prints, how it follows a campaign, and its exit status for each outcome."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from auditgen.verdicts import cli


def summary(**counts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "runs": 0,
        "pending": 0,
        "detected": 0,
        "missed": 0,
        "quiet": 0,
        "false_alarms": 0,
        "as_expected": 0,
    }
    base.update(counts)
    base.setdefault("detection_rate", None)
    base.setdefault("time_to_detect_seconds", {"p50": None, "p95": None, "max": None})
    return base


def campaign(state: str = "finished", passed: bool | None = False, pending: int = 0) -> dict[str, Any]:
    ttd = {"p50": 1.25, "p95": 2.0, "max": 2.0}
    return {
        "campaign_id": "c1",
        "state": state,
        "passed": passed,
        "runs_sent": 2,
        "runs_planned": 2,
        "time_left_seconds": None if state == "finished" else 12.0,
        "summary": {
            "total": summary(
                runs=2,
                pending=pending,
                detected=1,
                missed=1 - pending,
                detection_rate=0.5,
                time_to_detect_seconds=ttd,
            ),
            "scenarios": {
                "brute_force": summary(runs=1, detected=1, detection_rate=1.0, time_to_detect_seconds=ttd),
                "service_flapping": summary(runs=1, missed=1, detection_rate=0.0),
            },
        },
        "runs": [
            {"scenario": "brute_force", "scenario_id": "r1", "expect": "alert", "verdict": "detected"},
            {
                "scenario": "service_flapping",
                "scenario_id": "r2",
                "expect": "alert",
                "verdict": "missed" if not pending else "pending",
            },
        ],
        "unexpected_alerts": {"count": 2, "kept": []},
    }


def test_body_from_file_and_arguments(tmp_path: Path) -> None:
    """A YAML file's scenarios (counts or entries) and SCENARIO=COUNT arguments are joined; --timeout sets
    the detection timeout."""
    (tmp_path / "c.yaml").write_text("scenarios:\n  brute_force: 2\ndetection_timeout_seconds: 5\n")
    args = cli.parse_args(
        ["--file", str(tmp_path / "c.yaml"), "service_flapping=3", "off_hours_admin", "--timeout", "9"]
    )
    assert cli.campaign_body(args) == {
        "scenarios": [
            {"name": "brute_force", "count": 2},
            {"name": "service_flapping", "count": 3},
            {"name": "off_hours_admin", "count": 1},
        ],
        "detection_timeout_seconds": 9.0,
    }
    with pytest.raises(ValueError, match="SCENARIO=COUNT"):
        cli.campaign_body(cli.parse_args(["brute_force=many"]))


def test_an_argument_may_name_a_delivery_and_a_file_entry_keeps_its_own(tmp_path: Path) -> None:
    """SCENARIO:paced, SCENARIO=COUNT:instant add the delivery to the entry; none leaves the scenario's
    own; a file's entries keep theirs; any other delivery is a usage error."""
    (tmp_path / "c.yaml").write_text(
        "scenarios:\n  - {name: failed_logins_spread_out, delivery: instant, parameters: {attempts: 3}}\n"
    )
    args = cli.parse_args(
        ["--file", str(tmp_path / "c.yaml"), "brute_force:paced", "failed_logins_spread_out=2:instant", "x"]
    )
    assert cli.campaign_body(args)["scenarios"] == [
        {"name": "failed_logins_spread_out", "delivery": "instant", "parameters": {"attempts": 3}},
        {"name": "brute_force", "count": 1, "delivery": "paced"},
        {"name": "failed_logins_spread_out", "count": 2, "delivery": "instant"},
        {"name": "x", "count": 1},
    ]
    for bad in ("brute_force:slow", "brute_force:", "brute_force=2:paced:paced", ":paced"):
        with pytest.raises(ValueError, match=":instant or :paced"):
            cli.campaign_body(cli.parse_args([bad]))


def test_progress_counts_paced_runs_under_way_and_the_time_left_to_their_end() -> None:
    """A paced run sent whose events are not all out is counted as under way; the time left is the
    service's (to the paced run's end plus the timeout)."""
    running = campaign("running", None, pending=1)
    running["time_left_seconds"] = 250.0
    running["runs"][1].update({"sent": True, "delivery": "paced", "events": 4, "events_confirmed": 1})
    assert (
        cli.progress_line(running) == "2/2 runs sent (1 paced, under way), 1/2 verdicts in, about 250 s left"
    )
    running["runs"][1]["events_confirmed"] = 4
    assert cli.progress_line(running) == "2/2 runs sent, 1/2 verdicts in, about 250 s left"


def test_scorecard_has_a_row_per_scenario_the_total_and_each_failure() -> None:
    """The table shows counts, rate and time to detect; runs not as expected are listed by id."""
    table = cli.scorecard(campaign())
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["scenario", "runs", "detected"]
    assert lines[2].split() == ["brute_force", "1", "1", "0", "0", "0", "0", "100%", "1.25", "2.00", "2.00"]
    assert lines[5].split()[0] == "total"
    assert "MISSED: service_flapping r2 (expected alert)" in table
    assert "2 alerts matched no run" in table


class FakeClient:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls = 0

    def json(self, method: str, path: str, body: Any = None) -> Any:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_follow_polls_until_finished_and_prints_each_change() -> None:
    """Off a terminal, a line per change of progress; it returns the finished campaign."""
    client = FakeClient(
        [campaign("running", None, pending=1), campaign("running", None, pending=1), campaign()]
    )
    out = io.StringIO()
    sleeps: list[float] = []
    shown = cli.follow(client, "c1", 0.5, 60, out, clock=lambda: 0.0, sleep=sleeps.append)  # type: ignore[arg-type]
    assert shown["state"] == "finished"
    assert out.getvalue().splitlines() == [
        "2/2 runs sent, 1/2 verdicts in, about 12 s left",
        "2/2 runs sent, 2/2 verdicts in",
    ]
    assert sleeps == [0.5, 0.5]


def test_follow_gives_up_after_wait() -> None:
    """A campaign still running at the deadline is returned as it is."""
    now = iter([0.0, 5.0, 11.0])
    client = FakeClient([campaign("running", None, pending=1)])
    shown = cli.follow(client, "c1", 1, 10, io.StringIO(), clock=lambda: next(now), sleep=lambda _: None)  # type: ignore[arg-type]
    assert (shown["state"], client.calls) == ("running", 2)


@pytest.mark.parametrize(
    ("final", "status"),
    [
        (campaign(passed=True), cli.OK),
        (campaign(passed=False), cli.FAILED),
        (campaign("running", None, 1), cli.UNFINISHED),
    ],
)
def test_exit_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, final: dict[str, Any], status: int
) -> None:
    """0 only when every verdict is as expected; 1 for a miss or false alarm; 3 when not finished; the JSON
    and JUnit files are written either way."""
    calls: list[tuple[str, str]] = []

    def call(self: Any, method: str, path: str, body: Any = None) -> bytes:
        calls.append((method, path))
        if method == "POST":
            return json.dumps(
                {"campaign_id": "c1", "runs": [{}, {}], "detection_timeout_seconds": 60}
            ).encode()
        return b"<testsuites/>" if path.endswith("/junit") else json.dumps(final).encode()

    monkeypatch.setattr(cli.Client, "call", call)
    args = [
        "brute_force",
        "--wait",
        "0",
        "--json",
        str(tmp_path / "o.json"),
        "--junit",
        str(tmp_path / "o.xml"),
    ]
    assert cli.run(args, io.StringIO(), io.StringIO()) == status
    assert json.loads((tmp_path / "o.json").read_text()) == final
    assert (tmp_path / "o.xml").read_bytes() == b"<testsuites/>"
    assert calls[0] == ("POST", "/campaigns")


def test_a_refused_request_or_no_service_is_status_2(tmp_path: Path) -> None:
    """Nothing listening (or a bad file) exits 2 with a line saying why."""
    err = io.StringIO()
    assert cli.run(["--url", "http://127.0.0.1:9", "brute_force"], io.StringIO(), err) == cli.ERROR
    assert "POST http://127.0.0.1:9/campaigns" in err.getvalue()
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    err = io.StringIO()
    assert cli.run(["--file", str(tmp_path / "bad.yaml")], io.StringIO(), err) == cli.ERROR
    assert "expected a mapping with scenarios" in err.getvalue()
