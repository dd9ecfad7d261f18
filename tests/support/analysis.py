"""A stand-in for the platform's analysis service (/work/shared/examples/README.md), on the real broker.

Its two rules, counted by arrival time: failed logins per user_id and server_hostname, stamped when
consumed, 3 or more within 60 s (an alert for every failure while the count holds); a file_modified
MODIFIED whose top-level resource contains one of four sensitive paths. Every alert goes to the alerts
queue with correlation_id = the triggering event's id and the event under raw_event_data.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict, deque
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ClientCreator

SENSITIVE = ("/etc/sudoers", "/root/.ssh/authorized_keys", "/etc/shadow", "/etc/passwd")
WINDOW, THRESHOLD = 60.0, 3


class Rules:
    """The two rules; `see` returns the alerts one event trips, given when it arrived. `window`: the
    failed-login rule's (a test may shorten it, to pace a near miss in seconds rather than minutes)."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def see(self, event: dict[str, Any], now: float) -> list[dict[str, Any]]:
        kind, result = event.get("event_type"), event.get("action_result")
        if kind == "user_login" and result == "FAILURE":
            window = self._failures[(event.get("user_id", ""), event.get("server_hostname", ""))]
            window.append(now)
            while window and window[0] < now - self.window:
                window.popleft()
            if len(window) >= THRESHOLD:
                return [alert(event, "ANLY-SEC-001", "Multiple Failed Login Attempts")]
        resource = str(event.get("resource", ""))
        if kind == "file_modified" and result == "MODIFIED" and any(p in resource for p in SENSITIVE):
            return [alert(event, "ANLY-SEC-002", "Sensitive File Modification Detected")]
        return []


def alert(event: dict[str, Any], rule_id: str, name: str) -> dict[str, Any]:
    return {
        "alert_id": str(uuid.uuid4()),
        "alert_name": name,
        "analysis_rule": {"rule_id": rule_id},
        "triggered_by": {"actor_type": "USER", "actor_id": event.get("user_id")},
        "impacted_resource": {"server_hostname": event.get("server_hostname")},
        "correlation_id": event["event_id"],
        "raw_event_data": event,
    }


async def open_channel(
    reactor: Any, host: str, port: int
) -> tuple[TwistedProtocolConnection, TwistedChannel]:
    """A connection and a channel on the broker (the test's, not the service's connection part)."""
    params = pika.ConnectionParameters(credentials=pika.PlainCredentials("guest", "guest"))
    conn: TwistedProtocolConnection = await ClientCreator(
        reactor, TwistedProtocolConnection, params
    ).connectTCP(host, port)
    await conn.ready
    channel: TwistedChannel = await conn.channel()
    return conn, channel


async def close(conn: TwistedProtocolConnection) -> None:
    """Close the connection and wait until it is closed."""
    closed = conn.closed
    if conn.is_open:
        conn.close()
    if closed is not None:
        await closed


class AnalysisService:
    """Consumes the events queue, applies the rules, publishes alerts to the alerts queue."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        events_queue: str,
        alerts_queue: str,
        window: float = WINDOW,
    ) -> None:
        self._reactor = reactor
        self._where = (host, port)
        self._events, self._alerts = events_queue, alerts_queue
        self.rules = Rules(window)
        self.published: list[dict[str, Any]] = []
        self._conn: TwistedProtocolConnection | None = None
        self._loop: Deferred[None] | None = None

    async def start(self) -> None:
        self._conn, channel = await open_channel(self._reactor, *self._where)
        await channel.queue_declare(self._events, durable=True)
        await channel.queue_declare(self._alerts, durable=True)
        messages, _ = await channel.basic_consume(queue=self._events, auto_ack=True)
        self._loop = ensureDeferred(self._run(channel, messages))

    async def _run(self, channel: TwistedChannel, messages: Any) -> None:
        try:
            while True:
                message = await messages.get()
                event = json.loads(message.body)
                for found in self.rules.see(event, self._reactor.seconds()):
                    self.published.append(found)
                    channel.basic_publish("", self._alerts, json.dumps(found).encode())
        except Exception:
            return  # the channel closed: the test is over

    async def stop(self) -> None:
        if self._conn is not None:
            await close(self._conn)
        if self._loop is not None:
            await self._loop
