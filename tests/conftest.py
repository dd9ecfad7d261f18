"""Fixtures only: the reactor hygiene check and a fresh queue; shared helpers live in tests/support."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import deferLater

from tests.support.hygiene import DEADLINE, Snapshot, cancel_calls, leftovers, report, settle
from tests.support.shared_broker import fresh_queue
from tests.support.waiting import reactor


@pytest.fixture(scope="session")
def reactor_running() -> None:
    """Let the reactor start once, so that what it adds while starting (its wakers) is not a test's."""
    pytest_twisted.blockon(deferLater(reactor, 0, lambda: None))


@pytest.fixture(autouse=True)
def reactor_is_left_clean(reactor_running: None) -> Iterator[None]:
    """Every test must close what it opened and cancel what it scheduled on the global reactor.

    Free when the reactor is as the test found it; waits (up to a deadline) only while what is left
    may still be closing.
    """
    before = Snapshot.of(reactor)
    yield
    left = leftovers(before, reactor, reactor.seconds() + DEADLINE)
    if left and all(item.closing for item in left):
        left = pytest_twisted.blockon(defer.ensureDeferred(settle(before, reactor)))
    cancel_calls(before, reactor)
    assert not left, report(left)


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A fresh queue name on the shared broker, deleted after the test."""
    with fresh_queue() as name:
        yield name
