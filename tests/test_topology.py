"""The publisher's topology and failover: exchanges, routing keys, bindings, quorum queues, several nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from pika.exceptions import ChannelClosedByBroker
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.amqp.topology import Topology
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Entry, Outbox
from auditgen.routing import RoutingKey
from tests.support.fakes import FakeNodes
from tests.support.proxy import Proxy
from tests.support.shared_broker import (
    BROKER_HOST,
    BROKER_PORT,
    blocking_connection,
    drain_queue,
    fresh_queue,
)
from tests.support.waiting import reactor, wait_for

FACTORY = EventFactory(Catalog.builtin())


class Rig:
    """A publisher with its outbox, to the given nodes and topology, with a routing key template."""

    def __init__(
        self,
        topology: Topology,
        routing: RoutingKey | None = None,
        ports: tuple[int, ...] = (BROKER_PORT,),
    ) -> None:
        self.metrics = Metrics()
        self.outbox = Outbox(10_000, self.metrics, reactor, routing=routing)
        self.backoff = Backoff(base=0.05, cap=0.2)
        self.publisher = Publisher(
            reactor,
            [Broker(BROKER_HOST, port, "guest", "guest", "/") for port in ports],
            topology.queue,
            self.outbox,
            self.metrics,
            connect_timeout=2.0,
            backoff=self.backoff,
            topology=topology,
        )

    def add(self, events: list[dict[str, Any]]) -> list[Entry]:
        entries: list[Entry] = []
        for event in events:
            self.outbox.add(event, wait=True).addCallback(entries.append)
        return entries

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


def _blocking(*work: Any) -> None:
    """Run channel calls (each a function of a channel) on one plain connection to the shared broker."""
    conn = blocking_connection()
    try:
        for step in work:
            step(conn.channel())
    finally:
        conn.close()


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    """Fresh exchange and queue names on the shared broker, deleted after the test."""
    with fresh_queue() as queue, fresh_queue("auditgen-test-o") as other:
        exchange = f"auditgen-test-x-{uuid.uuid4().hex[:10]}"
        yield {"exchange": exchange, "queue": queue, "other": other}
        _blocking(lambda ch: ch.exchange_delete(exchange))


def _confirmed(entries: list[Entry]) -> defer.Deferred[list[None]]:
    """Fires once the broker confirmed every entry; fails after 30 s rather than hang."""
    confirms = defer.gatherResults([e.confirmed for e in entries if e.confirmed is not None])
    return confirms.addTimeout(30, reactor)


def _events(n: int, **fields: str) -> list[dict[str, Any]]:
    return [
        FACTORY.complete({"event_type": "x", **fields}) if fields else FACTORY.generate() for _ in range(n)
    ]


async def _run(rig: Rig, events: list[dict[str, Any]]) -> list[Entry]:
    """Start the rig, publish the events, wait for every confirm, stop."""
    rig.publisher.startService()
    try:
        entries = rig.add(events)
        await _confirmed(entries)
    finally:
        await rig.publisher.stopService()
    return entries


def _get_all(queue: str) -> list[tuple[str, str]]:
    """(routing key, message_id) of every message in the queue, consumed."""
    got: list[tuple[str, str]] = []

    def take(channel: Any) -> None:
        while True:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return
            got.append((method.routing_key, properties.message_id))

    _blocking(take)
    return got


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_events_are_routed_through_a_topic_exchange(names: dict[str, str]) -> None:
    """The exchange is declared (durable topic) and the queue bound with '#'; each event carries its own
    routing key from the template, so a second queue bound to audit.user_login.* gets only logins."""
    topology = Topology(queue=names["queue"], exchange=names["exchange"], exchange_type="topic")
    rig = Rig(topology, RoutingKey("audit.{event_type}.{action_result}"))
    rig.publisher.startService()
    try:
        await wait_for(lambda: rig.publisher.connected, what="connection")
        await deferToThread(
            _blocking,
            lambda ch: ch.queue_declare(names["other"], durable=True),
            lambda ch: ch.queue_bind(names["other"], names["exchange"], routing_key="audit.user_login.*"),
        )
        events = _events(40) + _events(10, event_type="user_login", action_result="FAILURE")
        entries = rig.add(events)
        await _confirmed(entries)
    finally:
        await rig.publisher.stopService()
    expected = [(f"audit.{e['event_type']}.{e['action_result']}", e["event_id"]) for e in events]
    assert await deferToThread(_get_all, names["queue"]) == expected
    logins = [pair for pair, e in zip(expected, events, strict=True) if e["event_type"] == "user_login"]
    assert len(logins) >= 10
    assert await deferToThread(_get_all, names["other"]) == logins
    # Durable topic exchange: a passive-free redeclare with other properties would fail.
    await deferToThread(
        _blocking, lambda ch: ch.exchange_declare(names["exchange"], exchange_type="topic", durable=True)
    )


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_with_declare_off_nothing_is_declared(names: dict[str, str]) -> None:
    """RABBITMQ_DECLARE=false: a queue the consumers declared (here non-durable, which our declare would
    contradict with PRECONDITION_FAILED) is used as it is, and no exchange is made."""
    await deferToThread(_blocking, lambda ch: ch.queue_declare(names["queue"], durable=False))
    topology = Topology(queue=names["queue"], declare=False)
    entries = await _run(Rig(topology), _events(20))
    assert [p.message_id for p, _ in await deferToThread(drain_queue, names["queue"])] == [
        e.event_id for e in entries
    ]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_unroutable_events_wait_with_backoff_and_are_never_dropped(names: dict[str, str]) -> None:
    """With declare off and no queue, each returned event is parked and sent again after a delay (no
    busy loop, nothing waiting to be sent meanwhile); once a consumer declares the queue, it arrives."""
    rig = Rig(Topology(queue=names["queue"], declare=False))
    rig.publisher.startService()
    try:
        entries = rig.add(_events(3))
        await wait_for(
            lambda: rig.sample("audit_events_generator_returned_total") >= 6, what="two returns each"
        )
        # All three at once: between rounds, some may still be in flight while others are parked.
        await wait_for(lambda: rig.publisher.window.parked == 3, what="the events to be parked")
        resend_at = rig.publisher.window.resend_at
        assert resend_at is not None and resend_at > reactor.seconds()
        assert rig.outbox.waiting == 0 and rig.publisher.unconfirmed == 0
        assert len(rig.outbox) == 3
        assert "NO_ROUTE" in (rig.publisher.last_error or "")
        await deferToThread(_blocking, lambda ch: ch.queue_declare(names["queue"], durable=True))
        await _confirmed(entries)
    finally:
        await rig.publisher.stopService()
    received = [p.message_id for p, _ in await deferToThread(drain_queue, names["queue"])]
    assert sorted(received) == sorted(e.event_id for e in entries)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_quorum_queue_is_declared_with_its_type(names: dict[str, str]) -> None:
    """RABBITMQ_QUEUE_TYPE=quorum declares x-queue-type=quorum: a consumer's quorum declare matches it,
    a classic one (no arguments) is refused."""
    entries = await _run(Rig(Topology(queue=names["queue"], queue_type="quorum")), _events(10))
    quorum = {"x-queue-type": "quorum"}
    await deferToThread(
        _blocking, lambda ch: ch.queue_declare(names["queue"], durable=True, arguments=quorum)
    )
    with pytest.raises(ChannelClosedByBroker, match="PRECONDITION_FAILED"):
        await deferToThread(_blocking, lambda ch: ch.queue_declare(names["queue"], durable=True))
    received = [p.message_id for p, _ in await deferToThread(drain_queue, names["queue"])]
    assert received == [e.event_id for e in entries]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_queue_of_the_other_type_is_one_clear_error_and_backoff(names: dict[str, str]) -> None:
    """A classic queue where quorum is configured: PRECONDITION_FAILED is reported once in the log and in
    last_error with what to do, retried with backoff; once the queue is gone, it is declared and used."""
    await deferToThread(_blocking, lambda ch: ch.queue_declare(names["queue"], durable=True))
    rig = Rig(Topology(queue=names["queue"], queue_type="quorum"))
    rig.publisher.startService()
    try:
        with capturedLogs() as logged:
            entries = rig.add(_events(5))
            await wait_for(lambda: rig.backoff.attempts >= 3, what="three attempts")
        error = rig.publisher.last_error or ""
        assert "PRECONDITION_FAILED" in error and "RABBITMQ_QUEUE_TYPE" in error, error
        assert not rig.publisher.connected
        refusals = [e for e in logged if "refused to declare" in str(e.get("reason", ""))]
        assert len(refusals) == 1, "one line per change of state, not one per retry"
        assert refusals[0]["log_level"].name == "error"
        await deferToThread(_blocking, lambda ch: ch.queue_delete(names["queue"]))
        await _confirmed(entries)
    finally:
        await rig.publisher.stopService()


def test_failed_nodes_are_tried_in_turn_then_the_backoff() -> None:
    """Three nodes: a failed connect goes on to the next node at once; after a full round the publisher
    waits the backoff, then starts the next round from the first node. /healthz names the node tried."""
    clock = Clock()
    metrics = Metrics()
    tried: list[str] = []
    nodes = [Broker(f"n{i}", 5672, "u", "p", "/") for i in (1, 2, 3)]
    refusing = FakeNodes(default="refuse")
    publisher = Publisher(
        clock,
        nodes,
        "q",
        Outbox(10, metrics, clock),
        metrics,
        backoff=Backoff(base=1.0, cap=1.0),
        dial=refusing,
    )
    refusing.on_dial = lambda broker: tried.append(publisher.address)
    publisher.startService()
    try:
        assert tried == [nodes[0].describe()]
        clock.advance(0)  # the other two, at once
        assert tried == [n.describe() for n in nodes]
        (wait,) = clock.getDelayedCalls()
        assert 0.5 <= wait.getTime() - clock.seconds() <= 1.0, "a full round waits the backoff"
        assert publisher.address == nodes[0].describe(), "the next round starts from the first node"
        clock.advance(0.49)
        assert len(tried) == 3
        clock.advance(0.51)
        assert tried == [n.describe() for n in nodes] * 2
    finally:
        publisher.stopService()
    assert clock.getDelayedCalls() == []


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_lost_connection_fails_over_to_the_next_node(names: dict[str, str]) -> None:
    """Two nodes (a proxy to the shared broker, and the broker itself): a connection lost on the first
    moves the publisher on to the second (even though the first would accept again), none is lost."""
    proxy = Proxy(reactor, BROKER_HOST, BROKER_PORT)
    proxy.listen()
    rig = Rig(Topology(queue=names["queue"]), ports=(proxy.port, BROKER_PORT))
    first, second = (f"amqp://guest@{BROKER_HOST}:{port}/" for port in (proxy.port, BROKER_PORT))
    rig.publisher.startService()
    try:
        await wait_for(lambda: rig.publisher.connected, what="connection")
        assert rig.publisher.address == first
        entries = rig.add(_events(30))
        proxy.cut()
        entries += rig.add(_events(30))
        await _confirmed(entries)
        assert rig.publisher.address == second
        assert rig.sample("audit_events_generator_rabbitmq_reconnects_total") == 1
    finally:
        await rig.publisher.stopService()
        await proxy.close()
    received = {p.message_id for p, _ in await deferToThread(drain_queue, names["queue"])}
    assert received == {e.event_id for e in entries}
