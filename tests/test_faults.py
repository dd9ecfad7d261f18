"""Faults under load: the broker goes away, the network is cut, the service is stopped or killed.

Each test runs the installed service (`twistd -n auditgen`) against a private RabbitMQ node shared by the
module (the shared broker on 5672 is never disturbed), posts events from a few keep-alive clients before,
during and after the fault while the service generates ~250 events/s of its own, and then checks, by
event_id, that every event answered 202 reached the queue, that at least as many generated events
arrived as the service counted, and that whatever a stop left in the spool arrived too. Each scenario's
sent/lost/duplicated figures are printed (pytest -s) and written to fault-results.json in pytest's base
temporary directory.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests import broker as broker_module
from tests.broker import PrivateBroker
from tests.conftest import reactor, wait_for
from tests.proxy import Proxy
from tests.service import Load, Service, Tally, tally

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_module.available(), reason="needs the RabbitMQ server scripts"),
]

PHASE_EVENTS = 1500  # events the load gets accepted before the fault and after recovery
RECOVERY_LIMIT = 5.0  # seconds from the end of a fault to /healthz 200 ("within a few seconds")
RECOVERY_WAIT = 40.0  # how long to wait for it anyway, so the scenario still counts its events
DETECTION_LIMIT = 3.0  # seconds from the start of an outage to /healthz 503


@pytest_twisted.async_yield_fixture(scope="module")
async def private_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateBroker]:
    """One private RabbitMQ node for the whole module; each test uses a fresh queue on it."""
    node = PrivateBroker(reactor, base_dir=tmp_path_factory.mktemp("broker"))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture(scope="module")
def results_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each scenario's figures go, one key per scenario."""
    path = tmp_path_factory.getbasetemp() / "fault-results.json"
    path.write_text("{}")
    return path


class Scenario:
    """One service run (or two, across a restart) under load, and the final accounting."""

    def __init__(
        self,
        name: str,
        node: PrivateBroker,
        workdir: Path,
        results_file: Path,
        *,
        spool: bool = False,
        proxy: Proxy | None = None,
    ) -> None:
        self.name = name
        self.node = node
        self.queue = f"faults-{name}-{uuid.uuid4().hex[:8]}"
        self.results_file = results_file
        self.proxy = proxy
        self.service = Service(
            reactor,
            rabbitmq_port=proxy.port if proxy is not None else node.port,
            queue=self.queue,
            workdir=workdir,
            spool_dir=workdir / "spool" if spool else None,
        )
        self.load = Load(reactor, self.service.url)
        self.began = reactor.seconds()
        self.generated_earlier = 0.0  # generated events counted by runs before the current one
        self.must_arrive: set[str] = set()  # event_ids found in the spool after a run stopped
        self.notes: dict[str, Any] = {}
        self.recovery: float | None = None
        self.problems: list[str] = []  # checks that failed on the way, reported after the counting

    async def begin(self) -> None:
        self.notes["start_seconds"] = round(await self.service.start(), 2)
        self.load.start()
        await self.phase("before")

    async def phase(self, name: str) -> None:
        """Switch the load's phase label and wait until that many events were accepted in it."""
        self.load.phase = name
        await wait_for(
            lambda: self.load.accepted_in(name) >= PHASE_EVENTS,
            timeout=60,
            what=f"{PHASE_EVENTS} events accepted {name} the fault",
        )

    async def outage(self, seconds: float, blocked: bool = False) -> list[int | None]:
        """Sample /healthz for the fault's duration; check it turned 503 and stayed so.

        With blocked (a memory alarm), the 503 must also say "rabbitmq_blocked": true.
        """
        start = reactor.seconds()
        samples: list[tuple[float, int | None]] = []
        bodies: list[dict[str, Any]] = []
        while reactor.seconds() - start < seconds:
            answer = await self.service.health()
            samples.append((reactor.seconds() - start, None if answer is None else answer[0]))
            if answer is not None:
                bodies.append(answer[1])
            await deferLater(reactor, 0.2, lambda: None)
        codes = [code for _, code in samples]
        if bodies:
            self.notes["outage_healthz_body"] = bodies[len(bodies) // 2]
        if blocked and not any(b.get("rabbitmq_blocked") is True for b in bodies):
            self.problems.append('/healthz never said "rabbitmq_blocked": true during the memory alarm')
        first = next((t for t, code in samples if code == 503), None)
        self.notes["outage_healthz"] = _runs(codes)
        if first is None:
            self.problems.append(f"/healthz never answered 503 during the outage: {_runs(codes)}")
            return codes
        self.notes["detected_after_seconds"] = round(first, 2)
        if first > DETECTION_LIMIT:
            self.problems.append(f"/healthz took {first:.1f} s to answer 503: {_runs(codes)}")
        if 200 in [code for t, code in samples if t >= first]:
            self.problems.append(f"/healthz answered 200 during the outage: {_runs(codes)}")
        return codes

    async def recovered(self) -> None:
        """Wait for /healthz 200 after the fault ended, and note how long it took (checked at the end)."""
        start = reactor.seconds()
        await self.service.wait_health(200, RECOVERY_WAIT)
        self.recovery = reactor.seconds() - start
        self.notes["recovered_after_seconds"] = round(self.recovery, 2)

    async def stopped_run(self, exit_code: int) -> None:
        """After a run ended: what it counted (its last scrape) and what it left in the spool."""
        self.notes.setdefault("exit_codes", []).append(exit_code)
        assert self.service.last_metrics is not None
        self.generated_earlier += self.service.last_metrics.accepted()[1]
        left = await deferToThread(self.service.spool_ids)
        self.notes.setdefault("spool_left_by_run", []).append(len(left))
        self.must_arrive.update(left)

    async def finish(self) -> Tally:
        """Stop the load, let the outbox drain, stop the service, consume the queue and count."""
        await self.load.stop()

        async def outbox_empty() -> bool:
            return (await self.service.outbox_depth()) == 0

        await wait_for(outbox_empty, timeout=60, what="the outbox to drain (healthz outbox_depth 0)")
        metrics = await self.service.metrics()
        triggered, generated = metrics.accepted()
        self.notes["service_counted_triggered_last_run"] = int(triggered)
        exit_code = await self.service.terminate()
        self.notes.setdefault("exit_codes", []).append(exit_code)
        left = await deferToThread(self.service.spool_ids)
        bodies = await deferToThread(self.node.consume_all, self.queue)
        await deferToThread(self.node.delete_queue, self.queue)
        self.notes["seconds"] = round(reactor.seconds() - self.began, 1)
        if exit_code != 0:
            self.problems.append(f"the final SIGTERM exited {exit_code}, not 0")
        if self.recovery is not None and self.recovery > RECOVERY_LIMIT:
            self.problems.append(
                f"/healthz took {self.recovery:.1f} s after the fault ended to answer 200 again "
                f"(limit {RECOVERY_LIMIT} s)"
            )
        self.notes["problems"] = self.problems
        result = tally(
            self.name,
            bodies,
            self.load,
            self.generated_earlier + generated,
            spool_ids=self.must_arrive,
            left_in_spool=left,
            notes=self.notes,
        )
        self.record(result)
        return result

    def record(self, result: Tally) -> None:
        print(f"\n[faults] {result.line()}\n[faults]   {json.dumps(result.notes)}")
        print(f"[faults]   load answers: {json.dumps(result.statuses)}; accepted by phase {result.by_phase}")
        everything = json.loads(self.results_file.read_text())
        everything[self.name] = result.as_dict()
        self.results_file.write_text(json.dumps(everything, indent=2))
        print(f"[faults]   figures in {self.results_file}")

    async def close(self) -> None:
        """Whatever happened: stop the load, the service, the proxy."""
        try:
            await self.load.stop()
        finally:
            self.service.cleanup()
            if self.proxy is not None:
                await self.proxy.close()

    def check(self, result: Tally) -> None:
        log = self.service.log_text()
        interesting = [
            line
            for line in log.splitlines()
            if any(w in line for w in ("lost", "not confirmed", "Traceback", "rror", "dropped", "spool"))
        ]
        evidence = "\n".join(interesting[-30:])
        assert result.lost_api == 0, (
            f"{result.lost_api} events answered 202 never arrived, e.g. {result.lost_api_ids[:5]}; "
            f"by phase: {_phases(self.load, result.lost_api_ids)}\nservice log:\n{evidence}"
        )
        assert result.lost_spool == 0, (
            f"{result.lost_spool} of the {result.spool_ids} events left in the spool never arrived, "
            f"e.g. {result.lost_spool_ids[:5]}\nservice log:\n{evidence}"
        )
        assert result.lost_generated == 0, (
            f"the service counted {result.generated_counted} generated events, only "
            f"{result.generated_received} distinct ones arrived\nservice log:\n{evidence}"
        )
        assert not self.problems, "\n".join(self.problems) + f"\nservice log:\n{evidence}"


def _runs(codes: list[int | None]) -> str:
    """A compact picture of healthz samples: 200x3 503x12 ..."""
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


def _phases(load: Load, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in ids:
        counts[load.accepted[i]] = counts.get(load.accepted[i], 0) + 1
    return counts


@pytest_twisted.ensureDeferred
async def test_broker_app_stopped_for_10_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """rabbitmqctl stop_app for 10 s then start_app: 503 during, 200 after, nothing answered 202 lost."""
    s = Scenario("stop_app", private_broker, tmp_path, results_file)
    try:
        await s.begin()
        s.load.phase = "during"
        await private_broker.stop_app()
        try:
            await s.outage(10.0)
        finally:
            await private_broker.start_app()
        await s.recovered()
        await s.phase("after")
        result = await s.finish()
    finally:
        await s.close()
    s.check(result)


@pytest_twisted.ensureDeferred
async def test_network_cut_and_refused_for_5_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """A proxy drops every connection without a close and refuses new ones for 5 s; nothing is lost."""
    proxy = Proxy(reactor, broker_module.HOST, private_broker.port)
    proxy.listen()
    s = Scenario("network_cut", private_broker, tmp_path, results_file, proxy=proxy)
    try:
        await s.begin()
        s.load.phase = "during"
        await proxy.refuse()
        proxy.cut()
        try:
            await s.outage(5.0)
        finally:
            proxy.listen()
        await s.recovered()
        await s.phase("after")
        result = await s.finish()
    finally:
        await s.close()
    s.check(result)


@pytest_twisted.ensureDeferred
async def test_sigterm_under_load_then_restart_on_the_same_spool(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """SIGTERM mid-load exits 0; the restarted service publishes what the spool kept; nothing is lost."""
    s = Scenario("sigterm_restart", private_broker, tmp_path, results_file, spool=True)
    try:
        await s.begin()
        await s.service.metrics()
        s.load.phase = "during"
        s.service.send(signal.SIGTERM)
        exit_code, codes = await _watch_until_exit(s)
        if exit_code != 0:
            s.problems.append(f"SIGTERM mid-load exited {exit_code}, not 0")
        await s.stopped_run(exit_code)
        await _restart(s, codes)
        await s.phase("after")
        result = await s.finish()
    finally:
        await s.close()
    s.check(result)


@pytest_twisted.ensureDeferred
async def test_sigkill_under_load_then_restart_on_the_same_spool(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """SIGKILL mid-load; every event in the spool and every 202 arrives after the restart."""
    s = Scenario("sigkill_restart", private_broker, tmp_path, results_file, spool=True)
    try:
        await s.begin()
        await s.service.metrics()
        s.load.phase = "during"
        s.service.send(signal.SIGKILL)
        exit_code, codes = await _watch_until_exit(s)
        assert exit_code == -signal.SIGKILL
        await s.stopped_run(exit_code)
        await _restart(s, codes)
        await s.phase("after")
        result = await s.finish()
    finally:
        await s.close()
    s.check(result)


@pytest_twisted.ensureDeferred
async def test_memory_alarm_for_5_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """The node's memory alarm blocks publishers for 5 s: 503 while blocked, 200 after, nothing lost."""
    s = Scenario("memory_alarm", private_broker, tmp_path, results_file)
    try:
        await s.begin()
        s.load.phase = "during"
        await private_broker.memory_alarm(True)
        try:
            await s.outage(5.0, blocked=True)
        finally:
            await private_broker.memory_alarm(False)
        await s.recovered()
        await s.phase("after")
        result = await s.finish()
    finally:
        await s.close()
    s.check(result)


async def _watch_until_exit(s: Scenario) -> tuple[int, list[int | None]]:
    """/healthz from the signal to the exit: it must never say 200 once the service is going."""
    codes: list[int | None] = []
    while s.service.running():
        codes.append(await s.service.health_code())
        await deferLater(reactor, 0.05, lambda: None)
    exit_code = await s.service.wait_exit(1)
    if 200 in codes[1:]:
        s.problems.append(f"/healthz answered 200 while the service was stopping: {_runs(codes)}")
    return exit_code, codes


async def _restart(s: Scenario, codes: list[int | None]) -> None:
    """Start again on the same spool; /healthz must not be 200 before the publisher is connected."""
    start = reactor.seconds()
    s.service.spawn()
    seen: list[int | None] = []

    async def healthy() -> bool:
        code = await s.service.health_code()
        seen.append(code)
        return code == 200

    await wait_for(healthy, timeout=60, what="/healthz 200 after the restart")
    s.notes["restart_seconds"] = round(reactor.seconds() - start, 2)
    s.notes["outage_healthz"] = f"stopping: {_runs(codes)}; restarting: {_runs(seen)}"
