"""What a channel declares and publishes to: the exchange, the queue and the binding between them.

Declared on every new channel (unless `declare` is off), so that a queue deleted under us, or a broker
that lost its definitions, is put right by the next channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pika.exceptions import ChannelClosedByBroker

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
QUEUE_TYPES = ("classic", "quorum")


class TopologyError(Exception):
    """The broker refused to declare the exchange, queue or binding as configured."""


_DECLARE_HINTS = {
    403: "this user may not declare them: grant the configure permission, or set RABBITMQ_DECLARE=false",
    406: "one of that name already exists with another type or other arguments (a classic queue where a "
    "quorum one is configured, or the reverse): delete it, or set RABBITMQ_QUEUE_TYPE / "
    "RABBITMQ_EXCHANGE_TYPE to match it",
}


@dataclass(frozen=True)
class Topology:
    """What the publisher declares on every new channel (unless `declare` is off) and publishes to."""

    queue: str
    queue_type: str = "classic"
    exchange: str = ""
    exchange_type: str = "topic"
    binding_key: str = "#"
    declare: bool = True

    @property
    def queue_arguments(self) -> dict[str, Any] | None:
        """Classic: no arguments at all, exactly as legacy consumers declare the queue."""
        return {"x-queue-type": "quorum"} if self.queue_type == "quorum" else None

    def describe(self) -> str:
        """For logs: where events go."""
        where = (
            f"exchange {self.exchange!r} ({self.exchange_type})" if self.exchange else "the default exchange"
        )
        return f"{where}, queue {self.queue!r} ({self.queue_type})"


async def declare(channel: Any, topology: Topology) -> None:
    """Declare the exchange (durable), the queue (durable) and the binding, as configured.

    The broker's own `amq.*` exchanges always exist and refuse a declare, so they are only bound to.
    """
    if not topology.declare:
        return
    exchange = topology.exchange
    if exchange and not exchange.startswith("amq."):
        await channel.exchange_declare(exchange=exchange, exchange_type=topology.exchange_type, durable=True)
    await channel.queue_declare(queue=topology.queue, durable=True, arguments=topology.queue_arguments)
    if exchange:
        await channel.queue_bind(queue=topology.queue, exchange=exchange, routing_key=topology.binding_key)


async def declare_on_new_channel(channel: Any, topology: Topology) -> None:
    """`declare`, where a refusal that settings can fix (permission, a clash) is a TopologyError saying
    which setting to change: the connection logs it once as a configuration error."""
    try:
        await declare(channel, topology)
    except ChannelClosedByBroker as e:
        hint = _DECLARE_HINTS.get(e.reply_code)
        if hint is None:
            raise
        raise TopologyError(
            f"RabbitMQ refused to declare {topology.describe()}: {e.reply_text}; {hint}"
        ) from None
