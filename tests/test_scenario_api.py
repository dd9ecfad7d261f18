"""GET /scenarios and POST /scenarios/{name}, in memory (StubTreq), with the broker played by the test."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from auditgen.content_type import MISSING
from auditgen.events import Catalog
from auditgen.groundtruth import RECORD_TYPE, GroundTruth
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import BUILTIN, ScenarioRunner
from tests.support import detect
from tests.support.web import JSON, FailingSpool, Harness, SlowSpool, answered


class ScenarioHarness(Harness):
    """The API with a scenario runner whose ground truth goes to an outbox of its own."""

    def __init__(
        self, capacity: int = 100, truth_capacity: int = 10, confirm_wait: float = 1.0, spool: Any = None
    ) -> None:
        self._truth_capacity = truth_capacity
        super().__init__(capacity=capacity, confirm_wait=confirm_wait, spool=spool)

    def make_scenarios(self) -> ScenarioRunner:
        self.truth = Outbox(self._truth_capacity, Metrics(), self.clock)
        self.ground_truth = GroundTruth(self.metrics, self.clock, self.truth)
        self.ground_truth.startService()
        return ScenarioRunner(
            Catalog.builtin(), random.Random(5), self.ground_truth, clock=self.clock, outbox=self.outbox
        )

    def run(self, name: str, body: bytes = b"", headers: Any = JSON) -> Any:
        return self.request("POST", f"/scenarios/{name}", body, headers)

    def records(self) -> list[dict[str, Any]]:
        found = []
        while (entry := self.truth.take()) is not None:
            found.append(json.loads(entry.body))
        return found

    def runs(self, name: str) -> float:
        labels = {"scenario": name, "origin": "api"}
        return self.metrics.registry.get_sample_value("audit_events_generator_scenarios_total", labels) or 0.0


def test_get_scenarios_lists_every_scenario_with_its_parameters() -> None:
    """The list names each scenario (the attacks, then the near misses) with its parameters' types,
    defaults and descriptions."""
    h = ScenarioHarness()
    code, body, _ = h.answer(h.request("GET", "/scenarios"))
    assert code == 200
    assert [s["name"] for s in body["scenarios"]] == [s.name for s in BUILTIN]
    brute = body["scenarios"][0]
    assert [p["name"] for p in brute["parameters"]] == [
        "user",
        "host",
        "attempts",
        "window_seconds",
        "success",
    ]
    assert next(p for p in brute["parameters"] if p["name"] == "attempts")["default"] == 5


def test_running_a_scenario_answers_once_confirmed_with_ids_and_expected_detection() -> None:
    """202 success after the broker confirmed every event; the answer names them and what should be
    detected, the ground-truth record follows the accepted events and the run is counted."""
    h = ScenarioHarness()
    d = h.run("brute_force")
    assert not answered(d), "answered before the confirms"
    events = h.published()
    code, body, headers = h.answer(d)
    assert code == 202
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert body["status"] == "success"
    assert body["event_ids"] == [e["event_id"] for e in events]
    assert {e["details"]["scenario_id"] for e in events} == {body["scenario_id"]}
    detect.assert_expected(body["expected"], "brute_force", events, body["parameters"])
    assert list(detect.brute_force(events)) == [tuple(body["expected"]["keys"].values())]
    assert h.runs("brute_force") == 1


def test_the_ground_truth_record_waits_until_every_event_is_on_disk() -> None:
    """With a spool, the record is handed over only once all of the run's events are stored."""
    spool = SlowSpool()
    h = ScenarioHarness(spool=spool)
    h.run("brute_force")
    assert len(spool.writes) == 5
    for seq, write in enumerate(spool.writes[:-1]):
        write.callback(seq)
    assert h.records() == [] and h.runs("brute_force") == 0
    spool.writes[-1].callback(4)
    assert [r["scenario"] for r in h.records()] == ["brute_force"]
    assert h.runs("brute_force") == 1


def test_a_scenario_the_spool_cannot_store_is_refused_with_503_and_no_ground_truth() -> None:
    """A disk error: 503, nothing reported for the run."""
    h = ScenarioHarness(spool=FailingSpool())
    code, body, _ = h.answer(h.run("privilege_escalation"))
    assert code == 503 and "disk I/O error" in body["error"]
    assert h.records() == [] and h.runs("privilege_escalation") == 0


def test_the_ground_truth_record_has_the_run() -> None:
    """One record per run: the scenario, its id (also the message id), parameters, event ids and window."""
    h = ScenarioHarness()
    h.run("sensitive_file_tamper", json.dumps({"path": "/etc/shadow", "changes": 2}).encode())
    events = h.published()
    [rec] = h.records()
    assert rec["event_id"] == rec["scenario_id"] == events[0]["details"]["scenario_id"]
    assert rec["event_type"] == RECORD_TYPE
    assert (rec["scenario"], rec["origin"]) == ("sensitive_file_tamper", "api")
    assert rec["parameters"]["path"] == "/etc/shadow"
    assert rec["event_ids"] == rec["expected"]["event_ids"] == [e["event_id"] for e in events]
    assert rec["window"] == rec["expected"]["window"]
    assert all(e["resource"] == "/etc/shadow" for e in events)


def test_parameters_in_the_body_shape_the_run() -> None:
    """A JSON object of parameters is used; those left out take their defaults."""
    h = ScenarioHarness()
    body = json.dumps({"attempts": 7, "user": "mallory", "success": True}).encode()
    d = h.run("brute_force", body)
    events = h.published()
    code, answer, _ = h.answer(d)
    assert code == 202
    assert answer["parameters"]["window_seconds"] == 30
    assert [e["action_result"] for e in events] == ["FAILURE"] * 7 + ["SUCCESS"]
    assert {e["user_id"] for e in events} == {"mallory"}


def test_unconfirmed_scenario_is_answered_queued_after_the_wait() -> None:
    """Without confirms within the wait, 202 queued; the events stay in the outbox."""
    h = ScenarioHarness(confirm_wait=0.5)
    d = h.run("service_flapping")
    h.clock.advance(0.51)
    code, body, _ = h.answer(d)
    assert (code, body["status"]) == (202, "queued")
    assert len(h.outbox) == len(body["event_ids"]) == 6


def test_unknown_scenario_is_404_listing_the_known_ones() -> None:
    """A wrong name gets 404 JSON naming the scenarios that exist; nothing is accepted."""
    h = ScenarioHarness()
    code, body, _ = h.answer(h.run("brute"))
    assert code == 404
    assert 'no scenario "brute"; known: brute_force, privilege_escalation' in body["error"]
    assert len(h.outbox) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object, not list"),
        (b'{"attempts": 1, "attempts": 2}', "duplicate key 'attempts'"),
        (b'{"bogus": 1}', 'brute_force: unknown parameter "bogus"'),
        (b'{"attempts": "many"}', "brute_force: attempts must be a whole number"),
        (b'{"attempts": 100000}', "brute_force: attempts must be from 3 to 1000"),
        (b'{"window_seconds": 1e400}', "brute_force: window_seconds must be a number"),
        (b"\t \n", "request body is empty"),  # a body, but no JSON in it (only no body means the defaults)
    ],
)
def test_bad_parameters_get_400_and_nothing_is_accepted(body: bytes, message: str) -> None:
    """Malformed bodies and bad parameters are refused with what is wrong; nothing is accepted."""
    h = ScenarioHarness()
    code, answer, _ = h.answer(h.run("brute_force", body))
    assert code == 400
    assert message in answer["error"]
    assert len(h.outbox) == 0 and h.records() == []


def test_a_scenario_that_does_not_fit_is_refused_whole_with_503() -> None:
    """All or nothing: five events into room for three is a 503 with Retry-After, and no ground truth."""
    h = ScenarioHarness(capacity=3)
    code, body, headers = h.answer(h.run("brute_force"))
    assert code == 503
    assert "outbox full" in body["error"]
    assert headers.getRawHeaders("retry-after") == ["1"]
    assert len(h.outbox) == 0 and h.records() == [] and h.runs("brute_force") == 0


def test_a_full_ground_truth_outbox_refuses_the_scenario_with_503() -> None:
    """A run whose record could not be taken is not run: 503, no event accepted."""
    h = ScenarioHarness(truth_capacity=1)
    h.run("sensitive_file_tamper")
    h.published()
    code, body, _ = h.answer(h.run("sensitive_file_tamper"))
    assert code == 503
    assert "ground-truth outbox full" in body["error"]
    assert len(h.outbox) == 0


def test_scenarios_follow_the_same_request_rules_as_generate_event() -> None:
    """Closing: 503 with Retry-After 5; a non-JSON Content-Type: 415; a body over the limit: 413."""
    h = ScenarioHarness()
    code, _, _ = h.answer(h.run("brute_force", b"{}", {"Content-Type": "text/plain"}))
    assert code == 415
    code, body, _ = h.answer(h.run("brute_force", b" " * 2000))
    assert code == 413
    h.api.closing = True
    code, body, headers = h.answer(h.run("brute_force"))
    assert code == 503 and "shutting down" in body["error"]
    assert headers.getRawHeaders("retry-after") == ["5"]
    assert len(h.outbox) == 0


def test_a_body_less_run_needs_the_json_content_type_too() -> None:
    """POST /scenarios/{name} without a body runs the defaults, so it needs application/json as well: a web
    page can make a browser send a body-less POST cross-site; refused, it runs nothing and records
    nothing. With the header and no body, the defaults run."""
    h = ScenarioHarness()
    code, body, _ = h.answer(h.run("brute_force", b"", {}))
    assert (code, body) == (415, {"error": MISSING})
    assert (len(h.outbox), h.records(), h.runs("brute_force")) == (0, [], 0)
    d = h.run("brute_force", b"", JSON)
    h.published()
    assert h.answer(d)[0] == 202


def test_without_a_runner_the_scenario_paths_do_not_exist() -> None:
    """An AuditAPI built without scenarios answers 404 on them, as on any unknown path."""
    h = Harness()
    code, _, _ = h.answer(h.request("GET", "/scenarios"))
    assert code == 404
    code, _, _ = h.answer(h.request("POST", "/scenarios/brute_force", b"", JSON))
    assert code == 404


def test_a_paced_run_answers_at_once_with_its_schedule_and_its_record_follows_the_last_event() -> None:
    """delivery "paced" beside the parameters: 202 "scheduled" at once with the event ids, the schedule
    and when the run ends; the events are handed over at their offsets, the record after the last."""
    h = ScenarioHarness()
    body = json.dumps({"delivery": "paced", "attempts": 3, "window_seconds": 20}).encode()
    code, answer, _ = h.answer(h.run("brute_force", body))
    assert (code, answer["status"], answer["delivery"]) == (202, "scheduled", "paced")
    assert [s["event_id"] for s in answer["schedule"]] == answer["event_ids"]
    assert answer["ends_at"] == answer["schedule"][-1]["at"]
    assert answer["expected"]["outcome"] == "alert"
    assert [e["event_id"] for e in h.published()] == answer["event_ids"][:1]
    assert h.records() == []
    h.clock.advance(20)
    assert [e["event_id"] for e in h.published()] == answer["event_ids"][1:]
    [record] = h.records()
    assert record["event_ids"] == answer["event_ids"]
    code, status, _ = h.answer(h.request("GET", f"/scenarios/runs/{answer['scenario_id']}"))
    assert (code, status["state"], status["confirmed"], status["total"]) == (200, "done", 3, 3)


def test_an_instant_run_is_followed_too_and_an_unknown_run_is_404() -> None:
    """GET /scenarios/runs/{id} answers for an instant run (done; confirmed once acked); an unknown id is
    a 404 JSON error; a delivery other than instant or paced is a 400."""
    h = ScenarioHarness()
    d = h.run("privilege_escalation")
    h.published()
    code, answer, _ = h.answer(d)
    assert answer["delivery"] == "instant" and answer["ends_at"] == answer["expected"]["window"]["end"]
    code, status, _ = h.answer(h.request("GET", f"/scenarios/runs/{answer['scenario_id']}"))
    assert (code, status["state"], status["confirmed"]) == (200, "done", 3)
    code, error, _ = h.answer(h.request("GET", "/scenarios/runs/nope"))
    assert code == 404 and "no scenario run" in error["error"]
    code, error, _ = h.answer(h.run("brute_force", b'{"delivery": "later"}'))
    assert code == 400 and 'brute_force: delivery must be one of ["instant", "paced"]' in error["error"]
