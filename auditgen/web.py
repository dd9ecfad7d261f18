"""The HTTP API (Klein): trigger events, health for probes, and metrics for old scrapers.

Every answer, errors included, is JSON, so a caller can always read what went wrong: also the answers
twisted.web would give on its own before a request reaches a route (a body over the limit, a header
flood, a malformed request line), which `ApiSite` makes JSON too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, Protocol

from klein import Klein
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from auditgen.events import SERVICE_FIELDS, EventFactory
from auditgen.metrics import render_metrics
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.spool import SpoolError

# -- Limits on what a caller may send. Each refusal is a 400 (413 for the body) naming the field and limit.
DEFAULT_MAX_BODY_BYTES = 1_048_576  # AUDITGEN_MAX_BODY_BYTES; the whole request body
MAX_EVENT_TYPE_CHARS = 64
MAX_SEVERITY_CHARS = 64
MAX_ACTION_RESULT_CHARS = 64
MAX_SERVER_HOSTNAME_CHARS = 255  # a DNS name
MAX_USER_ID_CHARS = 256
MAX_FIELDS = 64  # top-level fields of the body, event_type included
MAX_FIELD_NAME_CHARS = 128  # names of top-level fields
MAX_NESTING_DEPTH = 8  # objects/arrays inside one another in a field's value; `details` itself is level 1
MAX_DETAILS_BYTES = 64 * 1024  # `details` as sent to the broker (compact UTF-8 JSON)
MIN_INT = -(2**63)  # integers must fit a signed 64-bit integer: Java's long, and what JS
MAX_INT = 2**63 - 1  # consumers can at least read with a BigInt-aware parser
# After a 413, how much more of the refused body is read (and dropped) so that the client, still sending,
# reads the answer instead of a connection reset; a longer body gets the connection closed at once.
MAX_DISCARD_BYTES = 16 * 1_048_576

TEXT_FIELD_LIMITS = {
    "event_type": MAX_EVENT_TYPE_CHARS,
    "server_hostname": MAX_SERVER_HOSTNAME_CHARS,
    "user_id": MAX_USER_ID_CHARS,
    "action_result": MAX_ACTION_RESULT_CHARS,
    "severity": MAX_SEVERITY_CHARS,
}
OPTIONAL_TEXT_FIELDS = ("server_hostname", "user_id", "action_result", "severity")
MAX_BULK_COUNT = 10_000  # events one POST /generate_event?count=N may create
BULK_IDS_LISTED = 1_000  # up to this many, a bulk answer lists every event_id; above, the first and last
RETRY_AFTER_SECONDS = 1  # outbox full: room comes back as soon as the broker confirms
CLOSING_RETRY_AFTER_SECONDS = 5  # shutting down: ask again once this instance (or another) is back
IDLE_TIMEOUT_SECONDS = 75  # an idle keep-alive connection is closed after this (Twisted: 12 hours)

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_NAME_CHARS = 40


class BadRequest(ValueError):
    """The request body cannot become an event; the message tells the caller why."""


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


def parse_count(args: Mapping[bytes, list[bytes]]) -> int | None:
    """The bulk trigger's ?count=N, from 1 to MAX_BULK_COUNT; None when absent."""
    values = args.get(b"count")
    if values is None:
        return None
    if len(values) != 1:
        raise BadRequest("count must be given once")
    try:
        count = int(values[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"count must be a whole number from 1 to {MAX_BULK_COUNT}") from None
    if not 1 <= count <= MAX_BULK_COUNT:
        raise BadRequest(f"count must be a whole number from 1 to {MAX_BULK_COUNT}")
    return count


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a valid JSON number")


def _show(name: str) -> str:
    """A caller-chosen name for an error message: shortened, and JSON-quoted unless it is plain."""
    if _PLAIN_KEY.fullmatch(name) and len(name) <= _SHOWN_NAME_CHARS:
        return name
    if len(name) > _SHOWN_NAME_CHARS:
        name = name[:_SHOWN_NAME_CHARS] + "..."
    return json.dumps(name)  # ASCII, so even a lone surrogate in it can be shown


class _Invalid(Exception):
    """A value deep inside a field is unusable; the path to it is collected on the way out."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _check_value(value: Any, depth: int) -> None:
    """Whatever reaches the broker must encode to UTF-8 JSON that Java and JS consumers can read.

    depth is how many objects/arrays enclose value within its top-level field.
    """
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise _Invalid(
                "contains an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape), "
                "which is not a character and cannot be encoded as UTF-8"
            )
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _Invalid(f"is an integer outside the signed 64-bit range [{MIN_INT}, {MAX_INT}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("is a number too large for a 64-bit float (it would be sent as Infinity)")
    elif isinstance(value, dict | list):
        if depth >= MAX_NESTING_DEPTH:
            raise _Invalid(f"is nested more than {MAX_NESTING_DEPTH} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                raise _Invalid(
                    "has a key with an unpaired UTF-16 surrogate, which cannot be encoded as UTF-8"
                )
            try:
                _check_value(item, depth + 1)
            except _Invalid as e:
                e.path.append(f"[{key}]" if isinstance(key, int) else f".{_show(key)}")
                raise


def _check_limits(fields: dict[str, Any]) -> None:
    """The size limits of an event, and values that JSON allows but the wire or consumers do not."""
    for name, value in fields.items():
        if len(name) > MAX_FIELD_NAME_CHARS:
            raise BadRequest(
                f"field name {_show(name)} is longer than {MAX_FIELD_NAME_CHARS} characters ({len(name)})"
            )
        if _SURROGATE.search(name):
            raise BadRequest(
                f"field name {_show(name)} contains an unpaired UTF-16 surrogate, which cannot be encoded "
                "as UTF-8"
            )
        try:
            _check_value(value, 0)
        except _Invalid as e:
            raise BadRequest(f"{_show(name)}{''.join(reversed(e.path))} {e.problem}") from None
    details = fields.get("details")
    if details is not None:
        size = len(json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_DETAILS_BYTES:
            raise BadRequest(f"details is {size} bytes as JSON; at most {MAX_DETAILS_BYTES} bytes (64 KiB)")


def parse_event_request(body: bytes) -> dict[str, Any]:
    """The caller's fields, checked: a JSON object with a non-empty string event_type and typed extras.

    Whatever passes can be completed, encoded and published: a caller's mistake is a 400 here, never a
    500 later.
    """
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
    if len(fields) > MAX_FIELDS:
        raise BadRequest(
            f"too many fields: {len(fields)}; an event has at most {MAX_FIELDS} top-level fields"
        )
    event_type = fields.get("event_type")
    if event_type is None:
        raise BadRequest("event_type is required")
    if not isinstance(event_type, str) or not event_type.strip():
        raise BadRequest("event_type must be a non-empty string")
    for name in OPTIONAL_TEXT_FIELDS:
        if name in fields and (not isinstance(fields[name], str) or not fields[name].strip()):
            raise BadRequest(f"{name} must be a non-empty string")
    for name, limit in TEXT_FIELD_LIMITS.items():
        if name in fields and len(fields[name]) > limit:
            raise BadRequest(f"{name} is longer than {limit} characters ({len(fields[name])})")
    if "details" in fields and not isinstance(fields["details"], dict):
        raise BadRequest("details must be a JSON object")
    assigned = sorted(SERVICE_FIELDS.intersection(fields))
    if assigned:
        raise BadRequest(f"{', '.join(assigned)} cannot be set by the caller; the service assigns it")
    _check_limits(fields)
    return fields


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_response(request: IRequest, code: int, payload: dict[str, Any]) -> bytes:
    """Every answer of the API goes through here, so all of them are JSON."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


def too_large(max_body_bytes: int) -> str:
    """The 413 message, the same whether the site or the route noticed."""
    return f"request body is larger than {max_body_bytes} bytes"


class ApiChannel(HTTPChannel):
    """An HTTPChannel whose own refusals are JSON like every other answer of the API.

    twisted.web answers a header flood, an over-long line or a malformed request with a bare
    "400 Bad Request" (or just drops the connection), before any route sees the request.
    """

    _refused = False
    _closing = False

    def refuse(self, code: int, error: str, linger: bool = False) -> None:
        """Answer once, with a JSON error and `Connection: close`, written straight to the transport.

        Without linger the connection closes now; with it, the caller keeps reading (and dropping) what
        the client is still sending and closes later, so the client reads this answer, not a reset.
        """
        if not self._refused:
            self._refused = True
            body = json.dumps({"error": error}).encode()
            head = (
                f"HTTP/1.1 {code} {RESPONSES.get(code, b'Error').decode()}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            assert self.transport is not None
            self.transport.write(head.encode() + body)
        if not linger:
            self.close()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # refused and closing: whatever the client still sends is not parsed
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the connection once, however many ways of refusing the request ask for it."""
        if not self._closing:
            self._closing = True
            self.loseConnection()  # type: ignore[no-untyped-call]

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's one exit for protocol-level bad requests (see HTTPChannel); the limits it enforces are
        # maxHeaders and totalHeadersSize. tests/test_hostile.py pins this against Twisted upgrades.
        if self._receivedHeaderCount > self.maxHeaders:
            error = f"too many header fields; at most {self.maxHeaders}"
        elif self._receivedHeaderSize > self.totalHeadersSize:
            error = f"request line and header fields are larger than {self.totalHeadersSize} bytes"
        else:
            error = "malformed HTTP request"
        self.refuse(400, f"bad request: {error}")

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line over MAX_LENGTH, which LineReceiver would answer by dropping the connection."""
        self.refuse(
            400, f"bad request: a request line or header field is longer than {self.MAX_LENGTH} bytes"
        )


class ApiRequest(Request):
    """A request that never buffers more of a body than the site's max_body_bytes.

    twisted.web stores the whole body before a resource sees it, with no limit. Here a body declared
    larger (Content-Length) or growing larger (chunked) is answered 413 at once, its bytes are dropped
    as they arrive, and the request never reaches the resource.
    """

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)  # type: ignore[no-untyped-call]
        self.max_body_bytes: int = channel.site.max_body_bytes
        self._received = 0
        self._discarded = 0
        self._too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            # This 413 is final: no "100 Continue" may follow it, and a client waiting for one sends
            # nothing more, so there is nothing to wait for.
            waiting_for_continue = self.requestHeaders.hasHeader(b"expect")
            self.requestHeaders.removeHeader(b"expect")
            self.content = BytesIO()
            self._refuse(linger=not waiting_for_continue and length <= MAX_DISCARD_BYTES)
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            self._discard(len(data))
            return
        self._received += len(data)
        if self._received > self.max_body_bytes:
            assert self.content is not None
            self.content.close()  # what was kept of this body, freed now
            self.content = BytesIO()
            self._refuse(linger=True)
            self._discard(len(data))
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large:
            # The rest of the refused body has arrived and was dropped; the 413 is out. Done.
            if isinstance(self.channel, ApiChannel):
                self.channel.close()
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _refuse(self, linger: bool) -> None:
        self._too_large = True
        assert isinstance(self.channel, ApiChannel)
        self.channel.refuse(413, too_large(self.max_body_bytes), linger=linger)

    def _discard(self, count: int) -> None:
        self._discarded += count
        if self._discarded > MAX_DISCARD_BYTES and isinstance(self.channel, ApiChannel):
            self.channel.close()


class ApiSite(Site):
    """The API port's site: bodies bounded without buffering, JSON refusals, no access log.

    Form parsing is off: the API reads JSON only, and a hostile multipart body must cost nothing.
    """

    protocol = ApiChannel  # type: ignore[assignment]  # a plain HTTPChannel: no HTTP/2 negotiation here
    requestFactory = ApiRequest

    def __init__(
        self,
        resource: Any,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        *,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource, parsePOSTFormSubmission=False, reactor=reactor
        )
        self.max_body_bytes = max_body_bytes
        # Twisted's default keeps an idle connection 12 hours; a slow or silent client gets 75 s.
        self.timeOut = IDLE_TIMEOUT_SECONDS

    def log(self, request: Any) -> None:
        """No access-log line per request (thousands a second under load)."""


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
