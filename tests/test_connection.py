"""The Connector on a Clock with fake nodes: node rotation, backoff, the set-up deadline, lost channels and
connections, Connection.Blocked, the log lines, and a clean stop."""

from __future__ import annotations

from typing import Any

import pytest
from pika.exceptions import ChannelClosedByBroker
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent

from auditgen.amqp.connection import AMQPConnection, Backoff, Connector, describe_error
from auditgen.amqp.topology import Topology, declare_on_new_channel
from auditgen.config import Broker
from tests.support.fakes import FakeChannel, FakeNodes

NODES = [Broker(f"n{i}", 5672, "u", "p", "/") for i in (1, 2, 3)]


class User:
    """A ChannelUser that records what the Connector told it, and declares a queue on each new channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.drained = 0

    async def setup(self, conn: AMQPConnection, channel: Any) -> None:
        await declare_on_new_channel(channel, Topology("q"))

    def opened(self, conn: AMQPConnection, channel: Any) -> None:
        self.calls.append(("opened", channel))

    def lost(self, reason: str | None, connection_lost: bool) -> None:
        self.calls.append(("lost", (reason, connection_lost)))

    def blocked_changed(self, blocked: bool) -> None:
        self.calls.append(("blocked", blocked))

    async def drain(self) -> None:
        self.drained += 1


def connector(
    clock: Clock, nodes: FakeNodes, brokers: list[Broker] = NODES[:1], **kwargs: Any
) -> tuple[Connector, User]:
    user = User()
    kwargs.setdefault("backoff", Backoff(base=1.0, cap=1.0))
    return Connector(clock, brokers, user, Logger(), dial=nodes, **kwargs), user


def stop(c: Connector) -> None:
    """Stop, which must finish at once here (nothing to drain, the fake closes at once)."""
    d = defer.ensureDeferred(c.stop())
    assert d.called and d.result is None, d.result


def wait(clock: Clock) -> float:
    """The one delay scheduled on the clock (the backoff before the next attempt), in seconds."""
    (call,) = clock.getDelayedCalls()
    return float(call.getTime() - clock.seconds())


def test_a_ready_channel_is_handed_to_the_user_set_up() -> None:
    """Connect, open a channel, let the user set it up (here: declare), then hand it over; healthy."""
    clock, nodes = Clock(), FakeNodes()
    c, user = connector(clock, nodes)
    c.start()
    (channel,) = nodes.last.channels
    assert channel.declared == [("queue", {"queue": "q", "durable": True, "arguments": None})]
    assert user.calls == [("opened", channel)]
    assert c.connected and c.channel is channel and c.connection is nodes.last
    assert c.last_error is None
    stop(c)


def test_failed_nodes_are_tried_in_turn_then_a_round_waits_the_backoff() -> None:
    """A refused node: the next one at once; after a full round, the backoff; then from the first again,
    and `address` names the node being tried."""
    clock, nodes = Clock(), FakeNodes(default="refuse")
    c, _user = connector(clock, nodes, NODES)
    tried: list[str] = []
    nodes.on_dial = lambda broker: tried.append(c.address)
    c.start()
    clock.advance(0)  # the other two, at once
    assert tried == [n.describe() for n in NODES]
    assert 0.5 <= wait(clock) <= 1.0
    assert c.address == NODES[0].describe()
    nodes.mode["n1"] = "accept"
    clock.advance(1.0)
    assert c.connected and c.address == NODES[0].describe()
    assert [b.host for b in nodes.dialed] == ["n1", "n2", "n3", "n1"]
    stop(c)


def test_a_lost_connection_moves_on_to_the_next_node_after_a_reset_backoff() -> None:
    """Connected to n1; the connection drops: the user hears it, the next node is tried after the short
    (reset) backoff, not at once and not the grown one."""
    clock, nodes = Clock(), FakeNodes()
    backoff = Backoff(base=1.0, cap=30.0, factor=10.0)
    c, user = connector(clock, nodes, NODES, backoff=backoff)
    backoff.attempts = 5  # grown by earlier failures; the connection resets it
    c.start()
    first = nodes.last
    first.lose(ConnectionResetError("cut"))
    assert user.calls[-1] == ("lost", ("ConnectionResetError: cut", True))
    assert not c.connected and c.last_error == "ConnectionResetError: cut"
    assert 0.5 <= wait(clock) <= 1.0
    clock.advance(1.0)
    assert nodes.last is not first and nodes.last.broker == NODES[1]
    assert c.connected and c.address == NODES[1].describe()


def test_a_channel_closed_by_the_broker_is_replaced_on_the_same_connection() -> None:
    """Channel.Close from the broker costs the channel, not the connection: after the backoff a second
    channel opens on the same connection to the same node."""
    clock, nodes = Clock(), FakeNodes()
    c, user = connector(clock, nodes, NODES)
    c.start()
    conn = nodes.last
    conn.channels[0].close_by_broker(404, "NOT_FOUND - no exchange 'x'")
    reason, connection_lost = user.calls[-1][1]
    assert "NOT_FOUND" in reason and not connection_lost
    clock.advance(wait(clock))
    assert len(nodes.connections) == 1 and len(conn.channels) == 2
    assert c.channel is conn.channels[1] and c.address == NODES[0].describe()
    stop(c)


def test_a_node_that_never_answers_is_given_up_at_the_deadline_and_says_which_step() -> None:
    """Connecting has a deadline (twice the connect timeout, for TCP and the handshake): past it the
    attempt is cancelled, last_error names the step and the time, and the next node is tried."""
    clock, nodes = Clock(), FakeNodes()
    nodes.mode["n1"] = "hang"
    c, _user = connector(clock, nodes, NODES[:2], connect_timeout=5.0)
    c.start()
    assert c.last_error is None
    clock.advance(9.9)
    assert c.last_error is None and not c.connected
    clock.advance(0.1)
    assert c.last_error == "TimeoutError: connecting (TCP, TLS, AMQP handshake) timed out after 10 s"
    clock.advance(0)
    assert c.connected and c.address == NODES[1].describe()
    stop(c)


def test_a_refused_declaration_is_one_error_line_and_backoff_on_the_same_connection() -> None:
    """The broker refuses the user's set-up in a way settings can fix: one error line (not one per
    retry) saying what to change, and retries on the same connection with backoff."""
    clock = Clock()
    nodes = FakeNodes(declare_error=ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg"))
    c, user = connector(clock, nodes)
    with capturedLogs() as logged:
        c.start()
        for _ in range(3):
            clock.advance(wait(clock))
    assert len(nodes.connections) == 1 and len(nodes.last.channels) == 4
    assert "RABBITMQ_QUEUE_TYPE" in (c.last_error or "") and not c.connected
    lines = [(e["event"], e["log_level"]) for e in logged if "event" in e]
    assert lines == [("rabbitmq.declare_refused", LogLevel.error)]
    assert user.calls == []
    stop(c)


def test_the_unreachable_line_with_one_node_says_what_failed_with_no_gap() -> None:
    """Issue 10: with one node the line read "retrying  with backoff" (two spaces, nothing said). It names
    the node and the reason, then how it retries; once, not once per retry."""
    clock, nodes = Clock(), FakeNodes(default="refuse")
    c, _user = connector(clock, nodes)
    with capturedLogs() as logged:
        c.start()
        clock.advance(wait(clock))
    (line,) = [e for e in logged if e.get("event") == "rabbitmq.unreachable"]
    message = formatEvent(line)
    assert message == (
        "cannot reach RabbitMQ at amqp://u@n1:5672/: ConnectionRefusedError: n1 refused the connection; "
        "retrying with backoff (up to 30 s)"
    )
    assert "  " not in message
    stop(c)


def test_the_unreachable_line_with_several_nodes_says_how_they_are_tried() -> None:
    """Several nodes: the line says the others are tried in turn, each round with backoff."""
    clock, nodes = Clock(), FakeNodes(default="refuse")
    c, _user = connector(clock, nodes, NODES)
    with capturedLogs() as logged:
        c.start()
        clock.advance(0)
    (line,) = [e for e in logged if e.get("event") == "rabbitmq.unreachable"]
    assert formatEvent(line).endswith(
        "n1 refused the connection; retrying the other 2 nodes in turn, each round with backoff (up to 30 s)"
    )
    stop(c)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Exception(), "Exception (no details given)"),
        (ValueError(None), "ValueError (no details given)"),
        (ConnectionRefusedError("refused"), "ConnectionRefusedError: refused"),
        (None, "connection closed"),
    ],
)
def test_an_error_without_a_message_still_says_what_failed(
    error: BaseException | None, expected: str
) -> None:
    """pika raises some errors with no arguments (or None): the reason names the error instead of showing
    "()" or "None" or nothing."""
    assert describe_error(error) == expected


def test_connection_blocked_is_said_once_and_cleared_with_the_connection() -> None:
    """Connection.Blocked: the user is told, last_error says why, one log line; a second Blocked says
    nothing new. A lost connection clears it (a new one starts unblocked)."""
    clock, nodes = Clock(), FakeNodes()
    c, user = connector(clock, nodes)
    c.start()
    with capturedLogs() as logged:
        nodes.last.block("low on memory")
        nodes.last.block("low on memory")
        assert c.blocked and c.last_error == "broker blocked publishing: low on memory"
        nodes.last.block("")
        nodes.last.lose()
    assert not c.blocked
    assert [e["event"] for e in logged if "event" in e] == [
        "rabbitmq.blocked",
        "rabbitmq.unblocked",
    ]
    assert [call for call in user.calls if call[0] == "blocked"] == [("blocked", True), ("blocked", False)]


def test_stop_drains_then_closes_and_leaves_nothing_scheduled() -> None:
    """stop: the user drains first (while connected), then Connection.Close; the user hears a lost
    channel with no reason (on purpose), and nothing is left on the clock."""
    clock, nodes = Clock(), FakeNodes()
    c, user = connector(clock, nodes)
    c.start()
    d = defer.ensureDeferred(c.stop())
    assert d.called
    assert user.drained == 1
    assert user.calls[-1] == ("lost", (None, True))
    assert nodes.last.is_closed and not nodes.last.aborted
    assert clock.getDelayedCalls() == []


def test_stop_aborts_a_close_the_broker_never_answers() -> None:
    """A Connection.Close with no answer is given the shutdown timeout, then the socket is dropped."""
    clock, nodes = Clock(), FakeNodes()
    c, _user = connector(clock, nodes, shutdown_timeout=3.0)
    c.start()
    nodes.last.close_hangs = True
    d = defer.ensureDeferred(c.stop())
    clock.advance(2.9)
    assert not d.called
    clock.advance(0.1)
    assert d.called and nodes.last.aborted
    assert clock.getDelayedCalls() == []


def test_stop_during_a_hanging_attempt_cancels_it() -> None:
    """Stopping while a node does not answer cancels the attempt and its deadline at once."""
    clock, nodes = Clock(), FakeNodes(default="hang")
    c, user = connector(clock, nodes)
    c.start()
    d = defer.ensureDeferred(c.stop())
    assert d.called and user.drained == 0
    assert clock.getDelayedCalls() == []


def test_no_nodes_is_a_clear_error() -> None:
    """A connector without a node to try is refused when made, not an index error later."""
    with pytest.raises(ValueError, match="at least one broker"):
        Connector(Clock(), [], User(), Logger())


def test_fake_channels_record_their_number() -> None:
    """Sanity of the fake: channel numbers count from 1 per connection, as pika's do."""
    conn = FakeNodes()(NODES[0]).result
    first: FakeChannel = conn.channel().result
    assert (first.channel_number, conn.channel().result.channel_number) == (1, 2)
