"""What a test left behind on a reactor: the readers, writers and delayed calls that were not there before.

pytest-twisted has no dirty-reactor check, so conftest.py runs this one after every test. It costs
nothing when the reactor is as the test found it. It waits, up to a deadline, only while everything
left could still be on its way out (a connection being closed by either end, a port told to stop
listening, a delayed call due before the deadline); anything that cannot go by itself (a port still
listening, a call due later) fails the test at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IListeningPort

from tests.support.waiting import poll

DEADLINE = 5.0  # seconds a socket may take to close after the test ended


@dataclass(frozen=True)
class Snapshot:
    """The reactor's readers, writers and active delayed calls at one moment."""

    readers: frozenset[Any]
    writers: frozenset[Any]
    calls: frozenset[Any]

    @classmethod
    def of(cls, reactor: Any) -> Snapshot:
        return cls(
            frozenset(reactor.getReaders()),
            frozenset(reactor.getWriters()),
            frozenset(c for c in reactor.getDelayedCalls() if c.active()),
        )


@dataclass(frozen=True)
class Leftover:
    """One thing a test left on the reactor, and whether it may still go away by itself."""

    kind: str  # "reader", "writer" or "delayed call"
    thing: Any
    closing: bool

    def __str__(self) -> str:
        return f"{self.kind} {self.thing!r}"


def _closing_descriptor(descriptor: Any) -> bool:
    """A connection may be closed by its peer at any moment; a listening port only once told to stop."""
    if IListeningPort.providedBy(descriptor):
        return bool(getattr(descriptor, "disconnecting", False))
    return True


def leftovers(before: Snapshot, reactor: Any, deadline: float) -> list[Leftover]:
    """What is on the reactor now that was not in `before`; a delayed call counts as closing only if it
    is due by `deadline` (in the reactor's seconds)."""
    now = Snapshot.of(reactor)
    found = [Leftover("reader", r, _closing_descriptor(r)) for r in now.readers - before.readers]
    found += [Leftover("writer", w, _closing_descriptor(w)) for w in now.writers - before.writers]
    found += [Leftover("delayed call", c, c.getTime() <= deadline) for c in now.calls - before.calls]
    return found


async def settle(before: Snapshot, reactor: Any, deadline: float = DEADLINE) -> list[Leftover]:
    """Let whatever is closing close, up to `deadline` seconds; what is left then (or at once, when
    something cannot go by itself)."""
    until = reactor.seconds() + deadline

    def done() -> bool:
        left = leftovers(before, reactor, until)
        return not left or not all(item.closing for item in left)

    with contextlib.suppress(TimeoutError):  # what is left after the deadline is the answer
        await poll(reactor, done, deadline, "the test's sockets and calls to go", every=0.01)
    return leftovers(before, reactor, until)


def report(left: list[Leftover]) -> str:
    """The assertion message naming each leftover."""
    return "the test left these behind on the reactor:\n" + "\n".join(map(str, left))


def cancel_calls(before: Snapshot, reactor: Any) -> None:
    """Cancel the delayed calls the test left, so that they cannot fire during the next test."""
    for call in reactor.getDelayedCalls():
        if call.active() and call not in before.calls:
            call.cancel()
