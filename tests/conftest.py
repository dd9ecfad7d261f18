"""Shared fixtures: the reactor hygiene check, waiting on conditions, and the real broker."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pika
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from tests.broker import free_port as free_port  # re-exported: tests import it from here
from tests.broker import poll

reactor: Any = _reactor

BROKER_HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))


def _reactor_state() -> tuple[set[Any], set[Any], set[Any]]:
    return (
        set(reactor.getReaders()),
        set(reactor.getWriters()),
        {c for c in reactor.getDelayedCalls() if c.active()},
    )


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Let the reactor run until condition() holds (it may be async); fail after timeout seconds."""
    await poll(reactor, condition, timeout, what, every=0.01)


@pytest_twisted.async_yield_fixture(autouse=True)
async def reactor_is_left_clean() -> AsyncIterator[None]:
    """Every test must close what it opened and cancel what it scheduled on the global reactor."""
    readers, writers, calls = _reactor_state()
    yield
    deadline = reactor.seconds() + 5.0

    def leftovers() -> list[str]:
        now_readers, now_writers, now_calls = _reactor_state()
        found = [f"reader {r!r}" for r in now_readers - readers]
        found += [f"writer {w!r}" for w in now_writers - writers]
        found += [f"delayed call {c!r}" for c in now_calls - calls]
        return found

    while leftovers() and reactor.seconds() < deadline:
        await deferLater(reactor, 0.02, lambda: None)
    left = leftovers()
    for call in reactor.getDelayedCalls():
        if call.active() and call not in calls:
            call.cancel()
    assert not left, "the test left these behind on the reactor:\n" + "\n".join(left)


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


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A fresh queue name on the shared broker, deleted after the test."""
    with fresh_queue() as name:
        yield name
