"""Faults under load: the broker goes away, the network is cut, the service is stopped or killed.

Each test runs the installed service (`twistd -n auditgen`) against a private RabbitMQ node shared by the
module (the shared broker on 5672 is never disturbed), posts events from a few keep-alive clients before,
during and after the fault while the service generates ~250 events/s of its own, and then checks, by
event_id, that every event answered 202 reached the queue, that at least as many generated events
arrived as the service counted, and that whatever a stop left in the spool arrived too; and that
/healthz said 503 during the outage and 200 again within a few seconds after it.

The scenarios themselves are in tests/support/faults.py (bench/soak.py runs them at a larger scale). Each
one's sent/lost/duplicated figures are printed (pytest -s) and written to fault-results.json in pytest's
base temporary directory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.support import broker as broker_module
from tests.support.broker import PrivateBroker
from tests.support.faults import Scenario, run_fault
from tests.support.waiting import reactor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_module.available(), reason="needs the RabbitMQ server scripts"),
]

EVENTS = 5000  # events sent per scenario (API 202 + generated): half before the fault, half after


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


async def run(name: str, node: PrivateBroker, tmp_path: Path, results_file: Path) -> Scenario:
    """Run one scenario, print and record its figures, and fail with every check that failed."""
    s = await run_fault(reactor, name, node, tmp_path, events_total=EVENTS)
    assert s.result is not None
    print(f"\n{s.report()}")
    everything = json.loads(results_file.read_text())
    everything[name] = s.result.as_dict()
    results_file.write_text(json.dumps(everything, indent=2))
    print(f"[faults]   figures in {results_file}")
    failures = s.failures()
    assert not failures, "\n".join(failures)
    return s


@pytest_twisted.ensureDeferred
async def test_broker_app_stopped_for_10_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """rabbitmqctl stop_app for 10 s then start_app: 503 during, 200 soon after, nothing answered 202 lost."""
    await run("stop_app", private_broker, tmp_path, results_file)


@pytest_twisted.ensureDeferred
async def test_network_cut_and_refused_for_5_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """A proxy drops every connection without a close and refuses new ones for 5 s; nothing is lost."""
    await run("network_cut", private_broker, tmp_path, results_file)


@pytest_twisted.ensureDeferred
async def test_sigterm_under_load_then_restart_on_the_same_spool(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """SIGTERM mid-load exits 0; the restarted service publishes what the spool kept; nothing is lost."""
    await run("sigterm_restart", private_broker, tmp_path, results_file)


@pytest_twisted.ensureDeferred
async def test_sigkill_under_load_then_restart_on_the_same_spool(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """SIGKILL mid-load; every event left in the spool and every 202 arrives after the restart."""
    await run("sigkill_restart", private_broker, tmp_path, results_file)


@pytest_twisted.ensureDeferred
async def test_memory_alarm_for_5_s(
    private_broker: PrivateBroker, tmp_path: Path, results_file: Path
) -> None:
    """The node's memory alarm blocks publishers for 5 s: 503 (blocked) during, 200 after, nothing lost."""
    await run("memory_alarm", private_broker, tmp_path, results_file)
