"""The confirm window, through the publisher on a Clock with a fake connection and channel: delivery tags,
acks (single and multiple), nacks, returns matched by message_id, parking, and what a lost channel gives
back. The same paths against the real broker are in test_publisher and test_topology."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.amqp.topology import Topology
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Entry, Outbox
from tests.support.fakes import FakeChannel, FakeConnection, FakeNodes

FACTORY = EventFactory(Catalog.builtin())


class Rig:
    """A started publisher on a Clock, connected to a fake node, with a window of `size`."""

    def __init__(self, size: int = 1000, declare: bool = True) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.outbox = Outbox(10_000, self.metrics, self.clock)
        self.nodes = FakeNodes()
        self.publisher = Publisher(
            self.clock,
            Broker("n1", 5672, "u", "p", "/"),
            "q",
            self.outbox,
            self.metrics,
            max_unconfirmed=size,
            backoff=Backoff(base=1.0, cap=1.0),
            topology=Topology("q", declare=declare),
            dial=self.nodes,
        )
        self.publisher.startService()

    @property
    def conn(self) -> FakeConnection:
        return self.nodes.last

    @property
    def channel(self) -> FakeChannel:
        return self.conn.channels[-1]

    def add(self, n: int) -> list[Entry]:
        """Accept n events (each with a confirm Deferred) and let the publisher's pump run."""
        entries: list[Entry] = []
        for _ in range(n):
            self.outbox.add(FACTORY.generate(), wait=True).addCallback(entries.append)
        self.clock.advance(0)
        return entries

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0

    def stop(self) -> None:
        """Stop (waiting the shutdown timeout for unacked events); nothing may stay scheduled."""
        d = self.publisher.stopService()
        self.clock.advance(10.0)
        assert d.called
        assert self.clock.getDelayedCalls() == []


def ids(entries: list[Entry]) -> list[str]:
    return [e.event_id for e in entries]


def test_the_window_sends_what_fits_in_one_write_and_acks_make_room() -> None:
    """Five events, a window of three: three go out in one write, tagged 1..3; a multiple ack of 2 settles
    two (their confirms fire) and lets the next two out."""
    rig = Rig(size=3)
    entries = rig.add(5)
    assert len(rig.conn.written) == 1
    assert [m for _, m in rig.conn.published()] == ids(entries[:3])
    assert rig.publisher.unconfirmed == 3 and rig.outbox.waiting == 2
    rig.channel.ack(2, multiple=True)
    assert [e.confirmed.called for e in entries] == [True, True, False, False, False]
    assert [m for _, m in rig.conn.published()] == ids(entries)
    assert rig.publisher.unconfirmed == 3 and len(rig.outbox) == 3
    rig.channel.ack(3)
    rig.channel.ack(5, multiple=True)
    assert len(rig.outbox) == 0 and rig.publisher.unconfirmed == 0
    assert rig.sample("audit_events_generator_published_success_total") == 5
    rig.stop()


def test_a_nack_puts_the_event_back_and_it_is_sent_again() -> None:
    """Basic.Nack: the event is not settled; it goes back to the outbox and out again with the next tag,
    and counts as a failed publish."""
    rig = Rig()
    (entry,) = rig.add(1)
    rig.channel.nack(1)
    assert not entry.confirmed.called
    assert rig.sample("audit_events_generator_published_failure_total") == 1
    assert [m for _, m in rig.conn.published()] == [entry.event_id, entry.event_id]
    rig.channel.ack(2)
    assert entry.confirmed.called
    rig.stop()


def test_a_returned_event_is_parked_on_its_ack_and_sent_again_after_a_delay() -> None:
    """A Basic.Return matched by message_id (not by delivery tag): its ack does not settle it; it waits
    (parked, still counted in the outbox) and goes out again after the backoff; the others are settled.
    With declare on, the topology is declared again."""
    rig = Rig()
    entries = rig.add(3)
    declared = len(rig.channel.declared)
    with capturedLogs() as logged:
        rig.channel.return_message(entries[1].event_id)
        rig.channel.ack(3, multiple=True)
    assert len(rig.channel.declared) == declared + 1, "declared again"
    assert [e.confirmed.called for e in entries] == [True, False, True]
    assert rig.publisher.window.parked == 1 and len(rig.outbox) == 1 and rig.outbox.waiting == 0
    assert "NO_ROUTE" in (rig.publisher.last_error or "")
    assert rig.sample("audit_events_generator_returned_total") == 1
    assert [e["event"] for e in logged if "event" in e] == ["rabbitmq.unroutable"]
    resend_at = rig.publisher.window.resend_at
    assert resend_at is not None and 0.05 <= resend_at - rig.clock.seconds() <= 0.1
    rig.clock.advance(0.1)
    assert rig.publisher.window.parked == 0
    assert [m for _, m in rig.conn.published()][-1] == entries[1].event_id
    with capturedLogs() as logged:
        rig.channel.ack(4)
    assert entries[1].confirmed.called
    assert [e["event"] for e in logged if "event" in e] == ["rabbitmq.routable"]
    rig.stop()


def test_returns_keep_backing_off_and_nothing_is_dropped() -> None:
    """Returned again and again (nothing to declare): each round waits longer, the event stays counted in
    the outbox, and the unroutable line is said once."""
    rig = Rig(declare=False)
    (entry,) = rig.add(1)
    delays = []
    with capturedLogs() as logged:
        for tag in range(1, 6):
            rig.channel.return_message(entry.event_id)
            rig.channel.ack(tag)
            resend_at = rig.publisher.window.resend_at
            assert resend_at is not None
            delays.append(resend_at - rig.clock.seconds())
            rig.clock.advance(delays[-1])
    assert len(rig.outbox) == 1 and not entry.confirmed.called
    assert delays[-1] > 0.1, delays
    assert [e["event"] for e in logged if "event" in e] == ["rabbitmq.unroutable"]
    assert rig.channel.declared == []
    rig.stop()


def test_a_lost_channel_gives_back_parked_then_in_flight_in_order_and_numbers_anew() -> None:
    """The channel goes: the parked event and those in flight go back to the outbox (parked first, then by
    tag), no resend stays scheduled; the next channel numbers from tag 1 and sends them first; a late ack
    from the old channel settles nothing."""
    rig = Rig()
    entries = rig.add(3)
    old = rig.channel
    old.return_message(entries[0].event_id)
    old.ack(1)
    assert rig.publisher.window.parked == 1
    old.close_by_broker()
    assert rig.publisher.unconfirmed == 0 and rig.outbox.waiting == 3
    assert rig.publisher.window.resend_at is None
    rig.clock.advance(1.0)  # the backoff, then a new channel
    assert rig.channel is not old
    old.ack(3, multiple=True)
    assert not any(e.confirmed.called for e in entries)
    published = [m for _, m in rig.conn.published()]
    assert published[3:] == ids(entries)
    rig.channel.ack(3, multiple=True)
    assert all(e.confirmed.called for e in entries)
    rig.stop()


def test_blocked_holds_publishing_until_unblocked() -> None:
    """Connection.Blocked: nothing is written while it lasts (the gauge says so); Unblocked sends what
    waited."""
    rig = Rig()
    rig.conn.block("low on memory")
    assert rig.sample("audit_events_generator_rabbitmq_blocked") == 1
    rig.add(4)
    assert rig.conn.written == [] and rig.outbox.waiting == 4
    rig.conn.unblock()
    assert len(rig.conn.published()) == 4
    assert rig.sample("audit_events_generator_rabbitmq_blocked") == 0
    rig.stop()


def test_stop_waits_for_the_acks_then_closes() -> None:
    """stopService with events in flight waits for their acks (bounded), then says Connection.Close."""
    rig = Rig()
    rig.add(2)
    d = rig.publisher.stopService()
    assert not d.called and rig.conn.is_open
    rig.channel.ack(2, multiple=True)
    assert d.called and rig.conn.is_closed and len(rig.outbox) == 0


def test_stop_gives_up_waiting_after_the_shutdown_timeout_and_says_so() -> None:
    """Events never acked: stop waits the shutdown timeout, warns with the count, closes; they stay in
    the outbox (the spool keeps them for the next run)."""
    rig = Rig()
    rig.add(2)
    with capturedLogs() as logged:
        d = rig.publisher.stopService()
        rig.clock.advance(10.0)
    assert d.called and rig.conn.is_closed and len(rig.outbox) == 2
    warnings = [e for e in logged if e.get("event") == "publisher.unconfirmed_at_shutdown"]
    assert [w["count"] for w in warnings] == [2]


def test_reconnects_are_counted_and_the_status_follows_the_channel() -> None:
    """connection_status is 1 while a channel is open; each connection after the first counts as a
    reconnect."""
    rig = Rig()
    assert rig.sample("audit_events_generator_rabbitmq_connection_status") == 1
    rig.conn.lose()
    assert rig.sample("audit_events_generator_rabbitmq_connection_status") == 0
    rig.clock.advance(1.0)
    assert rig.sample("audit_events_generator_rabbitmq_connection_status") == 1
    assert rig.sample("audit_events_generator_rabbitmq_reconnects_total") == 1
    rig.stop()


def test_every_line_of_the_link_keeps_the_publishers_log_namespace() -> None:
    """The connector and the window log on the publisher's logger, under the namespace shippers filter on
    (auditgen.publisher.Publisher, as before the AMQP layer became a subpackage)."""
    with capturedLogs() as logged:
        rig = Rig()
        rig.add(1)
        rig.channel.nack(1)
        rig.conn.block()
        rig.conn.lose()
        rig.stop()
    events = [e for e in logged if str(e.get("event", "")).startswith("rabbitmq.")]
    assert {e["event"] for e in events} >= {
        "rabbitmq.connected",
        "rabbitmq.nack",
        "rabbitmq.blocked",
        "rabbitmq.lost",
    }
    assert {e["log_namespace"] for e in events} == {"auditgen.publisher.Publisher"}
