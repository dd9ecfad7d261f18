"""The HTTP API (Klein): trigger events, control the generator, health for probes, metrics for old scrapers.

Every answer, errors included, is JSON, so a caller can always read what went wrong: also the answers
twisted.web would give on its own before a request reaches a route (a body over the limit, a header
flood, a malformed request line), which `ApiSite` makes JSON too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol

import orjson
from klein import Klein
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from auditgen.auth import RequireToken
from auditgen.checks import CheckError
from auditgen.content_type import RequireJson
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import render_metrics
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.scenarios import Plan, Run, ScenarioRunner, UnknownScenario
from auditgen.site import ApiSite, too_large
from auditgen.spool import SpoolError
from auditgen.validation import (
    DEFAULT_MAX_BODY_BYTES,
    BadRequest,
    event_warnings,
    parse_count,
    parse_event_request,
    parse_generator_request,
    parse_json_object,
    parse_strict,
)
from auditgen.verdicts.campaigns import campaign_schemas
from auditgen.verdicts.starter import PacedRun, campaign_parameters, pace
from auditgen.verdicts.verdicts import Handover, ScenarioRun
from auditgen.world.files import to_data

BULK_IDS_LISTED = 1_000  # up to this many, a bulk answer lists every event_id; above, the first and last
RETRY_AFTER_SECONDS = 1  # outbox full: room comes back as soon as the broker confirms
CLOSING_RETRY_AFTER_SECONDS = 5  # shutting down: ask again once this instance (or another) is back
NO_GENERATOR = "this service has no generator to control"


class Mounted(Protocol):
    """Routes of their own served under some of the API's paths (auditgen.verdicts.routes.VerdictRoutes)."""

    def resource(self, request: IRequest) -> IResource:
        """What answers this request, whose path after the mount point is request.postpath."""

    def track(self, run: ScenarioRun, handover: Handover) -> None:
        """Score a scenario run the API started: an instant one's events were accepted, its Handover
        has their confirms; a paced one's schedule started, its Handover tells of each event as accepted."""

    def routes(self, path: str, method: str) -> bool:
        """Whether one of its routes takes this path (from the API's root) and method."""


class GeneratorControl(Protocol):
    """What the control API needs of the generator; auditgen.generator.Generator provides it."""

    def state(self) -> dict[str, Any]: ...
    def configure(self, changes: Mapping[str, Any]) -> None: ...


class AlertsStatus(Protocol):
    """What /healthz shows of the alerts consumer (auditgen.verdicts.consumer.AlertConsumer)."""

    consuming: bool

    def describe(self) -> str: ...


class Health(Protocol):
    """What /healthz reports about the broker link; the publisher provides it."""

    @property
    def connected(self) -> bool: ...
    @property
    def unconfirmed(self) -> int: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def address(self) -> str: ...
    @property
    def last_error(self) -> str | None: ...


def json_response(request: IRequest, code: int, payload: dict[str, Any]) -> bytes:
    """Every answer of the API goes through here, so all of them are JSON."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


@functools.cache
def _openapi_base() -> bytes:
    return resources.files("auditgen").joinpath("openapi.json").read_bytes()


def openapi_document(scenarios: ScenarioRunner | None) -> dict[str, Any]:
    """auditgen/openapi.json (shipped in the package), plus one POST path per scenario with exactly its
    parameters, made from the scenarios themselves so that the two cannot disagree."""
    document: dict[str, Any] = json.loads(_openapi_base())
    if scenarios is None:
        return document
    template = document["paths"].pop("/scenarios/{name}")["post"]
    for name, schema in scenarios.parameter_schemas().items():
        operation = json.loads(json.dumps(template))
        operation["operationId"] = f"run_{name}"
        operation["summary"] = f"Run the {name} scenario"
        operation["parameters"] = []
        operation["requestBody"]["content"]["application/json"]["schema"] = schema
        document["paths"][f"/scenarios/{name}"] = {"post": operation}
    document["components"]["schemas"].update(campaign_schemas(campaign_parameters(scenarios)))
    return document


class Refused(Exception):
    """A request refused before anything was accepted: the answer's code, error and Retry-After."""

    def __init__(self, code: int, error: str, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.code = code
        self.error = error
        self.retry_after = retry_after

    def answer(self, request: IRequest) -> bytes:
        if self.retry_after is not None:
            request.setHeader(b"retry-after", str(self.retry_after).encode())
        return json_response(request, self.code, {"error": self.error})


def _full(request: IRequest, reason: str) -> bytes:
    """503 for a request that did not fit (the outbox, the spool, or the ground truth's outbox)."""
    return Refused(503, f"{reason}; nothing was accepted, try again later", RETRY_AFTER_SECONDS).answer(
        request
    )


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
        generator: GeneratorControl | None = None,
        scenarios: ScenarioRunner | None = None,
        token: str | None = None,
        catalog: Catalog | None = None,
        strict: bool = False,
        console: IResource | None = None,
        verdicts: Mounted | None = None,
        alerts: AlertsStatus | None = None,
    ) -> None:
        """Without a generator, GET and PUT /generator answer 404; without a console, /console/ does;
        without verdicts, /alerts and /campaigns do. `catalog` is the factory's, whose templates say which
        values look wrong (the built-in one if None); `strict` refuses what looks wrong (400) instead of
        warning, for calls that do not say ?strict=."""
        self._verdicts = verdicts
        self._alerts = alerts
        self._generator = generator
        self._openapi: bytes | None = None
        self._world: bytes | None = None
        self._factory = factory
        self._outbox = outbox
        self._health = health
        self._registry = registry
        self._clock = clock
        self._confirm_wait = confirm_wait
        self.max_body_bytes = max_body_bytes
        self._scenarios = scenarios
        self.closing = False
        self._token = token
        self._catalog = catalog or Catalog.builtin()
        self._strict = strict
        self._console = console

    def close(self) -> None:
        """Start refusing new events (503) and report "stopping": the first step of a graceful shutdown."""
        self.closing = True

    def resource(self) -> IResource:
        """The routes, behind the JSON Content-Type rule, and behind the API token when there is one."""
        routes = RequireJson(self.app.resource(), self._routed)
        return routes if self._token is None else RequireToken(routes, self._token)

    def _routed(self, request: IRequest) -> bool:
        """Whether a route takes the request's path and method, matched as Klein matches them."""
        path = b"/".join(request.postpath)  # as klein's extractURLparts: "//x" is "/x", as Klein routes it
        if request.postpath and not path.startswith(b"/"):
            path = b"/" + path
        try:
            text, method = path.decode("utf-8"), request.method.decode("ascii")
        except UnicodeDecodeError:
            return False  # Klein refuses a path that is not UTF-8 before any route
        if not self.app.url_map.bind("").test(text, method):
            return False
        if self._verdicts is not None and text.startswith(("/alerts", "/campaigns")):
            return self._verdicts.routes(text, method)  # the mounted app decides what it routes
        return True

    def site(self, reactor: IReactorTime | None = None) -> ApiSite:
        """The site to serve this API with: token, body limit, JSON refusals, no access log."""
        return ApiSite(self.resource(), self.max_body_bytes, reactor=reactor)

    @app.route("/generate_event", methods=["POST"])
    def generate_event(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Accept one event (or ?count=N); answer once the broker confirmed it, or say it is queued after a
        short wait. The answer lists the fields the service replaced and what looked wrong (warnings),
        which ?strict=true refuses instead."""
        try:
            body = self._read_body(request)
            count = parse_count(request.args)
            strict = parse_strict(request.args, self._strict)
            given = parse_event_request(body)
        except Refused as r:
            return r.answer(request)
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        warnings = event_warnings(given.fields, self._catalog)
        if strict and warnings:
            return json_response(request, 400, {"error": "; ".join(warnings), "warnings": warnings})
        notes = {"replaced": list(given.replaced), "warnings": warnings}
        notes = {key: value for key, value in notes.items() if value}
        try:
            if count is None:
                stored: Deferred[Any] = self._outbox.add(self._factory.complete(given.fields), wait=True)
                answer: Callable[[Any, IRequest, Mapping[str, Any]], Deferred[bytes]] = (
                    self._answer_when_confirmed
                )
            else:
                events = [self._factory.complete(given.fields) for _ in range(count)]
                stored = self._outbox.add_many(events, wait=True)
                answer = self._answer_bulk
        except OutboxFull as e:
            return _full(request, str(e))
        return stored.addCallbacks(
            answer, self._not_stored, callbackArgs=(request, notes), errbackArgs=(request,)
        )

    def _read_body(self, request: IRequest) -> bytes:
        """The body of a request that may add events; Refused while closing, or for its size (its
        Content-Type was checked around every route: auditgen/content_type.py)."""
        if self.closing:
            raise Refused(
                503, "shutting down; nothing was accepted, try again later", CLOSING_RETRY_AFTER_SECONDS
            )
        assert request.content is not None
        # ApiSite already refuses larger bodies without storing them; this bound keeps the route safe
        # under any other site too (tests, or an embedding that serves app.resource() itself).
        body: bytes = request.content.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            raise Refused(413, too_large(self.max_body_bytes))
        return body

    def _status(self, confirmed: Deferred[Any]) -> Deferred[str]:
        """ "success" once `confirmed` fires, or "queued" when the wait is over first (the rest follow)."""
        status: Deferred[str] = confirmed.addCallback(lambda _: "success")
        return status.addTimeout(self._confirm_wait, self._clock, onTimeoutCancel=lambda _r, _t: "queued")

    def _all_confirmed(self, entries: list[Entry]) -> Deferred[str]:
        """The status of every entry at once."""
        return self._status(gatherResults([e.confirmed for e in entries if e.confirmed is not None]))

    def _answer_bulk(
        self, entries: list[Entry], request: IRequest, notes: Mapping[str, Any]
    ) -> Deferred[bytes]:
        """202 once every event is confirmed ("success") or the wait is over ("queued": the rest follow)."""
        status = self._all_confirmed(entries)
        ids = [e.event_id for e in entries]
        listed: dict[str, Any] = (
            {"event_ids": ids}
            if len(ids) <= BULK_IDS_LISTED
            else {"first_event_id": ids[0], "last_event_id": ids[-1]}
        )
        return status.addCallback(
            lambda s: json_response(request, 202, {"status": s, "count": len(ids), **listed, **notes})
        )

    def _not_stored(self, failure: Failure, request: IRequest) -> bytes | Failure:
        """The spool could not write the event: nothing was accepted, and the caller may try again."""
        if not failure.check(SpoolError):
            return failure
        request.setHeader(b"retry-after", str(RETRY_AFTER_SECONDS).encode())
        return json_response(request, 503, {"error": f"{failure.getErrorMessage()}; nothing was accepted"})

    def _answer_when_confirmed(
        self, entry: Entry, request: IRequest, notes: Mapping[str, Any]
    ) -> Deferred[bytes]:
        """202 success on the broker's ack; 202 queued if it does not come within the wait."""
        assert entry.confirmed is not None
        return self._status(entry.confirmed).addCallback(
            lambda s: json_response(request, 202, {"status": s, "event_id": entry.event_id, **notes})
        )

    # -- The generator's control API: read and change rate, shape and pause without a restart. --------
    @app.route("/generator", methods=["GET"])
    def generator_state(self, request: IRequest) -> bytes:
        """The generator's settings and what it achieves now."""
        if self._generator is None:
            return json_response(request, 404, {"error": NO_GENERATOR})
        return json_response(request, 200, self._generator.state())

    @app.route("/generator", methods=["PUT"])
    def configure_generator(self, request: IRequest) -> bytes:
        """Change any of rate, shape, paused and shape parameters: all checked first, then all applied."""
        if self._generator is None:
            return json_response(request, 404, {"error": NO_GENERATOR})
        try:
            changes = parse_generator_request(self._read_body(request))
        except Refused as r:
            return r.answer(request)
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        self._generator.configure(changes)
        return json_response(request, 200, self._generator.state())

    # -- Scenarios: named attacks with the detection they should trip (auditgen/scenarios/) -----------

    @app.route("/scenarios", methods=["GET"])
    def list_scenarios(self, request: IRequest) -> bytes:
        """Every scenario with its parameters, their types, defaults, allowed values and meaning."""
        if self._scenarios is None:
            raise NotFound()
        return json_response(request, 200, {"scenarios": self._scenarios.describe()})

    @app.route("/scenarios/<name>", methods=["POST"])
    def run_scenario(self, request: IRequest, name: str) -> bytes | Deferred[bytes]:
        """Run one scenario (a JSON object of parameters and optionally `delivery`, or no body for the
        defaults). instant: all or nothing, answered like the bulk trigger; paced: 202 at once with the
        schedule. Both name the scenario_id, the event ids, when the run ends and the expected detection."""
        if self._scenarios is None:
            raise NotFound()
        try:
            body = self._read_body(request)
            plan, delivery = self._scenarios.plan(name, parse_json_object(body) if body else {})
        except Refused as r:
            return r.answer(request)
        except (BadRequest, CheckError) as e:
            return json_response(request, 400, {"error": str(e)})
        except UnknownScenario as e:
            return json_response(request, 404, {"error": str(e.args[0])})
        if self._scenarios.full:
            return _full(request, "ground-truth outbox full")
        if delivery == "paced":
            tracked, handover = pace(self._scenarios, plan)
            if self._verdicts is not None:
                self._verdicts.track(PacedRun(plan), handover)
            answer = {
                "status": "scheduled",
                **self._run_answer(plan, "paced"),
                "ends_at": tracked.ends_at,
                "schedule": tracked.schedule(),
                "expected": plan.expectation(),
            }
            return json_response(request, 202, answer)
        run = self._scenarios.instant(plan)
        try:
            stored = self._outbox.add_many(run.events, wait=True)
        except OutboxFull as e:
            return _full(request, str(e))
        return stored.addCallbacks(
            self._scenario_accepted,
            self._not_stored,
            callbackArgs=(plan, run, request),
            errbackArgs=(request,),
        )

    @staticmethod
    def _run_answer(plan: Plan, delivery: str) -> dict[str, Any]:
        return {
            "scenario": plan.scenario.name,
            "scenario_id": plan.scenario_id,
            "delivery": delivery,
            "parameters": plan.parameters,
            "event_ids": [e["event_id"] for e in plan.events],
        }

    def _scenario_accepted(
        self, entries: list[Entry], plan: Plan, run: Run, request: IRequest
    ) -> Deferred[bytes]:
        assert self._scenarios is not None
        self._scenarios.report(run)
        self._scenarios.track(plan, "instant", entries)
        if self._verdicts is not None:
            self._verdicts.track(run, Handover({e.event_id: e.confirmed for e in entries}))
        answer = {
            **self._run_answer(plan, "instant"),
            "ends_at": run.expected["window"]["end"],
            "expected": run.expected,
        }
        return self._all_confirmed(entries).addCallback(
            lambda s: json_response(request, 202, {"status": s, **answer})
        )

    @app.route("/scenarios/runs/<scenario_id>", methods=["GET"])
    def scenario_run(self, request: IRequest, scenario_id: str) -> bytes:
        """Where a run stands (planned, running, done, interrupted) and which of its events are confirmed."""
        if self._scenarios is None:
            raise NotFound()
        status = self._scenarios.status(scenario_id)
        if status is None:
            error = f"no scenario run {scenario_id!r} (only the latest runs of this process are kept)"
            return json_response(request, 404, {"error": error})
        return json_response(request, 200, status)

    # -- The live console (auditgen/console): a static page, its state snapshot and the event tail. ----

    @app.route("/", methods=["GET"])
    def root(self, request: IRequest) -> bytes:
        """A browser opening the service's address lands on the console."""
        if self._console is None:
            raise NotFound()
        request.redirect(b"/console/")
        return b""

    @app.route("/console/", branch=True, methods=["GET", "HEAD"])
    def console(self, request: IRequest) -> IResource:
        if self._console is None:
            raise NotFound()
        return self._console

    @app.route("/alerts", branch=True)
    @app.route("/campaigns", branch=True)
    def verdict_routes(self, request: IRequest) -> IResource:
        """Alerts in, campaigns and their verdicts: auditgen/verdicts/routes.py."""
        if self._verdicts is None:
            raise NotFound()
        return self._verdicts.resource(request)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """200 while events can be confirmed, 503 otherwise, with what an operator needs to see why."""
        connected = self._health.connected
        blocked = self._health.blocked
        # While stopping, a load balancer should send elsewhere, whatever the broker link.
        status = "stopping" if self.closing else "healthy" if connected and not blocked else "unhealthy"
        answer: dict[str, Any] = {
            "status": status,
            "rabbitmq_connected": connected,
            "rabbitmq_blocked": blocked,
            "broker": self._health.address,
            "outbox_depth": len(self._outbox),
            "outbox_capacity": self._outbox.capacity,
            "unconfirmed": self._health.unconfirmed,
            "last_error": self._health.last_error,
        }
        if self._alerts is not None:
            # Shown, not part of the status: events can be confirmed without it, and verdicts wait for it.
            answer["alerts_consumer"] = {
                "consuming": self._alerts.consuming,
                "source": self._alerts.describe(),
            }
        return json_response(request, 200 if status == "healthy" else 503, answer)

    @app.route("/world", methods=["GET"])
    def world(self, request: IRequest) -> bytes:
        """The world events are drawn from, so a test author knows which hosts and accounts exist."""
        grounding = self._factory.grounding
        if grounding is None:
            return json_response(
                request, 404, {"error": "the world is off: set AUDITGEN_WORLD=true (docs/world.md)"}
            )
        if self._world is None:  # the world never changes: encode it once
            self._world = orjson.dumps(to_data(grounding.world))
        request.setHeader(b"content-type", b"application/json")
        return self._world

    @app.route("/livez", methods=["GET"])
    def livez(self, request: IRequest) -> bytes:
        """200 whenever the reactor answers: a liveness probe that a broker outage does not fail (a
        restart would not bring the broker back), unlike /healthz, which is for readiness."""
        return json_response(request, 200, {"status": "alive"})

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """The same metrics as the metrics port, for scrapers of the service this one replaces."""
        return render_metrics(self._registry, request)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        """The API's description, so clients and test tools (schemathesis) need nothing else."""
        if self._openapi is None:
            self._openapi = json.dumps(openapi_document(self._scenarios)).encode()
        request.setHeader(b"content-type", b"application/json")
        return self._openapi

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
