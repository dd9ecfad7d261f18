"""The service as a black box: a `twistd -n auditgen` subprocess, a load driver, and the final tally.

`Service` runs the installed twistd plugin (the twistd next to this Python) on free ports, with its log in
a file, and can probe /healthz, scrape /metrics, send SIGTERM or SIGKILL, wait for the exit, start it
again with the same spool, read its RSS and the event_ids left in its spool file.

`Load` posts events from a few keep-alive clients at a steady total rate and records every event_id
answered 202, so that `tally` can tell, from everything consumed from the queue, what was lost and what
arrived more than once. Everything here runs on the Twisted reactor and is usable outside pytest.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.error import ConnectError, ConnectingCancelledError, TimeoutError
from twisted.internet.task import deferLater
from twisted.web.client import (
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from auditgen.metrics import OVERFLOW
from auditgen.spool import FILENAME
from tests.broker import HOST, free_port, poll

TWISTD = str(Path(sys.executable).parent / "twistd")
GENERATED = "audit-event-generator"  # source_service of the service's own generated events
TRIGGERED = "audit-event-generator-api"  # source_service of events posted to /generate_event
LOAD_HOSTNAME = "fault-load.test"  # server_hostname of our posted events, so the metrics tell them apart
EVENTS_TOTAL = "audit_events_generator_events_total"
JSON_HEADERS: dict[bytes | str, bytes | str] = {b"content-type": b"application/json"}


# What a probe of a service that is starting, stopping or gone raises.
NO_ANSWER = (
    ConnectError,
    ConnectingCancelledError,
    ResponseFailed,
    ResponseNeverReceived,
    TimeoutError,
    CancelledError,
)


class ServiceError(RuntimeError):
    """The service exited when it should not have, or did not become healthy."""


class Metrics:
    """One scrape of the service's /metrics, as samples."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of that name whose labels include the given ones."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def overflowed(self) -> float:
        """Events counted under the overflow label set (beyond --metrics-max-series): not attributable."""
        return self.total(EVENTS_TOTAL, server_hostname=OVERFLOW)

    def accepted(self) -> tuple[float, float]:
        """(triggered by our load, generated): events_total split by our load's server_hostname.

        Exact while events_total has fewer label sets than --metrics-max-series (the generator makes a
        few hundred); overflowed() says when it is not.
        """
        everything = self.total(EVENTS_TOTAL)
        ours = self.total(EVENTS_TOTAL, server_hostname=LOAD_HOSTNAME)
        return ours, everything - ours


class Service:
    """`twistd -n auditgen` as a subprocess on free ports; one Popen per run, all logging to one file."""

    def __init__(
        self,
        reactor: Any,
        *,
        rabbitmq_port: int,
        queue: str,
        workdir: Path,
        spool_dir: Path | None = None,
        interval: float = 0.004,
        connect_timeout: float = 2,
        shutdown_timeout: float = 10,
        extra_args: Iterable[str] = (),
    ) -> None:
        self._reactor = reactor
        self.rabbitmq_port = rabbitmq_port
        self.queue = queue
        self.workdir = workdir
        self.spool_dir = spool_dir
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.shutdown_timeout = shutdown_timeout
        self.extra_args = list(extra_args)
        self.app_port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.last_metrics: Metrics | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.app_port}"

    def command(self) -> list[str]:
        args = [
            TWISTD, "-n", "--pidfile=", "auditgen",
            f"--app-port={self.app_port}", f"--prometheus-port={self.metrics_port}",
            f"--rabbitmq-host={HOST}", f"--rabbitmq-port={self.rabbitmq_port}",
            f"--rabbitmq-queue={self.queue}", f"--interval={self.interval}",
            f"--connect-timeout={self.connect_timeout}", f"--shutdown-timeout={self.shutdown_timeout}",
        ]  # fmt: skip
        if self.spool_dir is not None:
            args.append(f"--spool-dir={self.spool_dir}")
        return args + self.extra_args

    # -- lifecycle ----------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start a run (the same ports and spool every time), without waiting for it."""
        if self.process is not None and self.process.poll() is None:
            raise ServiceError("the service is already running")
        self.runs += 1
        self.last_metrics = None
        with open(self.log_path, "ab") as log:
            log.write(f"===== run {self.runs}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C for the driver must not reach it behind our back
            )

    async def start(self, timeout: float = 60.0) -> float:
        """Start a run and wait until /healthz answers 200; the seconds that took."""
        began = self._reactor.seconds()
        self.spawn()
        await self.wait_health(200, timeout)
        return float(self._reactor.seconds() - began)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code of the current run (negative: killed by that signal)."""
        process = self.process
        assert process is not None
        await poll(self._reactor, lambda: process.poll() is not None, timeout, "the service to exit")
        assert process.returncode is not None
        return process.returncode

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and the exit code."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> int:
        """SIGKILL, and the exit code."""
        self.send(signal.SIGKILL)
        return await self.wait_exit(10)

    def cleanup(self) -> None:
        """Synchronous last resort (finally blocks, atexit, Ctrl-C): kill the run if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    # -- probes -------------------------------------------------------------------------------

    async def health(self) -> tuple[int, dict[str, Any]] | None:
        """(code, body) of /healthz, or None when nothing answers."""
        try:
            response = await treq.get(f"{self.url}/healthz", persistent=False, timeout=5)
            body = json.loads(await response.text())
        except NO_ANSWER:
            return None
        return response.code, body

    async def health_code(self) -> int | None:
        answer = await self.health()
        return None if answer is None else answer[0]

    async def wait_health(self, code: int, timeout: float) -> None:
        """Wait until /healthz answers with that code; fail at once if the run exits."""

        async def check() -> bool:
            if not self.running():
                raise ServiceError(f"the service exited ({self.exit_code()}):\n{self.log_tail()}")
            return (await self.health_code()) == code

        await poll(self._reactor, check, timeout, f"/healthz to answer {code}")

    async def outbox_depth(self) -> int | None:
        answer = await self.health()
        return None if answer is None else int(answer[1]["outbox_depth"])

    async def metrics(self) -> Metrics:
        """Scrape the metrics port; the scrape is also kept as last_metrics."""
        response = await treq.get(f"http://{HOST}:{self.metrics_port}/metrics", persistent=False, timeout=5)
        self.last_metrics = Metrics(await response.text())
        return self.last_metrics

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def rss_kib(self) -> int | None:
        """The run's resident set size, from /proc/<pid>/status."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def spool_ids(self) -> list[str]:
        """The event_ids left in the spool file, read-only; only while no run has it open."""
        if self.spool_dir is None:
            return []
        path = self.spool_dir / FILENAME
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute("SELECT event_id FROM events")]
        finally:
            conn.close()


class Load:
    """Clients posting events over keep-alive connections at a steady total rate, until stopped.

    Each client waits for its answer before the next request (a slow answer, such as the 1 s "queued"
    one while the broker is away, slows that client down). A 202 records the event_id; a 503 or a
    refused connection is counted and not accepted; a request whose answer never came (the service
    died under it) is "in doubt": the event may or may not have been accepted.
    """

    def __init__(self, reactor: Any, url: str, clients: int = 6, rate: float = 300.0) -> None:
        self._reactor = reactor
        self._url = f"{url}/generate_event"
        self._clients = clients
        self._period = clients / rate
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = clients
        self._pool.retryAutomatically = False
        self._running = False
        self._loops: list[Deferred[None]] = []
        self.phase = "before"
        self.accepted: dict[str, str] = {}  # event_id -> phase
        self.statuses: Counter[str] = Counter()  # "202 success", "202 queued", "503", "refused", ...
        self.by_phase: Counter[str] = Counter()
        self.sent = 0

    def start(self) -> None:
        self._running = True
        self._loops = [ensureDeferred(self._client(n)) for n in range(self._clients)]

    def accepted_in(self, phase: str) -> int:
        return self.by_phase[phase]

    async def stop(self) -> None:
        """Stop posting, wait for the answers in flight, and close every connection."""
        self._running = False
        results = await DeferredList(self._loops, consumeErrors=True)
        await self._pool.closeCachedConnections()
        for ok, result in results:
            if not ok:
                result.raiseException()

    async def _client(self, n: int) -> None:
        seq = 0
        due = self._reactor.seconds()
        while self._running:
            now = self._reactor.seconds()
            if due > now:
                await deferLater(self._reactor, due - now, lambda: None)
                if not self._running:
                    break
            due = max(due + self._period, self._reactor.seconds())
            seq += 1
            body = json.dumps(
                {
                    "event_type": "user_login",
                    "server_hostname": LOAD_HOSTNAME,
                    "user_id": f"load-{n}",
                    "details": {"client": n, "seq": seq},
                }
            ).encode()
            await self._post(body)

    async def _post(self, body: bytes) -> None:
        phase = self.phase
        self.sent += 1
        try:
            response = await treq.post(
                self._url,
                data=body,
                headers=JSON_HEADERS,
                pool=self._pool,
                timeout=20,
            )
            text = await response.text()
        except (ConnectError, ConnectingCancelledError):
            self.statuses["refused"] += 1
            return
        except (RequestTransmissionFailed, RequestNotSent):
            self.statuses["not sent"] += 1  # the service never had the whole request
            return
        except (ResponseNeverReceived, ResponseFailed):
            self.statuses["in doubt"] += 1
            return
        except Exception as e:  # treq's timeout cancels the request
            self.statuses[f"error {type(e).__name__}"] += 1
            return
        if response.code == 202:
            answer = json.loads(text)
            self.accepted[answer["event_id"]] = phase
            self.by_phase[phase] += 1
            self.statuses[f"202 {answer['status']}"] += 1
        else:
            self.statuses[str(response.code)] += 1


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
