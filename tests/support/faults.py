"""The fault scenarios, shared by tests/test_faults.py, tests/test_cluster.py and bench/soak.py.

A scenario starts the service (twistd.py) against a private node (broker.py), puts load on
it, injects one fault, waits for recovery, puts load on it again, and then counts by event_id what
arrived. Its size is a number of events sent (answered 202 by the API, plus generated ones as the
service counts them) before the fault and in all, so the same code runs the quick test and the soak.

  stop_app         rabbitmqctl stop_app for 10 s, then start_app
  network_cut      a proxy between service and node cuts every connection and refuses new ones for 5 s
  sigterm_restart  SIGTERM mid-load (exit code 0 expected), then a restart on the same spool
  sigkill_restart  SIGKILL mid-load with a backlog held by a memory alarm, then a restart on the same spool
  memory_alarm     the node's memory alarm (watermark 0) for 5 s, then watermark 0.4
  steady           no fault: steady load for a given time, sampling the service's RSS (for the soak)
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.support.broker import PrivateBroker
from tests.support.load import Load
from tests.support.net import HOST
from tests.support.proxy import Proxy
from tests.support.tally import Collector, Received, Tally, summary, tally
from tests.support.twistd import NO_ANSWER, Service
from tests.support.waiting import poll

RECOVERY_LIMIT = 5.0  # seconds from the end of a fault to /healthz 200 ("within a few seconds")
RECOVERY_WAIT = 40.0  # how long to wait for it anyway, so the scenario still counts its events
DETECTION_LIMIT = 3.0  # seconds from the start of an outage to /healthz 503
STOP_WAIT = 30.0  # how long a signalled service may take to exit


class Scenario:
    """One service (one run, or two across a restart) under load, and the final accounting."""

    def __init__(
        self,
        reactor: Any,
        name: str,
        node: PrivateBroker,
        workdir: Path,
        *,
        events_before: int,
        events_total: int,
        spool: bool = False,
        proxy: bool = False,
        collect: bool = False,
        clients: int = 6,
        rate: float = 300.0,
        interval: float = 0.004,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.node = node
        self.events_before = events_before
        self.events_total = events_total
        self.queue = f"faults-{name}-{uuid.uuid4().hex[:8]}"
        self.proxy = Proxy(reactor, HOST, node.port) if proxy else None
        if self.proxy is not None:
            self.proxy.listen()
        workdir.mkdir(parents=True, exist_ok=True)
        self.service = Service(
            reactor,
            rabbitmq_port=self.proxy.port if self.proxy is not None else node.port,
            queue=self.queue,
            workdir=workdir,
            spool_dir=workdir / "spool" if spool else None,
            interval=interval,
        )
        self.load = Load(reactor, self.service.url, clients=clients, rate=rate)
        self.collector = Collector(node.connection, self.queue) if collect else None
        self.began = reactor.seconds()
        self.generated_earlier = 0.0  # generated events counted by runs before the current one
        self.must_arrive: set[str] = set()  # event_ids found in the spool after a run stopped
        self.notes: dict[str, Any] = {}
        self.recovery: float | None = None
        self.problems: list[str] = []  # checks that failed on the way, reported after the counting
        self.rss_kib: list[int] = []
        self.result: Tally | None = None

    # -- phases -------------------------------------------------------------------------------

    async def begin(self) -> None:
        """Start the service (and the collector) and put load on it until events_before were sent."""
        if self.collector is not None:
            self.collector.start()
        self.notes["start_seconds"] = round(await self.service.start(), 2)
        self.load.start()
        await self.phase("before", self.events_before)

    async def sent(self) -> int:
        """Events sent so far: answered 202, plus generated as counted by the service (all runs)."""
        metrics = self.service.last_metrics
        if self.service.running():
            with contextlib.suppress(*NO_ANSWER):  # starting or stopping: the last scrape will do
                metrics = await self.service.metrics()
        generated = metrics.accepted()[1] if metrics is not None else 0.0
        return int(len(self.load.accepted) + self.generated_earlier + generated)

    async def phase(self, name: str, until_sent: int) -> None:
        """Label the load's answers with this phase and wait until until_sent events were sent in all."""
        self.load.phase = name

        async def enough() -> bool:
            if self.service.exit_code() is not None:
                raise AssertionError(f"the service exited ({self.service.exit_code()}) during {name}")
            return (await self.sent()) >= until_sent

        deadline = 120 + until_sent / 100  # generous: at least ~300 events/s are generated and posted
        # Each check scrapes /metrics: a few times a second is enough and costs the service little.
        await poll(self.reactor, enough, deadline, f"{until_sent} events sent ({name} the fault)", every=0.25)

    async def outage(self, seconds: float, blocked: bool = False) -> None:
        """Sample /healthz for the fault's duration; it must turn 503 soon and stay so.

        With blocked (a memory alarm), the 503 must also say "rabbitmq_blocked": true.
        """
        self.load.phase = "during"
        start = self.reactor.seconds()
        samples: list[tuple[float, int | None]] = []
        bodies: list[dict[str, Any]] = []
        while self.reactor.seconds() - start < seconds:
            answer = await self.service.health()
            samples.append((self.reactor.seconds() - start, None if answer is None else answer[0]))
            if answer is not None:
                bodies.append(answer[1])
            await deferLater(self.reactor, 0.2, lambda: None)
        codes = [code for _, code in samples]
        self.notes["outage_healthz"] = runs(codes)
        if bodies:
            self.notes["outage_healthz_body"] = bodies[len(bodies) // 2]
        if blocked and not any(b.get("rabbitmq_blocked") is True for b in bodies):
            self.problems.append('/healthz never said "rabbitmq_blocked": true during the memory alarm')
        first = next((t for t, code in samples if code == 503), None)
        if first is None:
            self.problems.append(f"/healthz never answered 503 during the outage: {runs(codes)}")
            return
        self.notes["detected_after_seconds"] = round(first, 2)
        if first > DETECTION_LIMIT:
            self.problems.append(f"/healthz took {first:.1f} s to answer 503: {runs(codes)}")
        if 200 in [code for t, code in samples if t >= first]:
            self.problems.append(f"/healthz answered 200 during the outage: {runs(codes)}")

    async def recovered(self) -> None:
        """Wait for /healthz 200 after the fault ended, and note how long it took (checked at the end)."""
        start = self.reactor.seconds()
        await self.service.wait_health(200, RECOVERY_WAIT)
        self.recovery = self.reactor.seconds() - start
        self.notes["recovered_after_seconds"] = round(self.recovery, 2)

    async def stop_mid_load(self, sig: signal.Signals) -> int:
        """Scrape, signal, and watch /healthz until the run exits: it must not say 200 once going."""
        await self.service.metrics()
        self.load.phase = "during"
        self.service.send(sig)
        codes: list[int | None] = []
        deadline = self.reactor.seconds() + STOP_WAIT
        while self.service.running() and self.reactor.seconds() < deadline:
            codes.append(await self.service.health_code())
            await deferLater(self.reactor, 0.05, lambda: None)
        exit_code = await self.service.wait_exit(1)  # fails here if it outlived STOP_WAIT
        self.notes["stopping_healthz"] = runs(codes)
        if 200 in codes[1:]:
            self.problems.append(f"/healthz answered 200 while the service was stopping: {runs(codes)}")
        self.notes.setdefault("exit_codes", []).append(exit_code)
        # What this run counted (up to its last scrape) and what it left in the spool, which must arrive.
        assert self.service.last_metrics is not None
        self.generated_earlier += self.service.last_metrics.accepted()[1]
        left = await deferToThread(self.service.spool_ids)
        self.notes.setdefault("spool_left_by_run", []).append(len(left))
        self.must_arrive.update(left)
        return exit_code

    async def restart(self) -> None:
        """Start again on the same spool and wait for /healthz 200, noting what it said before."""
        start = self.reactor.seconds()
        self.service.spawn()
        seen: list[int | None] = []

        async def healthy() -> bool:
            if self.service.exit_code() is not None:
                raise AssertionError(f"the restarted service exited:\n{self.service.log_tail()}")
            code = await self.service.health_code()
            seen.append(code)
            return code == 200

        await poll(self.reactor, healthy, 60, "/healthz 200 after the restart")
        self.recovery = self.reactor.seconds() - start
        self.notes["restart_seconds"] = round(self.recovery, 2)
        self.notes["restart_healthz"] = runs(seen)

    async def steady(self, seconds: float, every: float) -> None:
        """No fault: keep the load on for that long, sampling the service's RSS."""
        self.load.phase = "steady"
        start = self.reactor.seconds()
        while self.reactor.seconds() - start < seconds:
            rss = self.service.rss_kib()
            if rss is not None:
                self.rss_kib.append(rss)
            await deferLater(self.reactor, every, lambda: None)
        self.notes["rss_kib"] = summary(self.rss_kib)

    async def finish(self) -> Tally:
        """Load after the fault (events_total in all, and at least half as many as before it), then stop
        the load, let the outbox drain, stop the service, consume the queue and count."""
        await self.phase("after", max(self.events_total, await self.sent() + self.events_before // 2))
        await self.load.stop()

        async def outbox_empty() -> bool:
            return (await self.service.outbox_depth()) == 0

        await poll(self.reactor, outbox_empty, 120, "the outbox to drain (healthz outbox_depth 0)")
        metrics = await self.service.metrics()
        triggered, generated = metrics.accepted()
        self.notes["service_counted_triggered_last_run"] = int(triggered)
        if metrics.overflowed():
            self.notes["metrics_overflow_events"] = int(metrics.overflowed())  # the split is then rough
        exit_code = await self.service.terminate()
        self.notes.setdefault("exit_codes", []).append(exit_code)
        left = await deferToThread(self.service.spool_ids)
        received = await self._received()
        self.notes["seconds"] = round(self.reactor.seconds() - self.began, 1)
        if exit_code != 0:
            self.problems.append(f"the final SIGTERM exited {exit_code}, not 0")
        if self.recovery is not None and self.recovery > RECOVERY_LIMIT:
            self.problems.append(
                f"/healthz took {self.recovery:.1f} s after the fault ended to answer 200 again "
                f"(limit {RECOVERY_LIMIT} s)"
            )
        self.notes["problems"] = self.problems
        self.result = tally(
            self.name,
            received,
            self.load,
            self.generated_earlier + generated,
            spool_ids=self.must_arrive,
            left_in_spool=left,
            notes=self.notes,
        )
        return self.result

    async def _received(self) -> Received:
        """Everything in the queue: what the collector took (if any) and then the rest, then delete it."""
        if self.collector is not None:

            def drained() -> bool:
                conn = self.node.connection()
                try:
                    count: int = conn.channel().queue_declare(self.queue, passive=True).method.message_count
                finally:
                    conn.close()
                return count == 0

            await poll(self.reactor, lambda: deferToThread(drained), 300, "the collector to empty the queue")
            await deferToThread(self.collector.stop)
            received = self.collector.received
            self.notes["collector"] = {
                "reconnects": self.collector.reconnects,
                "redeliveries_ignored": received.consumer_redeliveries,
            }
        else:
            received = Received()
        for body in await deferToThread(self.node.consume_all, self.queue):
            received.add(body)
        await deferToThread(self.node.delete_queue, self.queue)
        return received

    async def close(self) -> None:
        """Whatever happened: stop the load, the service, the collector, the proxy."""
        try:
            await self.load.stop()
        finally:
            self.service.cleanup()
            if self.collector is not None:
                await deferToThread(self.collector.stop)
            if self.proxy is not None:
                await self.proxy.close()

    # -- verdict ------------------------------------------------------------------------------

    def failures(self) -> list[str]:
        """Every check that failed, with the evidence: lost events first, then the health checks."""
        result = self.result
        if result is None:
            return ["the scenario did not finish"]
        log = self.service.log_text()
        interesting = [
            line
            for line in log.splitlines()
            if any(w in line for w in ("lost", "not confirmed", "Traceback", "rror", "dropped", "spool"))
        ]
        evidence = "\n".join(interesting[-30:])
        found: list[str] = []
        if result.lost_api:
            found.append(
                f"{result.lost_api} events answered 202 never arrived, e.g. {result.lost_api_ids[:5]}; "
                f"by phase: {self._phases(result.lost_api_ids)}"
            )
        if result.lost_spool:
            found.append(
                f"{result.lost_spool} of the {result.spool_ids} events left in the spool never arrived, "
                f"e.g. {result.lost_spool_ids[:5]}"
            )
        if result.lost_generated:
            found.append(
                f"the service counted {result.generated_counted} generated events, only "
                f"{result.generated_received} distinct ones arrived"
            )
        found += self.problems
        if found and evidence:
            found.append(f"service log ({self.service.log_path}):\n{evidence}")
        return found

    def _phases(self, ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for i in ids:
            counts[self.load.accepted[i]] = counts.get(self.load.accepted[i], 0) + 1
        return counts

    def report(self) -> str:
        """The figures, for print."""
        assert self.result is not None
        r = self.result
        return (
            f"[faults] {r.line()}\n[faults]   {json.dumps(r.notes)}\n"
            f"[faults]   load answers: {json.dumps(r.statuses)}; accepted by phase {r.by_phase}"
        )


def runs(codes: list[int | None]) -> str:
    """A compact picture of healthz samples: 200x3 503x12 nonex2 (none: nothing answered)."""
    out: list[str] = []
    last: int | str | None = "start"
    n = 0
    for code in [*codes, "end"]:
        if code == last:
            n += 1
            continue
        if last != "start":
            out.append(f"{last or 'none'}x{n}")
        last, n = code, 1
    return " ".join(out)


# -- the faults: what happens between the "before" phase and the "after" phase ----------------------


SIGKILL_BACKLOG = 300  # events accepted but not confirmed when the service is killed


async def _stop_app(s: Scenario) -> None:
    await s.node.stop_app()
    try:
        await s.outage(10.0)
    finally:
        await s.node.start_app()
    await s.recovered()


async def _network_cut(s: Scenario) -> None:
    assert s.proxy is not None
    await s.proxy.refuse()
    s.proxy.cut()
    try:
        await s.outage(5.0)
    finally:
        s.proxy.listen()
    await s.recovered()


async def _sigterm_restart(s: Scenario) -> None:
    exit_code = await s.stop_mid_load(signal.SIGTERM)
    if exit_code != 0:
        s.problems.append(f"SIGTERM mid-load exited {exit_code}, not 0:\n{s.service.log_tail()}")
    await s.restart()


async def _sigkill_restart(s: Scenario) -> None:
    # Hold the broker's confirms first (a memory alarm), so that the process dies with a backlog of
    # accepted, unconfirmed events on disk: the spool, not a quick broker, must carry them over.
    await s.node.memory_alarm(True)
    try:

        async def backlog() -> bool:
            answer = await s.service.health()
            return answer is not None and answer[1].get("outbox_depth", 0) >= SIGKILL_BACKLOG

        await poll(s.reactor, backlog, 30, f"a backlog of {SIGKILL_BACKLOG} events before the kill")
        exit_code = await s.stop_mid_load(signal.SIGKILL)
    finally:
        await s.node.memory_alarm(False)
    assert exit_code == -signal.SIGKILL, exit_code
    await s.restart()


async def _memory_alarm(s: Scenario) -> None:
    await s.node.memory_alarm(True)
    try:
        await s.outage(5.0, blocked=True)
    finally:
        await s.node.memory_alarm(False)
    await s.recovered()


@dataclass(frozen=True)
class Fault:
    inject: Callable[[Scenario], Awaitable[None]]
    spool: bool = False
    proxy: bool = False


FAULTS: dict[str, Fault] = {
    "stop_app": Fault(_stop_app),
    "network_cut": Fault(_network_cut, proxy=True),
    "sigterm_restart": Fault(_sigterm_restart, spool=True),
    "sigkill_restart": Fault(_sigkill_restart, spool=True),
    "memory_alarm": Fault(_memory_alarm),
}


def fault_scenario(
    reactor: Any, name: str, node: PrivateBroker, workdir: Path, *, events_total: int, **options: Any
) -> Scenario:
    """The scenario of one fault, not started: half the events before the fault, the rest after."""
    fault = FAULTS[name]
    return Scenario(
        reactor,
        name,
        node,
        workdir,
        events_before=events_total // 2,
        events_total=events_total,
        spool=fault.spool,
        proxy=fault.proxy,
        **options,
    )


async def run(s: Scenario) -> Scenario:
    """Run a fault scenario from start to tally, and close it whatever happens."""
    try:
        await s.begin()
        await FAULTS[s.name].inject(s)
        await s.finish()
    finally:
        await s.close()
    return s


async def run_fault(
    reactor: Any, name: str, node: PrivateBroker, workdir: Path, *, events_total: int, **options: Any
) -> Scenario:
    """One fault scenario from start to tally."""
    return await run(fault_scenario(reactor, name, node, workdir, events_total=events_total, **options))
