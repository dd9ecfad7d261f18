"""The shared RabbitMQ on RABBITMQ_HOST:RABBITMQ_PORT: a plain client, and queues of a test's own.

Tests only add and remove their own queues on it; whatever stops or blocks a broker uses a private node
(tests.support.broker). The client here is pika's blocking one: run it in a thread or outside the reactor.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pika

BROKER_HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))


def blocking_connection() -> pika.BlockingConnection:
    """A plain pika client for test set-up and checks, run in a thread or outside the reactor."""
    return pika.BlockingConnection(
        pika.ConnectionParameters(host=BROKER_HOST, port=BROKER_PORT, connection_attempts=3, retry_delay=1)
    )


def drain_queue(queue: str) -> list[tuple[Any, bytes]]:
    """Every message now in the queue, as (properties, body), acknowledged and removed."""
    conn = blocking_connection()
    try:
        channel = conn.channel()
        messages: list[tuple[Any, bytes]] = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, body))
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_queue(prefix: str = "auditgen-test") -> Iterator[str]:
    """A fresh queue name on the shared broker; the queue is deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        conn = blocking_connection()
        try:
            conn.channel().queue_delete(name)
        finally:
            conn.close()
