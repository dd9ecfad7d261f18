"""The generator's control API, GET and PUT /generator, in memory: StubTreq and a generator on a Clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from auditgen.content_type import MISSING
from tests.support.generator import run_for
from tests.support.web import JSON, Harness

SETTINGS = {
    "rate": 1000.0,
    "paused": False,
    "shape": "constant",
    "burst_on_seconds": 10.0,
    "burst_off_seconds": 50.0,
    "daily_peak_hour": 14.0,
    "daily_min_ratio": 0.1,
}


def put(h: Harness, payload: Any, headers: Any = JSON) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    code, answer, _ = h.answer(h.request("PUT", "/generator", body, headers))
    return code, answer


def get(h: Harness) -> dict[str, Any]:
    code, answer, _ = h.answer(h.request("GET", "/generator"))
    assert code == 200
    return answer


def running(rate: float = 1000.0) -> Harness:
    """An API whose generator runs at `rate` and has run for a second."""
    h = Harness(capacity=100_000, generator_rate=rate)
    assert h.generator is not None
    h.generator.startService()
    run_for(h.clock, 1.0, 0.01)
    return h


def test_get_reports_the_settings_and_what_the_generator_does() -> None:
    """GET /generator: rate, shape, operator pause, every shape parameter, the automatic pause
    (outbox_full) and the target and achieved rates."""
    h = running()
    state = get(h)
    assert {k: state[k] for k in SETTINGS} == SETTINGS
    assert state["outbox_full"] is False
    assert state["target_rate"] == 1000.0
    assert 950 < state["achieved_rate"] <= 1000
    h.generator.stopService()


def test_put_applies_every_change_at_once_and_answers_the_new_state() -> None:
    """PUT with a rate, a shape and its parameters: 200 with the new settings, and the generator uses
    them from now (a burst of 2 s at 300/s, then silence)."""
    h = running()
    before = len(h.outbox)
    code, state = put(h, {"rate": 300, "shape": "bursts", "burst_on_seconds": 2, "burst_off_seconds": 8})
    assert code == 200
    assert {k: state[k] for k in SETTINGS} == {
        **SETTINGS,
        "rate": 300.0,
        "shape": "bursts",
        "burst_on_seconds": 2.0,
        "burst_off_seconds": 8.0,
    }
    assert get(h)["shape"] == "bursts"
    run_for(h.clock, 2.0, 0.01)
    assert len(h.outbox) - before == 601
    before = len(h.outbox)
    run_for(h.clock, 7.9, 0.01)
    assert len(h.outbox) == before
    assert get(h)["target_rate"] == 0
    h.generator.stopService()


def test_pause_and_resume_through_the_api_without_a_burst() -> None:
    """paused=true stops making events (nothing left scheduled) and shows as paused, apart from
    outbox_full; paused=false resumes from now, at the rate, without making up for the pause."""
    h = running()
    code, state = put(h, {"paused": True})
    assert (code, state["paused"], state["outbox_full"], state["target_rate"]) == (200, True, False, 0)
    assert h.clock.getDelayedCalls() == []
    before = len(h.outbox)
    h.clock.advance(30)
    assert len(h.outbox) == before
    code, state = put(h, {"paused": False})
    assert (code, state["paused"]) == (200, False)
    run_for(h.clock, 1.0, 0.01)
    assert len(h.outbox) - before == 1001
    h.generator.stopService()
    assert h.clock.getDelayedCalls() == []


def test_rate_zero_turns_generation_off_and_a_rate_turns_it_back_on() -> None:
    """rate 0 (allowed through the API, unlike AUDITGEN_RATE) stops the loop; a rate again starts it."""
    h = running()
    assert put(h, {"rate": 0})[0] == 200
    assert h.clock.getDelayedCalls() == []
    before = len(h.outbox)
    h.clock.advance(10)
    assert len(h.outbox) == before
    assert put(h, {"rate": 20})[0] == 200
    run_for(h.clock, 0.98, 0.01)
    assert len(h.outbox) - before == 20  # one at once, then one every 50 ms
    h.generator.stopService()


def test_a_rate_change_makes_no_burst() -> None:
    """From 10/s up to 5,000/s: each 100 ms then makes about 500, never a catch-up of more."""
    h = running(10.0)
    assert put(h, {"rate": 5000})[0] == 200
    for _ in range(5):
        before = len(h.outbox)
        run_for(h.clock, 0.1, 0.01)
        assert 495 <= len(h.outbox) - before <= 505
    h.generator.stopService()


ALL = "rate, shape, paused, burst_on_seconds, burst_off_seconds, daily_peak_hour, daily_min_ratio"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", f"request body is empty; expected a JSON object with any of {ALL}"),
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object, not list"),
        (b'{"rate": 1, "rate": 2}', "duplicate key 'rate'"),
        (b'{"rate": NaN}', "NaN is not a valid JSON number"),
        (b"{}", f"nothing to change; expected any of {ALL}"),
        (b'{"speed": 3}', f"unknown field speed; expected any of {ALL}"),
        (b'{"rate": -1}', "rate must be events per second from 0 (off) to 100000, not -1"),
        (b'{"rate": 100001}', "rate must be events per second from 0 (off) to 100000, not 100001"),
        (b'{"rate": 1e400}', "rate must be events per second from 0 (off) to 100000, not Infinity"),
        (b'{"rate": "fast"}', 'rate must be events per second from 0 (off) to 100000, not "fast"'),
        (b'{"rate": true}', "rate must be events per second from 0 (off) to 100000, not true"),
        (b'{"shape": "square"}', 'shape must be one of constant, poisson, bursts, daily, not "square"'),
        (b'{"shape": ["bursts"]}', 'shape must be one of constant, poisson, bursts, daily, not ["bursts"]'),
        (b'{"paused": "yes"}', 'paused must be true or false, not "yes"'),
        (b'{"paused": 1}', "paused must be true or false, not 1"),
        (b'{"burst_on_seconds": 0}', "burst_on_seconds: expected a number of seconds greater than 0, not 0"),
        (b'{"burst_off_seconds": -1}', "burst_off_seconds: expected a number of seconds, 0 or more, not -1"),
        (b'{"daily_peak_hour": 24}', "daily_peak_hour: expected an hour of the day in UTC, from 0 to less"),
        (b'{"daily_min_ratio": null}', "daily_min_ratio: expected a number, not null"),
        (b'{"daily_min_ratio": 1.5}', "daily_min_ratio: expected a fraction of the peak rate, from 0 to 1"),
        (b'{"rate": 10, "shape": "square"}', "shape must be one of"),
        (b'{"rate": 10, "daily_min_ratio": 2}', "daily_min_ratio: expected a fraction"),
    ],
)
def test_bad_changes_get_400_naming_the_field_and_change_nothing(body: bytes, message: str) -> None:
    """Every field is checked before any is applied: a 400 says which field and what was expected, and
    the generator keeps all its settings (also those of the same request that were valid)."""
    h = Harness(generator_rate=1000.0)
    code, answer = put(h, body)
    assert code == 400
    assert message in answer["error"], answer["error"]
    assert h.generator is not None
    assert h.generator.settings() == SETTINGS


def test_put_follows_the_same_body_rules_as_generate_event() -> None:
    """A non-JSON or missing Content-Type gets 415 and a body over AUDITGEN_MAX_BODY_BYTES 413, as for
    events; JSON with a charset is JSON."""
    h = Harness(generator_rate=1000.0, max_body_bytes=64)
    code, answer = put(h, b'{"rate": 5}', {"Content-Type": "text/plain"})
    assert (code, answer["error"]) == (415, "Content-Type must be application/json, not 'text/plain'")
    code, answer = put(h, json.dumps({"rate": 5, "shape": "constant" + " " * 64}).encode())
    assert (code, answer["error"]) == (413, "request body is larger than 64 bytes")
    assert put(h, b'{"rate": 5}', {}) == (415, {"error": MISSING})
    assert h.generator is not None and h.generator.rate == 1000.0
    assert put(h, b'{"rate": 5}', {"Content-Type": "application/json; charset=utf-8"})[0] == 200


def test_without_a_generator_the_routes_answer_404() -> None:
    """An API built without a generator says so on both methods, as JSON."""
    h = Harness()
    for method in ("GET", "PUT"):
        code, answer, _ = h.answer(h.request(method, "/generator", b'{"rate": 1}', JSON))
        assert (code, answer) == (404, {"error": "this service has no generator to control"})


def test_other_methods_get_405_listing_get_and_put() -> None:
    """POST /generator is not a control: 405 with Allow."""
    h = Harness(generator_rate=1.0)
    code, _, headers = h.answer(h.request("POST", "/generator", b"{}", JSON))
    assert code == 405
    assert "GET" in headers.getRawHeaders("allow")[0] and "PUT" in headers.getRawHeaders("allow")[0]
