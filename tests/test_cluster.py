"""Failover on a three-node cluster: the node the service uses stops under load, nothing is lost.

Three private nodes (tests/support/broker.py; the shared broker is never touched) share one Erlang cookie and
are joined into a cluster with a quorum queue on all three. The installed service (`twistd -n auditgen`)
gets the three URLs, generates events and takes API calls (tests/support/faults.py), and then the node it is
connected to stops its application. The service must move to another node and every event answered 202
or counted as generated must be in the queue (duplicates are allowed and counted). About two minutes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.support import broker as broker_module
from tests.support.broker import PrivateBroker
from tests.support.faults import Scenario
from tests.support.net import HOST
from tests.support.waiting import poll, reactor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_module.available(), reason="needs the RabbitMQ server scripts"),
]

EVENTS = 4000  # events sent (API 202 + generated): half before the node stops, half after


async def _cluster(nodes: list[PrivateBroker]) -> None:
    """Start the nodes and join the others to the first."""
    await defer.gatherResults([defer.ensureDeferred(node.start()) for node in nodes])
    for node in nodes[1:]:
        await node.ctl("stop_app")
        await node.ctl("join_cluster", nodes[0].node)
        await node.start_app(timeout=90)
    status = await nodes[0].ctl("cluster_status", "--formatter", "json")
    running = json.loads(status)["running_nodes"]
    assert sorted(running) == sorted(n.node for n in nodes), status


def _declare_quorum(node: PrivateBroker, queue: str) -> None:
    """The quorum queue, with a member on every node of the cluster (blocking)."""
    conn = node.connection()
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()


def _node_in_use(health: dict[str, Any], nodes: list[PrivateBroker]) -> PrivateBroker:
    address = health["broker"]
    (node,) = [n for n in nodes if address == f"amqp://guest@{HOST}:{n.port}/"]
    return node


@pytest_twisted.ensureDeferred
async def test_stopping_the_node_in_use_fails_over_and_loses_nothing(tmp_path: Path) -> None:
    """stop_app on the node the service is connected to, under load: it reconnects to another node of
    the cluster, /healthz names that node, and every event answered 202 or generated is in the quorum
    queue."""
    began = reactor.seconds()
    tag = uuid.uuid4().hex[:6]
    cookie = uuid.uuid4().hex
    nodes = [PrivateBroker(reactor, name=f"auditgen-cluster-{tag}-{i}", cookie=cookie) for i in (1, 2, 3)]
    try:
        await _cluster(nodes)
        clustered = reactor.seconds()
        s = Scenario(
            reactor,
            "cluster_failover",
            nodes[0],
            tmp_path / "service",
            events_before=EVENTS // 2,
            events_total=EVENTS,
            rate=150.0,
            interval=0.005,
        )
        urls = ",".join(f"amqp://guest:guest@{HOST}:{n.port}/" for n in nodes)
        s.service.extra_args += [f"--rabbitmq-url={urls}", "--rabbitmq-queue-type=quorum"]
        await deferToThread(_declare_quorum, nodes[0], s.queue)
        try:
            await s.begin()
            answer = await s.service.health()
            assert answer is not None and answer[0] == 200, answer
            victim_address = answer[1]["broker"]
            victim = _node_in_use(answer[1], nodes)
            await victim.stop_app()
            stopped = reactor.seconds()
            s.load.phase = "during"
            moved: list[dict[str, Any]] = []

            async def on_another_node() -> bool:
                answer = await s.service.health()
                if answer is None or answer[0] != 200 or answer[1]["broker"] == victim_address:
                    return False
                moved.append(answer[1])
                return True

            await poll(reactor, on_another_node, 60, "/healthz 200 on another node")
            s.recovery = reactor.seconds() - stopped
            s.notes["failover_seconds"] = round(s.recovery, 2)
            s.notes["from_node"] = victim.node
            s.node = _node_in_use(moved[0], nodes)  # consume from a node that runs
            s.notes["to_node"] = s.node.node
            await s.finish()
        finally:
            await s.close()
        s.notes["cluster_start_seconds"] = round(clustered - began, 1)
        print(f"\n{s.report()}")
        failures = s.failures()
        assert not failures, "\n".join(failures)
        assert s.result is not None and s.result.api_accepted > 0 and s.result.generated_counted > 0
    finally:
        for node in reversed(nodes):
            await node.stop()
        print(f"[cluster] whole test: {reactor.seconds() - began:.1f} s")
