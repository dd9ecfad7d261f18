"""Verdicts: each scenario run tracked until its alerts are in, then scored.

A run expects an alert (today's scenarios) or expects quiet (a near miss). It is *finished* once the
broker confirmed every event of it: an instant run's events are accepted together, a paced run's one by
one over its schedule (a Handover tells the tracker of each), so a paced run is never judged before its
last event is out. An alert matches a run when it names one of the run's events, or,
naming none of them, carries keys equal to the run's grouping keys (on every key both have) and arrives
between the run's start and its deadline (finished + detection timeout). Then:

- the first matching alert, once the run is finished, decides it: `detected` (expected an alert) or
  `false_alarm` (expected quiet); nothing that comes later could change that;
- at the deadline without one: `missed` (expected an alert) or `quiet` (expected quiet);
- an alert for a run after its deadline is counted as late on the run and changes no verdict;
- an alert naming events of several runs matches each of them;
- an alert that matches no run is `unexpected`: counted, and the last few kept for inspection.

Time to detect = the first matching alert's arrival minus the confirm time of the latest of the run's
events it names (matched by keys: of the run's last event confirmed before the alert), never below 0.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.metrics import Metrics
from auditgen.verdicts.alerts import Alert, AlertFormat

ALERT, QUIET = "alert", "quiet"
EXPECTATIONS = (ALERT, QUIET)
PENDING, DETECTED, MISSED, FALSE_ALARM = "pending", "detected", "missed", "false_alarm"
VERDICTS = (DETECTED, MISSED, QUIET, FALSE_ALARM)
AS_EXPECTED = (DETECTED, QUIET)
DEFAULT_TIMEOUT = 60.0
KEEP_UNEXPECTED = 20  # unexpected alerts kept for inspection (all are counted)
KEEP_DECIDED = 10_000  # decided runs kept for late alerts and lookups; older ones are forgotten


class ScenarioRun(Protocol):
    """What scoring needs of a scenario run (auditgen.scenarios.Run provides it).

    `expected` holds `event_ids` (in order), `keys` (the rule's grouping keys) and may hold `expect`
    ("alert" or "quiet"; absent: "alert"); a run may also say `expect` as an attribute.
    """

    @property
    def scenario(self) -> str: ...
    @property
    def scenario_id(self) -> str: ...
    @property
    def expected(self) -> Mapping[str, Any]: ...


def expectation(run: ScenarioRun) -> str:
    """alert or quiet: the run's own `expect`, else its expected detection's (`outcome` in scenario files'
    runs), else alert."""
    expected = run.expected
    expect = getattr(run, "expect", None) or expected.get("outcome") or expected.get("expect") or ALERT
    if isinstance(expect, Mapping):  # {"kind": "quiet", "why": ...} or {"alert": ...}-style records
        expect = expect.get("kind") or next(iter(expect), ALERT)
    if expect not in EXPECTATIONS:
        raise ValueError(f"{run.scenario}: expect must be alert or quiet, not {expect!r}")
    return str(expect)


@dataclass(eq=False)
class TrackedRun:
    """One run being scored; times are clock seconds."""

    scenario: str
    scenario_id: str
    expect: str
    event_ids: tuple[str, ...]
    keys: dict[str, str]
    timeout: float
    started: float
    campaign_id: str | None = None
    delivery: str = "instant"
    ends: float | None = None  # paced: when its last event is due
    confirmed: dict[str, float] = field(default_factory=dict)
    finished: float | None = None
    verdict: str = PENDING
    decided: float | None = None
    alerts: int = 0
    late_alerts: int = 0
    first_alert: float | None = None
    first_alert_names: tuple[str, ...] = ()  # the run's events the first matching alert named
    time_to_detect: float | None = None

    @property
    def deadline(self) -> float | None:
        return None if self.finished is None else self.finished + self.timeout

    def expected_deadline(self, now: float) -> float | None:
        """The deadline, or while a paced run is still being handed over, what it will be if nothing
        waits (its last event due, plus the timeout); None when not known yet."""
        if self.deadline is not None:
            return self.deadline
        if self.ends is None:
            return None
        return max(self.ends, now) + self.timeout

    @property
    def as_expected(self) -> bool | None:
        return None if self.verdict == PENDING else self.verdict in AS_EXPECTED

    def describe(self) -> dict[str, Any]:
        """The run as the API and the scorecard show it."""
        return {
            "scenario": self.scenario,
            "scenario_id": self.scenario_id,
            "delivery": self.delivery,
            "expect": self.expect,
            "verdict": self.verdict,
            "time_to_detect_seconds": self.time_to_detect,
            "alerts": self.alerts,
            "late_alerts": self.late_alerts,
            "events": len(self.event_ids),
            "events_confirmed": len(self.confirmed),
            "keys": self.keys,
        }


Listener = Callable[[TrackedRun], None]
Accepted = Callable[[str, Deferred[Any] | None], None]


class Handover:
    """A run's events as they are accepted, for scoring: each event's confirm Deferred (None: confirmed
    when accepted) and, for a paced run, when its last event is due (clock seconds).

    An instant run's events are all accepted before it is tracked; a paced run's come one by one
    (`accept`, by whoever hands them over) and the tracker, following it, waits for every one.
    """

    def __init__(
        self, confirmations: Mapping[str, Deferred[Any] | None] | None = None, ends: float | None = None
    ) -> None:
        self.ends = ends
        self.accepted: dict[str, Deferred[Any] | None] = dict(confirmations or {})
        self._followers: list[Accepted] = []

    @property
    def paced(self) -> bool:
        return self.ends is not None

    def accept(self, event_id: str, confirmed: Deferred[Any] | None) -> None:
        """One more event was accepted."""
        self.accepted[event_id] = confirmed
        for follower in self._followers:
            follower(event_id, confirmed)

    def follow(self, follower: Accepted) -> None:
        """Tell follower of every event accepted so far, and of each one accepted from now on."""
        for event_id, confirmed in list(self.accepted.items()):
            follower(event_id, confirmed)
        self._followers.append(follower)


class Tracker:
    """Tracks runs, matches alerts to them and gives verdicts on the clock."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        alert_format: AlertFormat | None = None,
        metrics: Metrics | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keep_unexpected: int = KEEP_UNEXPECTED,
        keep_decided: int = KEEP_DECIDED,
    ) -> None:
        self._clock = clock
        self.alert_format = alert_format or AlertFormat()
        self._metrics = metrics
        self.timeout = timeout
        self._keep_decided = keep_decided
        self._runs: OrderedDict[str, TrackedRun] = OrderedDict()  # scenario_id -> run, oldest first
        self._by_event: dict[str, TrackedRun] = {}
        self._timers: dict[str, IDelayedCall] = {}
        self._decided: deque[str] = deque()
        self.unexpected_count = 0
        self.unexpected: deque[dict[str, Any]] = deque(maxlen=keep_unexpected)
        self.malformed_count = 0
        self._listeners: list[Listener] = []
        self.on_change: Callable[[TrackedRun | None], None] | None = None
        """Told of every change worth storing: a run's (tracked, finished, alerted, decided), or None for
        the unexpected alerts."""
        self.on_forget: Callable[[TrackedRun], None] | None = None
        """Told of a decided run dropped to keep at most keep_decided of them."""

    def add_listener(self, listener: Listener) -> None:
        """Who to tell of each verdict (campaigns, the store)."""
        self._listeners.append(listener)

    def run(self, scenario_id: str) -> TrackedRun | None:
        return self._runs.get(scenario_id)

    # -- Runs in ------------------------------------------------------------------------------------------

    def track(
        self,
        run: ScenarioRun,
        handover: Handover | None = None,
        *,
        timeout: float | None = None,
        expect: str | None = None,
        campaign_id: str | None = None,
    ) -> TrackedRun:
        """Score this run, whose events were accepted now (or, with a paced Handover, start to be).

        The handover gives each event's confirm Deferred (None, or no handover at all: the generator's,
        which nobody waits for, confirmed now); an event whose Deferred fails (the API stopped waiting for
        it: its confirm time is unknown) counts as confirmed when accepted. A paced handover tells of its
        events as they are accepted: the run is finished when its last event is confirmed, not before.
        """
        expect = expect or expectation(run)
        if expect not in EXPECTATIONS:
            raise ValueError(f"expect must be alert or quiet, not {expect!r}")
        now = self._clock.seconds()
        handover = handover or Handover()
        tracked = TrackedRun(
            scenario=run.scenario,
            scenario_id=run.scenario_id,
            expect=expect,
            event_ids=tuple(run.expected["event_ids"]),
            keys={k: str(v) for k, v in run.expected.get("keys", {}).items()},
            timeout=self.timeout if timeout is None else timeout,
            started=now,
            campaign_id=campaign_id,
            delivery="paced" if handover.paced else "instant",
            ends=handover.ends,
        )
        self._runs[tracked.scenario_id] = tracked
        for event_id in tracked.event_ids:
            self._by_event[event_id] = tracked
        self._changed(tracked)
        if not handover.paced:  # every event accepted: one without a Deferred is confirmed now
            for event_id in tracked.event_ids:
                handover.accepted.setdefault(event_id, None)
        handover.follow(lambda event_id, confirmed: self._accepted(tracked, event_id, confirmed))
        return tracked

    def _accepted(self, tracked: TrackedRun, event_id: str, confirmed: Deferred[Any] | None) -> None:
        """One of the run's events was accepted: confirmed now (no Deferred) or when its Deferred fires."""
        if event_id in tracked.confirmed:
            return
        if confirmed is None:
            self._confirm(tracked, event_id)
        else:
            confirmed.addCallbacks(
                self._confirmed,
                self._unconfirmed,
                callbackArgs=(tracked, event_id),
                errbackArgs=(tracked, event_id),
            )

    def restore(self, tracked: TrackedRun, handover: Handover | None = None) -> None:
        """A run read back from the store: pending ones are decided on their deadline as if never stopped.

        An unfinished one whose events are still being handed over (a paced run the scenario runner
        resumes: `handover`) goes on: its events accepted before the stop count as confirmed now, the
        others once confirmed. Any other unfinished one lost its confirms with the process: finished now.
        """
        self._runs[tracked.scenario_id] = tracked
        for event_id in tracked.event_ids:
            self._by_event[event_id] = tracked
        if tracked.verdict != PENDING:
            self._decided.append(tracked.scenario_id)
            return
        if tracked.finished is None and handover is not None:
            tracked.ends = handover.ends
            self._changed(tracked)
            handover.follow(lambda event_id, confirmed: self._accepted(tracked, event_id, confirmed))
            return
        if tracked.finished is None:  # its confirms were lost with the process: finished now
            for event_id in tracked.event_ids:
                tracked.confirmed.setdefault(event_id, self._clock.seconds())
            tracked.finished = self._clock.seconds()
        self._on_finished(tracked)

    def _confirmed(self, result: Any, tracked: TrackedRun, event_id: str) -> Any:
        self._confirm(tracked, event_id)
        return result

    def _unconfirmed(self, failure: Failure, tracked: TrackedRun, event_id: str) -> Failure:
        accepted = tracked.started if tracked.delivery == "instant" else self._clock.seconds()
        self._confirm(tracked, event_id, accepted)
        return failure

    def _confirm(self, tracked: TrackedRun, event_id: str, at: float | None = None) -> None:
        if event_id in tracked.confirmed:
            return
        tracked.confirmed[event_id] = self._clock.seconds() if at is None else at
        if len(tracked.confirmed) == len(set(tracked.event_ids)) and tracked.finished is None:
            tracked.finished = self._clock.seconds()
            self._changed(tracked)
            self._on_finished(tracked)

    def _changed(self, tracked: TrackedRun | None) -> None:
        if self.on_change is not None:
            self.on_change(tracked)

    def _on_finished(self, tracked: TrackedRun) -> None:
        if tracked.first_alert is not None:
            self._decide(tracked, DETECTED if tracked.expect == ALERT else FALSE_ALARM)
            return
        assert tracked.deadline is not None
        delay = max(0.0, tracked.deadline - self._clock.seconds())
        self._timers[tracked.scenario_id] = self._clock.callLater(delay, self._timed_out, tracked)

    def _timed_out(self, tracked: TrackedRun) -> None:
        self._timers.pop(tracked.scenario_id, None)
        if tracked.verdict == PENDING:
            self._decide(tracked, MISSED if tracked.expect == ALERT else QUIET)

    def _decide(self, tracked: TrackedRun, verdict: str) -> None:
        tracked.verdict = verdict
        tracked.decided = self._clock.seconds()
        timer = self._timers.pop(tracked.scenario_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        if tracked.first_alert is not None:
            named = [tracked.confirmed[i] for i in tracked.first_alert_names if i in tracked.confirmed]
            before = [t for t in tracked.confirmed.values() if t <= tracked.first_alert]
            reference = max(named) if named else max(before or tracked.confirmed.values())
            tracked.time_to_detect = max(0.0, tracked.first_alert - reference)
        if self._metrics is not None:
            self._metrics.scenario_verdicts.labels(tracked.scenario, verdict).inc()
            if verdict == DETECTED and tracked.time_to_detect is not None:
                self._metrics.time_to_detect.labels(tracked.scenario).observe(tracked.time_to_detect)
        self._decided.append(tracked.scenario_id)
        self._forget_old()
        self._changed(tracked)
        for listener in self._listeners:
            try:
                listener(tracked)
            except Exception:
                self.log.failure("a verdict listener failed", event="verdicts.listener_failed")

    def _forget_old(self) -> None:
        while len(self._decided) > self._keep_decided:
            old = self._runs.pop(self._decided.popleft(), None)
            if old is not None:
                for event_id in old.event_ids:
                    if self._by_event.get(event_id) is old:
                        del self._by_event[event_id]
                if self.on_forget is not None:
                    self.on_forget(old)

    # -- Alerts in ----------------------------------------------------------------------------------------

    def receive(self, payload: Any, source: str) -> dict[str, Any]:
        """Record every alert of a decoded payload; what became of them, malformed ones included."""
        parsed = self.alert_format.parse(payload, source, self._clock.seconds())
        results = {"matched": 0, "late": 0, "unexpected": 0}
        for alert in parsed.alerts:
            results[self.record(alert)] += 1
        for problem in parsed.malformed:
            self.malformed(source, problem)
        return {**results, "malformed": len(parsed.malformed), "errors": parsed.malformed}

    def malformed(self, source: str, problem: str) -> None:
        """Count and log an alert that could not be read (it is dropped: it names nothing we could use)."""
        self.malformed_count += 1
        self._count(source, "malformed")
        self.log.warn(
            "malformed alert from {source}: {problem}",
            event="verdicts.malformed_alert",
            source=source,
            problem=problem,
        )

    def record(self, alert: Alert) -> str:
        """Match one alert: "matched" (to a run in time), "late" (only to runs past their deadline) or
        "unexpected" (to no run)."""
        runs = self._named_runs(alert) or self._runs_with_keys(alert)
        if not runs:
            self.unexpected_count += 1
            self.unexpected.append(
                {
                    "received": alert.received,
                    "source": alert.source,
                    "event_ids": list(alert.event_ids[:10]),
                    "alert": alert.body,
                }
            )
            self._count(alert.source, "unexpected")
            self._changed(None)
            return "unexpected"
        in_time = False
        for tracked, names in runs:
            deadline = tracked.deadline
            if deadline is not None and alert.received > deadline:
                tracked.late_alerts += 1
                self._changed(tracked)
                continue
            in_time = True
            tracked.alerts += 1
            self._changed(tracked)
            if tracked.first_alert is None:
                tracked.first_alert, tracked.first_alert_names = alert.received, names
                if tracked.finished is not None and tracked.verdict == PENDING:
                    self._decide(tracked, DETECTED if tracked.expect == ALERT else FALSE_ALARM)
        result = "matched" if in_time else "late"
        self._count(alert.source, result)
        return result

    def _named_runs(self, alert: Alert) -> list[tuple[TrackedRun, tuple[str, ...]]]:
        named: dict[str, tuple[TrackedRun, list[str]]] = {}
        for event_id in alert.event_ids:
            tracked = self._by_event.get(event_id)
            if tracked is not None:
                named.setdefault(tracked.scenario_id, (tracked, []))[1].append(event_id)
        return [(tracked, tuple(ids)) for tracked, ids in named.values()]

    def _runs_with_keys(self, alert: Alert) -> list[tuple[TrackedRun, tuple[str, ...]]]:
        if not alert.keys:
            return []
        found: list[tuple[TrackedRun, tuple[str, ...]]] = []
        for tracked in self._pending():
            common = alert.keys.keys() & tracked.keys.keys()
            deadline = tracked.deadline
            in_window = tracked.started <= alert.received and (deadline is None or alert.received <= deadline)
            if common and in_window and all(alert.keys[k] == tracked.keys[k] for k in common):
                found.append((tracked, ()))
        return found

    def _pending(self) -> Iterable[TrackedRun]:
        return (t for t in self._runs.values() if t.verdict == PENDING)

    def _count(self, source: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.alerts_received.labels(source, result).inc()

    def stop(self) -> None:
        """Cancel the deadlines (a store keeps what they were; restore() sets them again)."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
