"""The final count: what a run sent (202s, generated events the service counted, spool leftovers) against
what reached the queue, by event_id, so that what was lost and what arrived twice can be told.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pika
import pika.exceptions

from tests.support.load import Load

GENERATED = "audit-event-generator"  # source_service of the service's own generated events
TRIGGERED = "audit-event-generator-api"  # source_service of events posted to /generate_event


@dataclass
class Tally:
    """What one scenario sent and what reached the queue, by event_id."""

    scenario: str
    api_accepted: int  # answered 202 (success or queued)
    generated_counted: int  # the service's own count of generated events it accepted
    received: int  # messages consumed
    distinct: int
    lost_api: int  # answered 202, never received
    lost_generated: int  # generated_counted minus distinct generated events received, if positive
    spool_ids: int  # event_ids found in the spool after a stop (these must arrive)
    lost_spool: int
    duplicated: int  # event_ids received more than once
    duplicate_copies: int  # extra copies in all
    unanswered_received: int  # triggered events received that we never got a 202 for (in doubt)
    left_in_spool: int  # rows still in the spool after the final clean stop (published on a next start)
    left_in_spool_not_received: int  # of those, the ones that never reached the queue
    generated_received: int
    statuses: dict[str, int] = field(default_factory=dict)
    by_phase: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    lost_api_ids: list[str] = field(default_factory=list)
    lost_spool_ids: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.api_accepted + self.generated_counted

    @property
    def lost(self) -> int:
        return self.lost_api + self.lost_generated + self.lost_spool

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sent"] = self.sent
        d["lost"] = self.lost
        d["lost_api_ids"] = self.lost_api_ids[:50]
        d["lost_spool_ids"] = self.lost_spool_ids[:50]
        return d

    def line(self) -> str:
        return (
            f"{self.scenario}: sent {self.sent} (API 202: {self.api_accepted}, generated: "
            f"{self.generated_counted}), received {self.received} ({self.distinct} distinct), "
            f"lost {self.lost} (API {self.lost_api}, generated {self.lost_generated}, spool {self.lost_spool}"
            f" of {self.spool_ids}), duplicated {self.duplicated} ids ({self.duplicate_copies} extra copies)"
            + (
                f"; {self.left_in_spool} left in the spool after the final clean stop "
                f"({self.left_in_spool - self.left_in_spool_not_received} of them already delivered)"
                if self.left_in_spool
                else ""
            )
        )


class Received:
    """What was consumed from the queue, by event_id (ids and sources only, so a soak can hold millions)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.generated: set[str] = set()
        self.triggered: set[str] = set()
        self.messages = 0
        self.consumer_redeliveries = 0

    @classmethod
    def of(cls, bodies: Iterable[bytes]) -> Received:
        received = cls()
        for body in bodies:
            received.add(body)
        return received

    def add(self, body: bytes, redelivered: bool = False) -> None:
        """One message; a redelivery of an id we already counted is our consumer's doing, not a duplicate."""
        event = json.loads(body)
        event_id = event["event_id"]
        if redelivered and event_id in self.counts:
            self.consumer_redeliveries += 1
            return
        self.messages += 1
        self.counts[event_id] += 1
        if event["source_service"] == GENERATED:
            self.generated.add(event_id)
        elif event["source_service"] == TRIGGERED:
            self.triggered.add(event_id)


class Collector:
    """Consumes a queue in a thread while the scenario runs, so a long soak keeps the queue short.

    Manual acks, one per message after it is counted, and reconnection when the broker goes away (a
    stop_app fault): what the broker redelivers after a lost ack is recognised and not counted twice.
    """

    def __init__(self, connect: Callable[[], pika.BlockingConnection], queue: str) -> None:
        self._connect = connect
        self._queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"collector-{queue}", daemon=True)
        self._lock = threading.Lock()
        self.received = Received()
        self.reconnects = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocking (call it in a thread): stop consuming and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except pika.exceptions.AMQPError as e:
                self.last_error = repr(e)
                self._stop.wait(0.5)  # the broker is away (a fault); try again shortly
                continue
            try:
                channel = conn.channel()
                channel.queue_declare(self._queue, durable=True)
                channel.basic_qos(prefetch_count=500)

                def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
                    with self._lock:
                        self.received.add(body, redelivered=bool(method.redelivered))
                    ch.basic_ack(method.delivery_tag)

                channel.basic_consume(self._queue, on_message)
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=0.2)
            except pika.exceptions.AMQPError as e:
                self.last_error = repr(e)
                self.reconnects += 1
            finally:
                with contextlib.suppress(Exception):
                    if conn.is_open:
                        conn.close()


def tally(
    scenario: str,
    received: Received,
    load: Load,
    generated_counted: float,
    spool_ids: Iterable[str] = (),
    left_in_spool: Iterable[str] = (),
    notes: dict[str, Any] | None = None,
) -> Tally:
    """Compare what the queue held with what was accepted."""
    counts = received.counts
    lost_api = sorted(set(load.accepted) - counts.keys())
    spool = set(spool_ids)
    lost_spool = sorted(spool - counts.keys())
    left = set(left_in_spool)
    generated = len(received.generated)
    return Tally(
        scenario=scenario,
        api_accepted=len(load.accepted),
        generated_counted=int(generated_counted),
        received=received.messages,
        distinct=len(counts),
        lost_api=len(lost_api),
        lost_generated=max(0, int(generated_counted) - generated),
        spool_ids=len(spool),
        lost_spool=len(lost_spool),
        duplicated=sum(1 for c in counts.values() if c > 1),
        duplicate_copies=sum(c - 1 for c in counts.values() if c > 1),
        unanswered_received=len(received.triggered - load.accepted.keys()),
        left_in_spool=len(left),
        left_in_spool_not_received=len(left - counts.keys()),
        generated_received=generated,
        statuses=dict(load.statuses),
        by_phase=dict(load.by_phase),
        notes=notes or {},
        lost_api_ids=lost_api,
        lost_spool_ids=lost_spool,
    )


def summary(samples: list[int]) -> dict[str, float]:
    """min / median / max of a list of samples."""
    if not samples:
        return {}
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}
