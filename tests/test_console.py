"""The live console's parts in memory: the event tail's cost and flow control, the state snapshot, the
routes that serve the page, and the vendored chart library's record."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from auditgen.console.resource import STATIC, console_resource
from auditgen.console.state import ConsoleState
from auditgen.console.tail import BATCH, FLUSH_SECONDS, KEEPALIVE_SECONDS, EventTail
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxFull
from tests.support.web import FakeHealth, Harness


class StreamRequest:
    """Just what a streaming resource uses of a request, and a way for the client to go away."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.responseHeaders = Headers()
        self.producer: Any = None
        self.finished = False
        self._done: list[Deferred[None]] = []

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming, "the tail must be a push producer, paused by the connection"
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._done.append(d)
        return d

    def finish(self) -> None:
        self.finished = True
        for d in self._done:
            d.callback(None)

    def lose(self) -> None:
        """The client closed the page."""
        for d in self._done:
            d.errback(Failure(ConnectionError("gone")))

    def events(self) -> list[dict[str, Any]]:
        text = b"".join(self.written).decode()
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]

    def skipped(self) -> int:
        text = b"".join(self.written).decode()
        return sum(int(n) for n in re.findall(r"event: skipped\ndata: (\d+)", text))


class Watched:
    """An outbox stand-in that records who watches it."""

    def __init__(self) -> None:
        self.watcher: Callable[[bytes], None] | None = None
        self.calls = 0

    def watch(self, watcher: Callable[[bytes], None] | None) -> None:
        self.calls += 1
        self.watcher = watcher

    def confirm(self, n: int, start: int = 0) -> None:
        assert self.watcher is not None
        for i in range(start, start + n):
            self.watcher(json.dumps({"event_id": str(i)}).encode())


def open_page(tail: EventTail) -> StreamRequest:
    request = StreamRequest()
    tail.render_GET(request)  # type: ignore[arg-type]
    return request


def test_no_page_costs_nothing() -> None:
    """Without an open page the outbox has no watcher and the tail schedules nothing; the first page
    starts both, and when the last page closes both stop."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    assert outbox.watcher is None and not clock.getDelayedCalls()
    first, second = open_page(tail), open_page(tail)
    assert outbox.watcher is not None and outbox.calls == 1 and len(clock.getDelayedCalls()) == 1
    first.lose()
    assert outbox.watcher is not None
    second.lose()
    assert outbox.watcher is None and not clock.getDelayedCalls() and tail.subscribers == 0


def test_a_page_gets_confirmed_events_as_server_sent_events() -> None:
    """Each confirmed event reaches every open page as one `data:` line of its JSON, on the next flush."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    page = open_page(tail)
    assert page.responseHeaders.getRawHeaders(b"content-type") == [b"text/event-stream"]
    outbox.confirm(3)
    assert page.events() == []
    clock.advance(FLUSH_SECONDS)
    assert [e["event_id"] for e in page.events()] == ["0", "1", "2"]
    page.lose()


def test_a_page_gets_at_most_a_batch_per_flush_and_is_told_what_it_missed() -> None:
    """Under load a page gets the newest BATCH events of each flush, and a count of the others."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    page = open_page(tail)
    outbox.confirm(BATCH + 40)
    clock.advance(FLUSH_SECONDS)
    ids = [int(e["event_id"]) for e in page.events()]
    assert ids == list(range(40, BATCH + 40))
    assert page.skipped() == 40
    page.lose()


def test_a_scenario_run_is_not_crowded_out_by_background_traffic() -> None:
    """Events of a scenario run have their own batch: among thousands of background events a flush
    still carries all of a run's events (up to a batch of them)."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    page = open_page(tail)
    assert outbox.watcher is not None
    outbox.confirm(500)
    for i in range(6):
        outbox.watcher(json.dumps({"event_id": f"s{i}", "details": {"scenario_id": "run-1"}}).encode())
        outbox.confirm(500, start=1000 * (i + 1))
    clock.advance(FLUSH_SECONDS)
    ids = [e["event_id"] for e in page.events()]
    assert [i for i in ids if i.startswith("s")] == [f"s{i}" for i in range(6)]
    assert len(ids) == BATCH + 6
    page.lose()


def test_a_slow_page_is_skipped_not_buffered() -> None:
    """While the connection pauses the producer (its send buffer is full), nothing is written to it and
    nothing piles up; once it resumes it hears how many it missed, then new events again."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    page = open_page(tail)
    page.producer.pauseProducing()
    before = len(page.written)
    for i in range(10):
        outbox.confirm(BATCH, start=i * BATCH)
        clock.advance(FLUSH_SECONDS)
    assert len(page.written) == before
    page.producer.resumeProducing()
    outbox.confirm(1, start=10_000)
    clock.advance(FLUSH_SECONDS)
    assert [e["event_id"] for e in page.events()] == ["10000"]
    assert page.skipped() == 10 * BATCH
    page.lose()


def test_an_idle_stream_gets_a_keepalive() -> None:
    """With nothing to send, a comment line every KEEPALIVE_SECONDS keeps proxies from closing it."""
    clock, outbox = Clock(), Watched()
    page = open_page(EventTail(outbox, clock))
    clock.advance(KEEPALIVE_SECONDS - FLUSH_SECONDS)
    assert b": keepalive\n\n" not in page.written
    clock.advance(FLUSH_SECONDS)
    assert b": keepalive\n\n" in page.written
    page.lose()


def test_close_ends_every_stream() -> None:
    """At shutdown the open streams end, so the API port can close, and the outbox is left unwatched."""
    clock, outbox = Clock(), Watched()
    tail = EventTail(outbox, clock)
    pages = [open_page(tail), open_page(tail)]
    tail.close()
    assert all(p.finished for p in pages) and outbox.watcher is None and not clock.getDelayedCalls()


def test_the_outbox_tells_its_watcher_of_every_confirmed_event() -> None:
    """The real outbox hands each settled entry's body, as published, to the watcher; none without one."""
    clock, metrics = Clock(), Metrics()
    outbox = Outbox(10, metrics, clock)
    seen: list[bytes] = []
    outbox.add({"event_id": "a", "event_type": "user_login"})
    outbox.watch(seen.append)
    outbox.add({"event_id": "b", "event_type": "user_login"})
    for _ in range(2):
        entry = outbox.take()
        assert entry is not None
        outbox.settle(entry)
    assert [json.loads(b)["event_id"] for b in seen] == ["a", "b"]
    outbox.watch(None)
    outbox.add({"event_id": "c", "event_type": "user_login"})
    entry = outbox.take()
    assert entry is not None
    outbox.settle(entry)
    assert len(seen) == 2


def test_the_state_snapshot_counts_what_the_metrics_count() -> None:
    """Accepted, confirmed and refused totals, the outbox, the latency histogram and the broker link come
    from the service's own metrics and publisher, so the console and /metrics agree."""
    clock, metrics, health = Clock(), Metrics(), FakeHealth()
    outbox = Outbox(2, metrics, clock)
    state = ConsoleState(metrics.registry, health, clock, 2, lambda: {"rate": 5.0}, {"scenarios": True})
    for i in range(2):
        outbox.add({"event_id": str(i), "event_type": "user_login", "server_hostname": f"h{i}"})
    with pytest.raises(OutboxFull):
        outbox.add({"event_id": "x", "event_type": "user_login"})
    entry = outbox.take()
    assert entry is not None
    outbox.settle(entry)
    metrics.confirm_latency.observe(0.004)
    clock.advance(7)
    snap = state.snapshot()
    assert snap["accepted_total"] == 2 and snap["confirmed_total"] == 1 and snap["refused_total"] == 1
    assert snap["outbox_depth"] == 1 and snap["outbox_capacity"] == 2
    assert snap["confirm_latency"]["count"] == 1 and snap["confirm_latency"]["buckets"]["0.005"] == 1
    assert snap["uptime_seconds"] == 7 and snap["generator"] == {"rate": 5.0}
    assert snap["broker"]["connected"] == health.connected and snap["features"] == {"scenarios": True}


class ConsoleHarness(Harness):
    """The API with its console, as makeService builds it."""

    def __init__(self) -> None:
        super().__init__(generator_rate=1.0)
        state = ConsoleState(self.metrics.registry, self.health, self.clock, 10, None, {})
        self.api._console = console_resource(state, EventTail(self.outbox, self.clock))


def get(h: Harness, path: str) -> Any:
    """The response to a GET (redirects not followed), once the in-memory transport delivered it."""
    d = h.stub.request("GET", f"http://auditgen{path}", allow_redirects=False)
    h.stub.flush()
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and hasattr(out[0], "code"), out
    return out[0]


def test_the_root_sends_a_browser_to_the_console() -> None:
    """GET / redirects to /console/, whose page is served with a policy that allows no inline script."""
    h = ConsoleHarness()
    response = get(h, "/")
    assert response.code == 302
    assert response.headers.getRawHeaders("location") == ["/console/"]
    page = get(h, "/console/")
    assert page.code == 200
    policy = page.headers.getRawHeaders("content-security-policy")[0]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_the_console_serves_its_files_but_lists_no_directory() -> None:
    """The page's script and the vendored chart library are served; a directory is not listed."""
    h = ConsoleHarness()
    assert get(h, "/console/console.js").code == 200
    assert get(h, "/console/vendor/uPlot.iife.min.js").code == 200
    assert get(h, "/console/vendor/").code == 404
    assert get(h, "/console/vendor/VENDORED.md").code == 200
    assert get(h, "/console/../auditgen/web.py").code == 404
    assert get(h, "/console/%2e%2e/resource.py").code == 404


def test_the_state_is_served_as_json() -> None:
    """GET /console/state answers the snapshot as JSON, uncached."""
    h = ConsoleHarness()
    code, body, headers = h.answer(h.request("GET", "/console/state"))
    assert code == 200 and body["outbox_capacity"] == 10
    assert headers.getRawHeaders("cache-control") == ["no-store"]


def test_without_a_console_there_is_no_page() -> None:
    """An API built without a console (embedded, or tests) answers 404 at / and /console/."""
    h = Harness()
    assert get(h, "/").code == 404
    assert get(h, "/console/").code == 404


def test_the_page_has_no_inline_script_or_style() -> None:
    """Every script and style is a file of this origin, as the Content-Security-Policy demands."""
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline <script>"
    assert "<style" not in html and " style=" not in html and " on" not in re.sub(r"\s(one|only)", "", html)


def test_the_vendored_files_are_the_ones_recorded() -> None:
    """VENDORED.md pins each vendored file's version and sha256; a changed file must change the record."""
    vendor = STATIC / "vendor"
    record = (vendor / "VENDORED.md").read_text()
    pinned = re.findall(r"\| `([^`]+)` \| \w+ \| [\d.]+ \|[^|]+\|[^|]+\| `([0-9a-f]{64})` \|", record)
    assert {name for name, _ in pinned} == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in pinned:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "uPlot.iife.min.js" in record and (vendor / "uPlot.LICENSE").exists()
    assert Path(vendor / "uPlot.min.css").exists()
