"""Hostile input at the HTTP layer: oversized bodies, header floods, malformed requests, arbitrary bytes.

The site tests drive the API port's real ApiSite through an HTTPChannel over a StringTransport (every
byte the client sends and the server answers is visible); one test uses loopback sockets because what
it pins (the client reads the 413 instead of a connection reset) only exists in a real TCP stack.
"""

from __future__ import annotations

import io
import json
import math
import socket
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread

from auditgen import checks, site, validation
from auditgen.content_type import is_json
from tests.support.http import Answer, SiteHarness, chunk, head, parse_answer
from tests.support.strategies import (
    CONTENT_TYPES,
    ODD_VALUES,
    depth,
    encoded,
    event_objects,
    good_events,
    json_values,
    some_text,
    to_body,
)
from tests.support.waiting import reactor
from tests.support.web import Harness

LIMIT = 100


def body_of(size: int) -> bytes:
    """A valid event body of exactly size bytes."""
    base = b'{"event_type": "user_login", "pad": ""}'
    assert size >= len(base)
    return base[:-2] + b"p" * (size - len(base)) + b'"}'


def assert_refused(answer: Answer, code: int, message: str) -> None:
    assert answer.code == code
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert message in answer.json()["error"]


# -- request body limit -----------------------------------------------------------------------------


def test_content_length_over_the_limit_is_answered_413_before_the_body_and_never_stored() -> None:
    """A declared body over the limit gets 413 at once; its bytes are dropped, then the connection closes."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(LIMIT * 50))
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert not c.closed, "closed before the client finished sending: it would read a reset, not the 413"
    for _ in range(49):
        c.send(b"x" * LIMIT)
        assert c.buffered == 0
    assert not c.closed
    c.send(b"x" * LIMIT)
    assert c.closed
    assert len(s.outbox) == 0
    assert c.transport.value().count(b"HTTP/1.1") == 1


def test_expect_100_continue_over_the_limit_gets_413_instead_and_closes() -> None:
    """A client asking first is told 413 and never "100 Continue", so it sends nothing and we close."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(LIMIT + 1, "Expect: 100-continue"))
    assert b"100 Continue" not in c.transport.value()
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert c.closed


def test_declared_body_too_large_to_drain_closes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draining a refused body is bounded: a body longer than MAX_DISCARD_BYTES is not read at all."""
    monkeypatch.setattr(site, "MAX_DISCARD_BYTES", 1000)
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(1001))
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert c.closed


def test_chunked_body_over_the_limit_is_answered_413_and_dropped() -> None:
    """A chunked body is counted as it arrives: past the limit, 413 at once and nothing more is kept."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(None) + chunk(b"{" + b" " * 59) + chunk(b" " * 40))
    assert c.transport.value() == b""  # exactly at the limit so far
    assert c.buffered == LIMIT
    c.send(chunk(b" "))
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert c.buffered == 0
    for _ in range(100):
        c.send(chunk(b"y" * 1000))
        assert c.buffered == 0
    assert not c.closed
    c.send(b"0\r\n\r\n")
    assert c.closed
    assert len(s.outbox) == 0
    assert c.transport.value().count(b"HTTP/1.1") == 1


def test_chunked_body_with_expect_100_continue_gets_it_then_413_once_past_the_limit() -> None:
    """A chunked body's size is unknown until it arrives, so a client that asks first is told "100
    Continue" (as docs/http-api.md says) and gets the 413 as soon as the body passes the limit."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(None, "Expect: 100-continue"))
    assert c.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.transport.clear()
    c.send(chunk(b"z" * (LIMIT + 1)))
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    c.send(b"0\r\n\r\n")
    assert c.closed
    assert c.transport.value().count(b"HTTP/1.1") == 1
    assert len(s.outbox) == 0


def test_endless_chunked_body_is_cut_off_after_max_discard(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never ends its refused chunked body loses the connection after MAX_DISCARD_BYTES."""
    monkeypatch.setattr(site, "MAX_DISCARD_BYTES", 5000)
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(head(None) + chunk(b"z" * (LIMIT + 1)))
    assert_refused(c.answer(), 413, "larger than")
    for _ in range(4):
        c.send(chunk(b"z" * 1000))
    assert not c.closed
    c.send(chunk(b"z" * 1000))
    assert c.closed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_at_the_limit_is_accepted(chunked: bool) -> None:
    """The limit is inclusive, with either framing: a body of exactly max_body_bytes becomes an event."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    body = body_of(LIMIT)
    if chunked:
        c.send(head(None) + chunk(body[:30]) + chunk(body[30:]) + b"0\r\n\r\n")
    else:
        c.send(head(len(body)) + body)
    ids = s.confirm_all()
    answer = c.answer()
    assert answer.code == 202
    assert answer.json() == {"status": "success", "event_id": ids[0]}
    assert not c.closed


@pytest_twisted.ensureDeferred
async def test_real_client_sending_a_large_body_reads_the_413() -> None:
    """Over TCP, a client that sends its whole oversized body before reading gets the 413, not a reset.

    Closing the socket while the refused body is still arriving makes the kernel send a reset, and the
    client then fails with EPIPE/ECONNRESET instead of reading the answer; the site drains first.
    """
    body_size = 8 * 1_048_576
    s = SiteHarness(max_body_bytes=1000)
    port = reactor.listenTCP(0, s.api.site(), interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)

    def client() -> bytes:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(head(body_size) + b"x" * body_size)
            data = b""
            while received := sock.recv(65536):
                data += received
            return data

    try:
        for _ in range(3):
            assert_refused(parse_answer(await deferToThread(client)), 413, "larger than 1000 bytes")
    finally:
        await port.stopListening()


# -- protocol-level bad requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(501)) + b"\r\n",
            "too many header fields; at most 500",
        ),
        (
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)),
            "request line and header fields are larger than 16384 bytes",
        ),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * 20_000 + b"\r\n\r\n", "longer than 16384 bytes"),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", "longer than 16384 bytes"),
        (b"NONSENSE\r\n\r\n", "malformed HTTP request"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "malformed HTTP request"),
        (b"POST /generate_event HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "malformed HTTP request"),
        (head(None) + b"zz\r\n", "malformed HTTP request"),
    ],
    ids=[
        "many-headers",
        "large-headers",
        "long-header-line",
        "long-request-line",
        "request-line",
        "header-line",
        "content-length",
        "chunk-size",
    ],
)
def test_protocol_level_bad_requests_get_400_json_and_the_service_goes_on(
    request_bytes: bytes, message: str
) -> None:
    """twisted.web's own refusals (header floods, bad framing) are JSON 400s that close the connection."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    c.send(request_bytes)
    assert_refused(c.answer(), 400, message)
    assert c.closed
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")  # whatever a client sends after that is not answered
    assert c.transport.value().count(b"HTTP/1.1") == 1
    assert s.healthy()


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=xyz"])
def test_form_bodies_are_not_parsed_by_the_site(content_type: str) -> None:
    """Form bodies are not parsed (twisted.web would, and refuse some with a bare 400): the API's 415."""
    s = SiteHarness(max_body_bytes=10_000)
    c = s.connect()
    body = b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n" * 100 + b"--xyz--\r\n"
    request = head(len(body)).replace(b"application/json", content_type.encode()) + body
    c.send(request)
    answer = c.answer()
    assert answer.code == 415
    assert content_type in answer.json()["error"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "text/plain; charset=application/json"],
)
@pytest.mark.parametrize("body", [b"", b'{"event_type": "user_login"}'])
def test_a_request_a_web_page_could_send_cross_site_gets_415_on_the_wire(
    content_type: str | None, body: bytes
) -> None:
    """What a browser sends cross-site without a preflight (no Content-Type, text/plain, a form; with or
    without a body) is a JSON 415 from the API port's site, and nothing is accepted."""
    s = SiteHarness(LIMIT)
    c = s.connect()
    type_line = [] if content_type is None else [f"Content-Type: {content_type}"]
    lines = ["POST /generate_event HTTP/1.1", "Host: auditgen", *type_line, f"Content-Length: {len(body)}"]
    c.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    answer = c.answer()
    assert (answer.code, answer.headers["content-type"]) == (415, "application/json")
    assert "application/json" in answer.json()["error"]
    assert len(s.outbox) == 0
    assert not c.closed, "a 415 is an answer like any other: the connection stays usable"


def test_the_api_port_site_writes_no_access_log() -> None:
    """No access-log line per request, even with a log file set: the API port may serve thousands a second."""
    s = SiteHarness(LIMIT)
    log = io.StringIO()
    s.site.logFile = log
    c = s.connect()
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert c.answer().code == 200
    assert log.getvalue() == ""


# -- properties: whatever arrives, never a 5xx, always JSON, and every 202 is a sound event --------------

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no example database in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def numbers(value: Any) -> list[int | float]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def reject_constant(name: str) -> Any:
    raise AssertionError(f"{name} in an event sent to the broker")


def assert_sound(event: Any, event_id: str) -> None:
    """An event as a Java or JS consumer must be able to hold it: typed fields, 64-bit integers, finite
    floats, and the API's limits."""
    assert isinstance(event, dict)
    assert event["event_id"] == event_id
    for name, limit in validation.TEXT_FIELD_LIMITS.items():
        assert isinstance(event[name], str) and 0 < len(event[name]) <= limit, name
    assert isinstance(event["details"], dict)
    for n in numbers(event):
        assert math.isfinite(n) if isinstance(n, float) else checks.MIN_INT <= n <= checks.MAX_INT, n
    for name, value in event.items():
        assert depth(value) <= validation.MAX_NESTING_DEPTH, name


def post_through_site(
    body: bytes, content_type: str | None, path: str = "/generate_event"
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """POST body to the API port's site, play the broker, check what it got; the code, answer, events."""
    h = Harness(capacity=5, max_body_bytes=4096, api_site=True)
    d = h.request("POST", path, body, {"Content-Type": content_type} if content_type else {})
    published = {}
    while (entry := h.outbox.take()) is not None:
        event = json.loads(entry.body.decode("utf-8"), parse_constant=reject_constant)
        assert_sound(event, entry.event_id)
        published[entry.event_id] = event
        h.outbox.settle(entry)
    code, answer, headers = h.answer(d)
    assert code < 500, answer
    assert headers.getRawHeaders("content-type") == ["application/json"]
    if content_type is None or not is_json(content_type):
        assert code == 415, answer
    if code == 202:
        assert answer["status"] == "success"
        assert list(published) == [answer["event_id"]]
    else:
        assert not published, "a refused request left an event behind"
        assert isinstance(answer["error"], str)
    return code, answer, published


@SETTINGS
@given(body=encoded(json_values), content_type=CONTENT_TYPES)
def test_any_json_value_gets_a_json_answer_and_never_a_5xx(body: bytes, content_type: str | None) -> None:
    """Arbitrary JSON, nested and with any numbers or strings, is refused or accepted cleanly, never a 500."""
    post_through_site(body, content_type)


@SETTINGS
@given(body=encoded(event_objects()), content_type=CONTENT_TYPES)
def test_any_event_object_is_published_sound_or_refused(body: bytes, content_type: str | None) -> None:
    """Objects with an event_type: every 202 names an event the broker gets as sound UTF-8 JSON."""
    post_through_site(body, content_type)


@SETTINGS
@given(body=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_any_bytes_get_a_json_answer_and_never_a_5xx(body: bytes, content_type: str | None) -> None:
    """Arbitrary bytes (invalid UTF-8, truncated JSON, nothing at all) get a JSON 4xx, never a 500."""
    post_through_site(body, content_type)


MAX_WARNING_CHARS = 400


@SETTINGS
@given(body=encoded(event_objects()))
def test_strict_refuses_exactly_what_would_be_accepted_with_warnings(body: bytes) -> None:
    """For any event object, ?strict=true answers 400 with the very warnings a plain call's 202 lists,
    and accepts what gets none; each warning is short text, however long the names and values sent."""
    code, answer, _ = post_through_site(body, "application/json")
    strict_code, strict_answer, _ = post_through_site(body, "application/json", "/generate_event?strict=true")
    if code != 202:
        assert (strict_code, strict_answer) == (code, answer)
        return
    warnings = answer.get("warnings", [])
    assert all(isinstance(w, str) and len(w) <= MAX_WARNING_CHARS for w in warnings), warnings
    if warnings:
        assert (strict_code, strict_answer) == (400, {"error": "; ".join(warnings), "warnings": warnings})
    else:
        assert strict_code == 202 and "warnings" not in strict_answer


@SETTINGS
@given(
    event=good_events(),
    kind=st.sampled_from(sorted(ODD_VALUES)),
    in_details=st.booleans(),
    name=some_text,
    data=st.data(),
)
def test_one_odd_value_in_a_good_event_is_refused_by_name_or_accepted(
    event: dict[str, Any], kind: str, in_details: bool, name: str, data: st.DataObject
) -> None:
    """A good event is accepted; one value no consumer can hold, anywhere, gets a 400 naming its field."""
    strategy, phrase = ODD_VALUES[kind]
    value = data.draw(strategy)
    name = f"x_{name}"  # never a known or service-assigned field
    if in_details:
        event.setdefault("details", {})[name] = value
    else:
        event[name] = value
    if kind == "deep" and depth(value) + in_details <= validation.MAX_NESTING_DEPTH:
        phrase = None
    code, answer, _ = post_through_site(to_body(event), "application/json")
    if phrase is None:
        assert code == 202, answer
    else:
        assert code == 400, answer
        assert phrase in answer["error"]
        field = "details" if in_details else checks.show_name(name)
        assert answer["error"].startswith(field), answer
