"""Waiting on the real reactor, for what only a real process, socket or broker can tell.

In-memory tests never wait: they advance a `twisted.internet.task.Clock`. Whatever must wait here waits
on a condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

reactor: Any = _reactor  # the global reactor, typed loosely: its interfaces are spread over many classes


async def poll(
    reactor: Any, condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05
) -> None:
    """Run the reactor until condition() (sync, or returning a Deferred/coroutine) is true, or fail."""
    deadline = reactor.seconds() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if reactor.seconds() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await deferLater(reactor, every, lambda: None)


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Let the global reactor run until condition() holds (it may be async); fail after timeout seconds."""
    await poll(reactor, condition, timeout, what, every=0.01)
