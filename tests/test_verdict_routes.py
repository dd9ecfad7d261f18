"""The verdict routes through the API, in memory on a Clock: POST /alerts, the campaigns, JUnit, the
token and body rules, and runs started by POST /scenarios/{name} being scored too."""

from __future__ import annotations

import json
import random
from typing import Any
from xml.etree import ElementTree

import jsonschema
import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.verdicts.campaigns import Campaigns
from auditgen.verdicts.routes import VerdictRoutes
from auditgen.verdicts.starter import OutboxStarter
from auditgen.verdicts.verdicts import Tracker
from auditgen.web import AuditAPI, openapi_document
from tests.support.verdicts import platform_alert
from tests.support.web import FakeHealth, response_of

JSON = {"content-type": ["application/json"]}


def assert_documented(body: Any, schema_name: str) -> None:
    """The answer matches its schema in the OpenAPI document."""
    components = openapi_document(None)["components"]
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{schema_name}", "components": components})


class Api:
    """The API with verdict routes over a real outbox whose broker the test plays."""

    def __init__(
        self,
        token: str | None = None,
        verdicts: bool = True,
        max_body_bytes: int = 4096,
        closing: bool = False,
    ) -> None:
        self.clock = Clock()
        metrics = Metrics()
        self.outbox = Outbox(1000, metrics, self.clock)
        runner = ScenarioRunner(Catalog.builtin(), random.Random(7), clock=self.clock, outbox=self.outbox)
        self.tracker = Tracker(self.clock, metrics=metrics, timeout=30.0)
        self.runner = runner
        self.campaigns = Campaigns(self.clock, self.tracker, OutboxStarter(runner, self.outbox))
        routes = VerdictRoutes(
            self.tracker, self.campaigns, self.clock, max_body_bytes=max_body_bytes, closing=lambda: closing
        )
        api = AuditAPI(
            EventFactory(Catalog.builtin()),
            self.outbox,
            FakeHealth(),
            metrics.registry,
            self.clock,
            scenarios=runner,
            token=token,
            verdicts=routes if verdicts else None,
            max_body_bytes=max_body_bytes,
        )
        self.stub = StubTreq(api.resource())

    def call(self, method: str, path: str, body: Any = None, headers: Any = JSON) -> tuple[int, Any, Any]:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        d = self.stub.request(method, f"http://auditgen{path}", data=data, headers=headers)
        code, content, response_headers = response_of(self.stub, d)
        kind = (response_headers.getRawHeaders("content-type") or [""])[0]
        return code, json.loads(content) if kind == "application/json" else content, response_headers

    def confirm_all(self) -> None:
        while (entry := self.outbox.take()) is not None:
            self.outbox.settle(entry)
        self.stub.flush()


def test_post_alerts_records_them_and_says_what_became_of_each() -> None:
    """One alert, an array and an Alertmanager payload are all taken; the answer counts the results."""
    api = Api()
    code, body, _ = api.call("POST", "/alerts", platform_alert("nobody"))
    assert (code, body["unexpected"], body["malformed"]) == (200, 1, 0)
    assert_documented(body, "AlertsReceived")
    code, body, _ = api.call("POST", "/alerts", [{"event_id": "x"}, {"event_id": 3}])
    assert (code, body["unexpected"], body["malformed"]) == (200, 1, 1)
    assert body["errors"] == ["alert 1: event_id must be an event id or a list of them, not 3"]
    payload = {"version": "4", "receiver": "r", "alerts": [{"status": "firing", "labels": {"event_id": "y"}}]}
    assert api.call("POST", "/alerts", payload)[1]["unexpected"] == 1


def test_post_alerts_keeps_the_api_rules() -> None:
    """Not JSON: 400; another Content-Type: 415; too large: 413; GET: 405; with a token: 401 without it."""
    api = Api()
    assert api.call("POST", "/alerts", b"{nope")[0] == 400
    assert api.call("POST", "/alerts", b"")[0] == 400
    code, body, _ = api.call("POST", "/alerts", b'"AAA"')
    assert (code, body["error"]) == (
        400,
        "request body must be an alert, an array of alerts or an Alertmanager payload, not str",
    )
    code, body, _ = api.call("POST", "/alerts", b"{}", {"content-type": ["text/plain"]})
    assert (code, body["error"]) == (415, "Content-Type must be application/json, not 'text/plain'")
    assert api.call("POST", "/alerts", b"[" + b"1," * 3000 + b"1]")[0] == 413
    code, _, headers = api.call("GET", "/alerts")
    assert (code, headers.getRawHeaders("allow")) == (405, ["POST"])
    assert Api(token="s3cret").call("POST", "/alerts", {"event_id": "x"})[0] == 401
    assert api.call("GET", "/campaigns/x/y/z")[0] == 404


def test_a_method_the_mounted_routes_do_not_take_is_405_whatever_its_content_type() -> None:
    """The Content-Type rule asks the mounted app what it routes: POST to a campaign's JUnit page, or
    TRACE anywhere under the mounts, is 405 (as for the API's own routes), not 415."""
    api = Api()
    for method, path in [("POST", "/campaigns/x/junit"), ("POST", "/campaigns/x"), ("TRACE", "/campaigns/x")]:
        assert api.call(method, path, None, {})[0] == 405, (method, path)
    assert api.call("POST", "/campaigns", b"{}", {})[0] == 415


def test_without_verdicts_the_paths_are_not_there() -> None:
    """An API built without verdict routes answers 404 under /alerts and /campaigns."""
    api = Api(verdicts=False)
    assert api.call("POST", "/alerts", {"event_id": "x"})[0] == 404
    assert api.call("GET", "/campaigns")[0] == 404


def test_a_campaign_from_post_to_junit() -> None:
    """POST /campaigns answers 202 with the runs' ids; an alert for one run detects it; after the timeout
    the other is missed; the campaign, the list and the JUnit XML say so."""
    api = Api()
    code, started, headers = api.call(
        "POST",
        "/campaigns",
        {"scenarios": {"brute_force": 1, "sensitive_file_tamper": 1}, "detection_timeout_seconds": 5},
    )
    assert code == 202
    assert_documented(started, "CampaignStarted")
    lazy = Api().call("POST", "/campaigns", {"scenarios": {"brute_force": 2}})[1]
    assert [r["scenario_id"] is None for r in lazy["runs"]] == [False, True]  # prepared when its turn comes
    assert_documented(lazy, "CampaignStarted")
    campaign_id = started["campaign_id"]
    assert headers.getRawHeaders("location") == [f"/campaigns/{campaign_id}"]
    assert [r["scenario"] for r in started["runs"]] == ["brute_force", "sensitive_file_tamper"]
    api.clock.advance(0)
    api.clock.advance(0)
    api.confirm_all()
    shown = api.call("GET", f"/campaigns/{campaign_id}")[1]
    assert (shown["state"], shown["runs_sent"]) == ("running", 2)
    assert_documented(shown, "Campaign")
    event_id = api.tracker.run(started["runs"][0]["scenario_id"]).event_ids[-1]
    api.clock.advance(1.5)
    api.call("POST", "/alerts", platform_alert(event_id))
    api.clock.advance(5.0)
    shown = api.call("GET", f"/campaigns/{campaign_id}")[1]
    assert (shown["state"], shown["passed"]) == ("finished", False)
    assert [(r["verdict"], r["time_to_detect_seconds"]) for r in shown["runs"]] == [
        ("detected", 1.5),
        ("missed", None),
    ]
    assert_documented(shown, "Campaign")
    assert_documented(api.call("GET", "/campaigns")[1], "CampaignList")
    listed = api.call("GET", "/campaigns")[1]["campaigns"]
    assert [c["campaign_id"] for c in listed] == [campaign_id]
    assert "runs" not in listed[0]
    code, xml, headers = api.call("GET", f"/campaigns/{campaign_id}/junit")
    assert (code, headers.getRawHeaders("content-type")) == (200, ["application/xml"])
    assert ElementTree.fromstring(xml).get("failures") == "1"


def test_campaign_errors() -> None:
    """A bad request or an unknown scenario is a 400 naming it, and nothing is sent; unknown id: 404."""
    api = Api()
    code, body, _ = api.call("POST", "/campaigns", {"scenarios": {"brute_force": 1, "nope": 1}})
    assert code == 400
    assert "no scenario" in body["error"]
    code, body, _ = api.call(
        "POST", "/campaigns", {"scenarios": [{"name": "brute_force", "parameters": {"attempts": 1}}]}
    )
    assert (code, "attempts must be from 3 to 1000" in body["error"]) == (400, True)
    api.clock.advance(1)
    assert len(api.outbox) == 0
    assert api.call("GET", "/campaigns/nope")[0] == 404
    closing = Api(closing=True)
    code, body, _ = closing.call("POST", "/campaigns", {"scenarios": {"brute_force": 1}})
    assert (code, body["error"]) == (503, "shutting down; nothing was started, try again later")
    assert closing.call("POST", "/alerts", {"event_id": "x"})[0] == 200  # alerts are still recorded
    assert api.call("GET", "/campaigns/nope/junit")[0] == 404


def test_runs_started_by_post_scenarios_are_scored() -> None:
    """POST /scenarios/{name} hands its run to the tracker, with the confirms of its events."""
    api = Api()
    d = api.stub.post("http://auditgen/scenarios/brute_force", headers=JSON)
    api.stub.flush()
    api.confirm_all()
    answers: list[Any] = []
    d.addCallback(lambda r: r.json()).addCallback(answers.append)
    api.stub.flush()
    tracked = api.tracker.run(answers[0]["scenario_id"])
    assert tracked is not None
    assert tracked.finished == 0.0
    api.clock.advance(30.0)
    assert tracked.verdict == "missed"


def test_paced_runs_started_by_post_scenarios_are_scored_after_their_schedule() -> None:
    """POST /scenarios/{name} with paced delivery hands its run to the tracker too: pending until its
    last event is confirmed, then decided at that plus the timeout (30 s here)."""
    api = Api()
    code, answer, _ = api.call(
        "POST", "/scenarios/failed_logins_spread_out", {"attempts": 2, "gap_seconds": 10}
    )
    assert (code, answer["status"], answer["delivery"]) == (202, "scheduled", "paced")
    tracked = api.tracker.run(answer["scenario_id"])
    assert tracked is not None and (tracked.delivery, tracked.expect) == ("paced", "quiet")
    api.confirm_all()
    api.clock.advance(15.0)  # the second failure is due within 10 to 15 s
    assert tracked.finished is None
    api.confirm_all()
    assert tracked.finished == 15.0
    api.clock.advance(29.9)
    assert tracked.verdict == "pending"
    api.clock.advance(0.1)
    assert tracked.verdict == "quiet"


@pytest.mark.parametrize(
    ("entry", "delivery"),
    [
        ({"name": "failed_logins_spread_out"}, "paced"),  # its file's delivery
        ({"name": "failed_logins_spread_out", "delivery": "instant"}, "instant"),
        ({"name": "brute_force", "delivery": "paced"}, "paced"),
        ({"name": "brute_force"}, "instant"),
    ],
)
def test_a_campaign_entry_is_run_in_its_delivery(entry: dict[str, Any], delivery: str) -> None:
    """An entry's delivery is its scenario's unless it names one: the campaign answers 202 and shows the
    run in that delivery (a paced one with when its last event is due) as the document says."""
    api = Api()
    code, started, _ = api.call("POST", "/campaigns", {"scenarios": [entry]})
    assert code == 202, started
    api.clock.advance(0)
    shown = api.call("GET", f"/campaigns/{started['campaign_id']}")[1]
    assert_documented(shown, "Campaign")
    [run] = shown["runs"]
    assert (run["sent"], run["delivery"], run["ends_at"] is not None) == (True, delivery, delivery == "paced")
    assert shown["time_left_seconds"] is not None or delivery == "instant"


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            {"name": "brute_force", "delivery": "slow"},
            "scenarios[1].delivery must be instant or paced, not 'slow'",
        ),
        (
            {"name": "brute_force", "delivery": None},
            "scenarios[1].delivery must be instant or paced, not None",
        ),
        ({"name": "brute_force", "delivery": ["paced"]}, "scenarios[1].delivery must be instant or paced"),
        (
            {"name": "brute_force", "parameters": {"delivery": "paced"}},
            "brute_force: delivery goes beside the parameters, not among them",
        ),
        (
            {"name": "failed_logins_spread_out", "parameters": {"gap_seconds": 0.5}},
            "failed_logins_spread_out: gap_seconds must be",
        ),
    ],
)
def test_a_bad_delivery_is_a_400_and_starts_nothing(entry: dict[str, Any], error: str) -> None:
    """A delivery other than instant or paced, or one given among the parameters, is a 400 naming it;
    nothing is sent."""
    api = Api()
    code, body, _ = api.call("POST", "/campaigns", {"scenarios": [{"name": "brute_force"}, entry]})
    assert (code, error in body["error"]) == (400, True), body
    api.clock.advance(60)
    assert len(api.outbox) == 0 and list(api.campaigns) == []


def test_the_served_document_takes_exactly_the_campaigns_the_service_starts() -> None:
    """With scenarios, the document's CampaignRequest names every one of them (the paced ones too), with
    their parameters and either delivery: what it accepts starts, what it refuses is refused."""
    api = Api()
    components = openapi_document(api.runner)["components"]
    schema = {"$ref": "#/components/schemas/CampaignRequest", "components": components}
    good = [
        {"scenarios": {"brute_force": 2}},
        {"scenarios": {"failed_logins_spread_out": 1}},
        {
            "scenarios": [
                {"name": "brute_force", "parameters": {"attempts": 5}, "expect": "quiet", "count": 50},
                {"name": "brute_force", "delivery": "paced"},
                {"name": "failed_logins_spread_out", "delivery": "instant", "parameters": {"attempts": 3}},
            ]
        },
    ]
    bad = [
        {"scenarios": {"nope": 1}},
        {"scenarios": [{"name": "brute_force", "parameters": {"attempts": 1}}]},
        {"scenarios": [{"name": "brute_force", "delivery": "slow"}]},
        {"scenarios": [{"name": "brute_force", "parameters": {"delivery": "paced"}}]},
        {"scenarios": {"brute_force": 51}},
    ]
    for body in good:
        jsonschema.validate(body, schema)
        assert api.call("POST", "/campaigns", body)[0] == 202
    for body in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
        assert api.call("POST", "/campaigns", body)[0] == 400
