"""The service tree: its shutdown order, and the templates it is built with."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from auditgen import app
from auditgen.app import AuditgenService
from auditgen.generator import Generator
from auditgen.ports import Listener, PortInUse, holder_of
from auditgen.tap import Options


class FakeAPI:
    """The API as the tree sees it: told to close, first thing on shutdown."""

    closing = False

    def close(self) -> None:
        self.closing = True


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
    api = FakeAPI()
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
    """The tree is built with the API's and the generator's factories on the catalog the options loaded
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
    root = app.build(options.settings, options.catalog, MemoryReactorClock())
    generator = next(child for child in root if isinstance(child, Generator))
    assert generator._make()["event_type"] == "mine"
    assert root.parts is not None
    assert root.parts.api._factory is root.parts.factory
    assert root.parts.factory.complete({"event_type": "other"})["server_hostname"] == "h"
    assert (set(root.parts.api._catalog.event_types), root.parts.api._strict) == ({"mine"}, True)


def test_ports_listen_on_the_configured_address() -> None:
    """APP_HOST/PROMETHEUS_HOST reach the endpoint; an IPv6 address gets an IPv6 socket."""
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
    from twisted.internet.testing import MemoryReactor

    reactor = MemoryReactor()
    for host, kind in (("127.0.0.1", TCP4ServerEndpoint), ("::1", TCP6ServerEndpoint)):
        service = Listener(reactor, "APP_PORT", host, 5000, object())
        service.startService()
        assert isinstance(service.endpoint, kind)
        assert reactor.tcpServers[-1][0] == 5000
        assert reactor.tcpServers[-1][3] == host


def test_secret_option_values_are_hidden_from_the_process_title() -> None:
    """Both spellings of a secret option lose their value; other arguments are kept as they were."""
    from auditgen.process import hidden_argv

    argv = ["twistd", "-n", "auditgen", "--api-token=s3cret", "--rabbitmq-pass", "pw", "--app-port=1"]
    assert hidden_argv(argv, ["--api-token", "--rabbitmq-pass"]) == [
        "twistd", "-n", "auditgen", "--api-token=***", "--rabbitmq-pass", "***", "--app-port=1",
    ]  # fmt: skip
    assert hidden_argv(argv, []) == argv


def settings_for(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--session-share=0", *args])
    return options


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_is_one_error_naming_the_setting_and_its_holder() -> None:
    """A port another socket holds: privilegedStartService raises PortInUse whose one line names the
    address, the setting and the holding process (this one), and whose setting is kept for the log."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        listener = Listener(reactor, "PROMETHEUS_PORT", "127.0.0.1", port, Factory())
        with pytest.raises(PortInUse) as info:
            listener.privilegedStartService()
    line = str(info.value)
    assert "\n" not in line
    assert f"127.0.0.1:{port} (PROMETHEUS_PORT)" in line
    assert f"held by pid {os.getpid()}" in line
    assert info.value.setting == "PROMETHEUS_PORT"


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_the_tree_before_any_part_starts() -> None:
    """The metrics port is taken: the tree's privilegedStartService logs one critical line and raises,
    the API port it had opened is closed again, and no part (spool, publisher, generator) was started."""
    from twisted.internet import reactor

    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        options = settings_for("--app-port=0", f"--prometheus-port={taken}", "--rate=100")
        root = app.build(options.settings, options.catalog, reactor)
        with capturedLogs() as events, pytest.raises(PortInUse):
            root.privilegedStartService()
    [line] = [e for e in events if e.get("event") == "service.port_in_use"]
    assert line["log_level"] == LogLevel.critical
    assert (line["setting"], line["port"]) == ("PROMETHEUS_PORT", taken)
    assert not [child for child in root if child.running]
    assert all(child.listening is None for child in root if isinstance(child, Listener))


def test_ready_and_stopped_lines_say_where_it_listens_and_what_is_left() -> None:
    """Once started, one service.ready line with both addresses, the broker, the queue, the rate and
    the spool; after the stop, one service.stopped line with the events confirmed and left."""
    reactor = MemoryReactorClock()
    options = settings_for("--app-host=127.0.0.1", "--rate=20", "--rabbitmq-queue=q1", "--shutdown-timeout=0")
    root = app.build(options.settings, options.catalog, reactor)
    with capturedLogs() as events:
        root.privilegedStartService()
        root.startService()
        reactor.advance(1)
        stopped = root.stopService()
        reactor.advance(1)
    assert stopped.called
    [ready] = [e for e in events if e.get("event") == "service.ready"]
    assert (ready["api"], ready["metrics"]) == ("127.0.0.1:5000", "0.0.0.0:8000")
    assert (ready["broker"], ready["queue"], ready["rate"]) == ("amqp://guest@localhost:5672/", "q1", 20.0)
    assert ready["spool"] is None
    assert "20 events/s" in formatEvent(ready) and "no spool" in formatEvent(ready)
    assert ready["world_hosts"] == 12
    assert "a world of 12 hosts and 10 people (a random seed; GET /world)" in formatEvent(ready)
    [end] = [e for e in events if e.get("event") == "service.stopped"]
    assert end["confirmed"] == 0
    assert end["left"] == len(root.parts.outbox) > 0
    assert "not sent, lost (no spool)" in formatEvent(end)


def test_building_a_service_changes_nothing_process_wide() -> None:
    """app.build leaves pika's log level, the frozen heap and the excepthook as they were;
    makeService is build plus process.take_over, called once with the settings."""
    level, frozen, hook = logging.getLogger("pika").level, gc.get_freeze_count(), sys.excepthook
    options = settings_for()
    app.build(options.settings, options.catalog, MemoryReactorClock())
    assert (logging.getLogger("pika").level, gc.get_freeze_count(), sys.excepthook) == (level, frozen, hook)


def test_make_service_builds_the_tree_then_takes_over_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """makeService is a thin wrapper: the tree from app.build, then process.take_over with the settings."""
    from auditgen import process, tap

    taken: list[object] = []
    monkeypatch.setattr(process, "take_over", taken.append)
    options = settings_for("--app-port=0", "--prometheus-port=0")
    root = tap.makeService(options)
    assert isinstance(root, AuditgenService)
    assert root.parts is not None and root.parts.settings is options.settings
    assert taken == [options.settings]


def test_the_holder_of_a_port_is_read_from_proc(tmp_path: Path) -> None:
    """holder_of finds the LISTEN socket's inode in net/tcp6 and the process with it among its fds;
    a port nobody listens on, or a missing /proc, names nobody."""
    (tmp_path / "net").mkdir()
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    (tmp_path / "net" / "tcp").write_text(header)
    (tmp_path / "net" / "tcp6").write_text(
        header + "   0: 00000000000000000000000000000000:1388 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n"
        + "   1: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 01 "
        "00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 100 0 0 10 0\n"
    )
    fd = tmp_path / "77" / "fd"
    fd.mkdir(parents=True)
    (fd / "3").symlink_to("socket:[4242]")
    (tmp_path / "77" / "comm").write_text("rabbit\n")
    assert holder_of(5000, tmp_path) == "pid 77 (rabbit)"
    assert holder_of(8000, tmp_path) is None  # 0x1F40 is there, but not listening
    assert holder_of(5000, tmp_path / "absent") is None
