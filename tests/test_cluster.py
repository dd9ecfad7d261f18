"""Failover on a three-node cluster: the node the service uses stops under load, nothing is lost.

Three private nodes (tests/support/broker.py; the shared broker is never touched) share one Erlang cookie and
are joined into a cluster with a quorum queue on all three. The installed service (`twistd -n auditgen`)
gets the three URLs, generates events and takes API calls (tests/support/faults.py), and then the node it is
connected to stops its application. The service must move to another node and every event answered 202
or counted as generated must be in the queue (duplicates are allowed and counted). About two minutes.

Then many instances, one load: three services with one seed and their own names share a quorum queue
while a node stops; every event arrives, and each instance's stream is its own and reproducible.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.support import broker as broker_module
from tests.support.broker import PrivateBroker
from tests.support.faults import Scenario
from tests.support.net import HOST
from tests.support.twistd import Service
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


SEED = "one-seed"
INSTANCES = ("gen-0", "gen-1", "gen-2")
TOTAL_RATE = 150.0  # events/s of the three together (AUDITGEN_RATE_SCOPE=total): 50 each
PER_PHASE = 250  # events each instance confirms before the node stops, and again after


def _consume_by_instance(node: PrivateBroker, queue: str) -> list[tuple[str | None, bytes]]:
    """(x-auditgen-instance header, body) of every message in the queue, removed from it (blocking)."""
    conn = node.connection()
    try:
        channel = conn.channel()
        found: list[tuple[str | None, bytes]] = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return found
            found.append(((properties.headers or {}).get("x-auditgen-instance"), body))
    finally:
        conn.close()


def _expected_ids(instance: str, count: int) -> list[str]:
    """The first `count` event_ids the generator of this instance makes with SEED: its stream, derived
    from the seed and its name alone (sessions and scenarios off, so each tick is one generate())."""
    from auditgen.config import load_settings
    from auditgen.events import Catalog, EventFactory, seeded_rng
    from auditgen.world import build

    settings = load_settings({"seed": SEED, "instance": instance, "instances": "3"}, {}, {})
    # The world all instances share: built from the seed itself and the default sizes.
    world = build(settings.generator.seed, settings.world.hosts, settings.world.people)
    factory = EventFactory(
        Catalog.builtin(), seeded_rng(settings.generator.stream_seed, "generator"), world=world
    )
    return [factory.generate()["event_id"] for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_three_instances_with_one_seed_share_a_quorum_queue_and_lose_nothing(tmp_path: Path) -> None:
    """Three installed services (`twistd -n auditgen`), named gen-0..gen-2, one seed, the total rate split
    between them, each with its own spool and the cluster's nodes in its own order, publish to one quorum
    queue; midway the node gen-0 uses stops. Every event each counted arrives, tagged with its instance's
    header; no event_id is shared by two different events; each instance's ids are exactly the first ids
    of the stream its seed and name give (so a rerun repeats them), and no two instances share one."""
    began = reactor.seconds()
    tag = uuid.uuid4().hex[:6]
    cookie = uuid.uuid4().hex
    nodes = [PrivateBroker(reactor, name=f"auditgen-inst-{tag}-{i}", cookie=cookie) for i in (1, 2, 3)]
    services: list[Service] = []
    queue = f"instances-{tag}"
    try:
        await _cluster(nodes)
        await deferToThread(_declare_quorum, nodes[0], queue)
        for n, name in enumerate(INSTANCES):
            order = nodes[n:] + nodes[:n]  # each starts on another node
            urls = ",".join(f"amqp://guest:guest@{HOST}:{node.port}/" for node in order)
            workdir = tmp_path / name
            workdir.mkdir()
            extra = [
                f"--rabbitmq-url={urls}",
                "--rabbitmq-queue-type=quorum",
                f"--seed={SEED}",
                f"--instance={name}",
                "--instances=3",
                f"--rate={TOTAL_RATE}",
                "--rate-scope=total",
                "--session-share=0",
            ]
            services.append(
                Service(
                    reactor,
                    rabbitmq_port=nodes[0].port,
                    queue=queue,
                    workdir=workdir,
                    spool_dir=workdir / "spool",
                    extra_args=extra,
                )
            )
        for service in services:
            service.spawn()
        for service in services:
            await service.wait_health(200, timeout=60)
            response = await treq.get(f"{service.url}/generator", persistent=False, timeout=5)
            assert json.loads(await response.text())["rate"] == TOTAL_RATE / 3

        async def each_confirmed(at_least: float) -> bool:
            scrapes = [await s.metrics() for s in services]
            return all(m.total("audit_events_generator_published_success_total") >= at_least for m in scrapes)

        await poll(reactor, lambda: each_confirmed(PER_PHASE), 60, f"{PER_PHASE} confirms per instance")
        answer = await services[0].health()
        assert answer is not None and answer[0] == 200, answer
        victim = _node_in_use(answer[1], nodes)
        await victim.stop_app()
        await poll(reactor, lambda: each_confirmed(2 * PER_PHASE), 90, "confirms after the node stopped")
        for service in services:
            response = await treq.put(
                f"{service.url}/generator", json={"paused": True}, persistent=False, timeout=5
            )
            assert response.code == 200, await response.text()

        async def drained() -> bool:
            depths = [await s.outbox_depth() for s in services]
            return depths == [0] * len(services)

        await poll(reactor, drained, 60, "every outbox to drain")
        counted = {
            name: int((await s.metrics()).total("audit_events_generator_events_total"))
            for name, s in zip(INSTANCES, services, strict=True)
        }
        for service in services:
            assert await service.terminate() == 0, service.log_tail()
        survivor = next(node for node in nodes if node is not victim)
        messages = await deferToThread(_consume_by_instance, survivor, queue)

        bodies: dict[str, set[bytes]] = {}
        by_instance: dict[str | None, set[str]] = {}
        for instance, body in messages:
            event_id = json.loads(body)["event_id"]
            bodies.setdefault(event_id, set()).add(body)
            by_instance.setdefault(instance, set()).add(event_id)
        shared = {event_id for event_id, versions in bodies.items() if len(versions) > 1}
        assert not shared, f"{len(shared)} event_ids name two different events"
        assert set(by_instance) == set(INSTANCES)
        for name in INSTANCES:
            expected = _expected_ids(name, counted[name])
            assert counted[name] >= 2 * PER_PHASE
            assert by_instance[name] == set(expected), f"{name}: lost or foreign events"
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert not by_instance[INSTANCES[a]] & by_instance[INSTANCES[b]]
        duplicates = len(messages) - len(bodies)
        print(
            f"\n[instances] {counted} counted, {len(messages)} messages, {duplicates} resent after failover"
        )
    finally:
        for service in services:
            service.cleanup()
        for node in reversed(nodes):
            await node.stop()
        print(f"[instances] whole test: {reactor.seconds() - began:.1f} s")
