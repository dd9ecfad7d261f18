"""The alerts consumer's broker link: a Connection of its own, kept by the same Connector the publisher
uses (the node list, TLS, credentials, timeouts and backoff of the settings), handing each new channel to
the consumer, which consumes on it until it closes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pika.adapters.twisted_connection import TwistedChannel
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from auditgen.amqp.connection import AMQPConnection, Connector
from auditgen.amqp.tls import ClientTLS
from auditgen.config import Broker
from auditgen.verdicts.consumer import AlertConsumer


class AlertsLink(Service):
    """A ChannelUser for the Connector: nothing to set up (the consumer declares what it reads), and a new
    consume() on every channel opened; the consumer's unacknowledged alerts come again on the next one."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        brokers: Sequence[Broker],
        consumer: AlertConsumer,
        tls: ClientTLS | None = None,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        shutdown_timeout: float = 10.0,
        name: str = "auditgen alerts",
    ) -> None:
        self.consumer = consumer
        self.connector = Connector(
            reactor,
            brokers,
            self,
            self.log,
            connect_timeout=connect_timeout,
            heartbeat=heartbeat,
            shutdown_timeout=shutdown_timeout,
            tls=tls,
            name=name,
        )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.connector.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.consumer.stop()
        return ensureDeferred(self.connector.stop())

    # -- what the Connector asks of its user ----------------------------------------------------------

    async def setup(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        """Nothing before the channel counts as open: consume() declares and binds on it."""

    def opened(self, conn: AMQPConnection, channel: TwistedChannel) -> None:
        ensureDeferred(self.consumer.consume(channel)).addErrback(self._failed)

    def lost(self, reason: str | None, connection_lost: bool) -> None:
        """consume() returns by itself when its channel closes."""

    def blocked_changed(self, blocked: bool) -> None:
        """A broker's Blocked holds publishing only; consuming goes on."""

    async def drain(self) -> None:
        """Nothing in flight to finish: an alert not yet acknowledged is delivered again."""

    def _failed(self, failure: Failure) -> None:
        self.log.failure(
            "the alerts consumer failed on its channel; it resumes on the next one",
            failure,
            event="verdicts.consumer_failed",
        )
