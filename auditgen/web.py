"""The HTTP API (Klein): trigger events, health for probes, and metrics for old scrapers.

Every answer, errors included, is JSON, so a caller can always read what went wrong: also the answers
twisted.web would give on its own before a request reaches a route (a body over the limit, a header
flood, a malformed request line), which `ApiSite` makes JSON too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from klein import Klein
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from auditgen.events import EventFactory
from auditgen.metrics import render_metrics
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.site import ApiSite, too_large
from auditgen.spool import SpoolError
from auditgen.validation import DEFAULT_MAX_BODY_BYTES, BadRequest, parse_count, parse_event_request

BULK_IDS_LISTED = 1_000  # up to this many, a bulk answer lists every event_id; above, the first and last
RETRY_AFTER_SECONDS = 1  # outbox full: room comes back as soon as the broker confirms
CLOSING_RETRY_AFTER_SECONDS = 5  # shutting down: ask again once this instance (or another) is back


class Health(Protocol):
    """What /healthz reports about the broker link; the publisher provides it."""

    @property
    def connected(self) -> bool: ...
    @property
    def unconfirmed(self) -> int: ...

    blocked: bool

    @property
    def address(self) -> str: ...

    last_error: str | None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_response(request: IRequest, code: int, payload: dict[str, Any]) -> bytes:
    """Every answer of the API goes through here, so all of them are JSON."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


class AuditAPI:
    """The routes, bound to one service's outbox and publisher."""

    app = Klein()
    log = Logger()

    closing: bool = False
    """Set at the start of a graceful shutdown: new events get 503 and /healthz says "stopping"."""

    def __init__(
        self,
        factory: EventFactory,
        outbox: Outbox,
        health: Health,
        registry: CollectorRegistry,
        clock: IReactorTime,
        confirm_wait: float = 1.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._factory = factory
        self._outbox = outbox
        self._health = health
        self._registry = registry
        self._clock = clock
        self._confirm_wait = confirm_wait
        self.max_body_bytes = max_body_bytes
        self.closing = False

    def site(self, reactor: IReactorTime | None = None) -> ApiSite:
        """The site to serve this API with: body limit, JSON refusals, no access log."""
        return ApiSite(self.app.resource(), self.max_body_bytes, reactor=reactor)

    @app.route("/generate_event", methods=["POST"])
    def generate_event(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Accept one event; answer once the broker confirmed it, or say it is queued after a short wait."""
        if self.closing:
            request.setHeader(b"retry-after", str(CLOSING_RETRY_AFTER_SECONDS).encode())
            return json_response(
                request, 503, {"error": "shutting down; nothing was accepted, try again later"}
            )
        content_type = request.getHeader("content-type")
        if content_type is not None and not _is_json(content_type):
            return json_response(
                request, 415, {"error": f"Content-Type must be application/json, not {content_type!r}"}
            )
        assert request.content is not None
        # ApiSite already refuses larger bodies without storing them; this bound keeps the route safe
        # under any other site too (tests, or an embedding that serves app.resource() itself).
        body = request.content.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            return json_response(request, 413, {"error": too_large(self.max_body_bytes)})
        try:
            count = parse_count(request.args)
            fields = parse_event_request(body)
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        try:
            if count is None:
                stored: Deferred[Any] = self._outbox.add(self._factory.complete(fields), wait=True)
                answer: Callable[[Any, IRequest], Deferred[bytes]] = self._answer_when_confirmed
            else:
                events = [self._factory.complete(fields) for _ in range(count)]
                stored = self._outbox.add_many(events, wait=True)
                answer = self._answer_bulk
        except OutboxFull as e:
            request.setHeader(b"retry-after", str(RETRY_AFTER_SECONDS).encode())
            return json_response(request, 503, {"error": f"{e}; nothing was accepted, try again later"})
        return stored.addCallbacks(answer, self._not_stored, callbackArgs=(request,), errbackArgs=(request,))

    def _answer_bulk(self, entries: list[Entry], request: IRequest) -> Deferred[bytes]:
        """202 once every event is confirmed ("success") or the wait is over ("queued": the rest follow)."""
        waits = [e.confirmed for e in entries if e.confirmed is not None]
        status: Deferred[str] = gatherResults(waits).addCallback(lambda _: "success")
        status.addTimeout(self._confirm_wait, self._clock, onTimeoutCancel=lambda _r, _t: "queued")
        ids = [e.event_id for e in entries]
        listed: dict[str, Any] = (
            {"event_ids": ids}
            if len(ids) <= BULK_IDS_LISTED
            else {"first_event_id": ids[0], "last_event_id": ids[-1]}
        )
        return status.addCallback(
            lambda s: json_response(request, 202, {"status": s, "count": len(ids), **listed})
        )

    def _not_stored(self, failure: Failure, request: IRequest) -> bytes | Failure:
        """The spool could not write the event: nothing was accepted, and the caller may try again."""
        if not failure.check(SpoolError):
            return failure
        request.setHeader(b"retry-after", str(RETRY_AFTER_SECONDS).encode())
        return json_response(request, 503, {"error": f"{failure.getErrorMessage()}; nothing was accepted"})

    def _answer_when_confirmed(self, entry: Entry, request: IRequest) -> Deferred[bytes]:
        """202 success on the broker's ack; 202 queued if it does not come within the wait."""
        assert entry.confirmed is not None
        status: Deferred[str] = entry.confirmed.addCallback(lambda _: "success")
        status.addTimeout(self._confirm_wait, self._clock, onTimeoutCancel=lambda _r, _t: "queued")
        return status.addCallback(
            lambda s: json_response(request, 202, {"status": s, "event_id": entry.event_id})
        )

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """200 while events can be confirmed, 503 otherwise, with what an operator needs to see why."""
        connected = self._health.connected
        blocked = self._health.blocked
        # While stopping, a load balancer should send elsewhere, whatever the broker link.
        status = "stopping" if self.closing else "healthy" if connected and not blocked else "unhealthy"
        return json_response(
            request,
            200 if status == "healthy" else 503,
            {
                "status": status,
                "rabbitmq_connected": connected,
                "rabbitmq_blocked": blocked,
                "broker": self._health.address,
                "outbox_depth": len(self._outbox),
                "outbox_capacity": self._outbox.capacity,
                "unconfirmed": self._health.unconfirmed,
                "last_error": self._health.last_error,
            },
        )

    @app.route("/livez", methods=["GET"])
    def livez(self, request: IRequest) -> bytes:
        """200 whenever the reactor answers: a liveness probe that a broker outage does not fail (a
        restart would not bring the broker back), unlike /healthz, which is for readiness."""
        return json_response(request, 200, {"status": "alive"})

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """The same metrics as the metrics port, for scrapers of the service this one replaces."""
        return render_metrics(self._registry, request)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(
            request, 404, {"error": f"no such path: {request.path.decode(errors='replace')}"}
        )

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, MethodNotAllowed)
        allowed = sorted(error.valid_methods or ())
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode(errors="replace")
        return json_response(
            request, 405, {"error": f"method {method} not allowed; use {', '.join(allowed)}"}
        )

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, HTTPException)
        return json_response(request, error.code or 500, {"error": error.description or error.name})

    @app.handle_errors(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure(
            "unhandled error answering {path}", failure, event="api.internal_error", path=request.path
        )
        return json_response(request, 500, {"error": "internal error; see the service log"})
