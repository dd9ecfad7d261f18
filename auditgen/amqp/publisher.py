"""The publisher: drains the outbox into the broker over a Connector's channel, in confirm mode.

It keeps at most `max_unconfirmed` messages in flight (the ConfirmWindow), settles an entry only on the
broker's ack and puts it back on a nack, a return or a lost connection. The Connector reconnects, rotates
nodes and backs off; the publisher sets each new channel up (confirm mode, the topology), publishes on it
while the broker does not block the connection, and holds a bounded drain at shutdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pika.adapters.twisted_connection import TwistedChannel
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.amqp.confirms import ConfirmWindow
from auditgen.amqp.connection import AMQPConnection, Backoff, Connector, Dial, describe_error
from auditgen.amqp.frames import PublishFrames
from auditgen.amqp.tls import ClientTLS
from auditgen.amqp.topology import Topology, declare, declare_on_new_channel
from auditgen.config import Broker
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox

APP_ID = "audit-event-generator"
INSTANCE_HEADER = "x-auditgen-instance"


class Publisher(Service):
    """Moves entries from the outbox to the broker, over the channels its Connector keeps open."""

    def __init__(
        self,
        reactor: Any,
        broker: Broker | Sequence[Broker],
        queue: str,
        outbox: Outbox,
        metrics: Metrics,
        max_unconfirmed: int = 1000,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        shutdown_timeout: float = 10.0,
        backoff: Backoff | None = None,
        topology: Topology | None = None,
        tls: ClientTLS | None = None,
        dial: Dial | None = None,
        instance: str | None = None,
    ) -> None:
        # The namespace operators filter the JSON log on, kept from before the publisher was a subpackage
        # (a Logger class attribute would take the new module's name).
        self.log = Logger(namespace="auditgen.publisher.Publisher", source=self)
        self._clock: IReactorTime = reactor
        self._queue = queue
        self._topology = topology or Topology(queue)
        self._outbox = outbox
        self._metrics = metrics
        self._shutdown_timeout = shutdown_timeout
        self.connector = Connector(
            reactor,
            (broker,) if isinstance(broker, Broker) else tuple(broker),
            self,
            self.log,
            connect_timeout=connect_timeout,
            heartbeat=heartbeat,
            shutdown_timeout=shutdown_timeout,
            backoff=backoff,
            tls=tls,
            name=f"auditgen {instance}" if instance else "auditgen",
            dial=dial,
        )
        self.window = ConfirmWindow(
            outbox,
            metrics,
            reactor,
            self.log,
            self._after_settle,
            size=max_unconfirmed,
            redeclares=self._topology.declare,
        )
        # Which instance made a message: a header, since app_id is the older service's fixed value.
        self._headers = {INSTANCE_HEADER: instance} if instance else None
        self._frames = self._publish_frames(1, 131072)
        self._pump_call: IDelayedCall | None = None
        self._redeclaring = False
        self._drained: defer.Deferred[None] | None = None
        self._ever_connected = False

    def _publish_frames(self, channel: int, frame_max: int) -> PublishFrames:
        exchange = self._topology.exchange
        return PublishFrames(channel, exchange, self._queue, APP_ID, frame_max, headers=self._headers)

    # -- state seen by /healthz and the metrics ------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the channel is open in confirm mode (see also `blocked`)."""
        return self.connector.connected

    @property
    def unconfirmed(self) -> int:
        """Messages published on the current channel and not yet confirmed."""
        return len(self.window)

    @property
    def address(self) -> str:
        """The address of the node in use (or being tried), without the password."""
        return self.connector.address

    @property
    def blocked(self) -> bool:
        """The broker blocks publishing on our connection (its memory or disk alarm)."""
        return self.connector.blocked

    @property
    def last_error(self) -> str | None:
        """The link's latest problem, for /healthz."""
        return self.connector.last_error

    # -- service lifecycle --------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._outbox.set_listener(self._soon)
        self.connector.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await self.connector.stop()
        self._outbox.set_listener(None)
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None

    # -- what the Connector asks of its user ----------------------------------------------------

    async def setup(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        """Confirm mode, then the exchange, queue and binding declared as configured."""
        await conn.select_confirms(
            channel, lambda tag, multiple, nack: self._confirmed(channel, tag, multiple, nack)
        )
        await declare_on_new_channel(channel, self._topology)
        channel.add_on_return_callback(self._on_return)
        self._frames = self._publish_frames(channel.channel_number, conn.frame_max)
        self.window.new_channel()

    def opened(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        self._metrics.connection_status.set(1)
        if self._ever_connected:
            self._metrics.reconnects.inc()
        self._ever_connected = True
        self.log.info(
            "connected to RabbitMQ at {address}, publishing to {where} with confirms; {count} events waiting",
            event="rabbitmq.connected",
            address=self.address,
            queue=self._queue,
            where=self._topology.describe(),
            count=len(self._outbox),
        )
        self._pump()

    def lost(self, reason: str | None, connection_lost: bool) -> None:
        """Everything in flight goes back to the outbox, in order, for the next channel."""
        requeued = self.window.reset()
        self._redeclaring = False
        self._outbox.retry(requeued)
        self._metrics.connection_status.set(0)
        if reason is None:
            self.log.info("disconnected from RabbitMQ", event="rabbitmq.disconnected")
            return
        self.log.warn(
            "{what} ({reason}); {count} unconfirmed events will be sent again; reconnecting",
            event="rabbitmq.lost",
            what="lost the connection to RabbitMQ" if connection_lost else "the channel was closed",
            reason=reason,
            count=len(requeued),
        )

    def blocked_changed(self, blocked: bool) -> None:
        self._metrics.rabbitmq_blocked.set(int(blocked))
        if not blocked:
            self._pump()

    async def drain(self) -> None:
        """Wait (bounded) for the outbox to drain before the connection closes."""
        if len(self._outbox) == 0:
            return
        self._drained = defer.Deferred()
        self._drained.addTimeout(self._shutdown_timeout, self._clock, onTimeoutCancel=lambda r, t: None)
        await self._drained
        if len(self._outbox):
            self.log.warn(
                "shutting down with {count} events not confirmed by the broker",
                event="publisher.unconfirmed_at_shutdown",
                count=len(self._outbox),
            )

    # -- publishing ---------------------------------------------------------------------------

    def _soon(self) -> None:
        """New entries: publish them at the end of this reactor turn, so that the events that arrived
        together (20 requests, a generator tick, a bulk trigger) leave in one write, not one each."""
        if self._pump_call is None:
            self._pump_call = self._clock.callLater(0, self._pump)

    def _pump(self) -> None:
        """Publish waiting entries while the window allows, all of them in one write."""
        if self._pump_call is not None:
            if self._pump_call.active():
                self._pump_call.cancel()
            self._pump_call = None
        conn = self.connector.connection
        if self.connector.channel is None or conn is None or self.connector.blocked:
            return
        entries = self.window.fill()
        if entries:
            encode = self._frames.encode
            conn.write(
                b"".join(
                    [encode(e.body, e.event_id, e.event_type, int(e.created), e.routing_key) for e in entries]
                )
            )

    def _confirmed(self, channel: TwistedChannel, tag: int, multiple: bool, nack: bool) -> None:
        if channel is self.connector.channel:  # not a late confirm of a channel already replaced
            self.window.confirmed(tag, multiple, nack)

    def _after_settle(self) -> None:
        if self._drained is not None and len(self._outbox) == 0 and not self._drained.called:
            self._drained.callback(None)
        self._pump()

    def _on_return(self, message: Any) -> None:
        """A mandatory publish reached no queue (one deleted under us, a binding that does not match, or
        nothing declared): declare the topology again (if we declare it), and resend on the ack."""
        method = message.method
        reason = (
            f"events returned unroutable ({method.reply_text}) by exchange {method.exchange!r} "
            f"with routing key {method.routing_key!r}"
        )
        self.window.returned(message.properties.message_id, reason)
        self.connector.last_error = reason
        channel = self.connector.channel
        if channel is not None and self._topology.declare and not self._redeclaring:
            self._redeclaring = True
            defer.ensureDeferred(declare(channel, self._topology)).addBoth(self._redeclared)

    def _redeclared(self, result: Any) -> None:
        self._redeclaring = False
        if isinstance(result, Failure):
            self.log.warn(
                "could not declare {where} again: {reason}",
                event="rabbitmq.declare_failed",
                where=self._topology.describe(),
                reason=describe_error(result),
            )
