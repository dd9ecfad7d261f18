"""pika's Twisted adapter, and the few things auditgen needs from it that pika keeps private.

This is the only module that touches pika's private parts (`_impl`, `channel._channel`), so a pika upgrade
is checked here and nowhere else. Everything else talks to the broker through `PikaConnection`'s public
methods (the `AMQPConnection` interface of auditgen.amqp.connection) and pika's public channel API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.spec
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from pika.exceptions import AMQPConnectionError
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class PikaConnection(TwistedProtocolConnection):  # type: ignore[misc]
    """pika's Twisted protocol, keeping the real reason a connection ended.

    The adapter replaces the reason of a closed connection (the broker's Connection.Close, our own) with
    the TCP-level ConnectionDone, and a failed handshake's with a bare count of attempts; an operator needs
    "ACCESS_REFUSED" or "CONNECTION_FORCED" instead.
    """

    @classmethod
    async def open(
        cls, reactor: Any, endpoint: IStreamClientEndpoint, params: pika.ConnectionParameters
    ) -> PikaConnection:
        """TCP connect (the endpoint's timeout), then the AMQP handshake; a failed or cancelled attempt
        leaves no half-open socket behind."""
        conn = cls(params, custom_reactor=reactor)
        ready = conn.ready
        assert ready is not None
        try:
            await endpoint.connect(_OneConnection(conn))
            await ready
        except BaseException:
            conn.abort()
            raise
        return conn

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending = self._impl._error
        if pending is not None and reason.check(ConnectionDone):
            reason = Failure(pending)
        super().connectionLost(reason)

    def _on_connection_failed(self, _connection: Any, error: BaseException | None = None) -> None:
        d: defer.Deferred[Any] | None = self.ready  # type: ignore[has-type]
        self.ready = None
        if d is not None:
            d.errback(error if isinstance(error, BaseException) else AMQPConnectionError(error))

    def abort(self) -> None:
        """Drop the socket now, without Connection.Close (a handshake that failed or hangs)."""
        if self.transport is not None:
            self.transport.abortConnection()

    def watch_blocked(self, blocked: Callable[[str], None], unblocked: Callable[[], None]) -> None:
        """Call `blocked(reason)` on the broker's Connection.Blocked (its memory or disk alarm), `unblocked`
        when it lifts."""
        self._impl.add_on_connection_blocked_callback(
            lambda _conn, frame: blocked(getattr(frame.method, "reason", "") or "")
        )
        self._impl.add_on_connection_unblocked_callback(lambda _conn, _frame: unblocked())

    @property
    def frame_max(self) -> int:
        """The largest frame the broker accepts, as agreed in the handshake."""
        return int(self._impl.params.frame_max)

    def select_confirms(
        self, channel: TwistedChannel, confirmed: Callable[[int, bool, bool], None]
    ) -> defer.Deferred[Any]:
        """Put the channel in confirm mode; `confirmed(delivery_tag, multiple, nack)` per Basic.Ack/Nack.

        Taken straight from pika's channel (one callback per frame) instead of TwistedChannel's Deferred
        per message, which also pins a Basic.Return on whichever delivery is acked next.
        """
        selected: defer.Deferred[Any] = defer.Deferred()

        def on_frame(frame: Any) -> None:
            method = frame.method
            confirmed(method.delivery_tag, bool(method.multiple), isinstance(method, pika.spec.Basic.Nack))

        channel._channel.confirm_delivery(ack_nack_callback=on_frame, callback=selected.callback)
        return selected

    def write(self, data: bytes) -> None:
        """Frames marshaled by auditgen.amqp.frames, as they are (several publishes in one write). With
        the transport gone nothing is written: the connection is being lost, and what was in flight goes
        back to the outbox."""
        if self.transport is not None:
            self.transport.write(data)


class _OneConnection(Factory):
    """Hands the endpoint our protocol, quietly: connectProtocol's factory logs two lines per attempt."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol
