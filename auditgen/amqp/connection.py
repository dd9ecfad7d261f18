"""One AMQP connection kept open to one of the broker's nodes, and a channel on it for a user.

A `Connector` connects (TCP, TLS, the AMQP handshake), opens a channel, lets its user (the publisher; a
consumer the same way) set the channel up, and hands it over; when the channel or the connection is lost
it tells the user and starts again. It logs one line per change of state, never one per retry.

Given several brokers (the nodes of a cluster), it connects to them in turn: a failed connect goes on to
the next node at once, a lost connection to the next node after the (reset, short) backoff, and only a
full round of failed nodes waits for the growing backoff, capped and jittered.

pika's Twisted adapter ignores host, port and timeouts in its parameters, so the endpoint carries the
connect timeout and the whole AMQP setup (handshake, channel, the user's setup) has its own deadline.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import pika
from pika.adapters.twisted_connection import TwistedChannel
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.amqp.adapter import PikaConnection
from auditgen.amqp.tls import ClientTLS, describe_tls_error
from auditgen.amqp.topology import TopologyError
from auditgen.config import Broker

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
    """A one-line reason for logs and /healthz, without secrets (pika's errors carry none).

    It always says what failed: an error without a message of its own (pika raises some with no
    arguments, or None) is named by its type and said to carry no details.
    """
    if isinstance(reason, Failure):
        reason = reason.value
    if reason is None:
        return "connection closed"
    tls = describe_tls_error(reason)
    if tls is not None:
        return tls
    name = type(reason).__name__
    text = str(reason)
    if text in ("", "None", "()", f"{name}: ()"):
        return f"{name} (no details given)"
    return f"{name}: {text}"


class AMQPConnection(Protocol):
    """One open AMQP connection, as the Connector and its users need it (auditgen.amqp.adapter makes
    the real one from pika's; tests use fakes)."""

    @property
    def is_open(self) -> bool: ...
    @property
    def is_closed(self) -> bool: ...

    closed: defer.Deferred[Any] | None  # fires once the connection is closed; None when it is

    @property
    def frame_max(self) -> int: ...
    def channel(self) -> defer.Deferred[Any]: ...
    def close(self) -> defer.Deferred[Any] | None: ...
    def abort(self) -> None: ...
    def watch_blocked(self, blocked: Callable[[str], None], unblocked: Callable[[], None]) -> None: ...
    def select_confirms(
        self, channel: Any, confirmed: Callable[[int, bool, bool], None]
    ) -> defer.Deferred[Any]: ...
    def write(self, data: bytes) -> None: ...


class ChannelUser(Protocol):
    """What a Connector hands its channels to: the publisher, or a consumer."""

    async def setup(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        """Make a new channel ready (confirm mode, declarations, QoS...), within the setup deadline. An
        exception fails this attempt, which is retried with backoff; a TopologyError is logged as a
        configuration error."""

    def opened(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        """The channel is ready: use it until `lost`."""

    def lost(self, reason: str | None, connection_lost: bool) -> None:
        """The channel (and with `connection_lost`, its connection) is gone: stop using it. `reason` is
        None when we closed it ourselves (stopping)."""

    def blocked_changed(self, blocked: bool) -> None:
        """The broker blocked publishing on this connection (its memory or disk alarm), or lifted it."""

    async def drain(self) -> None:
        """Stopping, while still connected: finish what is in flight (bounded) before the close."""


Dial = Callable[[Broker], Awaitable[AMQPConnection]]


class Connector:
    """Keeps a connection to one of the nodes and a channel on it, set up and used by one ChannelUser.

    The state /healthz shows (`connected`, `address`, `blocked`, `last_error`) lives here; `last_error`
    may also be set by the user (a returned message, say), as the link's latest problem.
    """

    def __init__(
        self,
        reactor: Any,
        brokers: Sequence[Broker],
        user: ChannelUser,
        log: Logger,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        shutdown_timeout: float = 10.0,
        backoff: Backoff | None = None,
        tls: ClientTLS | None = None,
        name: str = "auditgen",
        dial: Dial | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("expected at least one broker")
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self._brokers = tuple(brokers)
        self._broker = self._brokers[0]  # the node in use, or being tried
        self._node = 0  # its index in _brokers
        self._tried = 0  # nodes that failed to connect since the last connection or full round
        self._user = user
        self.log = log
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._shutdown_timeout = shutdown_timeout
        self._backoff = backoff or Backoff()
        self._tls = tls or ClientTLS()
        self._name = name
        self._dial: Dial = dial or self._dial_node
        self._conn: AMQPConnection | None = None
        self._channel: Any = None
        self._stopping = False
        self._loop: defer.Deferred[None] | None = None
        self._pause: defer.Deferred[None] | None = None
        self._attempt: defer.Deferred[Any] | None = None
        self._lost: defer.Deferred[Any] | None = None
        self._failing = False
        self.last_error: str | None = None
        self.blocked = False

    # -- state seen by /healthz and the users ---------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the channel is open and set up (see also `blocked`)."""
        return self._channel is not None and bool(self._channel.is_open)

    @property
    def address(self) -> str:
        """The address of the node in use (or being tried), without the password."""
        return self._broker.describe()

    @property
    def nodes(self) -> int:
        """How many nodes there are to try."""
        return len(self._brokers)

    @property
    def connection(self) -> AMQPConnection | None:
        """The connection in use or being set up, if any."""
        return self._conn

    @property
    def channel(self) -> Any:
        """The channel handed to the user, while it is open."""
        return self._channel

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep connected until `stop`."""
        self._stopping = False
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(
            lambda f: self.log.failure("publisher loop crashed", f, event="publisher.crashed")
        )

    async def stop(self) -> None:
        """Let the user drain (bounded by the user), then close with Connection.Close (bounded too)."""
        self._stopping = True
        if self.connected:
            await self._user.drain()
        for pending in (self._pause, self._attempt):
            if pending is not None:
                pending.cancel()
        conn = self._conn
        if conn is not None and not conn.is_closed:
            closed = conn.closed or defer.succeed(None)
            if conn.is_open:
                conn.close()
            closed.addTimeout(self._shutdown_timeout, self._clock)
            try:
                await closed
            except defer.TimeoutError:
                conn.abort()
        if self._loop is not None:
            await self._loop

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect; open a channel and hand it over until it or the connection is lost; back off; again.

        A channel the broker closed is replaced on the same connection; a lost connection is replaced.
        """
        conn: AMQPConnection | None = None
        while not self._stopping:
            try:
                if conn is None or not conn.is_open:
                    conn = None
                    conn = await self._bounded(
                        self._connect(), 2 * self._connect_timeout, "connecting (TCP, TLS, AMQP handshake)"
                    )
                channel = await self._bounded(
                    self._open_channel(conn), self._connect_timeout, "opening and setting up a channel"
                )
            except Exception as e:
                # A handshake that failed or timed out leaves a half-open socket behind: drop it.
                if self._conn is not None and not self._conn.is_open:
                    self._conn.abort()
                    self._conn = None
                conn = self._conn
                if self._stopping:
                    break
                self._note_failure(describe_error(e), isinstance(e, TopologyError))
                await self._sleep(self._retry_delay(connection_failed=conn is None))
                continue
            self._lost = lost = defer.Deferred[Any]()
            channel.on_closed.addBoth(self._fire_lost)
            self._conn, self._channel = conn, channel
            self._failing = False
            self._tried = 0
            self._backoff.reset()
            self._user.opened(conn, channel)
            reason = await lost
            self._on_lost(conn, reason)
            if not self._stopping:
                if not conn.is_open:
                    self._next_node()
                await self._sleep(self._backoff.next())

    async def _connect(self) -> AMQPConnection:
        conn = await self._dial(self._broker)
        self._conn = conn
        assert conn.closed is not None
        conn.closed.addBoth(self._fire_lost)
        conn.watch_blocked(self.broker_blocked, self.broker_unblocked)
        return conn

    async def _open_channel(self, conn: AMQPConnection) -> Any:
        channel = await conn.channel()
        await self._user.setup(conn, channel)
        return channel

    async def _dial_node(self, broker: Broker) -> AMQPConnection:
        """The real connection: TCP (or TLS) to the node, then pika's AMQP handshake."""
        params = pika.ConnectionParameters(
            credentials=pika.PlainCredentials(broker.user, broker.password),
            virtual_host=broker.vhost,
            heartbeat=self._heartbeat,
            client_properties={"connection_name": self._name},
        )
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, broker.host, broker.port, timeout=self._connect_timeout
        )
        if broker.tls:
            endpoint = wrapClientTLS(self._tls.creator(broker.host), endpoint)
        conn: AMQPConnection = await PikaConnection.open(self._reactor, endpoint, params)
        return conn

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

    async def _bounded(self, work: Coroutine[Any, Any, _T], timeout: float, step: str) -> _T:
        """Run one step of connection set-up with a deadline; stop cancels it. A step past its deadline
        fails with a TimeoutError naming the step."""
        self._attempt = defer.ensureDeferred(work)
        self._attempt.addTimeout(timeout, self._clock)
        try:
            result: _T = await self._attempt
            return result
        except defer.TimeoutError:
            if self._stopping:
                raise
            raise defer.TimeoutError(f"{step} timed out after {timeout:g} s") from None
        finally:
            self._attempt = None

    async def _sleep(self, seconds: float) -> None:
        """Wait before the next attempt; stop cuts the wait short."""
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
            "cannot reach RabbitMQ at {address}: {reason}; retrying {how}",
            event="rabbitmq.unreachable",
            address=self.address,
            reason=reason,
            how=f"the other {others} nodes in turn, each round with backoff (up to 30 s)"
            if others
            else "with backoff (up to 30 s)",
        )

    def _on_lost(self, conn: AMQPConnection, reason: Any) -> None:
        self._channel = None
        self._lost = None
        connection_lost = not conn.is_open
        if connection_lost:
            self._set_blocked(False)
        if self._stopping:
            self._user.lost(None, connection_lost)
            return
        self.last_error = describe_error(reason)
        self._failing = True
        self._user.lost(self.last_error, connection_lost)

    # -- Connection.Blocked ---------------------------------------------------------------------

    def broker_blocked(self, reason: str) -> None:
        """The broker's memory or disk alarm (Connection.Blocked): publishing waits until it lifts."""
        self.last_error = f"broker blocked publishing: {reason or 'resource alarm'}"
        self._set_blocked(True)

    def broker_unblocked(self) -> None:
        """Connection.Unblocked: the alarm lifted."""
        self._set_blocked(False)

    def _set_blocked(self, blocked: bool) -> None:
        """Say so once per change, and tell the user."""
        if blocked == self.blocked:
            return
        self.blocked = blocked
        if blocked:
            self.log.warn(
                "RabbitMQ blocked publishing ({reason}); holding events",
                event="rabbitmq.blocked",
                reason=self.last_error,
            )
        else:
            self.log.info("RabbitMQ unblocked publishing; resuming", event="rabbitmq.unblocked")
        self._user.blocked_changed(blocked)
