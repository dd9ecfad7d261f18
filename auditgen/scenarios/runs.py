"""Scenario runs: planned on request, delivered instant or paced, and followed until confirmed.

instant: every event accepted at once (all or nothing), stamped within a window that ends now.
paced: each event handed to the outbox at its offset from the run's start and stamped then, so a pipeline
that counts by arrival time sees the run unfold as it would. A paced event that finds the outbox (or the
spool) full waits and is offered again; later ones wait behind it. The ground-truth record is reported
when the last event is accepted. At shutdown a paced run's remaining events are handed over at once (and
kept in the spool like every accepted event), unless a RunStore keeps the schedule to resume after a
restart; the record then says for how long the run was interrupted.

Whoever needs each event as it is accepted (the verdicts: a paced run is not finished before its last
event is confirmed) follows the run: told each event's id and confirm Deferred as it is accepted. Runs a
stop left in the store can be read back (`resuming`) before the runner starts, so that their followers
are in place before the first event goes on.
"""

from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.checks import CheckError, show
from auditgen.events import SOURCE_API, Catalog
from auditgen.events.grounding import Grounding
from auditgen.outbox import Entry, Outbox, OutboxFull
from auditgen.scenarios.engine import (
    DELIVERIES,
    Plan,
    Run,
    Scenario,
    StampedFactory,
    UnknownScenario,
    plan,
    stamp,
)

RETRY_SECONDS = 1.0  # a paced event the outbox could not take is offered again after this
Follower = Callable[[str, Deferred[None] | None], None]  # an accepted event's id and confirm Deferred
RUN_STORE_FILE = "scenario-runs.json"  # in the spool directory: paced runs a stop left unfinished
KEPT_RUNS = 1000  # GET /scenarios/runs/{id} answers for this many of the latest runs


class Reporter(Protocol):
    """Who is told of every run whose events were accepted: groundtruth.GroundTruth."""

    @property
    def full(self) -> bool:
        """No room to report one more run."""

    def report(self, run: Run) -> None: ...


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Tracked:
    """Where one run stands: its schedule (clock seconds), which events were accepted and confirmed."""

    plan: Plan
    delivery: str
    started: float  # clock seconds at the first event's offset
    due: list[float]
    accepted: int = 0  # events accepted so far, in order
    confirmed: set[int] = field(default_factory=set)
    shift: float = 0.0  # seconds added to each stamp: a run placed in an hour (a night) keeps its place
    interrupted_seconds: float = 0.0
    stopped_at: float | None = None  # set while interrupted
    flushed: int = 0  # at shutdown: events up to this one were handed over at once
    followers: list[Follower] = field(default_factory=list, repr=False)  # not stored: they follow again

    def follow(self, follower: Follower) -> None:
        """Tell follower of every event accepted from now on (its id and its confirm Deferred)."""
        self.followers.append(follower)

    @property
    def state(self) -> str:
        if self.stopped_at is not None:
            return "interrupted"
        if self.accepted == len(self.due):
            return "done"
        return "running" if self.accepted else "planned"

    @property
    def ends_at(self) -> str:
        """When the last event is due (UTC, ISO 8601)."""
        return _iso(self.due[-1])

    def describe(self) -> dict[str, Any]:
        """What GET /scenarios/runs/{scenario_id} answers."""
        events = self.plan.events
        return {
            "scenario": self.plan.scenario.name,
            "scenario_id": self.plan.scenario_id,
            "delivery": self.delivery,
            "state": self.state,
            "starts_at": _iso(self.due[0]),
            "ends_at": self.ends_at,
            "interrupted_seconds": round(self.interrupted_seconds, 3),
            "events": [
                {
                    "event_id": e["event_id"],
                    "due": _iso(due),
                    "accepted": i < self.accepted,
                    "confirmed": i in self.confirmed,
                }
                for i, (e, due) in enumerate(zip(events, self.due, strict=True))
            ],
            "accepted": self.accepted,
            "confirmed": len(self.confirmed),
            "total": len(events),
        }

    def save(self) -> dict[str, Any]:
        """The run as the store keeps it: enough to go on and to report it as planned."""
        return {
            "scenario_id": self.plan.scenario_id,
            "parameters": self.plan.parameters,
            "expected": self.plan.expectation(),
            "events": self.plan.events,
            "due": self.due,
            "accepted": self.accepted,
            "confirmed": sorted(self.confirmed),
            "shift": self.shift,
            "interrupted_seconds": self.interrupted_seconds,
            "stopped_at": self.stopped_at,
        }

    @classmethod
    def restore(cls, saved: Mapping[str, Any]) -> Tracked:
        due = [float(d) for d in saved["due"]]
        p = Plan(
            Scenario.stored(saved["expected"]),
            saved["scenario_id"],
            saved["parameters"],
            due,
            saved["events"],
        )
        return cls(
            p,
            "paced",
            due[0],
            due,
            accepted=int(saved["accepted"]),
            confirmed=set(saved["confirmed"]),
            shift=float(saved["shift"]),
            interrupted_seconds=float(saved["interrupted_seconds"]),
            stopped_at=float(saved["stopped_at"]),
        )

    def schedule(self) -> list[dict[str, Any]]:
        return [
            {"event_id": e["event_id"], "at": _iso(due), "offset_seconds": round(due - self.due[0], 6)}
            for e, due in zip(self.plan.events, self.due, strict=True)
        ]


class ScenarioRunner(Service):
    """Plans runs of the scenarios on request, paces the paced ones, and keeps the latest runs' state."""

    log = Logger()

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random,
        reporter: Reporter | None = None,
        now: Callable[[], datetime] | None = None,
        scenarios: Sequence[Scenario] | None = None,
        clock: IReactorTime | None = None,
        outbox: Outbox | None = None,
        store: RunStore | None = None,
        grounding: Grounding | None = None,
    ) -> None:
        """`clock` and `outbox` are needed for paced runs only; `now` defaults to the clock's time. With a
        store, paced runs unfinished at a stop are kept there and resumed when the service starts again.
        With a grounding (the API's world and ledger), runs draw their parameters from the world."""
        from auditgen.scenarios import BUILTIN

        self._reporter = reporter
        self._factory = StampedFactory(catalog, rng, grounding)
        self._clock = clock
        self._outbox = outbox
        self._now: Callable[[], datetime] = _utc_now
        if now is not None:
            self._now = now
        elif clock is not None:
            self._now = lambda: datetime.fromtimestamp(clock.seconds(), UTC)
        self._scenarios = {s.name: s for s in (BUILTIN if scenarios is None else scenarios)}
        self._runs: OrderedDict[str, Tracked] = OrderedDict()
        self._active: dict[str, Tracked] = {}  # paced runs not yet wholly accepted
        self._timers: dict[str, IDelayedCall] = {}
        self._stopped = False  # stopService ran: paced runs are stored, or hand over what remains at once
        self._store = store
        self._storing: dict[str, Deferred[Entry]] = {}  # a paced event being stored, per run
        self._resuming: dict[str, Tracked] | None = None  # read from the store, not yet started again

    @property
    def scenarios(self) -> tuple[Scenario, ...]:
        return tuple(self._scenarios.values())

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self._scenarios.values()]

    def parameter_schemas(self) -> dict[str, dict[str, Any]]:
        """Each scenario's request body as a JSON Schema object, for the OpenAPI document."""
        return {name: s.parameter_schema(self._factory.pools) for name, s in self._scenarios.items()}

    @property
    def full(self) -> bool:
        """The reporter has no room: run nothing whose ground truth would have to wait."""
        return self._reporter is not None and self._reporter.full

    def report(self, run: Run) -> None:
        """The run's events were accepted."""
        if self._reporter is not None:
            self._reporter.report(run)

    def scenario(self, name: str) -> Scenario:
        scenario = self._scenarios.get(name)
        if scenario is None:
            raise UnknownScenario(f"no scenario {show(name)}; known: {', '.join(self._scenarios)}")
        return scenario

    def plan(self, name: str, body: Mapping[str, Any]) -> tuple[Plan, str]:
        """A run of the scenario and its delivery: the body's parameters and `delivery` checked."""
        scenario = self.scenario(name)
        given = dict(body)
        delivery = given.pop("delivery", scenario.delivery)
        if delivery not in DELIVERIES:
            raise CheckError(
                f"{name}: delivery", f"must be one of {show(list(DELIVERIES))}, not {show(delivery)}"
            )
        if delivery == "paced" and (self._clock is None or self._outbox is None):
            raise CheckError(f"{name}: delivery", "paced is not available here (no clock and outbox)")
        return plan(scenario, given, self._factory, SOURCE_API), delivery

    def run(self, name: str, given: Mapping[str, Any]) -> Run:
        """The events of one instant run (not yet accepted anywhere) and their expected detection."""
        p, _ = self.plan(name, {**given, "delivery": "instant"})
        return self.instant(p)

    def instant(self, p: Plan) -> Run:
        p.stamp_all(self._now())
        return p.finish("api")

    def track(self, p: Plan, delivery: str, entries: Sequence[Entry] = ()) -> Tracked:
        """Keep the run's state for GET /scenarios/runs; for an instant run, its accepted entries."""
        now = self._now().timestamp()
        if delivery == "instant":
            stamps = [_seconds(e["timestamp"]) for e in p.events]
            tracked = Tracked(p, delivery, stamps[0], stamps, accepted=len(stamps))
            for i, entry in enumerate(entries):
                _on_confirm(entry, tracked, i)
        else:
            tracked = Tracked(p, delivery, now, [now + at - p.offsets[0] for at in p.offsets])
        self._runs[p.scenario_id] = tracked
        while len(self._runs) > KEPT_RUNS:
            oldest = next(iter(self._runs))
            if oldest in self._active:
                break  # a run still pacing is kept whatever its age
            del self._runs[oldest]
        return tracked

    def status(self, scenario_id: str) -> dict[str, Any] | None:
        tracked = self._runs.get(scenario_id)
        return None if tracked is None else tracked.describe()

    # -- paced delivery ----------------------------------------------------------------------------

    def pace(self, p: Plan, follow: Follower | None = None) -> Tracked:
        """Start handing the run's events over at their offsets; the first is due now. follow, if given,
        is told of each event as it is accepted (the first may be before this returns)."""
        assert self._clock is not None
        tracked = self.track(p, "paced")
        if follow is not None:
            tracked.follow(follow)
        start = datetime.fromtimestamp(tracked.started, UTC)
        tracked.shift = (p.start(start) - start).total_seconds()
        self._active[p.scenario_id] = tracked
        self._hand_over(tracked)  # the first is due now: accepted (or waiting) before the answer
        return tracked

    def _next(self, tracked: Tracked) -> None:
        """Schedule the next event at its due time (or now, if an earlier one waited past it)."""
        assert self._clock is not None
        delay = max(0.0, tracked.due[tracked.accepted] - self._clock.seconds())
        self._timers[tracked.plan.scenario_id] = self._clock.callLater(delay, self._hand_over, tracked)

    def _hand_over(self, tracked: Tracked) -> None:
        """Stamp the due event now and offer it to the outbox; full: wait and offer it again."""
        assert self._clock is not None and self._outbox is not None
        self._timers.pop(tracked.plan.scenario_id, None)
        index = tracked.accepted
        event = tracked.plan.events[index]
        stamp(event, datetime.fromtimestamp(self._clock.seconds() + tracked.shift, UTC))
        try:
            if self._outbox.full:  # checked first: a refusal would count as a drop in the metrics
                raise OutboxFull()
            stored = self._outbox.add(event, wait=True)
        except OutboxFull:
            self._timers[tracked.plan.scenario_id] = self._clock.callLater(
                RETRY_SECONDS, self._hand_over, tracked
            )
            return
        self._storing[tracked.plan.scenario_id] = stored
        stored.addCallbacks(
            self._accepted, self._not_stored, callbackArgs=(tracked, index), errbackArgs=(tracked,)
        )

    def _accepted(self, entry: Entry, tracked: Tracked, index: int) -> None:
        self._storing.pop(tracked.plan.scenario_id, None)
        tracked.accepted = index + 1
        _on_confirm(entry, tracked, index)
        for follower in tracked.followers:
            try:
                follower(entry.event_id, entry.confirmed)
            except Exception:
                self.log.failure("a paced run's follower failed", event="scenario.follower_failed")
        if tracked.accepted == len(tracked.due):
            self._active.pop(tracked.plan.scenario_id, None)
            run = tracked.plan.finish("api")
            if tracked.interrupted_seconds:
                run.expected["interrupted_seconds"] = round(tracked.interrupted_seconds, 3)
            self.report(run)
        elif not self._stopped:
            self._next(tracked)
        elif self._store is None and index + 1 > tracked.flushed:
            self._flush(tracked)  # stopped while this one was being stored

    def _not_stored(self, failure: Failure, tracked: Tracked) -> None:
        """The spool could not write it: nothing was accepted; offer it again later (or now, stopping)."""
        assert self._clock is not None
        self._storing.pop(tracked.plan.scenario_id, None)
        self.log.failure(
            "a paced scenario event could not be stored; retrying", failure, event="scenario.store_failed"
        )
        if not self._stopped:
            self._timers[tracked.plan.scenario_id] = self._clock.callLater(
                RETRY_SECONDS, self._hand_over, tracked
            )

    def resuming(self) -> dict[str, Tracked]:
        """The paced runs a stop left in the store, by scenario_id, taken back and shifted by how long the
        service was down: they go on when the service starts. Read once per start, so that whoever
        follows their events (the verdicts, which start first) can ask before that."""
        if self._resuming is not None:
            return self._resuming
        self._resuming = {}
        if self._store is None:
            return self._resuming
        assert self._clock is not None
        now = self._clock.seconds()
        for saved in self._store.load():
            tracked = Tracked.restore(saved)
            assert tracked.stopped_at is not None
            down = max(0.0, now - tracked.stopped_at)
            tracked.interrupted_seconds += down
            tracked.due[tracked.accepted :] = [due + down for due in tracked.due[tracked.accepted :]]
            tracked.stopped_at = None
            self.log.info(
                "resuming paced scenario run {scenario_id} ({scenario}): {left} events left, interrupted "
                "for {seconds:.1f} s",
                event="scenario.paced_resumed",
                scenario_id=tracked.plan.scenario_id,
                scenario=tracked.plan.scenario.name,
                left=len(tracked.due) - tracked.accepted,
                seconds=down,
            )
            self._runs[tracked.plan.scenario_id] = tracked
            self._active[tracked.plan.scenario_id] = tracked
            self._resuming[tracked.plan.scenario_id] = tracked
        return self._resuming

    def startService(self) -> None:
        """Resume the paced runs a stop left in the store, shifted by how long the service was down."""
        super().startService()  # type: ignore[no-untyped-call]
        self._stopped = False
        if self._store is None:
            return
        for tracked in self.resuming().values():
            self._next(tracked)
        self._resuming = None
        self._store.save([])

    def stopService(self) -> Deferred[None] | None:
        """Keep every paced run's remaining schedule in the store; without one, hand the remaining events
        over now. Either way nothing answered for is lost."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopped = True
        for scenario_id, tracked in list(self._active.items()):
            timer = self._timers.pop(scenario_id, None)
            if timer is not None:
                timer.cancel()
                if self._store is None:
                    self._flush(tracked)
            # else one event is being stored: without a store, _accepted flushes the rest once it is
        if self._store is None:
            return None
        # Wait for the events being stored (accepted or not, each run then knows where it stands).
        waiting = [d.addBoth(lambda _: None) for d in self._storing.values()]
        return gatherResults(waiting).addCallback(lambda _: self._save())

    def _save(self) -> None:
        assert self._store is not None and self._clock is not None
        now = self._clock.seconds()
        unfinished = [t for t in self._active.values() if t.accepted < len(t.due)]
        for tracked in unfinished:
            tracked.stopped_at = now
        self._store.save([t.save() for t in unfinished])
        if unfinished:
            self.log.info(
                "{count} paced scenario runs stored, to resume at the next start",
                event="scenario.paced_stored",
                count=len(unfinished),
            )

    def _flush(self, tracked: Tracked) -> None:
        """The remaining events at once, stamped now."""
        assert self._outbox is not None and self._clock is not None
        first = tracked.accepted
        rest = tracked.plan.events[first:]
        tracked.flushed = len(tracked.due)
        for event in rest:
            stamp(event, datetime.fromtimestamp(self._clock.seconds() + tracked.shift, UTC))
        try:
            stored = self._outbox.add_many(rest, wait=True)
        except OutboxFull:
            self.log.error(
                "{count} events of paced scenario run {scenario_id} found the outbox full at shutdown",
                event="scenario.paced_dropped",
                count=len(rest),
                scenario_id=tracked.plan.scenario_id,
            )
            return

        def accepted(entries: list[Entry]) -> None:
            for i, entry in enumerate(entries):
                self._accepted(entry, tracked, first + i)

        stored.addCallback(accepted)


class RunStore:
    """The paced runs a stop left unfinished, as one JSON file next to the spool (written at stop, read
    and emptied at start): their remaining schedule, events and expectation."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        runs: list[dict[str, Any]] = data["runs"]
        return runs

    def save(self, runs: list[dict[str, Any]]) -> None:
        """Replace the file at once (a crash leaves the old one or the new one, never half of one)."""
        if not runs and not os.path.exists(self.path):
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "runs": runs}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)


def _on_confirm(entry: Entry, tracked: Tracked, index: int) -> None:
    """Note the broker's confirm of the run's index-th event (passing the result on to other waiters)."""

    def confirmed(result: Any) -> Any:
        tracked.confirmed.add(index)
        return result

    if entry.confirmed is not None:
        entry.confirmed.addCallback(confirmed)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
