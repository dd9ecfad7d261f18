"""Hostile input at the HTTP layer: oversized bodies, header floods, malformed requests.

The site tests drive the API port's real ApiSite through an HTTPChannel over a StringTransport (every
byte the client sends and the server answers is visible); one test uses loopback sockets because what
it pins (the client reads the 413 instead of a connection reset) only exists in a real TCP stack.
"""

from __future__ import annotations

import io
import json
import socket
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread

from auditgen import web
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.web import ApiSite, AuditAPI
from tests.test_web import FakeHealth

reactor: Any = _reactor

LIMIT = 100


@dataclass
class Answer:
    """One HTTP response as the client received it."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> Answer:
    """The first response in raw, with a Content-Length or chunked body."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2 :]
    else:
        body = rest[: int(headers["content-length"])]
    return Answer(int(status.split(" ")[1]), headers, body)


class Connection:
    """One client connection to the site, in memory."""

    def __init__(self, site: ApiSite) -> None:
        self.channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def answer(self) -> Answer:
        return parse_answer(self.transport.value())

    @property
    def closed(self) -> bool:
        """Whether the server has closed (or is closing) the connection."""
        return bool(self.transport.disconnecting)

    @property
    def buffered(self) -> int:
        """Bytes of request body the server is holding for the request in progress."""
        content = self.channel.requests[0].content  # BytesIO or, for larger bodies, a temporary file
        return int(content.seek(0, io.SEEK_END))


class Service:
    """The API behind its ApiSite, on a Clock, with the broker played by the test."""

    def __init__(self, max_body_bytes: int = LIMIT) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.outbox = Outbox(10, self.metrics, self.clock)
        self.api = AuditAPI(
            EventFactory(Catalog.builtin()),
            self.outbox,
            FakeHealth(),
            self.metrics.registry,
            self.clock,
            max_body_bytes=max_body_bytes,
        )
        self.site = self.api.site(reactor=self.clock)

    def connect(self) -> Connection:
        return Connection(self.site)

    def confirm_all(self) -> list[str]:
        ids = []
        while (entry := self.outbox.take()) is not None:
            self.outbox.settle(entry)
            ids.append(entry.event_id)
        return ids

    def healthy(self) -> bool:
        """A fresh connection still gets its answer."""
        c = self.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = c.answer()
        return answer.code == 200 and answer.json()["status"] == "healthy"


def head(length: int | None = None, *extra: str) -> bytes:
    lines = ["POST /generate_event HTTP/1.1", "Host: auditgen", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def body_of(size: int) -> bytes:
    """A valid event body of exactly size bytes."""
    base = b'{"event_type": "x", "pad": ""}'
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
    s = Service()
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
    s = Service()
    c = s.connect()
    c.send(head(LIMIT + 1, "Expect: 100-continue"))
    assert b"100 Continue" not in c.transport.value()
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert c.closed


def test_declared_body_too_large_to_drain_closes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draining a refused body is bounded: a body longer than MAX_DISCARD_BYTES is not read at all."""
    monkeypatch.setattr(web, "MAX_DISCARD_BYTES", 1000)
    s = Service()
    c = s.connect()
    c.send(head(1001))
    assert_refused(c.answer(), 413, f"larger than {LIMIT} bytes")
    assert c.closed


def test_chunked_body_over_the_limit_is_answered_413_and_dropped() -> None:
    """A chunked body is counted as it arrives: past the limit, 413 at once and nothing more is kept."""
    s = Service()
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


def test_endless_chunked_body_is_cut_off_after_max_discard(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never ends its refused chunked body loses the connection after MAX_DISCARD_BYTES."""
    monkeypatch.setattr(web, "MAX_DISCARD_BYTES", 5000)
    s = Service()
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
    s = Service()
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
    s = Service(max_body_bytes=1000)
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
    s = Service()
    c = s.connect()
    c.send(request_bytes)
    assert_refused(c.answer(), 400, message)
    assert c.closed
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")  # whatever a client sends after that is not answered
    assert c.transport.value().count(b"HTTP/1.1") == 1
    assert s.healthy()


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=xyz"])
def test_form_bodies_are_not_parsed_by_the_site(content_type: str) -> None:
    """Form bodies are not parsed (twisted.web would, and refuse some with a bare 400): the route's 415."""
    s = Service(max_body_bytes=10_000)
    c = s.connect()
    body = b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n" * 100 + b"--xyz--\r\n"
    request = head(len(body)).replace(b"application/json", content_type.encode()) + body
    c.send(request)
    answer = c.answer()
    assert answer.code == 415
    assert content_type in answer.json()["error"]


def test_the_api_port_site_writes_no_access_log() -> None:
    """No access-log line per request, even with a log file set: the API port may serve thousands a second."""
    s = Service()
    log = io.StringIO()
    s.site.logFile = log
    c = s.connect()
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert c.answer().code == 200
    assert log.getvalue() == ""
