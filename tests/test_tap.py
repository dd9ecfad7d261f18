"""The service tree: its shutdown order, and the templates it is built with."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred

from auditgen.generator import Generator
from auditgen.tap import AuditgenService, Options, makeService


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


def test_the_service_makes_events_from_the_templates_the_options_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """makeService builds the API's and the generator's factories on the catalog the options loaded
    (here: one user template replacing the built-in set), not on the built-in one; the API's warnings
    and --strict look at that catalog too."""
    monkeypatch.delenv("AUDITGEN_TEMPLATES", raising=False)
    own = {
        "pools": {"hosts": ["h"], "users": ["u"]},
        "templates": [
            {
                "name": "t",
                "event_type": "mine",
                "severity": "INFO",
                "action_result": "OK",
                "weight": 1,
                "details": {},
            }
        ],
    }
    path = tmp_path / "own.json"
    path.write_text(json.dumps(own))
    options = Options()
    options.parseOptions(
        [
            f"--templates={path}",
            "--templates-replace=true",
            "--strict=true",
            "--session-share=0",
            "--app-port=0",
            "--prometheus-port=0",
        ]
    )
    try:
        root = makeService(options)
    finally:
        gc.unfreeze()
    generator = next(child for child in root if isinstance(child, Generator))
    assert generator._make()["event_type"] == "mine"
    assert root._api._factory.complete({"event_type": "other"})["server_hostname"] == "h"
    assert (root._api._catalog.event_types, root._api._strict) == ({"mine"}, True)


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


def test_secret_option_values_are_hidden_from_the_process_title() -> None:
    """Both spellings of a secret option lose their value; other arguments are kept as they were."""
    from auditgen.tap import hidden_argv

    argv = ["twistd", "-n", "auditgen", "--api-token=s3cret", "--rabbitmq-pass", "pw", "--app-port=1"]
    assert hidden_argv(argv, ["--api-token", "--rabbitmq-pass"]) == [
        "twistd", "-n", "auditgen", "--api-token=***", "--rabbitmq-pass", "***", "--app-port=1",
    ]  # fmt: skip
    assert hidden_argv(argv, []) == argv
