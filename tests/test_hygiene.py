"""The reactor hygiene check that conftest.py runs after every test, on a MemoryReactorClock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.tcp import Port
from twisted.internet.testing import MemoryReactorClock

from tests.support.hygiene import DEADLINE, Leftover, Snapshot, cancel_calls, leftovers, settle


class Socket:
    """A connection as the reactor holds it."""


def settled(reactor: MemoryReactorClock, before: Snapshot) -> defer.Deferred[list[Leftover]]:
    return defer.ensureDeferred(settle(before, reactor))


def result(d: defer.Deferred[Any]) -> Any:
    found: list[Any] = []
    d.addBoth(found.append)
    assert found, "not settled yet"
    return found[0]


def test_a_clean_reactor_is_settled_at_once() -> None:
    """Nothing new: no leftovers and no wait (the answer comes without advancing the clock)."""
    reactor = MemoryReactorClock()
    reactor.addReader(Socket())
    before = Snapshot.of(reactor)
    assert leftovers(before, reactor, DEADLINE) == []
    assert result(settled(reactor, before)) == []
    assert reactor.getDelayedCalls() == []


def test_a_port_still_listening_fails_at_once() -> None:
    """A listening port does not go by itself: it is reported without waiting."""
    reactor = MemoryReactorClock()
    before = Snapshot.of(reactor)
    port = Port(0, Factory(), reactor=reactor)
    reactor.addReader(port)
    [left] = result(settled(reactor, before))
    assert (left.kind, left.thing, left.closing) == ("reader", port, False)
    port.disconnecting = True  # stopListening() was called: now it may still be on its way out
    assert leftovers(before, reactor, DEADLINE)[0].closing


def test_a_closing_connection_is_waited_for_until_it_goes() -> None:
    """A connection may be closing: the check waits for it, and is clean once it went."""
    reactor = MemoryReactorClock()
    before = Snapshot.of(reactor)
    socket = Socket()
    reactor.addReader(socket)
    d = settled(reactor, before)
    reactor.advance(1.0)
    assert not d.called
    reactor.removeReader(socket)
    reactor.advance(0.01)
    assert result(d) == []


def test_a_connection_that_never_closes_fails_after_the_deadline() -> None:
    """Waiting has a deadline: after it, whatever is still there is reported."""
    reactor = MemoryReactorClock()
    before = Snapshot.of(reactor)
    socket = Socket()
    reactor.addWriter(socket)
    d = settled(reactor, before)
    reactor.pump([0.5] * int(DEADLINE / 0.5))
    assert not d.called
    reactor.advance(0.5)
    [left] = result(d)
    assert (left.kind, left.thing) == ("writer", socket)


def test_a_call_due_later_fails_at_once_and_one_due_soon_is_waited_for() -> None:
    """A delayed call due after the deadline is reported at once; one due before it is let run."""
    reactor = MemoryReactorClock()
    before = Snapshot.of(reactor)
    late = reactor.callLater(DEADLINE + 1, lambda: None)
    [left] = result(settled(reactor, before))
    assert (left.kind, left.thing, left.closing) == ("delayed call", late, False)
    late.cancel()
    reactor.callLater(0.5, lambda: None)
    d = settled(reactor, before)
    assert not d.called
    reactor.pump([0.25, 0.25, 0.01])
    assert result(d) == []


def test_only_the_calls_the_test_left_are_cancelled() -> None:
    """What was scheduled before the test is not the test's to cancel."""
    reactor = MemoryReactorClock()
    earlier = reactor.callLater(60, lambda: None)
    before = Snapshot.of(reactor)
    left = reactor.callLater(60, lambda: None)
    cancel_calls(before, reactor)
    assert earlier.active() and not left.active()
