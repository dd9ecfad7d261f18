"""The service tree's shutdown order."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from auditgen.tap import AuditgenService


class Child(Service):
    """A child whose stop takes as long as the test says."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.label = name
        self.log = log
        self.stopping: Deferred[None] = Deferred()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.log.append(self.label)
        return self.stopping


def test_children_stop_one_after_another_in_reverse_and_the_api_refuses_first() -> None:
    """Each child stops only when the one added after it has finished stopping (the publisher's drain
    completes before the spool closes, and the API port closes last); the API refuses from the start."""
    log: list[str] = []
    api = SimpleNamespace(closing=False)
    reactor = SimpleNamespace(_exitSignal=15)
    root = AuditgenService(reactor, api)
    api_port, spool, publisher = Child("api", log), Child("spool", log), Child("publisher", log)
    for child in (api_port, spool, publisher):
        root.addService(child)
    root.startService()
    done = root.stopService()
    assert api.closing
    assert log == ["publisher"]
    publisher.stopping.callback(None)
    assert log == ["publisher", "spool"]
    spool.stopping.callback(None)
    assert log == ["publisher", "spool", "api"]
    assert not done.called
    api_port.stopping.callback(None)
    assert done.called
    assert reactor._exitSignal is None, "a completed graceful stop must exit 0"


def test_ports_listen_on_the_configured_address() -> None:
    """APP_HOST/PROMETHEUS_HOST reach the endpoint; an IPv6 address gets an IPv6 socket."""
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
    from twisted.internet.testing import MemoryReactor

    from auditgen.tap import _listen

    reactor = MemoryReactor()
    for host, kind in (("127.0.0.1", TCP4ServerEndpoint), ("::1", TCP6ServerEndpoint)):
        service = _listen(reactor, host, 5000, object())
        service.startService()
        assert isinstance(service.endpoint, kind)
        assert reactor.tcpServers[-1][0] == 5000
        assert reactor.tcpServers[-1][3] == host
