"""The alerts consumer: alerts from RabbitMQ into the tracker, each acknowledged once recorded.

It works on a channel someone else opened (the connection part owns nodes, TLS, credentials and the
reconnect loop): `consume(channel)` declares what it reads from, consumes until the channel closes, and
returns; the owner calls it again on the next channel. An alert that is not JSON, or names nothing, is
counted and logged as malformed and acknowledged too: sent again it would be just as unreadable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from pika.adapters.twisted_connection import TwistedChannel
from pika.exceptions import ChannelClosed, ChannelWrongStateError, ConnectionClosed, ConsumerCancelled
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from auditgen.metrics import Metrics
from auditgen.verdicts.verdicts import Tracker

SOURCE = "amqp"
PREFETCH = 100  # alerts delivered ahead of their acks


class AlertConsumer:
    """Reads alerts from a durable queue (the pipeline's), or from a queue of its own bound to an exchange
    (exclusive and auto-deleted: other consumers of the exchange keep theirs, and a new one is bound on
    every channel; alerts published while no channel is open do not reach it)."""

    log = Logger()

    def __init__(
        self,
        tracker: Tracker,
        queue: str | None = None,
        exchange: str | None = None,
        binding_key: str = "#",
        metrics: Metrics | None = None,
        prefetch: int = PREFETCH,
        recorded: Callable[[], Deferred[None]] = lambda: succeed(None),
    ) -> None:
        """recorded() fires once what the tracker holds is stored (VerdictStore.flushed): the ack waits
        for it."""
        if (queue is None) == (exchange is None):
            raise ValueError("give a queue or an exchange, not both")
        self._tracker = tracker
        self._queue = queue
        self._exchange = exchange
        self._binding_key = binding_key
        self._metrics = metrics
        self._prefetch = prefetch
        self._recorded = recorded
        self._channel: TwistedChannel | None = None
        self._tag: str | None = None
        self.consuming = False
        """True while a channel delivers alerts to us: for /healthz and the metric."""
        self.received = 0

    def describe(self) -> str:
        if self._exchange is not None:
            return f"a queue of its own bound to exchange {self._exchange!r} with key {self._binding_key!r}"
        return f"queue {self._queue!r}"

    async def consume(self, channel: TwistedChannel) -> None:
        """Declare, then record and acknowledge alerts until the channel closes or stop() is called."""
        await channel.basic_qos(prefetch_count=self._prefetch)
        if self._exchange is not None:
            declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
            queue = declared.method.queue
            await channel.queue_bind(queue=queue, exchange=self._exchange, routing_key=self._binding_key)
        else:
            assert self._queue is not None
            await channel.queue_declare(self._queue, durable=True)
            queue = self._queue
        messages, self._tag = await channel.basic_consume(queue=queue, auto_ack=False)
        self._channel = channel
        self._set_consuming(True)
        self.log.info("consuming alerts from {where}", event="verdicts.consuming", where=self.describe())
        try:
            while True:
                message = await messages.get()
                self._record(message.body)
                self._recorded().addCallback(self._ack, channel, message.method.delivery_tag)
        except (ChannelClosed, ConnectionClosed, ConsumerCancelled):
            pass  # the channel's owner reports and replaces it
        finally:
            self._channel = self._tag = None
            self._set_consuming(False)

    def _ack(self, _: object, channel: TwistedChannel, tag: int) -> None:
        # The channel may have closed meanwhile: the broker then delivers the alert again, on the next one.
        with contextlib.suppress(ChannelWrongStateError):
            channel.basic_ack(tag)

    def _record(self, body: bytes) -> None:
        self.received += 1
        try:
            payload: Any = json.loads(body)
        except ValueError as e:
            self._tracker.malformed(SOURCE, f"not JSON ({e})")
            return
        self._tracker.receive(payload, SOURCE)

    def _set_consuming(self, consuming: bool) -> None:
        self.consuming = consuming
        if self._metrics is not None:
            self._metrics.alerts_consumer_connected.set(1 if consuming else 0)

    def stop(self) -> None:
        """Cancel the consumer: consume() returns once the broker confirms (unacked alerts are redelivered
        to the next consumer)."""
        if self._channel is not None and self._tag is not None:
            self._channel.basic_cancel(self._tag)
