"""The verdict routes, a Klein app of their own that the API serves under /alerts and /campaigns.

    POST /alerts                  one alert, an array of them, or an Alertmanager webhook payload
    POST /campaigns               start a campaign; 202 with its id and its runs' ids
    GET  /campaigns               every campaign, summarised
    GET  /campaigns/{id}          a campaign: state, every run's verdict, the scorecard
    GET  /campaigns/{id}/junit    the same as JUnit XML

The API's token, body limit and JSON refusals apply as to every route: the API's site serves these.
"""

from __future__ import annotations

from collections.abc import Callable

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from auditgen.content_type import is_json
from auditgen.site import too_large
from auditgen.validation import DEFAULT_MAX_BODY_BYTES, BadRequest, parse_json, parse_json_object
from auditgen.verdicts.campaigns import Campaigns, parse_campaign
from auditgen.verdicts.junit import junit_xml
from auditgen.verdicts.verdicts import Handover, ScenarioRun, Tracker
from auditgen.web import AuditAPI, json_response

MOUNTS = ("alerts", "campaigns")  # the API's paths this module answers under


class Refused(Exception):
    """A request refused before anything was done: the status and the error."""

    def __init__(self, code: int, error: str) -> None:
        super().__init__(error)
        self.code = code


class VerdictRoutes:
    """POST /alerts and the campaigns, over one tracker (and, if there is one, the campaigns)."""

    alerts_app = Klein()
    campaigns_app = Klein()
    log = Logger()

    def __init__(
        self,
        tracker: Tracker,
        campaigns: Campaigns | None,
        clock: IReactorTime,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._tracker = tracker
        self._campaigns = campaigns
        self._clock = clock
        self._max_body_bytes = max_body_bytes
        self._closing = closing

    def resource(self, request: IRequest) -> IResource:
        """The routes under /alerts or /campaigns, the mount point the API matched (request.prepath's
        last segment); they route the rest of the path, "/" for none (werkzeug refuses an empty one)."""
        app = self.alerts_app if request.prepath[-1] == b"alerts" else self.campaigns_app
        if not request.postpath:
            request.postpath = [b""]
        return app.resource()

    def routes(self, path: str, method: str) -> bool:
        """Whether a route under /alerts or /campaigns takes this path (from the API's root) and method."""
        mount, _, rest = path.lstrip("/").partition("/")
        app = self.alerts_app if mount == "alerts" else self.campaigns_app
        return bool(app.url_map.bind("").test("/" + rest, method))

    def track(self, run: ScenarioRun, handover: Handover) -> None:
        """A run started through POST /scenarios/{name}: score it too."""
        self._tracker.track(run, handover)

    def _body(self, request: IRequest) -> bytes:
        """The body, under the API's rules: a JSON Content-Type, at most the body limit."""
        content_type = request.getHeader("content-type")
        if content_type is None or not is_json(content_type):
            raise Refused(415, f"Content-Type must be application/json, not {content_type!r}")
        assert request.content is not None
        body: bytes = request.content.read(self._max_body_bytes + 1)
        if len(body) > self._max_body_bytes:
            raise Refused(413, too_large(self._max_body_bytes))
        return body

    # -- Alerts ---------------------------------------------------------------------------------------

    @alerts_app.route("/", methods=["POST"])
    def post_alerts(self, request: IRequest) -> bytes:
        """Record the alerts; 200 with how many matched a run, came late, matched none or were malformed."""
        try:
            body = self._body(request)
            expected = "an alert, an array of alerts or an Alertmanager payload"
            payload = parse_json(body, expected)
            if not isinstance(payload, dict | list):
                raise BadRequest(f"request body must be {expected}, not {type(payload).__name__}")
        except Refused as r:
            return json_response(request, r.code, {"error": str(r)})
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        result = self._tracker.receive(payload, "http")
        return json_response(request, 200, result)

    # -- Campaigns ------------------------------------------------------------------------------------

    def _running(self) -> Campaigns:
        if self._campaigns is None:
            raise NotFound()
        return self._campaigns

    @campaigns_app.route("/", methods=["POST"])
    def post_campaign(self, request: IRequest) -> bytes:
        """Start a campaign: 202 with its id and the ids of its runs, in the order they are sent."""
        campaigns = self._running()
        try:
            if self._closing():
                raise Refused(503, "shutting down; nothing was started, try again later")
            request_ = parse_campaign(parse_json_object(self._body(request)))
            campaign = campaigns.start(request_)
        except Refused as r:
            return json_response(request, r.code, {"error": str(r)})
        except BadRequest as e:
            return json_response(request, 400, {"error": str(e)})
        request.setHeader(b"location", f"/campaigns/{campaign.campaign_id}".encode())
        return json_response(
            request,
            202,
            {
                "campaign_id": campaign.campaign_id,
                "state": campaign.state,
                "detection_timeout_seconds": campaign.timeout,
                "runs": [
                    {"scenario": spec.scenario, "scenario_id": scenario_id}
                    for spec, scenario_id in zip(campaign.specs, campaign.scenario_ids, strict=True)
                ],
            },
        )

    @campaigns_app.route("/", methods=["GET"])
    def list_campaigns(self, request: IRequest) -> bytes:
        """Every campaign, newest first, with its state and scorecard but not its runs."""
        now = self._clock.seconds()
        shown = [c.describe(self._tracker, now, runs=False) for c in self._running()]
        return json_response(request, 200, {"campaigns": shown[::-1]})

    @campaigns_app.route("/<campaign_id>", methods=["GET"])
    def get_campaign(self, request: IRequest, campaign_id: str) -> bytes:
        """One campaign with every run."""
        campaign = self._running().get(campaign_id)
        if campaign is None:
            return json_response(request, 404, {"error": f"no campaign {campaign_id!r}"})
        return json_response(request, 200, campaign.describe(self._tracker, self._clock.seconds()))

    @campaigns_app.route("/<campaign_id>/junit", methods=["GET"])
    def get_junit(self, request: IRequest, campaign_id: str) -> bytes:
        """One campaign as JUnit XML."""
        campaign = self._running().get(campaign_id)
        if campaign is None:
            return json_response(request, 404, {"error": f"no campaign {campaign_id!r}"})
        request.setHeader(b"content-type", b"application/xml")
        return junit_xml(campaign.describe(self._tracker, self._clock.seconds()))

    # Errors are JSON as in the rest of the API, answered by the API's own handlers.
    for _app in (alerts_app, campaigns_app):
        _app.handle_errors(NotFound)(AuditAPI.not_found)
        _app.handle_errors(MethodNotAllowed)(AuditAPI.method_not_allowed)
        _app.handle_errors(HTTPException)(AuditAPI.http_error)
        _app.handle_errors(Exception)(AuditAPI.internal_error)
    del _app
