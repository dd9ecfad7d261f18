"""The HTTP API, in memory: StubTreq against the Klein resource, a Clock for the confirm wait."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditgen.content_type import MISSING
from auditgen.events import SERVICE_FIELDS, SOURCE_API, Catalog, EventFactory
from auditgen.validation import MAX_DETAILS_BYTES, MAX_FIELD_NAME_CHARS, MAX_FIELDS, MAX_NESTING_DEPTH
from auditgen.web import AuditAPI
from tests.support.web import JSON, FailingSpool, Harness, answered


def post(h: Harness, payload: Any, headers: Any = JSON) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return h.request("POST", "/generate_event", body, headers)


def test_accepted_event_is_answered_success_after_the_broker_confirms() -> None:
    """202 success comes only once the broker acked, and names the event the outbox holds."""
    h = Harness()
    d = post(h, {"event_type": "user_login"})
    h.stub.flush()
    assert not answered(d), "answered before the confirm"
    ids = h.confirm_all()
    code, body, headers = h.answer(d)
    assert code == 202
    assert body == {"status": "success", "event_id": ids[0]}
    assert headers.getRawHeaders("content-type") == ["application/json"]


def test_unconfirmed_event_is_answered_queued_after_the_wait() -> None:
    """Without a confirm within the wait, 202 queued; the event stays in the outbox for the publisher."""
    h = Harness(confirm_wait=0.5)
    d = post(h, {"event_type": "sudo_command"})
    h.clock.advance(0.49)
    h.stub.flush()
    assert not answered(d)
    h.clock.advance(0.02)
    code, body, _ = h.answer(d)
    assert (code, body["status"]) == (202, "queued")
    assert len(h.outbox) == 1
    assert h.confirm_all() == [body["event_id"]]


def test_event_fields_are_filled_from_the_template() -> None:
    """Left-out fields come from the event_type's template; the event is marked as triggered by the API."""
    h = Harness()
    post(h, {"event_type": "user_login", "action_result": "FAILURE", "user_id": "mallory"})
    entry = h.outbox.take()
    assert entry is not None
    event = json.loads(entry.body)
    assert event["source_service"] == SOURCE_API
    assert (event["event_type"], event["action_result"], event["severity"]) == (
        "user_login",
        "FAILURE",
        "WARNING",
    )
    assert event["user_id"] == "mallory"
    assert {"reason", "ip_address", "protocol"} <= set(event["details"])
    assert event["server_hostname"]


def test_unknown_event_type_gets_defaults_and_extra_fields_are_kept() -> None:
    """No template: INFO, SUCCESS, empty details; fields the service does not know travel unchanged."""
    h = Harness()
    post(h, {"event_type": "custom_thing", "ticket": "OPS-1", "labels": ["a", "b"]})
    entry = h.outbox.take()
    assert entry is not None
    event = json.loads(entry.body)
    assert (event["severity"], event["action_result"], event["details"]) == ("INFO", "SUCCESS", {})
    assert (event["ticket"], event["labels"]) == ("OPS-1", ["a", "b"])


def test_full_outbox_answers_503_with_retry_after_and_accepts_nothing() -> None:
    """When the outbox is full the caller learns it at once, and nothing half-accepted is kept."""
    h = Harness(capacity=1)
    post(h, {"event_type": "a"})
    code, body, headers = h.answer(post(h, {"event_type": "b"}))
    assert code == 503
    assert "outbox full" in body["error"]
    assert headers.getRawHeaders("retry-after") == ["1"]
    assert len(h.outbox) == 1
    assert (
        h.metrics.registry.get_sample_value("audit_events_generator_dropped_total", {"reason": "outbox_full"})
        == 1
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"user_login"', "must be a JSON object, not str"),
        (b"{}", "event_type is required"),
        (b'{"event_type": ""}', "event_type must be a non-empty string"),
        (b'{"event_type": 7}', "event_type must be a non-empty string"),
        (b'{"event_type": "x", "user_id": 5}', "user_id must be a non-empty string"),
        (b'{"event_type": "x", "severity": null}', "severity must be a non-empty string"),
        (b'{"event_type": "x", "details": "no"}', "details must be a JSON object"),
        (b'{"event_type": "x", "event_type": "y"}', "duplicate key 'event_type'"),
        (b'{"event_type": "x", "n": NaN}', "NaN is not a valid JSON number"),
        (b'{"event_type": "x", "n": -Infinity}', "-Infinity is not a valid JSON number"),
        (b'{"event_type": "\xff"}', "not valid UTF-8"),
        (b'{"event_type": "x", "n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_bodies_get_400_saying_what_is_wrong(body: bytes, message: str) -> None:
    """Every malformed request is refused with a JSON error naming the problem, and nothing is queued."""
    assert_refused(body, message)


def assert_refused(body: bytes, message: str) -> None:
    """The body gets a JSON 400 whose error contains message, and nothing reaches the outbox."""
    h = Harness(max_body_bytes=1_000_000)
    code, answer, headers = h.answer(post(h, body))
    assert code == 400
    assert message in answer["error"]
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert len(h.outbox) == 0


def event(**fields: Any) -> bytes:
    """A body with event_type "x" (no template, so the given fields travel as they are) plus fields."""
    return json.dumps({"event_type": "x", **fields}).encode()


def nested(levels: int, container: str = "object") -> Any:
    """A value of `levels` objects (or arrays) inside one another."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value} if container == "object" else [value]
    return value


def extras(count: int) -> dict[str, int]:
    return {f"f{i}": i for i in range(count)}


DETAILS_OVERHEAD = len(b'{"p":""}')  # details {"p": "..."} is this many bytes plus the string


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (event(event_type="e" * 65), "event_type is longer than 64 characters (65)"),
        (event(severity="s" * 65), "severity is longer than 64 characters"),
        (event(action_result="r" * 65), "action_result is longer than 64 characters"),
        (event(server_hostname="h" * 256), "server_hostname is longer than 255 characters"),
        (event(user_id="u" * 257), "user_id is longer than 256 characters"),
        (
            event(details=nested(MAX_NESTING_DEPTH + 1)),
            "details.a.a.a.a.a.a.a.a is nested more than 8 levels",
        ),
        (
            event(labels=nested(MAX_NESTING_DEPTH + 1, "array")),
            "labels[0][0][0][0][0][0][0][0] is nested more",
        ),
        (
            event(details={"p": "x" * (MAX_DETAILS_BYTES - DETAILS_OVERHEAD + 1)}),
            "details is 65537 bytes as JSON; at most 65536 bytes",
        ),
        (event(**extras(MAX_FIELDS)), "too many fields: 65; an event has at most 64"),
        (event(**{"n" * (MAX_FIELD_NAME_CHARS + 1): 1}), "is longer than 128 characters (129)"),
        (b'{"event_type": "x", "n": 1e400}', "n is a number too large for a 64-bit float"),
        (b'{"event_type": "x", "details": {"v": [0, -1e400]}}', "details.v[1] is a number too large"),
        (b'{"event_type": "x", "n": 9223372036854775808}', "n is an integer outside the signed 64-bit range"),
        (b'{"event_type": "x", "n": -9223372036854775809}', "n is an integer outside the signed 64-bit"),
        (b'{"event_type": "x", "s": "a\\ud800b"}', "s contains an unpaired UTF-16 surrogate"),
        (b'{"event_type": "x", "s": "\\udc00"}', "s contains an unpaired UTF-16 surrogate"),
        (b'{"event_type": "\\ud83d"}', "event_type contains an unpaired UTF-16 surrogate"),
        (b'{"event_type": "x", "details": {"k\\udfff": 1}}', "details has a key with an unpaired"),
        (b'{"event_type": "x", "\\ud800": 1}', 'field name "\\ud800" contains an unpaired'),
    ],
)
def test_limits_get_400_naming_the_field_and_the_limit(body: bytes, message: str) -> None:
    """Over-long fields, deep or large values, and values no consumer can read are refused, not queued."""
    assert_refused(body, message)


@pytest.mark.parametrize(
    "body",
    [
        event(event_type="e" * 64, severity="s" * 64, action_result="r" * 64),
        event(server_hostname="h" * 255, user_id="u" * 256),
        event(details=nested(MAX_NESTING_DEPTH), labels=nested(MAX_NESTING_DEPTH, "array")),
        event(details={"p": "x" * (MAX_DETAILS_BYTES - DETAILS_OVERHEAD)}),
        event(details={"p": "\u00e9" * ((MAX_DETAILS_BYTES - DETAILS_OVERHEAD) // 2)}),
        event(**extras(MAX_FIELDS - 1)),
        event(**{"n" * MAX_FIELD_NAME_CHARS: 1}),
        b'{"event_type": "x", "big": 9223372036854775807, "small": -9223372036854775808, "f": 1.7e308}',
        b'{"event_type": "x", "tiny": 1e-400, "s": "\\ud83d\\ude00 \\u00e9"}',
    ],
)
def test_values_at_the_limits_are_accepted_and_published_intact(body: bytes) -> None:
    """Each limit is inclusive: a value exactly at it is accepted, and its event encodes to valid JSON."""
    h = Harness(max_body_bytes=1_000_000)
    d = post(h, body)
    entry = h.outbox.take()
    assert entry is not None
    h.outbox.settle(entry)
    code, answer, _ = h.answer(d)
    assert (code, answer["event_id"]) == (202, entry.event_id)
    sent = json.loads(entry.body.decode("utf-8"))
    given = json.loads(body)
    assert {k: v for k, v in sent.items() if k in given and k != "details"} == {
        k: v for k, v in given.items() if k != "details"
    }
    assert sent["details"] == given.get("details", {})


def test_closing_refuses_new_events_with_503_and_retry_after() -> None:
    """While the service shuts down, nothing new is accepted and the caller is told to come back."""
    h = Harness()
    h.api.closing = True
    code, body, headers = h.answer(post(h, {"event_type": "user_login"}))
    assert code == 503
    assert body["error"].startswith("shutting down; ")
    assert headers.getRawHeaders("retry-after") == ["5"]
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert len(h.outbox) == 0


def test_healthz_says_stopping_while_closing() -> None:
    """A closing instance is taken out of rotation (503 "stopping") even though its broker link is fine."""
    h = Harness()
    assert h.answer(h.request("GET", "/healthz"))[0] == 200
    h.api.closing = True
    code, body, _ = h.answer(h.request("GET", "/healthz"))
    assert code == 503
    assert body["status"] == "stopping"
    assert body["rabbitmq_connected"] is True


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", "json"],
)
@pytest.mark.parametrize("path", ["/generate_event", "/generate_event?count=3"])
def test_a_body_not_said_to_be_json_gets_415_and_nothing_is_accepted(
    path: str, content_type: str | None
) -> None:
    """curl's default form encoding, text/plain and no Content-Type at all (what a web page can make a
    browser send cross-site without asking) are refused, saying what to send; nothing is queued."""
    h = Harness(api_site=True)
    headers = {} if content_type is None else {"Content-Type": content_type}
    code, body, headers = h.answer(h.request("POST", path, b'{"event_type": "user_login"}', headers))
    assert code == 415
    assert "Content-Type" in body["error"] and "application/json" in body["error"]
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert len(h.outbox) == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.audit+json"],
)
def test_json_content_types_with_parameters_and_suffixes_are_accepted(content_type: str) -> None:
    """application/json in any letter case, with parameters, or a +json type, is read as JSON."""
    h = Harness()
    d = post(h, {"event_type": "user_login"}, headers={"Content-Type": content_type})
    h.confirm_all()
    assert h.answer(d)[0] == 202


def routes_that_change_something() -> list[tuple[str, str]]:
    """(method, path) of every route but GET/HEAD/OPTIONS, a <name> in the path filled in."""
    found = []
    for rule in AuditAPI.app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"GET", "HEAD", "OPTIONS"}):
            found.append((method, rule.rule.replace("<name>", "brute_force")))
    return found


def test_every_route_that_changes_something_needs_a_json_content_type() -> None:
    """The rule wraps the whole resource: every route other than GET/HEAD, today's and any added later,
    answers 415 without a JSON Content-Type, even with no body (a body-less POST is as easy to send
    cross-site, and runs a scenario with its defaults)."""
    routes = routes_that_change_something()
    assert ("POST", "/generate_event") in routes and ("PUT", "/generator") in routes
    h = Harness(generator_rate=1.0)
    for method, path in routes:
        for body in (None, b"{}"):
            code, answer, _ = h.answer(h.request(method, path, body, {}))
            assert (code, answer["error"]) == (415, MISSING), (method, path, body)
    assert len(h.outbox) == 0


def test_unknown_paths_and_methods_get_404_and_405_whatever_their_content_type() -> None:
    """A request no route takes is told so (404, or 405 with Allow) before its Content-Type matters, as
    clients and schemathesis expect; a path Klein would route ("//generate_event") is not one of them."""
    h = Harness()
    assert h.answer(h.request("POST", "/nope", b"{}", {}))[0] == 404
    code, _, headers = h.answer(h.request("DELETE", "/generate_event", None, {}))
    assert (code, headers.getRawHeaders("allow")) == (405, ["POST"])
    assert h.answer(h.request("PATCH", "/healthz", b"{}", {"Content-Type": "text/plain"}))[0] == 405
    assert h.answer(h.request("POST", "//generate_event", b'{"event_type": "x"}', {}))[0] == 415
    assert len(h.outbox) == 0


def test_the_token_is_checked_before_the_content_type() -> None:
    """Without the token a caller learns only that it needs one; with it, the Content-Type rule applies."""
    h = Harness(token="t" * 32)
    code, _, _ = h.answer(post(h, {"event_type": "x"}, headers={}))
    assert code == 401
    code, _, _ = h.answer(post(h, {"event_type": "x"}, headers={"Authorization": "Bearer " + "t" * 32}))
    assert code == 415


def test_body_over_the_limit_gets_413() -> None:
    """A body larger than the configured limit is refused, not parsed."""
    h = Harness(max_body_bytes=100)
    code, body, _ = h.answer(post(h, {"event_type": "x", "pad": "y" * 200}))
    assert code == 413
    assert "100 bytes" in body["error"]
    assert len(h.outbox) == 0


def test_unknown_path_and_wrong_method_answer_json() -> None:
    """404 and 405 are JSON too, and 405 says which methods the path takes."""
    h = Harness()
    code, body, _ = h.answer(h.request("GET", "/nope"))
    assert code == 404
    assert "/nope" in body["error"]
    code, body, headers = h.answer(h.request("GET", "/generate_event"))
    assert code == 405
    assert headers.getRawHeaders("allow") == ["POST"]
    assert "POST" in body["error"]


def test_healthz_reflects_the_broker_link() -> None:
    """200 healthy while the channel is open; 503 unhealthy with the last error when it is not."""
    h = Harness()
    code, body, _ = h.answer(h.request("GET", "/healthz"))
    assert code == 200
    assert body["status"] == "healthy"
    assert body["rabbitmq_connected"] is True
    assert (body["outbox_depth"], body["outbox_capacity"]) == (0, 10)
    h.health.connected = False
    h.health.last_error = "ConnectionRefusedError: refused"
    post(h, {"event_type": "x"})
    code, body, _ = h.answer(h.request("GET", "/healthz"))
    assert code == 503
    assert (body["status"], body["rabbitmq_connected"]) == ("unhealthy", False)
    assert body["last_error"] == "ConnectionRefusedError: refused"
    assert body["outbox_depth"] == 1


def test_healthz_is_503_while_the_broker_blocks_publishing() -> None:
    """Connected but blocked by a broker alarm cannot confirm events: 503, and the reason is visible."""
    h = Harness()
    h.health.blocked = True
    h.health.last_error = "broker blocked publishing: low on memory"
    code, body, _ = h.answer(h.request("GET", "/healthz"))
    assert code == 503
    assert (body["status"], body["rabbitmq_connected"], body["rabbitmq_blocked"]) == ("unhealthy", True, True)
    assert "low on memory" in body["last_error"]


def test_metrics_on_the_api_port() -> None:
    """/metrics on the API port serves the same registry as the metrics port."""
    h = Harness()
    d = post(h, {"event_type": "user_login", "server_hostname": "h1", "action_result": "SUCCESS"})
    h.confirm_all()
    h.answer(d)
    response: list[Any] = []
    h.request("GET", "/metrics").addCallback(response.append)
    h.stub.flush()
    text: list[str] = []
    response[0].text().addCallback(text.append)
    h.stub.flush()
    assert response[0].code == 200
    assert (
        "audit_events_generator_events_total"
        '{action_result="SUCCESS",event_type="user_login",server_hostname="h1"} 1.0' in text[0]
    )
    assert "audit_events_generator_published_success_total 1.0" in text[0]


def test_an_event_the_spool_cannot_store_is_refused_with_503() -> None:
    """A disk error means the event was not accepted: 503 with Retry-After, never a 202 or a 500."""
    h = Harness(spool=FailingSpool())
    code, body, headers = h.answer(post(h, {"event_type": "user_login"}))
    assert code == 503
    assert "disk I/O error" in body["error"] and "nothing was accepted" in body["error"]
    assert headers.getRawHeaders("retry-after") == ["1"]
    assert len(h.outbox) == 0
    assert (
        h.metrics.registry.get_sample_value("audit_events_generator_dropped_total", {"reason": "spool_error"})
        == 1
    )


def test_caller_chosen_hostnames_cannot_grow_the_metrics_without_bound() -> None:
    """Distinct hostnames sent over the API make at most max_series series, plus one overflow series."""
    h = Harness(capacity=10_000, max_series=50)
    for i in range(300):
        post(h, {"event_type": "user_login", "server_hostname": f"host-{i}", "action_result": "SUCCESS"})
    series = [
        s
        for metric in h.metrics.registry.collect()
        if metric.name == "audit_events_generator_events"
        for s in metric.samples
        if s.name.endswith("_total")
    ]
    assert len(series) == 51
    overflow = [s for s in series if s.labels["server_hostname"] == "_overflow"]
    assert overflow[0].value == 300 - 50


def post_bulk(h: Harness, count: str, payload: Any) -> Any:
    return h.request("POST", f"/generate_event?count={count}", json.dumps(payload).encode(), JSON)


def test_bulk_trigger_makes_n_randomised_events_and_answers_when_all_are_confirmed() -> None:
    """?count=N makes N events from one body (fields left out drawn per event) and answers 202 success,
    listing every id, only once the broker confirmed all of them."""
    h = Harness(capacity=1000)
    d = post_bulk(h, "50", {"event_type": "user_login", "action_result": "FAILURE"})
    assert len(h.outbox) == 50
    first = h.outbox.take()
    assert first is not None
    h.outbox.settle(first)
    h.stub.flush()
    assert not answered(d), "answered before every event was confirmed"
    ids = [first.event_id, *h.confirm_all()]
    code, body, _ = h.answer(d)
    assert (code, body["status"], body["count"]) == (202, "success", 50)
    assert body["event_ids"] == ids
    assert len(set(ids)) == 50


def test_bulk_events_share_the_callers_fields_and_vary_the_rest() -> None:
    """Given fields are in every event; fields left out are drawn afresh for each."""
    h = Harness(capacity=1000)
    post_bulk(h, "40", {"event_type": "user_login", "user_id": "mallory"})
    events = []
    while (entry := h.outbox.take()) is not None:
        events.append(json.loads(entry.body))
    assert {e["user_id"] for e in events} == {"mallory"}
    assert len({e["server_hostname"] for e in events}) > 1
    assert len({e["event_id"] for e in events}) == 40


def test_large_bulk_answers_queued_with_the_first_and_last_id() -> None:
    """Above 1,000 events the answer gives the count and the first and last ids; without confirms in time
    it says queued, and every event stays in the outbox for the publisher."""
    h = Harness(capacity=20_000, confirm_wait=0.5)
    d = post_bulk(h, "10000", {"event_type": "sudo_command"})
    h.clock.advance(0.5)
    code, body, _ = h.answer(d)
    assert (code, body["status"], body["count"]) == (202, "queued", 10_000)
    assert "event_ids" not in body
    ids = h.confirm_all()
    assert (body["first_event_id"], body["last_event_id"]) == (ids[0], ids[-1])
    assert len(ids) == 10_000


@pytest.mark.parametrize("count", ["0", "10001", "-1", "ten", "1.5", "5&count=6"])
def test_bad_count_gets_400(count: str) -> None:
    """count must be one whole number from 1 to 10,000."""
    h = Harness()
    code, body, _ = h.answer(post_bulk(h, count, {"event_type": "x"}))
    assert code == 400
    assert "count" in body["error"]
    assert len(h.outbox) == 0


def test_bulk_that_does_not_fit_is_refused_whole() -> None:
    """All or nothing: a batch larger than the room left gets 503 and none of it is accepted."""
    h = Harness(capacity=100)
    post(h, {"event_type": "x"})
    code, body, headers = h.answer(post_bulk(h, "100", {"event_type": "x"}))
    assert code == 503
    assert "outbox full" in body["error"]
    assert headers.getRawHeaders("retry-after") == ["1"]
    assert len(h.outbox) == 1
    dropped = h.metrics.registry.get_sample_value(
        "audit_events_generator_dropped_total", {"reason": "outbox_full"}
    )
    assert dropped == 100


def test_livez_answers_200_whatever_the_broker_and_while_stopping() -> None:
    """The liveness probe says only that the process answers: 200 with the broker down, blocked, or
    during a graceful stop, so an orchestrator never restarts auditgen for the broker's sake."""
    h = Harness()
    h.health.connected = False
    h.health.blocked = True
    h.api.closing = True
    code, body, headers = h.answer(h.request("GET", "/livez"))
    assert (code, body) == (200, {"status": "alive"})
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert h.answer(h.request("POST", "/livez"))[0] == 405


# -- caller-set service fields, warnings and strict --------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        b'"event_id": "mine", "timestamp": "2001-01-01T00:00:00Z", "source_service": "legacy-app"',
        b'"event_id": 7, "timestamp": null, "source_service": {"name": ["x"]}',
        b'"event_id": 1e400, "timestamp": 99999999999999999999999, "source_service": "\\ud800"',
    ],
    ids=["strings", "other-types", "unsendable"],
)
def test_caller_set_service_fields_are_replaced_and_the_answer_lists_them(given: bytes) -> None:
    """As the legacy service did, a body carrying event_id, timestamp and source_service is accepted and
    they get the service's own values (a fresh uuid4, now, the API's source), whatever the caller's were:
    they are never sent; the answer says which it replaced."""
    h = Harness()
    d = post(h, b'{"event_type": "user_login", "user_id": "alice", ' + given + b"}")
    [event] = h.published()
    code, answer, _ = h.answer(d)
    assert (code, answer["status"]) == (202, "success")
    assert answer["replaced"] == ["event_id", "source_service", "timestamp"]
    assert "warnings" not in answer
    assert event["event_id"] == answer["event_id"]
    assert uuid.UUID(event["event_id"]).version == 4
    assert event["source_service"] == SOURCE_API
    sent = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    assert event["user_id"] == "alice"


def test_bulk_with_caller_set_service_fields_gives_every_event_its_own() -> None:
    """?count=N with a captured event: N fresh ids and timestamps, and the answer lists what was replaced."""
    h = Harness()
    body = {"event_type": "user_login", "event_id": "same", "source_service": "old"}
    d = post_bulk(h, "3", body)
    events = h.published()
    code, answer, _ = h.answer(d)
    assert (code, answer["count"], answer["replaced"]) == (202, 3, ["event_id", "source_service"])
    assert answer["event_ids"] == [e["event_id"] for e in events]
    assert len(set(answer["event_ids"])) == 3 and "same" not in answer["event_ids"]
    assert {e["source_service"] for e in events} == {SOURCE_API}


def test_a_captured_event_replayed_whole_is_accepted_without_warnings() -> None:
    """A client replaying the events it received (whole objects, as consumers get them) keeps working:
    202, its fields kept, the service's three replaced, nothing taken for a mistake."""
    h = Harness()
    captured = EventFactory(Catalog.builtin(), random.Random(3)).generate()
    d = post(h, captured)
    [event] = h.published()
    code, answer, _ = h.answer(d)
    assert code == 202
    assert answer == {
        "status": "success",
        "event_id": event["event_id"],
        "replaced": ["event_id", "source_service", "timestamp"],
    }
    assert event["event_id"] != captured["event_id"]
    unchanged = set(captured) - SERVICE_FIELDS
    assert {k: event[k] for k in unchanged} == {k: captured[k] for k in unchanged}


TYPO = "actoin_result is not an event field (it is sent as an extra); did you mean action_result?"
LOWER = (
    'action_result "failure" is none of those of the user_login templates (FAILURE, SUCCESS), so the '
    'details come from any of them; did you mean "FAILURE"?'
)
NO_TEMPLATE = (
    'no template makes event_type "usr_login", so the fields left out get plain defaults (severity INFO, '
    'action_result SUCCESS, no details); did you mean "user_login"?'
)


@pytest.mark.parametrize(
    ("fields", "warnings"),
    [
        ({"event_type": "user_login", "actoin_result": "FAILURE"}, [TYPO]),
        ({"event_type": "user_login", "action_result": "failure"}, [LOWER]),
        ({"event_type": "usr_login"}, [NO_TEMPLATE]),
        (
            {"event_type": "user_logout", "Severity": "x", "severity": "CRITICAL", "detail": {}},
            [
                "Severity is not an event field (it is sent as an extra); did you mean severity?",
                "detail is not an event field (it is sent as an extra); did you mean details?",
                'severity "CRITICAL" is none of those of the user_logout templates (INFO)',
            ],
        ),
    ],
    ids=["field-typo", "result-case", "unknown-type", "several"],
)
def test_what_looks_like_a_mistake_is_accepted_with_warnings(
    fields: dict[str, Any], warnings: list[str]
) -> None:
    """A typo in a field name, a value none of the type's templates has (another letter case too) and an
    event type no template makes are sent as given, extras included, and the 202 says what looked wrong."""
    h = Harness()
    d = post(h, fields)
    [event] = h.published()
    code, answer, _ = h.answer(d)
    assert (code, answer["event_id"], answer["warnings"]) == (202, event["event_id"], warnings)
    assert {k: event[k] for k in fields if k != "detail"} == {
        k: v for k, v in fields.items() if k != "detail"
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"event_type": "user_login", "action_result": "FAILURE", "severity": "WARNING"},
        {"event_type": "service_status_change", "action_result": "FAILED", "severity": "ERROR"},
        {"event_type": "user_login", "ticket": "OPS-1", "labels": ["a"], "resource": "/x", "user": "bob"},
    ],
)
def test_template_values_and_unlike_extras_get_no_warnings(fields: dict[str, Any]) -> None:
    """Values a template of the type has, and extra fields that look like no event field, are not
    mistakes: the answer is the legacy one, with no "warnings"."""
    h = Harness()
    d = post(h, fields)
    h.published()
    code, answer, _ = h.answer(d)
    assert (code, set(answer)) == (202, {"status", "event_id"})


def test_warnings_follow_the_services_own_templates() -> None:
    """With template files of its own, the values looked for are theirs (here user_login says DENIED)."""
    catalog = Catalog.from_data(
        {
            "pools": {"hosts": ["h1"], "users": ["u1"]},
            "templates": [
                {"name": "deny", "event_type": "user_login", "severity": "NOTICE", "action_result": "DENIED",
                 "weight": 1, "details": {}},
            ],
        }
    )  # fmt: skip
    h = Harness(catalog=catalog)
    d = post(h, {"event_type": "user_login", "action_result": "DENIED", "severity": "NOTICE"})
    h.published()
    assert set(h.answer(d)[1]) == {"status", "event_id"}
    d = post(h, {"event_type": "user_login", "action_result": "FAILURE"})
    h.published()
    [warning] = h.answer(d)[1]["warnings"]
    assert warning.startswith('action_result "FAILURE" is none of those of the user_login templates (DENIED)')


@pytest.mark.parametrize("path", ["/generate_event?strict=true", "/generate_event?count=5&strict=true"])
def test_strict_refuses_what_would_be_warned_about_with_400_and_the_same_messages(path: str) -> None:
    """?strict=true: the warnings become a 400 (error and warnings), and nothing is accepted."""
    h = Harness()
    body = json.dumps({"event_type": "usr_login", "actoin_result": "FAILURE"}).encode()
    code, answer, _ = h.answer(h.request("POST", path, body, JSON))
    assert code == 400
    assert answer == {"error": f"{TYPO}; {NO_TEMPLATE}", "warnings": [TYPO, NO_TEMPLATE]}
    assert len(h.outbox) == 0


def test_strict_accepts_what_looks_right_and_replaces_service_fields() -> None:
    """Strict refuses only what would be warned about: a sound event, even a replayed one, is 202."""
    h = Harness()
    body = json.dumps({"event_type": "user_login", "action_result": "FAILURE", "event_id": "x"}).encode()
    d = h.request("POST", "/generate_event?strict=true", body, JSON)
    h.published()
    code, answer, _ = h.answer(d)
    assert (code, answer["replaced"]) == (202, ["event_id"])


def test_the_strict_setting_is_the_default_and_a_call_can_say_otherwise() -> None:
    """AUDITGEN_STRICT=true refuses by default; ?strict=false on a call accepts it with warnings."""
    h = Harness(strict=True)
    code, answer, _ = h.answer(post(h, {"event_type": "usr_login"}))
    assert (code, answer["warnings"]) == (400, [NO_TEMPLATE])
    body = json.dumps({"event_type": "usr_login"}).encode()
    d = h.request("POST", "/generate_event?strict=false", body, JSON)
    h.published()
    code, answer, _ = h.answer(d)
    assert (code, answer["warnings"]) == (202, [NO_TEMPLATE])


@pytest.mark.parametrize("value", ["yes", "1", "True", "true&strict=false"])
def test_strict_must_be_true_or_false(value: str) -> None:
    """Any other ?strict= is a 400 saying what it takes, rather than a guess."""
    h = Harness()
    body = json.dumps({"event_type": "user_login"}).encode()
    code, answer, _ = h.answer(h.request("POST", f"/generate_event?strict={value}", body, JSON))
    assert code == 400
    assert "strict must be" in answer["error"]
    assert len(h.outbox) == 0
