"""A load driver: clients posting events to a running service at a steady rate, keeping every 202's id.

What it keeps (accepted event_ids by phase, the answers by kind) is what `tests.support.tally` compares
with what reached the queue. It runs on the Twisted reactor and is usable outside pytest (bench/).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import treq
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.error import ConnectError, ConnectingCancelledError
from twisted.internet.task import deferLater
from twisted.web.client import (
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

LOAD_HOSTNAME = "fault-load.test"  # server_hostname of our posted events, so the metrics tell them apart
JSON_HEADERS: dict[bytes | str, bytes | str] = {b"content-type": b"application/json"}


class Load:
    """Clients posting events over keep-alive connections at a steady total rate, until stopped.

    Each client waits for its answer before the next request (a slow answer, such as the 1 s "queued"
    one while the broker is away, slows that client down). A 202 records the event_id; a 503 or a
    refused connection is counted and not accepted; a request whose answer never came (the service
    died under it) is "in doubt": the event may or may not have been accepted.
    """

    def __init__(self, reactor: Any, url: str, clients: int = 6, rate: float = 300.0) -> None:
        self._reactor = reactor
        self._url = f"{url}/generate_event"
        self._clients = clients
        self._period = clients / rate
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = clients
        self._pool.retryAutomatically = False
        self._running = False
        self._loops: list[Deferred[None]] = []
        self.phase = "before"
        self.accepted: dict[str, str] = {}  # event_id -> phase
        self.statuses: Counter[str] = Counter()  # "202 success", "202 queued", "503", "refused", ...
        self.by_phase: Counter[str] = Counter()
        self.sent = 0

    def start(self) -> None:
        self._running = True
        self._loops = [ensureDeferred(self._client(n)) for n in range(self._clients)]

    def accepted_in(self, phase: str) -> int:
        return self.by_phase[phase]

    async def stop(self) -> None:
        """Stop posting, wait for the answers in flight, and close every connection."""
        self._running = False
        results = await DeferredList(self._loops, consumeErrors=True)
        await self._pool.closeCachedConnections()
        for ok, result in results:
            if not ok:
                result.raiseException()

    async def _client(self, n: int) -> None:
        seq = 0
        due = self._reactor.seconds()
        while self._running:
            now = self._reactor.seconds()
            if due > now:
                await deferLater(self._reactor, due - now, lambda: None)
                if not self._running:
                    break
            due = max(due + self._period, self._reactor.seconds())
            seq += 1
            body = json.dumps(
                {
                    "event_type": "user_login",
                    "server_hostname": LOAD_HOSTNAME,
                    "user_id": f"load-{n}",
                    "details": {"client": n, "seq": seq},
                }
            ).encode()
            await self._post(body)

    async def _post(self, body: bytes) -> None:
        phase = self.phase
        self.sent += 1
        try:
            response = await treq.post(
                self._url,
                data=body,
                headers=JSON_HEADERS,
                pool=self._pool,
                timeout=20,
            )
            text = await response.text()
        except (ConnectError, ConnectingCancelledError):
            self.statuses["refused"] += 1
            return
        except (RequestTransmissionFailed, RequestNotSent):
            self.statuses["not sent"] += 1  # the service never had the whole request
            return
        except (ResponseNeverReceived, ResponseFailed):
            self.statuses["in doubt"] += 1
            return
        except Exception as e:  # treq's timeout cancels the request
            self.statuses[f"error {type(e).__name__}"] += 1
            return
        if response.code == 202:
            answer = json.loads(text)
            self.accepted[answer["event_id"]] = phase
            self.by_phase[phase] += 1
            self.statuses[f"202 {answer['status']}"] += 1
        else:
            self.statuses[str(response.code)] += 1
