"""Log lines: the JSON format for shippers, the level filter, twistd's destination, one line per state."""

from __future__ import annotations

import io
import json
import re
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pika.frame
import pika.spec
import pytest
from twisted.application.service import Application
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel, capturedLogs, textFileLogObserver
from twisted.python.failure import Failure

from auditgen.amqp.confirms import ConfirmWindow
from auditgen.app import AuditgenService
from auditgen.config import ConfigError, load_settings
from auditgen.events import Catalog, EventFactory
from auditgen.generator import Generator
from auditgen.logs import event_name, json_line, observer, twistd_observer
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.spool import SpoolError

FIXED_FIELDS = {"time", "level", "namespace", "event", "message"}


def emitted(log_format: str, level: str, emit: Any) -> str:
    """What an observer of this format and level writes while emit(logger) logs."""
    out = io.StringIO()
    log = Logger(namespace="auditgen.test", observer=observer(out, log_format, level))
    emit(log)
    return out.getvalue()


def test_json_line_carries_time_level_namespace_event_message_and_context() -> None:
    """One object per line: ISO 8601 UTC time, level, logger namespace, the event= name, the formatted
    message, and the call's context keys as they were passed."""
    text = emitted(
        "json",
        "info",
        lambda log: log.warn("lost {count} at {address}", event="rabbitmq.lost", count=3, address="h:5672"),
    )
    assert text.count("\n") == 1
    line = json.loads(text)
    assert set(line) >= FIXED_FIELDS
    assert line["time"].endswith("Z")
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert (line["level"], line["namespace"], line["event"]) == ("warn", "auditgen.test", "rabbitmq.lost")
    assert line["message"] == "lost 3 at h:5672"
    assert (line["count"], line["address"]) == (3, "h:5672")


def test_hostile_values_never_break_the_line() -> None:
    """Objects JSON cannot hold, NaN, bytes, line separators, a self-containing list and an object whose
    str() raises all end up as one parseable line."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        __repr__ = __str__

    loop: list[Any] = []
    loop.append(loop)
    text = emitted(
        "json",
        "info",
        lambda log: log.info(
            "odd {text}",
            text="two\nlines\u2028and more",
            nan=float("nan"),
            raw=b"\xff\x00",
            obj=object(),
            loop=loop,
            bad=Unprintable(),
            nested={1: (2, {3})},
            time="a context key named like a fixed field",
        ),
    )
    assert len(text.splitlines()) == 1
    line = json.loads(text)
    assert line["text"] == "two\nlines\u2028and more"
    assert line["nan"] == "nan"
    assert line["raw"] == "\ufffd\x00"
    assert line["nested"] == {"1": [2, [3]]}
    assert line["bad"] == "<unprintable Unprintable>"
    assert line["time_"] == "a context key named like a fixed field"
    assert line["time"].endswith("Z")


def test_a_failure_carries_its_traceback_as_text() -> None:
    """log.failure gives a critical line with the traceback in one string field."""

    def fail(log: Logger) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.failure("could not do it", event="test.failed")

    line = json.loads(emitted("json", "info", fail))
    assert (line["level"], line["event"]) == ("critical", "test.failed")
    assert "ValueError: boom" in line["traceback"]


def test_lines_without_an_event_name_are_named_by_their_template() -> None:
    """Twisted's own lines are named by their format (stable across values); legacy text by the text."""
    assert event_name({"log_format": "Site starting on {port}", "port": 1}) == "Site starting on {port}"
    assert event_name({"log_format": "{log_text}", "log_text": "Main loop terminated."}) == (
        "Main loop terminated."
    )
    assert event_name({"event": "rabbitmq.connected", "log_format": "x"}) == "rabbitmq.connected"


def test_legacy_events_keep_only_their_text() -> None:
    """Events from twisted.python.log carry message/isError/system; the JSON line has the text once."""
    legacy = {
        "message": ("Main loop terminated.",),
        "isError": 0,
        "system": "-",
        "time": 0.0,
        "log_format": "{log_text}",
        "log_text": "Main loop terminated.",
        "log_level": LogLevel.info,
        "log_namespace": "log_legacy",
        "log_time": 0.0,
    }
    line = json.loads(json_line(legacy))
    assert line == {
        "time": "1970-01-01T00:00:00.000000Z",
        "level": "info",
        "namespace": "log_legacy",
        "event": "Main loop terminated.",
        "message": "Main loop terminated.",
    }


def test_level_filters_lines_below_it() -> None:
    """At info, debug lines are dropped; at debug they are written; at error, warnings are dropped."""

    def both(log: Logger) -> None:
        log.debug("detail", event="test.detail")
        log.warn("state", event="test.state")

    assert [json.loads(x)["event"] for x in emitted("json", "info", both).splitlines()] == ["test.state"]
    assert len(emitted("json", "debug", both).splitlines()) == 2
    assert emitted("json", "error", both) == ""


def test_text_format_is_twistds_own() -> None:
    """The text format writes exactly what twistd's default observer writes."""
    event = {
        "log_format": "hello {who}",
        "who": "you",
        "log_level": LogLevel.info,
        "log_namespace": "auditgen.test",
        "log_time": 1_700_000_000.0,
    }
    ours, twistds = io.StringIO(), io.StringIO()
    observer(ours, "text", "info")(dict(event))
    textFileLogObserver(twistds)(dict(event))
    assert ours.getvalue() == twistds.getvalue() != ""


def test_twistd_observer_goes_where_twistd_would_log(tmp_path: Path) -> None:
    """No observer outside twistd, with --logger or --syslog, or for a daemon told to log to stdout;
    otherwise lines go to --logfile (rotated on SIGUSR1 as twistd does)."""
    assert twistd_observer(None, "json", "info") is None
    assert twistd_observer({"logger": object(), "nodaemon": True}, "json", "info") is None
    assert twistd_observer({"syslog": True}, "json", "info") is None
    assert twistd_observer({"logfile": "-", "nodaemon": False}, "json", "info") is None
    assert twistd_observer({"logfile": "", "nodaemon": True}, "json", "info") is not None
    before = signal.getsignal(signal.SIGUSR1)
    try:
        path = tmp_path / "auditgen.log"
        obs = twistd_observer({"logfile": str(path), "nodaemon": False}, "json", "info")
        assert obs is not None
        Logger(namespace="auditgen.test", observer=obs).info("to the file", event="test.file")
        assert json.loads(path.read_text())["event"] == "test.file"
        assert callable(signal.getsignal(signal.SIGUSR1))
    finally:
        signal.signal(signal.SIGUSR1, before)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AUDITGEN_LOG_FORMAT": "xml"}, "invalid AUDITGEN_LOG_FORMAT (environment): 'xml': expected one of"),
        ({"AUDITGEN_LOG_LEVEL": "trace"}, "invalid AUDITGEN_LOG_LEVEL (environment): 'trace'"),
    ],
)
def test_bad_log_settings_are_refused(environ: dict[str, str], expected: str) -> None:
    """An unknown format or level stops start-up, naming the setting and the value."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ, {})
    assert expected in str(info.value)


def test_log_settings_default_to_text_at_info_and_ignore_case() -> None:
    """Unset: twistd's text lines at info; values are read in any case."""
    s = load_settings({}, {}, {})
    assert (s.logs.format, s.logs.level) == ("text", "info")
    s = load_settings({"log-format": "JSON"}, {"AUDITGEN_LOG_LEVEL": "Debug"}, {})
    assert (s.logs.format, s.logs.level) == ("json", "debug")


class NoAPI:
    """An API that is never asked anything but to close."""

    def close(self) -> None:
        pass


def test_the_service_gives_twistds_application_its_observer() -> None:
    """twistd starts logging with the application's ILogObserver: the service tree sets it there."""
    out = io.StringIO()
    obs = observer(out, "json", "info")
    application = Application("auditgen")
    AuditgenService(Clock(), NoAPI(), obs).setServiceParent(application)
    assert application.getComponent(ILogObserver) is obs
    bare = Application("auditgen")
    AuditgenService(Clock(), NoAPI()).setServiceParent(bare)
    assert bare.getComponent(ILogObserver) is None


class FailingOutbox:
    """An outbox whose spool cannot write: every put fails with SpoolError."""

    full = False

    def put(self, event: Any) -> defer.Deferred[Any]:
        return defer.fail(SpoolError("could not write the spool: disk full"))


def test_events_a_failing_spool_refused_are_logged_at_debug_only() -> None:
    """The spool logs its failed batch once; the generator's line per refused event is debug."""
    clock = Clock()
    generator = Generator(clock, 100.0, EventFactory(Catalog.builtin()).generate, FailingOutbox(), Metrics())  # type: ignore[arg-type]
    with capturedLogs() as events:
        generator.startService()
        clock.advance(0.5)
        generator.stopService()
    refused = [e for e in events if e.get("event") == "generator.not_stored"]
    assert len(refused) > 1
    assert {e["log_level"] for e in refused} == {LogLevel.debug}


def test_nacks_log_one_warning_then_debug_until_the_broker_confirms_again() -> None:
    """A run of nacks is one warning (later ones at debug), and the first ack after them one info line."""
    clock = Clock()
    metrics = Metrics()
    outbox = Outbox(100, metrics, clock)
    window = ConfirmWindow(outbox, metrics, clock, Logger(), wake=lambda: None)
    factory = EventFactory(Catalog.builtin())
    tags = iter(range(1, 100))

    def confirm(method: Any) -> None:
        outbox.add(factory.generate())
        assert len(window.fill()) == 1
        window.confirmed(next(tags), multiple=False, nack=isinstance(method, pika.spec.Basic.Nack))

    with capturedLogs() as events:
        for _ in range(3):
            confirm(pika.spec.Basic.Nack())
            outbox.take()  # the retried entry, so the next confirm publishes a new one
        confirm(pika.spec.Basic.Ack())
        confirm(pika.spec.Basic.Ack())
    lines = [(e["event"], e["log_level"]) for e in events if str(e.get("event", "")).startswith("rabbitmq.")]
    assert lines == [
        ("rabbitmq.nack", LogLevel.warn),
        ("rabbitmq.nack", LogLevel.debug),
        ("rabbitmq.nack", LogLevel.debug),
        ("rabbitmq.nacks_ended", LogLevel.info),
    ]


def test_failure_context_values_become_tracebacks() -> None:
    """A Failure passed as a context value (not as the failure) is written as its traceback text."""
    try:
        raise KeyError("missing")
    except KeyError:
        failure = Failure()
    line = json.loads(emitted("json", "info", lambda log: log.error("oops", event="t", why=failure)))
    assert "KeyError" in line["why"]


def test_docs_list_every_event_name() -> None:
    """Every event= name auditgen logs, in any of its modules, has a row in the Logs section of
    docs/operations.md, so shippers can filter on it."""
    root = Path(__file__).resolve().parent.parent
    operations = (root / "docs" / "operations.md").read_text()
    logs_section = operations[operations.index("\n## Logs\n") :]
    logs_section = logs_section[: logs_section.index("\n## ", 1)]
    names = {
        name
        for source in (root / "auditgen").rglob("*.py")
        for name in re.findall(r'\bevent="([a-z_.]+)"', source.read_text())
    }
    assert len(names) > 10
    assert not {n for n in names if f"| `{n}` |" not in logs_section}
