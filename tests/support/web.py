"""The HTTP API in memory: StubTreq against the Klein resource, a real outbox, a Clock, the broker played
by the test. Also the fakes the API stands on (the broker link's health, spools that fail or wait).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.server import Site

from auditgen.events import Catalog, EventFactory
from auditgen.generator import Generator
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenarios import ScenarioRunner
from auditgen.spool import SpoolError
from auditgen.web import AuditAPI

JSON = {"Content-Type": "application/json"}


@dataclass
class FakeHealth:
    connected: bool = True
    blocked: bool = False
    unconfirmed: int = 0
    last_error: str | None = None
    address: str = "amqp://guest@localhost:5672/"


def serve_through_api_site(stub: StubTreq, api: AuditAPI) -> None:
    """Make StubTreq's in-memory server the production ApiSite instead of the plain Site it builds."""
    agent = stub._agent  # treq.testing's RequestTraversalAgent builds Site(resource) itself
    assert type(agent._serverFactory) is Site, "treq changed how StubTreq serves; update this helper"
    agent._serverFactory = api.site(reactor=agent._memoryReactor)


class Harness:
    """An API over a real outbox, with the broker played by the test (take + settle); with generator_rate,
    a generator at that rate (not started) behind GET/PUT /generator.

    With api_site, requests go through the ApiSite that serves the API port (body limit, JSON protocol
    errors, no form parsing); without it, through a plain twisted.web Site, which only the routes guard.
    """

    def __init__(
        self,
        capacity: int = 10,
        confirm_wait: float = 1.0,
        max_body_bytes: int = 1024,
        api_site: bool = False,
        spool: Any = None,
        max_series: int = 1000,
        generator_rate: float | None = None,
        token: str | None = None,
        catalog: Catalog | None = None,
        strict: bool = False,
    ) -> None:
        self.clock = Clock()
        catalog = catalog or Catalog.builtin()
        self.metrics = Metrics(max_series=max_series)
        self.outbox = Outbox(capacity, self.metrics, self.clock, spool=spool)
        self.health = FakeHealth()
        self.generator = (
            None
            if generator_rate is None
            else Generator(
                self.clock,
                generator_rate,
                EventFactory(Catalog.builtin()).generate,
                self.outbox,
                self.metrics,
            )
        )
        api = AuditAPI(
            EventFactory(catalog),
            self.outbox,
            self.health,
            self.metrics.registry,
            self.clock,
            confirm_wait=confirm_wait,
            max_body_bytes=max_body_bytes,
            generator=self.generator,
            scenarios=self.make_scenarios(),
            token=token,
            catalog=catalog,
            strict=strict,
        )
        self.api = api
        self.stub = StubTreq(api.resource())
        if api_site:
            serve_through_api_site(self.stub, api)

    def make_scenarios(self) -> ScenarioRunner | None:
        """The runner behind /scenarios, made once the clock, metrics and outbox exist; none here."""
        return None

    def request(self, method: str, path: str, body: bytes | None = None, headers: Any = None) -> Any:
        """Send a request and run the in-memory transport until it is answered; return the response."""
        d = self.stub.request(method, f"http://auditgen{path}", data=body, headers=headers)
        self.stub.flush()
        return d

    def confirm_all(self) -> list[str]:
        """Play the broker: every waiting entry is published and acked."""
        ids = []
        while (entry := self.outbox.take()) is not None:
            self.outbox.settle(entry)
            ids.append(entry.event_id)
        self.stub.flush()
        return ids

    def published(self) -> list[dict[str, Any]]:
        """The events in the outbox, in order, as the broker would receive them (each one acked)."""
        events = []
        while (entry := self.outbox.take()) is not None:
            events.append(json.loads(entry.body))
            self.outbox.settle(entry)
        self.stub.flush()
        return events

    def answer(self, d: Any) -> tuple[int, dict[str, Any], Any]:
        """The response's code, JSON body and headers; the response must have completed."""
        code, body, headers = response_of(self.stub, d)
        return code, json.loads(body), headers


def response_of(stub: StubTreq, d: Any) -> tuple[int, bytes, Any]:
    """A StubTreq request's code, body and headers, once it has completed (a failure is raised)."""
    stub.flush()
    result: list[Any] = []
    d.addBoth(result.append)
    assert result, "no response yet"
    response = result[0]
    if not hasattr(response, "code"):
        response.raiseException()
    body: list[bytes] = []
    response.content().addCallback(body.append)
    stub.flush()
    return response.code, body[0], response.headers


def answered(d: Any) -> bool:
    """Whether the response has arrived (without consuming it)."""
    seen: list[Any] = []
    d.addBoth(lambda r: seen.append(r) or r)
    return bool(seen)


class FailingSpool:
    """A spool whose disk refuses every write."""

    def store(self, *args: Any) -> Any:
        return defer.fail(SpoolError("could not write the spool at /full: disk I/O error"))


class SlowSpool:
    """A spool whose writes complete when the test says."""

    def __init__(self) -> None:
        self.writes: list[defer.Deferred[int]] = []

    def store(self, *args: Any) -> defer.Deferred[int]:
        self.writes.append(defer.Deferred())
        return self.writes[-1]

    def remove(self, seq: int) -> None:
        pass
