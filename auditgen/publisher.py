"""The publisher: one AMQP connection in confirm mode that drains the outbox into the queue.

It keeps at most `max_unconfirmed` messages in flight, settles an entry only on the broker's ack and puts
it back on a nack, a return or a lost connection. It reconnects on its own with capped, jittered
exponential backoff, and logs one line per change of state, never one per retry.

Given several brokers (the nodes of a cluster), it connects to them in turn: a failed connect goes on to
the next node at once, a lost connection to the next node after the (reset, short) backoff, and only a
full round of failed nodes waits for the growing backoff.

pika's Twisted adapter ignores host, port and timeouts in its parameters, so the endpoint carries the
connect timeout and the whole AMQP setup (handshake, channel, confirm mode, queue) has its own deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pika
import pika.spec
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.config import Broker
from auditgen.frames import PublishFrames
from auditgen.metrics import Metrics
from auditgen.outbox import Entry, Outbox
from auditgen.routing import Topology, declare
from auditgen.tls import ClientTLS, describe_tls_error

APP_ID = "audit-event-generator"
INSTANCE_HEADER = "x-auditgen-instance"
_T = TypeVar("_T")


class Backoff:
    """Exponential delays with equal jitter, capped, so many clients do not reconnect in step.

    The growth is gentle (x1.3 from 0.1 s) so a broker back after a short outage (a restart, ten seconds)
    is found again within a few seconds, while a long outage still backs off to the cap in about 90 s.
    """

    def __init__(
        self, base: float = 0.1, cap: float = 30.0, factor: float = 1.3, rng: random.Random | None = None
    ) -> None:
        self.base = base
        self.cap = cap
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt, in [ceiling/2, ceiling]; the ceiling grows to the cap."""
        ceiling = min(self.cap, self.base * self.factor ** min(self.attempts, 200))
        self.attempts += 1
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        """A connection worked: the next failure starts from the base again."""
        self.attempts = 0


def describe_error(reason: BaseException | Failure | None) -> str:
    """A one-line reason for logs and /healthz, without secrets (pika's errors carry none)."""
    if isinstance(reason, Failure):
        reason = reason.value
    if reason is None:
        return "connection closed"
    text = str(reason) or repr(reason)
    return describe_tls_error(reason) or f"{type(reason).__name__}: {text}"


class TopologyError(Exception):
    """The broker refused to declare the exchange, queue or binding as configured."""


_DECLARE_HINTS = {
    403: "this user may not declare them: grant the configure permission, or set RABBITMQ_DECLARE=false",
    406: "one of that name already exists with another type or other arguments (a classic queue where a "
    "quorum one is configured, or the reverse): delete it, or set RABBITMQ_QUEUE_TYPE / "
    "RABBITMQ_EXCHANGE_TYPE to match it",
}


class _Connection(TwistedProtocolConnection):  # type: ignore[misc]
    """pika's Twisted protocol, keeping the real reason a connection ended.

    The adapter replaces the reason of a closed connection (the broker's Connection.Close, our own) with
    the TCP-level ConnectionDone, and a failed handshake's with a bare count of attempts; an operator needs
    "ACCESS_REFUSED" or "CONNECTION_FORCED" instead.
    """

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


class _OneConnection(Factory):
    """Hands the endpoint our protocol, quietly: connectProtocol's factory logs two lines per attempt."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol


class Publisher(Service):
    """Owns the connection and the channel, and moves entries from the outbox to the broker."""

    log = Logger()

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
        endpoint_factory: Callable[[], IStreamClientEndpoint] | None = None,
        topology: Topology | None = None,
        tls: ClientTLS | None = None,
        instance: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self._brokers = (broker,) if isinstance(broker, Broker) else tuple(broker)
        self._broker = self._brokers[0]  # the node in use, or being tried
        self._node = 0  # its index in _brokers
        self._tried = 0  # nodes that failed to connect since the last connection or full round
        self._queue = queue
        self._topology = topology or Topology(queue)
        self._outbox = outbox
        self._metrics = metrics
        self._max_unconfirmed = max_unconfirmed
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._shutdown_timeout = shutdown_timeout
        self._backoff = backoff or Backoff()
        self._endpoint_factory = endpoint_factory or self._endpoint
        self._tls = tls or ClientTLS()
        self._conn: TwistedProtocolConnection | None = None
        self._channel: TwistedChannel | None = None
        self._unconfirmed: dict[int, tuple[Entry, float]] = {}  # delivery tag -> entry, time sent
        # Which instance made a message: a header, since app_id is the older service's fixed value.
        self._headers = {INSTANCE_HEADER: instance} if instance else None
        self._connection_name = f"auditgen {instance}" if instance else "auditgen"
        self._frames = self._publish_frames(1, 131072)
        self._next_tag = 1
        self._pump_call: Any = None
        metrics.unconfirmed.set_function(lambda: len(self._unconfirmed))
        self._returned: set[str] = set()
        self._parked: list[Entry] = []  # returned (unroutable) entries waiting for their next attempt
        self._unpark_call: Any = None
        self._return_backoff = Backoff()
        self._resent: set[str] = set()  # event_ids of returned entries sent again, until one is acked
        self._unroutable = False
        self._redeclaring = False
        self._stopping = False
        self._loop: defer.Deferred[None] | None = None
        self._pause: defer.Deferred[None] | None = None
        self._attempt: defer.Deferred[Any] | None = None
        self._lost: defer.Deferred[Any] | None = None
        self._drained: defer.Deferred[None] | None = None
        self._ever_connected = False
        self._failing = False
        self._nacking = False  # the broker's last confirm was a nack: further nacks are logged at debug
        self.last_error: str | None = None
        self.blocked = False

    # -- state seen by /healthz and the metrics ------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the channel is open in confirm mode (see also `blocked`)."""
        return self._channel is not None and bool(self._channel.is_open)

    @property
    def unconfirmed(self) -> int:
        """Messages published on the current channel and not yet confirmed."""
        return len(self._unconfirmed)

    @property
    def address(self) -> str:
        """The address of the node in use (or being tried), without the password."""
        return self._broker.describe()

    # -- service lifecycle --------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._outbox.set_listener(self._soon)
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(
            lambda f: self.log.failure("publisher loop crashed", f, event="publisher.crashed")
        )

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Wait (bounded) for the outbox to drain, then close the connection with Connection.Close."""
        self._stopping = True
        if self.connected and len(self._outbox) > 0:
            self._drained = defer.Deferred()
            self._drained.addTimeout(self._shutdown_timeout, self._clock, onTimeoutCancel=lambda r, t: None)
            await self._drained
            if len(self._outbox):
                self.log.warn(
                    "shutting down with {count} events not confirmed by the broker",
                    event="publisher.unconfirmed_at_shutdown",
                    count=len(self._outbox),
                )
        for pending in (self._pause, self._attempt):
            if pending is not None:
                pending.cancel()
        self._cancel_unpark()
        conn = self._conn
        if conn is not None and not conn.is_closed:
            closed = conn.closed or defer.succeed(None)
            if conn.is_open:
                conn.close()
            closed.addTimeout(self._shutdown_timeout, self._clock)
            try:
                await closed
            except defer.TimeoutError:
                self._abort(conn)
        self._outbox.set_listener(None)
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        if self._loop is not None:
            await self._loop

    # -- connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect; open a channel and publish until it or the connection is lost; back off; again.

        A channel the broker closed is replaced on the same connection; a lost connection is replaced.
        """
        conn: TwistedProtocolConnection | None = None
        while not self._stopping:
            try:
                if conn is None or not conn.is_open:
                    conn = None
                    conn = await self._bounded(self._connect(), 2 * self._connect_timeout)
                channel = await self._bounded(self._open_channel(conn), self._connect_timeout)
            except Exception as e:
                # A handshake that failed or timed out leaves a half-open socket behind: drop it.
                if self._conn is not None and not self._conn.is_open:
                    self._abort(self._conn)
                    self._conn = None
                conn = self._conn
                if self._stopping:
                    break
                self._note_failure(describe_error(e), isinstance(e, TopologyError))
                await self._sleep(self._retry_delay(connection_failed=conn is None))
                continue
            assert conn is not None
            self._lost = lost = defer.Deferred[Any]()
            channel.on_closed.addBoth(self._fire_lost)
            self._on_open(conn, channel)
            reason = await lost
            self._on_lost(conn, reason)
            if not self._stopping:
                if not conn.is_open:
                    self._next_node()
                await self._sleep(self._backoff.next())

    def _retry_delay(self, connection_failed: bool) -> float:
        """After a failed connect, the next node at once; the backoff after a full round of them (with one
        node, after each attempt), or after a channel the broker refused on a working connection."""
        if not connection_failed:
            return self._backoff.next()
        self._tried += 1
        self._next_node()
        if self._tried < len(self._brokers):
            return 0.0
        self._tried = 0
        return self._backoff.next()

    def _next_node(self) -> None:
        self._node = (self._node + 1) % len(self._brokers)
        self._broker = self._brokers[self._node]

    async def _bounded(self, work: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run one step of connection set-up with a deadline; stopService cancels it."""
        self._attempt = defer.ensureDeferred(work)
        self._attempt.addTimeout(timeout, self._clock)
        try:
            result: _T = await self._attempt
            return result
        finally:
            self._attempt = None

    async def _connect(self) -> TwistedProtocolConnection:
        """TCP connect (the endpoint's timeout), then the AMQP handshake (the caller's deadline)."""
        params = pika.ConnectionParameters(
            credentials=pika.PlainCredentials(self._broker.user, self._broker.password),
            virtual_host=self._broker.vhost,
            heartbeat=self._heartbeat,
            client_properties={"connection_name": self._connection_name},
        )
        conn = _Connection(params, custom_reactor=self._reactor)
        self._conn = conn
        ready = conn.ready
        assert ready is not None
        await self._endpoint_factory().connect(_OneConnection(conn))
        await ready
        assert conn.closed is not None
        conn.closed.addBoth(self._fire_lost)
        conn._impl.add_on_connection_blocked_callback(self._on_blocked)
        conn._impl.add_on_connection_unblocked_callback(self._on_unblocked)
        return conn

    async def _open_channel(self, conn: TwistedProtocolConnection) -> TwistedChannel:
        """A channel in confirm mode, with the exchange, queue and binding declared as configured.

        Confirms are taken straight from pika's channel (one callback per Basic.Ack/Nack frame, tags
        counted here) instead of TwistedChannel's Deferred per message, which also pins a Basic.Return
        on whichever delivery is acked next; returns are matched by message_id instead.
        """
        channel: TwistedChannel = await conn.channel()
        selected: defer.Deferred[Any] = defer.Deferred()
        channel._channel.confirm_delivery(
            ack_nack_callback=lambda frame: self._on_confirm_frame(channel, frame), callback=selected.callback
        )
        await selected
        try:
            await declare(channel, self._topology)
        except ChannelClosedByBroker as e:
            hint = _DECLARE_HINTS.get(e.reply_code)
            if hint is None:
                raise
            raise TopologyError(
                f"RabbitMQ refused to declare {self._topology.describe()}: {e.reply_text}; {hint}"
            ) from None
        channel.add_on_return_callback(self._on_return)
        self._frames = self._publish_frames(channel.channel_number, conn._impl.params.frame_max)
        self._next_tag = 1
        return channel

    def _publish_frames(self, channel: int, frame_max: int) -> PublishFrames:
        exchange = self._topology.exchange
        return PublishFrames(channel, exchange, self._queue, APP_ID, frame_max, headers=self._headers)

    def _endpoint(self) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, self._broker.host, self._broker.port, timeout=self._connect_timeout
        )
        if self._broker.tls:
            endpoint = wrapClientTLS(self._tls.creator(self._broker.host), endpoint)
        return endpoint

    def _abort(self, conn: TwistedProtocolConnection) -> None:
        transport = conn.transport
        if transport is not None:
            transport.abortConnection()

    async def _sleep(self, seconds: float) -> None:
        """Wait before the next attempt; stopService cuts the wait short."""
        self._pause = pause = defer.Deferred[None](lambda _: call.cancel())
        call = self._clock.callLater(seconds, pause.callback, None)
        try:
            await pause
        except defer.CancelledError:
            pass
        finally:
            self._pause = None

    def _fire_lost(self, reason: Any) -> Any:
        if self._lost is not None and not self._lost.called:
            self._lost.callback(reason)
        return reason

    def _note_failure(self, reason: str, topology: bool = False) -> None:
        self.last_error = reason
        if self._failing:
            return
        self._failing = True
        if topology:
            self.log.error(
                "{reason}; retrying with backoff (up to 30 s)",
                event="rabbitmq.declare_refused",
                reason=reason,
            )
            return
        others = len(self._brokers) - 1
        self.log.warn(
            "cannot reach RabbitMQ at {address}: {reason}; retrying {how} with backoff (up to 30 s)",
            event="rabbitmq.unreachable",
            address=self.address,
            reason=reason,
            how=f"the other {others} nodes in turn, each round" if others else "",
        )

    def _on_open(self, conn: TwistedProtocolConnection, channel: TwistedChannel) -> None:
        self._conn = conn
        self._channel = channel
        self._failing = False
        self._tried = 0
        self._backoff.reset()
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

    def _on_lost(self, conn: TwistedProtocolConnection, reason: Any) -> None:
        """Everything in flight goes back to the outbox, in order, for the next channel."""
        self._channel = None
        self._lost = None
        self._cancel_unpark()
        requeued = self._parked + [entry for entry, _ in self._unconfirmed.values()]
        self._parked = []
        self._unconfirmed.clear()
        self._returned.clear()
        self._resent.clear()
        self._unroutable = False
        self._redeclaring = False
        self._outbox.retry(requeued)
        self._metrics.connection_status.set(0)
        if not conn.is_open:
            self._set_blocked(False)
        if self._stopping:
            self.log.info("disconnected from RabbitMQ", event="rabbitmq.disconnected")
            return
        self.last_error = describe_error(reason)
        self._failing = True
        what = "the channel was closed" if conn.is_open else "lost the connection to RabbitMQ"
        self.log.warn(
            "{what} ({reason}); {count} unconfirmed events will be sent again; reconnecting",
            event="rabbitmq.lost",
            what=what,
            reason=self.last_error,
            count=len(requeued),
        )

    def _on_blocked(self, _conn: Any, frame: Any) -> None:
        reason = getattr(frame.method, "reason", "") or "resource alarm"
        self.last_error = f"broker blocked publishing: {reason}"
        self._set_blocked(True)

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        self._set_blocked(False)
        self._pump()

    def _set_blocked(self, blocked: bool) -> None:
        """The broker's memory or disk alarm: hold publishing (and say so) until it lifts."""
        if blocked == self.blocked:
            return
        self.blocked = blocked
        self._metrics.rabbitmq_blocked.set(int(blocked))
        if blocked:
            self.log.warn(
                "RabbitMQ blocked publishing ({reason}); holding events",
                event="rabbitmq.blocked",
                reason=self.last_error,
            )
        else:
            self.log.info("RabbitMQ unblocked publishing; resuming", event="rabbitmq.unblocked")

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
        channel, conn = self._channel, self._conn
        if channel is None or conn is None or conn.transport is None or self.blocked:
            return
        room = self._max_unconfirmed - len(self._unconfirmed)
        if room <= 0:
            return
        now = self._clock.seconds()
        frames = self._frames
        chunks = []
        while room > 0 and (entry := self._outbox.take()) is not None:
            chunks.append(
                frames.encode(
                    entry.body, entry.event_id, entry.event_type, int(entry.created), entry.routing_key
                )
            )
            self._unconfirmed[self._next_tag] = (entry, now)
            self._next_tag += 1
            room -= 1
        if chunks:
            conn.transport.write(b"".join(chunks))

    def _on_confirm_frame(self, channel: TwistedChannel, frame: Any) -> None:
        """Basic.Ack or Basic.Nack for one delivery tag, or for every tag up to it (multiple)."""
        if channel is not self._channel:
            return
        method = frame.method
        last = method.delivery_tag
        if method.multiple:
            tags = []
            for tag in self._unconfirmed:  # in publish order
                if tag > last:
                    break
                tags.append(tag)
        else:
            tags = [last]
        nack = isinstance(method, pika.spec.Basic.Nack)
        now = self._clock.seconds()
        again = []
        returned = []
        for tag in tags:
            item = self._unconfirmed.pop(tag, None)
            if item is None:
                continue
            entry, sent = item
            if nack:
                again.append(entry)
            elif entry.event_id in self._returned:
                # Acked after a Basic.Return: no queue took it. Send it again, after a while.
                self._returned.discard(entry.event_id)
                returned.append(entry)
            else:
                self._metrics.confirm_latency.observe(now - sent)
                self._outbox.settle(entry)
                if self._resent:
                    self._routed_again(entry)
        if nack:
            self._metrics.published_failure.inc(len(again))
        self._note_nacks(nack, len(again))
        if again:
            self._outbox.retry(again)
        if returned:
            self._park(returned)
        self._after_settle()

    def _note_nacks(self, nack: bool, count: int) -> None:
        """One line when the broker starts refusing and one when it accepts again; each nack at debug."""
        if nack:
            emit = self.log.debug if self._nacking else self.log.warn
            emit(
                "the broker refused (nack) {count} events; sending them again",
                event="rabbitmq.nack",
                count=count,
            )
        elif self._nacking:
            self.log.info("the broker confirms events again", event="rabbitmq.nacks_ended")
        self._nacking = nack

    def _after_settle(self) -> None:
        if self._drained is not None and len(self._outbox) == 0 and not self._drained.called:
            self._drained.callback(None)
        self._pump()

    def _on_return(self, message: Any) -> None:
        """A mandatory publish reached no queue (one deleted under us, a binding that does not match, or
        nothing declared): declare the topology again (if we declare it), and resend on the ack."""
        message_id = message.properties.message_id
        if message_id:
            self._returned.add(message_id)
        self._metrics.returned.inc()
        method = message.method
        self.last_error = (
            f"events returned unroutable ({method.reply_text}) by exchange {method.exchange!r} "
            f"with routing key {method.routing_key!r}"
        )
        channel = self._channel
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

    def _park(self, entries: list[Entry]) -> None:
        """Returned entries wait and go back to the outbox after a growing delay, never dropped: a return
        that declaring cannot fix (RABBITMQ_DECLARE=false, no matching binding) must not spin."""
        self._resent.difference_update(e.event_id for e in entries)
        self._parked += entries
        if not self._unroutable:
            self._unroutable = True
            self.log.warn(
                "{reason}{declared}; sending them again with backoff (up to 30 s) until a queue takes them",
                event="rabbitmq.unroutable",
                reason=self.last_error,
                declared="; declared the topology again" if self._topology.declare else "",
            )
        if self._unpark_call is None:
            self._unpark_call = self._clock.callLater(self._return_backoff.next(), self._unpark)

    def _unpark(self) -> None:
        self._unpark_call = None
        entries, self._parked = self._parked, []
        self._resent.update(e.event_id for e in entries)
        self._outbox.retry(entries)
        self._pump()

    def _routed_again(self, entry: Entry) -> None:
        """A returned entry sent again was taken by a queue: once all are, routing works again."""
        self._resent.discard(entry.event_id)
        if not self._resent and not self._parked and self._unroutable:
            self._unroutable = False
            self._return_backoff.reset()
            self.log.info("returned events were delivered; routing works again", event="rabbitmq.routable")

    def _cancel_unpark(self) -> None:
        if self._unpark_call is not None and self._unpark_call.active():
            self._unpark_call.cancel()
        self._unpark_call = None
