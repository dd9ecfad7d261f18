"""The publisher against the real broker: properties, confirms, reconnection, returns and shutdown."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from pika.exceptions import ConnectionClosedByClient
from twisted.internet import defer, protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from tests.support.fakes import FakeNodes
from tests.support.proxy import Proxy
from tests.support.shared_broker import BROKER_HOST, BROKER_PORT, blocking_connection, drain_queue
from tests.support.waiting import reactor, wait_for

FACTORY = EventFactory(Catalog.builtin())


class Rig:
    """A publisher with its outbox and metrics, pointed at a port of the test's choosing."""

    def __init__(self, queue: str, port: int = BROKER_PORT, user: str = "guest", **kwargs: Any) -> None:
        self.metrics = Metrics()
        self.outbox = Outbox(10_000, self.metrics, reactor)
        kwargs.setdefault("connect_timeout", 2.0)
        self.publisher = Publisher(
            reactor,
            Broker(BROKER_HOST, port, user, "guest", "/"),
            queue,
            self.outbox,
            self.metrics,
            backoff=Backoff(base=0.05, cap=0.2),
            **kwargs,
        )

    def add(self, n: int, wait: bool = False) -> list[Any]:
        entries: list[Any] = []
        for _ in range(n):
            self.outbox.add(FACTORY.generate(), wait=wait).addCallback(entries.append)
        return entries

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


@pytest_twisted.async_yield_fixture
async def rig(queue_name: str) -> AsyncIterator[Rig]:
    r = Rig(queue_name)
    r.publisher.startService()
    yield r
    if r.publisher.running:
        await r.publisher.stopService()


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    """Delays grow by the factor per attempt, within [ceiling/2, ceiling], up to the cap; reset restarts."""
    b = Backoff(base=0.1, cap=30.0, factor=1.3, rng=random.Random(1))
    delays = [b.next() for _ in range(40)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.1 * 1.3**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    assert delays[-1] >= 15.0, "never reached the cap"
    assert len(set(delays)) == len(delays), "no jitter"
    b.reset()
    assert b.next() <= 0.1


def test_default_backoff_finds_a_broker_back_from_a_short_outage_within_seconds() -> None:
    """With the defaults, a broker back after a 10 s outage is retried within 5 s (worst of 2,000 runs)."""
    rng = random.Random(7)
    for _ in range(2000):
        b, elapsed = Backoff(rng=rng), 0.0
        while elapsed < 10.0:
            elapsed += b.next()
        assert elapsed - 10.0 < 5.0


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_events_arrive_with_every_property(rig: Rig, queue_name: str) -> None:
    """Each confirmed event is in the durable queue, body unchanged, with the legacy AMQP properties."""
    await wait_for(lambda: rig.publisher.connected, what="connection")
    entries = rig.add(25, wait=True)
    await defer.gatherResults([e.confirmed for e in entries])
    assert len(rig.outbox) == 0
    assert rig.sample("audit_events_generator_published_success_total") == 25
    assert rig.sample("audit_events_generator_rabbitmq_connection_status") == 1
    messages = await deferToThread(drain_queue, queue_name)
    assert [p.message_id for p, _ in messages] == [e.event_id for e in entries]
    for (properties, body), entry in zip(messages, entries, strict=True):
        event = json.loads(body)
        assert body == entry.body
        assert event["event_id"] == properties.message_id
        assert properties.content_type == "application/json"
        assert properties.delivery_mode == 2
        assert properties.type == event["event_type"]
        assert properties.app_id == "audit-event-generator"
        assert abs(properties.timestamp - reactor.seconds()) < 60

    def declare_as_legacy_consumer() -> None:
        conn = blocking_connection()
        try:  # succeeds only if the queue is durable with no arguments, as legacy consumers declare it
            conn.channel().queue_declare(queue_name, durable=True)
        finally:
            conn.close()

    await deferToThread(declare_as_legacy_consumer)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_stop_waits_for_confirms_and_closes_with_connection_close(rig: Rig, queue_name: str) -> None:
    """stopService publishes what is waiting, waits for the acks, and says Connection.Close (code 200)."""
    await wait_for(lambda: rig.publisher.connected, what="connection")
    conn = rig.publisher.connector.connection
    assert conn is not None and conn.closed is not None
    closed: list[Any] = []
    conn.closed.addBoth(closed.append)
    rig.add(500)
    await rig.publisher.stopService()
    assert len(rig.outbox) == 0
    assert isinstance(closed[0], ConnectionClosedByClient)
    assert closed[0].reply_code == 200
    assert len(await deferToThread(drain_queue, queue_name)) == 500


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_waits_for_an_absent_broker_then_delivers_and_survives_a_cut(queue_name: str) -> None:
    """No broker: events wait and health says so. Broker appears: all delivered. Cut: reconnect, none lost."""
    proxy = Proxy(reactor, BROKER_HOST, BROKER_PORT)
    proxy.listen()
    await proxy.refuse()
    rig = Rig(queue_name, port=proxy.port)
    rig.publisher.startService()
    try:
        ids = [e.event_id for e in rig.add(20)]
        await wait_for(lambda: rig.publisher.last_error is not None, what="a failed attempt")
        assert "refused" in (rig.publisher.last_error or "").lower()
        assert not rig.publisher.connected
        assert len(rig.outbox) == 20
        proxy.listen()
        await wait_for(lambda: len(rig.outbox) == 0, what="delivery after the broker appeared")
        proxy.cut()
        ids += [e.event_id for e in rig.add(30)]
        await wait_for(lambda: not rig.publisher.connected, what="the cut to be noticed")
        await wait_for(lambda: len(rig.outbox) == 0, what="delivery after the cut")
        assert rig.sample("audit_events_generator_rabbitmq_reconnects_total") >= 1
    finally:
        await rig.publisher.stopService()
        await proxy.close()
    received = [p.message_id for p, _ in await deferToThread(drain_queue, queue_name)]
    assert set(received) == set(ids)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_queue_deleted_under_the_publisher_is_declared_again(rig: Rig, queue_name: str) -> None:
    """A return (no queue) is matched by message_id; the queue is re-declared and the event sent again."""
    await wait_for(lambda: rig.publisher.connected, what="connection")

    def delete_queue() -> None:
        conn = blocking_connection()
        try:
            conn.channel().queue_delete(queue_name)
        finally:
            conn.close()

    await deferToThread(delete_queue)
    entries = rig.add(50, wait=True)
    await defer.gatherResults([e.confirmed for e in entries])
    assert rig.sample("audit_events_generator_returned_total") >= 1
    received = [p.message_id for p, _ in await deferToThread(drain_queue, queue_name)]
    assert set(received) == {e.event_id for e in entries}


class _Silent(protocol.Protocol):
    """Accepts TCP and never speaks AMQP."""


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_silent_server_times_out_the_handshake(queue_name: str) -> None:
    """A peer that accepts TCP but never answers is given up on after the timeout, then retried."""
    factory = protocol.Factory.forProtocol(_Silent)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    rig = Rig(queue_name, port=port.getHost().port, connect_timeout=0.2)
    rig.publisher.startService()
    try:
        await wait_for(lambda: rig.publisher.last_error is not None, what="the handshake timeout")
        assert "Timeout" in (rig.publisher.last_error or "") or "timed out" in (
            rig.publisher.last_error or ""
        )
        assert not rig.publisher.connected
    finally:
        await rig.publisher.stopService()
        await port.stopListening()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_reported_without_the_password(queue_name: str) -> None:
    """A refused login shows up as last_error, naming the cause and never the password."""
    rig = Rig(queue_name, user="nobody-here")
    rig.publisher.startService()
    try:
        await wait_for(lambda: rig.publisher.last_error is not None, what="the refused login")
        error = rig.publisher.last_error or ""
        assert "Authentication" in error or "ACCESS_REFUSED" in error, error
        assert "guest" not in error
    finally:
        await rig.publisher.stopService()


def test_stop_while_backing_off_cancels_the_wait() -> None:
    """Stopping during a backoff wait leaves nothing scheduled on the clock."""
    clock = Clock()
    metrics = Metrics()
    outbox = Outbox(10, metrics, clock)

    publisher = Publisher(
        clock, Broker("h", 1, "u", "p", "/"), "q", outbox, metrics, dial=FakeNodes(default="refuse")
    )
    publisher.startService()
    assert publisher.last_error is not None
    assert len(clock.getDelayedCalls()) == 1
    d = publisher.stopService()
    assert d.called
    assert clock.getDelayedCalls() == []


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_channel_closed_by_the_broker_is_replaced_on_the_same_connection(
    rig: Rig, queue_name: str
) -> None:
    """A channel error (here: publishing to a missing exchange) costs a channel, not the connection."""
    await wait_for(lambda: rig.publisher.connected, what="connection")
    conn, channel = rig.publisher.connector.connection, rig.publisher.connector.channel
    channel.basic_publish("auditgen-no-such-exchange", "x", b"{}")
    await wait_for(
        lambda: rig.publisher.connector.channel is not channel and rig.publisher.connected, what="new channel"
    )
    assert rig.publisher.connector.connection is conn
    assert conn.is_open
    assert "NOT_FOUND" in (rig.publisher.last_error or "")
    entries = rig.add(10, wait=True)
    await defer.gatherResults([e.confirmed for e in entries])
    received = [p.message_id for p, _ in await deferToThread(drain_queue, queue_name)]
    assert received == [e.event_id for e in entries]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_blocked_connection_holds_publishing_until_unblocked(rig: Rig, queue_name: str) -> None:
    """Connection.Blocked (the broker's alarm) stops publishing and is reported; Unblocked resumes it.

    The connector is told directly here (what the adapter does on the frames); test_faults raises a real
    alarm.
    """
    await wait_for(lambda: rig.publisher.connected, what="connection")
    rig.publisher.connector.broker_blocked("low on memory")
    assert rig.publisher.blocked
    assert rig.sample("audit_events_generator_rabbitmq_blocked") == 1
    assert "low on memory" in (rig.publisher.last_error or "")
    rig.add(5)
    assert rig.publisher.unconfirmed == 0 and rig.outbox.waiting == 5
    rig.publisher.connector.broker_unblocked()
    await wait_for(lambda: len(rig.outbox) == 0, what="delivery after unblock")
    assert rig.sample("audit_events_generator_rabbitmq_blocked") == 0
