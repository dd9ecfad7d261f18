"""Ground truth: what each scenario run should make a detection pipeline find, for scoring its rules.

Each run is counted (``audit_events_generator_scenarios_total``) and, with AUDITGEN_GROUND_TRUTH_QUEUE set,
its record goes through an outbox of its own to a publisher of its own in confirm mode: the same delivery
guarantee as events (with a spool, on disk first; leaves only on the broker's ack). A record is handed over
only once the scenario's events were accepted, and one the outbox cannot take yet waits and is retried.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.metrics import Metrics
from auditgen.outbox import Outbox, OutboxFull
from auditgen.scenarios import Run

RECORD_TYPE = "scenario_ground_truth"  # the record's event_type, and its AMQP `type`
RETRY_SECONDS = 1.0  # a record the outbox could not take is offered again after this


def record(run: Run) -> dict[str, Any]:
    """The ground-truth record of a run.

    Shaped like an event envelope where consumers look (event_id, which is the scenario_id and the AMQP
    message_id, so duplicates of an at-least-once delivery are recognised; event_type), then the run.
    """
    return {
        "event_id": run.scenario_id,
        "event_type": RECORD_TYPE,
        "scenario": run.scenario,
        "scenario_id": run.scenario_id,
        "origin": run.origin,
        "parameters": run.parameters,
        "event_ids": run.expected["event_ids"],
        "window": run.expected["window"],
        "expected": run.expected,
    }


class GroundTruth(Service):
    """Counts scenario runs and, given an outbox bound to the ground-truth queue, publishes their records."""

    log = Logger()

    def __init__(self, metrics: Metrics, clock: IReactorTime, outbox: Outbox | None = None) -> None:
        self._metrics = metrics
        self._clock = clock
        self.outbox = outbox
        self._pending: deque[dict[str, Any]] = deque()
        self._retry: IDelayedCall | None = None

    @property
    def full(self) -> bool:
        """No room for a record: the API refuses a scenario rather than run one it cannot report."""
        return self.outbox is not None and (self.outbox.full or bool(self._pending))

    def report(self, run: Run) -> None:
        """The run's events were accepted: count it and publish its record."""
        self._metrics.scenarios.labels(run.scenario, run.origin).inc()
        if self.outbox is not None:
            self._pending.append(record(run))
            self._flush()

    def _flush(self) -> None:
        """Hand the waiting records to the outbox, in order; what does not fit is retried later.

        Runs from a delayed call too, so every error is caught and leads to another try. A record whose
        store fails joins the end of the line for the next try, not this one (a store that fails at once
        would otherwise be retried without end).
        """
        assert self.outbox is not None
        try:
            for _ in range(len(self._pending)):
                stored = self.outbox.add(self._pending[0])
                rec = self._pending.popleft()
                stored.addErrback(self._not_stored, rec)
        except OutboxFull:
            self._later()
        except Exception:
            self.log.failure(
                "could not hand a ground-truth record to its outbox", event="ground_truth.handoff_failed"
            )
            self._later()

    def _not_stored(self, failure: Failure, rec: dict[str, Any]) -> None:
        self.log.failure(
            "a ground-truth record could not be stored; retrying", failure, event="ground_truth.store_failed"
        )
        self._pending.append(rec)
        self._later()

    def _later(self) -> None:
        if self.running and (self._retry is None or not self._retry.active()):
            self._retry = self._clock.callLater(RETRY_SECONDS, self._flush)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._pending:
            self.log.error(
                "{count} ground-truth records were never accepted by their outbox",
                event="ground_truth.dropped",
                count=len(self._pending),
            )
