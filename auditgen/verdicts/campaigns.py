"""Campaigns: many scenario runs started together, interleaved, and scored as one scorecard.

A campaign is asked for as `{"scenarios": {"brute_force": 3, ...}}` or as a list of `{"name", "count",
"parameters", "delivery", "expect"}`, with an optional `detection_timeout_seconds`. Every run is prepared
(its parameters checked) before the campaign is answered, so a bad request starts nothing; then the runs
are started one after another, interleaved across scenarios, each waiting while the outbox is full. An
instant run is sent once its events are accepted; a paced run once its schedule has started (the scenario
runner hands its events over at their times while the campaign starts the next runs), and it is judged
only after its last event. The campaign is `running` until every run was sent and has its verdict, then
`finished`.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.validation import BadRequest
from auditgen.verdicts.verdicts import (
    ALERT,
    DETECTED,
    EXPECTATIONS,
    FALSE_ALARM,
    MISSED,
    PENDING,
    QUIET,
    Handover,
    ScenarioRun,
    TrackedRun,
    Tracker,
)

MAX_ENTRIES = 20  # scenarios (or list entries) in one campaign
MAX_COUNT = 50  # runs of one entry; so at most 1000 runs in a campaign, a bound its schema can state
MAX_TIMEOUT = 3600.0  # seconds: the longest detection timeout a campaign may ask for
DELIVERIES = ("instant", "paced")
RETRY_SECONDS = 1.0  # a run the outbox could not take is offered again after this
RUNNING, FINISHED = "running", "finished"


class Busy(Exception):
    """No room to send a run now (outbox or ground-truth outbox full); the campaign tries again later."""


@dataclass(frozen=True)
class RunSpec:
    """One run to start: the scenario, its parameters, its delivery and, if given, what it expects."""

    scenario: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    delivery: str | None = None
    expect: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.scenario,
            "parameters": dict(self.parameters),
            "delivery": self.delivery,
            "expect": self.expect,
        }


@dataclass(frozen=True)
class CampaignRequest:
    """A checked request: the runs in the order they are started, and the detection timeout."""

    runs: tuple[RunSpec, ...]
    timeout: float | None = None


class Starter(Protocol):
    """Starts scenario runs for campaigns (auditgen.verdicts.starter.OutboxStarter)."""

    def prepare(self, spec: RunSpec) -> ScenarioRun:
        """The run, with its parameters and delivery checked and its id drawn; BadRequest names what is
        wrong."""

    def send(self, run: ScenarioRun) -> Deferred[Handover]:
        """Start handing the run's events over; fires with the Handover the tracker follows once the run
        is under way (instant: every event accepted; paced: its schedule started, events accepted as they
        come due). Raises Busy at once when there is no room now."""


def _show_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def parse_campaign(body: Mapping[str, Any]) -> CampaignRequest:
    """The request body (a JSON object) as a CampaignRequest; BadRequest says what is wrong."""
    unknown = set(body) - {"scenarios", "detection_timeout_seconds"}
    if unknown:
        raise BadRequest(
            f"unknown field {_show_repr(sorted(unknown)[0])}; known: scenarios, detection_timeout_seconds"
        )
    scenarios = body.get("scenarios")
    entries: list[tuple[RunSpec, int]] = []
    if isinstance(scenarios, Mapping):
        for name, count in scenarios.items():
            entries.append((RunSpec(name), _count(count, f"scenarios.{name}")))
    elif isinstance(scenarios, list):
        for n, item in enumerate(scenarios):
            entries.append(_entry(item, f"scenarios[{n}]"))
    else:
        raise BadRequest(
            'scenarios must be an object of counts ({"brute_force": 3}) or a list of '
            '{"name", "count", "parameters", "delivery", "expect"} objects'
        )
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise BadRequest(
            f"scenarios must name from 1 to {MAX_ENTRIES} scenarios (or entries), not {len(entries)}"
        )
    timeout = body.get("detection_timeout_seconds")
    if "detection_timeout_seconds" in body:  # null is no number either
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT
            or not math.isfinite(timeout)
        ):
            raise BadRequest(
                f"detection_timeout_seconds must be a number above 0 and at most {MAX_TIMEOUT:g}, "
                f"not {_show_repr(timeout)}"
            )
        timeout = float(timeout)
    return CampaignRequest(tuple(interleave(entries)), timeout)


def _count(value: Any, where: str) -> int:
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 1 <= value <= MAX_COUNT:
        raise BadRequest(
            f"{where} must be a whole number of runs from 1 to {MAX_COUNT}, not {_show_repr(value)}"
        )
    return int(value)


def _entry(item: Any, where: str) -> tuple[RunSpec, int]:
    if not isinstance(item, Mapping):
        raise BadRequest(f"{where} must be an object with name, count, parameters, delivery, expect")
    unknown = set(item) - {"name", "count", "parameters", "delivery", "expect"}
    if unknown:
        raise BadRequest(f"{where}: unknown field {_show_repr(sorted(unknown)[0])}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be a scenario's name, not {_show_repr(name)}")
    parameters = item.get("parameters", {})
    if not isinstance(parameters, Mapping):
        raise BadRequest(f"{where}.parameters must be an object, not {_show_repr(parameters)}")
    delivery = item.get("delivery")
    if "delivery" in item and delivery not in DELIVERIES:
        raise BadRequest(f"{where}.delivery must be instant or paced, not {_show_repr(delivery)}")
    expect = item.get("expect")
    if "expect" in item and expect not in EXPECTATIONS:
        raise BadRequest(f"{where}.expect must be alert or quiet, not {_show_repr(expect)}")
    count = _count(item.get("count", 1), f"{where}.count")
    return RunSpec(name, dict(parameters), delivery, expect), count


def campaign_schemas(parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """CampaignRequest and CampaignEntry as JSON Schema for these scenarios (name -> parameters' schema):
    exactly what parse_campaign and the starter accept, for the served OpenAPI document."""
    count = {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": 1}
    entries = [
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"const": name},
                "count": count,
                "parameters": schema,
                "delivery": {"enum": list(DELIVERIES)},
                "expect": {"enum": list(EXPECTATIONS)},
            },
        }
        for name, schema in parameters.items()
    ]
    return {
        "CampaignEntry": {"oneOf": entries},
        "CampaignRequest": {
            "type": "object",
            "required": ["scenarios"],
            "additionalProperties": False,
            "properties": {
                "scenarios": {
                    "oneOf": [
                        {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": min(MAX_ENTRIES, len(parameters)),
                            "propertyNames": {"enum": list(parameters)},
                            "additionalProperties": count,
                        },
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_ENTRIES,
                            "items": {"$ref": "#/components/schemas/CampaignEntry"},
                        },
                    ]
                },
                "detection_timeout_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": MAX_TIMEOUT,
                },
            },
        },
    }


def interleave(entries: Sequence[tuple[RunSpec, int]]) -> list[RunSpec]:
    """Round robin over the entries: a, b, a, b, a for (a, 3), (b, 2); runs of one scenario spread out."""
    lanes = [[spec] * count for spec, count in entries]
    return [spec for row in itertools.zip_longest(*lanes) for spec in row if spec is not None]


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (share from 0 to 1) of the values, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarize(runs: Iterable[TrackedRun | None]) -> dict[str, Any]:
    """Counts by verdict, detection rate (detected of the runs that expected an alert and are decided) and
    time to detect p50/p95/max; a run not yet sent (None) counts as pending."""
    counts = {key: 0 for key in ("runs", PENDING, DETECTED, MISSED, QUIET, FALSE_ALARM, "as_expected")}
    times: list[float] = []
    for run in runs:
        counts["runs"] += 1
        verdict = PENDING if run is None else run.verdict
        counts[verdict] += 1
        if run is not None and run.as_expected:
            counts["as_expected"] += 1
        if run is not None and run.time_to_detect is not None and verdict == DETECTED:
            times.append(run.time_to_detect)
    expecting = counts[DETECTED] + counts[MISSED]
    return {
        **{("false_alarms" if k == FALSE_ALARM else k): v for k, v in counts.items()},
        "detection_rate": counts[DETECTED] / expecting if expecting else None,
        "time_to_detect_seconds": {
            "p50": percentile(times, 0.50),
            "p95": percentile(times, 0.95),
            "max": max(times) if times else None,
        },
    }


def iso(seconds: float | None) -> str | None:
    return (
        None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    )


@dataclass(eq=False)
class Campaign:
    """A campaign's runs (planned ones first, tracked once sent) and its state."""

    campaign_id: str
    created: float
    timeout: float
    specs: list[RunSpec]
    planned: list[ScenarioRun | None]  # prepared and not yet sent (runs are prepared when their turn comes)
    scenario_ids: list[str | None]  # known once prepared
    runs: list[TrackedRun | None]  # tracked once sent
    unexpected_before: int
    finished: float | None = None
    unexpected_after: int | None = None
    next_run: int = 0  # runs before it are sent, or the one in flight

    @property
    def state(self) -> str:
        return FINISHED if self.finished is not None else RUNNING

    @property
    def passed(self) -> bool | None:
        """Every verdict as expected (None while running)."""
        if self.finished is None:
            return None
        return all(run is not None and run.as_expected for run in self.runs)

    def describe(self, tracker: Tracker, now: float, runs: bool = True) -> dict[str, Any]:
        """The campaign as GET /campaigns/{id} shows it (runs=False: the summary only, for the list)."""
        by_scenario: dict[str, list[TrackedRun | None]] = {}
        for spec, run in zip(self.specs, self.runs, strict=True):
            by_scenario.setdefault(spec.scenario, []).append(run)
        unexpected_end = tracker.unexpected_count if self.unexpected_after is None else self.unexpected_after
        end = self.finished if self.finished is not None else math.inf
        shown: dict[str, Any] = {
            "campaign_id": self.campaign_id,
            "state": self.state,
            "passed": self.passed,
            "created": iso(self.created),
            "finished": iso(self.finished),
            "detection_timeout_seconds": self.timeout,
            "runs_planned": len(self.specs),
            "runs_sent": sum(run is not None for run in self.runs),
            "time_left_seconds": self.time_left(now),
            "summary": {
                "total": summarize(self.runs),
                "scenarios": {name: summarize(group) for name, group in by_scenario.items()},
            },
            "unexpected_alerts": {
                "count": unexpected_end - self.unexpected_before,
                "kept": [a for a in tracker.unexpected if self.created <= a["received"] <= end],
            },
        }
        if runs:
            shown["runs"] = [self._describe_run(n) for n in range(len(self.specs))]
        return shown

    def _describe_run(self, n: int) -> dict[str, Any]:
        run, spec = self.runs[n], self.specs[n]
        if run is not None:
            return {**run.describe(), "ends_at": iso(run.ends), "sent": True}
        return {
            "scenario": spec.scenario,
            "scenario_id": self.scenario_ids[n],
            "expect": spec.expect or ALERT,
            "verdict": PENDING,
            "time_to_detect_seconds": None,
            "sent": False,
        }

    def time_left(self, now: float) -> float | None:
        """Seconds until the last pending run's deadline (a paced run still being handed over: its last
        event's due time plus the timeout); None while a run is not sent, or is instant and not confirmed."""
        if self.finished is not None:
            return 0.0
        deadlines = [
            run.expected_deadline(now) for run in self.runs if run is not None and run.verdict == PENDING
        ]
        if any(run is None for run in self.runs) or any(d is None for d in deadlines):
            return None
        return max(0.0, max((d for d in deadlines if d is not None), default=now) - now)


class Campaigns:
    """Starts campaigns and follows them to their end."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        tracker: Tracker,
        starter: Starter,
        on_change: Callable[[Campaign], None] | None = None,
    ) -> None:
        self._clock = clock
        self.tracker = tracker
        self._starter = starter
        self._on_change = on_change
        self._campaigns: dict[str, Campaign] = {}
        self._by_run: dict[str, Campaign] = {}
        self._calls: dict[str, IDelayedCall] = {}  # campaign id -> its next send
        tracker.add_listener(self._decided)

    def __iter__(self) -> Any:
        return iter(self._campaigns.values())

    def get(self, campaign_id: str) -> Campaign | None:
        return self._campaigns.get(campaign_id)

    def start(self, request: CampaignRequest) -> Campaign:
        """Check every entry by preparing its first run (BadRequest before anything is sent), then send
        the runs one by one, each prepared when its turn comes (so a large campaign never holds all its
        events at once)."""
        planned: list[ScenarioRun | None] = []
        checked: list[RunSpec] = []
        for spec in request.runs:
            first = spec not in checked
            planned.append(self._starter.prepare(spec) if first else None)
            if first:
                checked.append(spec)
        campaign = Campaign(
            campaign_id=str(uuid.uuid4()),
            created=self._clock.seconds(),
            timeout=self.tracker.timeout if request.timeout is None else request.timeout,
            specs=list(request.runs),
            planned=planned,
            scenario_ids=[None if run is None else run.scenario_id for run in planned],
            runs=[None] * len(planned),
            unexpected_before=self.tracker.unexpected_count,
        )
        self.add(campaign)
        return campaign

    def resume(self, campaign: Campaign) -> None:
        """Follow a campaign read back from the store: its runs not sent (or no longer known) are sent
        now, with new ids."""
        if campaign.finished is not None:  # shown as it ended, nothing to send
            self._campaigns[campaign.campaign_id] = campaign
            return
        unsent = [n for n, run in enumerate(campaign.runs) if run is None]
        for n in unsent:
            campaign.scenario_ids[n] = None
        campaign.next_run = unsent[0] if unsent else len(campaign.runs)
        self.add(campaign)

    def add(self, campaign: Campaign) -> None:
        """Follow a campaign (a new one, or one restored from the store): send what is left to send."""
        self._campaigns[campaign.campaign_id] = campaign
        for run in campaign.runs:
            if run is not None:
                self._by_run[run.scenario_id] = campaign
        self._changed(campaign)
        self._later(0.0, campaign)

    def _later(self, delay: float, campaign: Campaign) -> None:
        """Send the campaign's next run after delay (one call per campaign at a time)."""
        call = self._calls.get(campaign.campaign_id)
        if call is None or not call.active():
            self._calls[campaign.campaign_id] = self._clock.callLater(delay, self._send_next, campaign)

    def _send_next(self, campaign: Campaign) -> None:
        n = campaign.next_run
        while n < len(campaign.runs) and campaign.runs[n] is not None:  # sent before a restart
            n += 1
        campaign.next_run = n
        if n == len(campaign.runs):
            self._check_finished(campaign)
            return
        run = campaign.planned[n]
        try:
            if run is None:
                run = campaign.planned[n] = self._starter.prepare(campaign.specs[n])
                campaign.scenario_ids[n] = run.scenario_id
            accepted = self._starter.send(run)
        except Busy as e:
            self.log.debug(
                "campaign {campaign}: {reason}; trying again", campaign=campaign.campaign_id, reason=str(e)
            )
            self._later(RETRY_SECONDS, campaign)
            return
        except BadRequest as e:  # checked when the campaign started: only a scenario gone since a restart
            self.log.error(
                "campaign {campaign}: a run cannot be prepared: {error}; trying again",
                event="verdicts.campaign_run_unprepared",
                campaign=campaign.campaign_id,
                error=str(e),
            )
            self._later(RETRY_SECONDS, campaign)
            return
        campaign.planned[n] = None
        campaign.next_run = n + 1
        accepted.addCallbacks(
            self._sent, self._not_sent, callbackArgs=(campaign, n, run), errbackArgs=(campaign, n, run)
        )

    def _sent(self, handover: Handover, campaign: Campaign, n: int, run: ScenarioRun) -> None:
        spec = campaign.specs[n]
        self._by_run[run.scenario_id] = campaign
        campaign.runs[n] = self.tracker.track(
            run, handover, timeout=campaign.timeout, expect=spec.expect, campaign_id=campaign.campaign_id
        )
        self._changed(campaign)
        self._later(0.0, campaign)

    def _not_sent(self, failure: Failure, campaign: Campaign, n: int, run: ScenarioRun) -> None:
        """The events could not be stored (the spool failed): nothing was accepted, try the run again."""
        self.log.failure(
            "campaign {campaign}: a run could not be stored; trying again",
            failure,
            event="verdicts.campaign_run_not_stored",
            campaign=campaign.campaign_id,
        )
        campaign.planned[n] = run
        campaign.next_run = n  # one run is in flight at a time: the next is sent once this one is
        self._later(RETRY_SECONDS, campaign)

    def _decided(self, run: TrackedRun) -> None:
        campaign = self._by_run.get(run.scenario_id)
        if campaign is not None:
            self._changed(campaign)
            self._check_finished(campaign)

    def _check_finished(self, campaign: Campaign) -> None:
        if campaign.finished is not None:
            return
        if all(run is not None and run.verdict != PENDING for run in campaign.runs):
            campaign.finished = self._clock.seconds()
            campaign.unexpected_after = self.tracker.unexpected_count
            for run in campaign.runs:
                if run is not None:
                    self._by_run.pop(run.scenario_id, None)
            self._changed(campaign)

    def _changed(self, campaign: Campaign) -> None:
        if self._on_change is not None:
            self._on_change(campaign)

    def stop(self) -> None:
        """Cancel what is scheduled (a stored campaign goes on when add() sees it again)."""
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
