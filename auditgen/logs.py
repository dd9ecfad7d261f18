"""The service's log observer: Twisted's text lines, or one JSON object per line for log shippers.

twistd builds its log observer after makeService and before anything runs, from the application's
ILogObserver component if there is one. makeService builds ours here (the same destination twistd would
pick: stdout in the foreground, else --logfile or twistd.log, rotated on SIGUSR1) and the service tree
sets it on the application, so every line, twistd's own start-up lines included, has one format and
passes one level filter.

Event names: auditgen's own log calls pass a short dotted `event=` key ("rabbitmq.connected"); other
lines (Twisted's own) are named by their format template, which does not change with the values.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer

# Keys of the fixed fields of a JSON line; a log call's context key of the same name gets a "_" suffix.
FIXED = ("time", "level", "namespace", "event", "message", "traceback")
# What twisted.python.log's legacy events carry besides the log_ keys; their text is already the message.
LEGACY = frozenset(
    {"message", "isError", "system", "time", "format", "why", "failure", "printed", "logLevel"}
)
MAX_DEPTH = 6  # nesting kept in context values; deeper (or self-referencing) values become text


def json_line(event: LogEvent) -> str:
    """One log event as one line of JSON; never raises, whatever the event holds."""
    fields: dict[str, Any] = {
        "time": _iso_time(event.get("log_time")),
        "level": str(getattr(event.get("log_level"), "name", "info")),
        "namespace": str(event.get("log_namespace", "-")),
        "event": event_name(event),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        fields["traceback"] = _traceback(failure)
    legacy = "isError" in event and "message" in event
    for key, value in event.items():
        if key.startswith("log_") or key == "event" or (legacy and key in LEGACY):
            continue
        fields[f"{key}_" if key in FIXED else key] = _safe(value, MAX_DEPTH)
    # ensure_ascii: every line break a reader might split on (\n, \u2028, ...) stays escaped.
    return json.dumps(fields, ensure_ascii=True, allow_nan=False) + "\n"


def event_name(event: LogEvent) -> str:
    """The stable name of what happened: the call's `event=` key, else its format template."""
    name = event.get("event")
    if isinstance(name, str) and name:
        return name
    template = event.get("log_format")
    if template == "{log_text}":
        return str(event.get("log_text", ""))
    return str(template) if template is not None else "-"


def _iso_time(when: Any) -> str:
    try:
        moment = datetime.fromtimestamp(float(when), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        moment = datetime.now(tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _traceback(failure: Failure) -> str:
    try:
        return str(failure.getTraceback())
    except Exception:
        return _str_or_placeholder(failure)


def _str_or_placeholder(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _safe(value: Any, depth: int) -> Any:
    """The value as JSON can carry it: containers kept (to a depth), anything else as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Failure):
        return _traceback(value)
    if depth > 0 and isinstance(value, Mapping):
        return {_str_or_placeholder(k): _safe(v, depth - 1) for k, v in list(value.items())}
    if depth > 0 and isinstance(value, list | tuple | set | frozenset):
        return [_safe(v, depth - 1) for v in list(value)]
    return _str_or_placeholder(value)


# Twisted's lines for each port opened and closed ("ApiSite starting on 5000", "(TCP Port 5000 Closed)"):
# the service's ready line says what listens where, with the setting's name.
PORT_NOISE = re.compile(r"\S+ starting on \d+|\(TCP Port \d+ Closed\)")


def observer(out: IO[Any], log_format: str, log_level: str) -> ILogObserver:
    """Lines of the given format to `out`, for events at log_level or above, without the port noise."""
    lines = FileLogObserver(out, json_line) if log_format == "json" else textFileLogObserver(out)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(log_level))
    return FilteringLogObserver(lines, [predicate, NoPortNoise()])


@implementer(ILogFilterPredicate)
class NoPortNoise:
    """Drops Twisted's lines for ports opened and closed; decides nothing about the others."""

    def __call__(self, event: LogEvent) -> Any:
        return PredicateResult.no if PORT_NOISE.fullmatch(event_name(event)) else PredicateResult.maybe


def twistd_observer(twistd: Mapping[str, Any] | None, log_format: str, log_level: str) -> ILogObserver | None:
    """The observer for this twistd run, to where twistd itself would log; None to leave twistd's own.

    None outside twistd, with twistd's --logger (its own observer factory wins) or --syslog, and for a
    daemon told to log to stdout (twistd refuses that itself).
    """
    if twistd is None or twistd.get("logger") or twistd.get("syslog"):
        return None
    filename, foreground = twistd.get("logfile") or "", bool(twistd.get("nodaemon"))
    if filename == "-" and not foreground:
        return None
    return observer(_destination(filename, foreground), log_format, log_level)


def _destination(filename: str, foreground: bool) -> IO[Any]:
    """twistd's own choice (UnixAppLogger): stdout in the foreground unless a file is named."""
    if filename == "-" or (foreground and not filename):
        return sys.stdout
    log_file: IO[Any] = LogFile.fromFullPath(filename or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(_signum: int, _frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return log_file
