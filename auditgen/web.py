"""The HTTP API (Klein): trigger events, health for probes, and metrics for old scrapers.

Every answer, errors included, is JSON, so a caller can always read what went wrong.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from klein import Klein
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from auditgen.events import SERVICE_FIELDS, EventFactory
from auditgen.metrics import render_metrics
from auditgen.outbox import Entry, Outbox, OutboxFull

OPTIONAL_TEXT_FIELDS = ("server_hostname", "user_id", "action_result", "severity")
RETRY_AFTER_SECONDS = 1


class BadRequest(ValueError):
    """The request body cannot become an event; the message tells the caller why."""


class Health(Protocol):
    """What /healthz reports about the broker link; the publisher provides it."""

    @property
    def connected(self) -> bool: ...
    @property
    def unconfirmed(self) -> int: ...
    @property
    def address(self) -> str: ...

    last_error: str | None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a valid JSON number")


def parse_event_request(body: bytes) -> dict[str, Any]:
    """The caller's fields, checked: a JSON object with a non-empty string event_type and typed extras."""
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object with an event_type")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    try:
        fields = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(fields, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(fields).__name__}")
    event_type = fields.get("event_type")
    if event_type is None:
        raise BadRequest("event_type is required")
    if not isinstance(event_type, str) or not event_type.strip():
        raise BadRequest("event_type must be a non-empty string")
    for name in OPTIONAL_TEXT_FIELDS:
        if name in fields and (not isinstance(fields[name], str) or not fields[name].strip()):
            raise BadRequest(f"{name} must be a non-empty string")
    if "details" in fields and not isinstance(fields["details"], dict):
        raise BadRequest("details must be a JSON object")
    assigned = sorted(SERVICE_FIELDS.intersection(fields))
    if assigned:
        raise BadRequest(f"{', '.join(assigned)} cannot be set by the caller; the service assigns it")
    return fields


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

    def __init__(
        self,
        factory: EventFactory,
        outbox: Outbox,
        health: Health,
        registry: CollectorRegistry,
        clock: IReactorTime,
        confirm_wait: float = 1.0,
        max_body_bytes: int = 1_048_576,
    ) -> None:
        self._factory = factory
        self._outbox = outbox
        self._health = health
        self._registry = registry
        self._clock = clock
        self._confirm_wait = confirm_wait
        self._max_body_bytes = max_body_bytes

    @app.route("/generate_event", methods=["POST"])
    def generate_event(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Accept one event; answer once the broker confirmed it, or say it is queued after a short wait."""
        content_type = request.getHeader("content-type")
        if content_type is not None and not _is_json(content_type):
            return json_response(
                request, 415, {"error": f"Content-Type must be application/json, not {content_type!r}"}
            )
        assert request.content is not None
        body = request.content.read(self._max_body_bytes + 1)
        if len(body) > self._max_body_bytes:
            return json_response(
                request, 413, {"error": f"request body is larger than {self._max_body_bytes} bytes"}
            )
        try:
            fields = parse_event_request(body)
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        event = self._factory.complete(fields)
        try:
            stored = self._outbox.add(event, wait=True)
        except OutboxFull as e:
            request.setHeader(b"retry-after", str(RETRY_AFTER_SECONDS).encode())
            return json_response(request, 503, {"error": f"{e}; nothing was accepted, try again later"})
        return stored.addCallback(self._answer_when_confirmed, request)

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
        return json_response(
            request,
            200 if connected else 503,
            {
                "status": "healthy" if connected else "unhealthy",
                "rabbitmq_connected": connected,
                "broker": self._health.address,
                "outbox_depth": len(self._outbox),
                "outbox_capacity": self._outbox.capacity,
                "unconfirmed": self._health.unconfirmed,
                "last_error": self._health.last_error,
            },
        )

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
        self.log.failure("unhandled error answering {path}", failure, path=request.path)
        return json_response(request, 500, {"error": "internal error; see the service log"})
