"""Fakes of the broker for tests on a `Clock`: nodes to dial, and the connection and channels they give.

They stand behind auditgen.amqp.connection's `Dial` and `AMQPConnection` interfaces (what pika's adapter
provides for real), answer at once unless told to hang, and record what the code under test did: nodes
dialed, declarations, frames written. A test plays the broker's part with `ack`, `nack`, `return_message`,
`close_by_broker`, `lose` and `block`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pika
import pika.frame
import pika.spec
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByClient
from twisted.internet import defer

from auditgen.config import Broker


class FakeChannel:
    """An open channel: records declarations and return callbacks; confirms come from the test."""

    def __init__(self, number: int, declare_error: Exception | None = None) -> None:
        self.channel_number = number
        self.is_open = True
        self.on_closed: defer.Deferred[Any] = defer.Deferred()
        self.declared: list[tuple[str, dict[str, Any]]] = []
        self.declare_error = declare_error
        self.confirmed: Callable[[int, bool, bool], None] | None = None  # set by select_confirms
        self._return_callbacks: list[Callable[[Any], None]] = []

    def _declare(self, what: str, arguments: dict[str, Any]) -> defer.Deferred[Any]:
        self.declared.append((what, arguments))
        if self.declare_error is not None:
            return defer.fail(self.declare_error)
        return defer.succeed(None)

    def exchange_declare(self, **arguments: Any) -> defer.Deferred[Any]:
        return self._declare("exchange", arguments)

    def queue_declare(self, **arguments: Any) -> defer.Deferred[Any]:
        return self._declare("queue", arguments)

    def queue_bind(self, **arguments: Any) -> defer.Deferred[Any]:
        return self._declare("binding", arguments)

    def add_on_return_callback(self, callback: Callable[[Any], None]) -> None:
        self._return_callbacks.append(callback)

    # -- the broker's part ----------------------------------------------------------------------

    def ack(self, tag: int, multiple: bool = False) -> None:
        assert self.confirmed is not None, "the channel is not in confirm mode"
        self.confirmed(tag, multiple, False)

    def nack(self, tag: int, multiple: bool = False) -> None:
        assert self.confirmed is not None, "the channel is not in confirm mode"
        self.confirmed(tag, multiple, True)

    def return_message(self, message_id: str, routing_key: str = "q") -> None:
        """Basic.Return of a mandatory message that reached no queue."""
        method = pika.spec.Basic.Return(312, "NO_ROUTE", "", routing_key)
        message = SimpleNamespace(method=method, properties=pika.BasicProperties(message_id=message_id))
        for callback in self._return_callbacks:
            callback(message)

    def close_by_broker(self, code: int = 404, text: str = "NOT_FOUND - no exchange") -> None:
        """Channel.Close from the broker: the channel goes, the connection stays."""
        if self.is_open:
            self.is_open = False
            self.on_closed.callback(ChannelClosedByBroker(code, text))


class FakeConnection:
    """An open AMQP connection (the AMQPConnection interface): channels on demand, writes recorded."""

    frame_max = 131072

    def __init__(self, broker: Broker, declare_error: Exception | None = None) -> None:
        self.broker = broker
        self.is_open = True
        self.is_closed = False
        self.closed: defer.Deferred[Any] | None = defer.Deferred()
        self.declare_error = declare_error
        self.channels: list[FakeChannel] = []
        self.written: list[bytes] = []
        self.aborted = False
        self.close_hangs = False  # close() sends Connection.Close and the broker never answers
        self._blocked: Callable[[str], None] | None = None
        self._unblocked: Callable[[], None] | None = None

    def channel(self) -> defer.Deferred[Any]:
        channel = FakeChannel(len(self.channels) + 1, self.declare_error)
        self.channels.append(channel)
        return defer.succeed(channel)

    def select_confirms(
        self, channel: Any, confirmed: Callable[[int, bool, bool], None]
    ) -> defer.Deferred[Any]:
        channel.confirmed = confirmed
        return defer.succeed(None)

    def watch_blocked(self, blocked: Callable[[str], None], unblocked: Callable[[], None]) -> None:
        self._blocked, self._unblocked = blocked, unblocked

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> defer.Deferred[Any] | None:
        closed = self.closed
        self.is_open = False
        if not self.close_hangs:
            self._closed(ConnectionClosedByClient(200, "Normal shutdown"))
        return closed

    def abort(self) -> None:
        self.aborted = True
        self._closed(ConnectionResetError("aborted"))

    # -- the broker's part ----------------------------------------------------------------------

    def lose(self, reason: BaseException | None = None) -> None:
        """The connection drops (a cut, the node stopping)."""
        self._closed(reason or ConnectionResetError("connection lost"))

    def block(self, reason: str = "low on memory") -> None:
        assert self._blocked is not None
        self._blocked(reason)

    def unblock(self) -> None:
        assert self._unblocked is not None
        self._unblocked()

    def _closed(self, reason: BaseException) -> None:
        self.is_open = False
        self.is_closed = True
        for channel in self.channels:
            if channel.is_open:
                channel.is_open = False
                channel.on_closed.callback(reason)
        closed, self.closed = self.closed, None
        if closed is not None:
            closed.callback(reason)

    def published(self) -> list[tuple[str, str]]:
        """(routing key, message_id) of every Basic.Publish written, in order (decoded by pika)."""
        data = b"".join(self.written)
        found: list[tuple[str, str]] = []
        key = ""
        while data:
            used, frame = pika.frame.decode_frame(data)
            assert used > 0 and frame is not None, "a partial frame was written"
            data = data[used:]
            if isinstance(frame, pika.frame.Method):
                key = frame.method.routing_key
            elif isinstance(frame, pika.frame.Header):
                found.append((key, frame.properties.message_id))
        return found


class FakeNodes:
    """The nodes of a broker, as a Connector's `dial`: each node accepts (a new FakeConnection), refuses,
    or hangs (never answers, until the caller's deadline cancels the attempt).

    `mode` sets a node's behaviour by host name; `default` the others'. `dialed` lists the nodes tried.
    """

    def __init__(self, default: str = "accept", declare_error: Exception | None = None) -> None:
        self.default = default
        self.mode: dict[str, str] = {}
        self.declare_error = declare_error
        self.dialed: list[Broker] = []
        self.connections: list[FakeConnection] = []
        self.on_dial: Callable[[Broker], None] | None = None

    def __call__(self, broker: Broker) -> defer.Deferred[Any]:
        self.dialed.append(broker)
        if self.on_dial is not None:
            self.on_dial(broker)
        mode = self.mode.get(broker.host, self.default)
        if mode == "refuse":
            return defer.fail(ConnectionRefusedError(f"{broker.host} refused the connection"))
        if mode == "hang":
            return defer.Deferred()
        assert mode == "accept", mode
        conn = FakeConnection(broker, self.declare_error)
        self.connections.append(conn)
        return defer.succeed(conn)

    @property
    def last(self) -> FakeConnection:
        """The latest connection made."""
        return self.connections[-1]
