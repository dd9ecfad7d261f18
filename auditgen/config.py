"""Settings: one table of every setting, read from twistd options, the environment and a .env file.

Precedence is option > environment > .env file > default. Every value is checked here, before any port
opens, so a typo stops start-up with one line that names the setting and the value instead of a
service that half works.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

MAX_RATE = 100_000


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Broker:
    """Where and how to reach RabbitMQ; the password stays out of repr and logs."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    vhost: str
    tls: bool = False

    def describe(self) -> str:
        """The address for logs and /healthz, never the password."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else self.vhost
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{vhost}"


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start; built only by load_settings, so always valid."""

    broker: Broker
    queue: str
    app_port: int
    prometheus_port: int
    interval: float
    rate: float | None
    outbox_max: int
    max_unconfirmed: int
    confirm_wait: float
    connect_timeout: float
    heartbeat: int
    shutdown_timeout: float
    spool_dir: str | None
    spool_max_bytes: int
    metrics_max_series: int
    max_body_bytes: int
    seed: str | None
    log_format: str = "text"
    log_level: str = "info"

    @property
    def events_per_second(self) -> float:
        """The generator's rate: AUDITGEN_RATE, else one event per interval, else 0 (off)."""
        if self.rate is not None:
            return self.rate
        return 1.0 / self.interval if self.interval > 0 else 0.0


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def _number(text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected {what}, a number") from None


def _seconds(text: str) -> float:
    value = _number(text, "a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number of seconds, 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def _rate(text: str) -> float:
    value = _number(text, "events per second")
    if not 0.01 <= value <= MAX_RATE:
        raise ValueError(f"expected events per second from 0.01 to {MAX_RATE}")
    return value


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text


def _directory(text: str) -> str:
    """A directory we can write, or one we could create; checked without creating anything."""
    path = Path(_text(text)).expanduser().absolute()
    if path.exists():
        if not path.is_dir():
            raise ValueError("exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError("is not writable by this user")
        return str(path)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"does not exist and cannot be created ({parent} is not writable)")
    return str(path)


def _any_text(text: str) -> str:
    return text


def _choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of `choices` (any case)."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class Spec:
    """One setting: its environment variable, its twistd option, how to parse it and what it means."""

    key: str
    env: str
    option: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


SPECS: tuple[Spec, ...] = (
    Spec("host", "RABBITMQ_HOST", "rabbitmq-host", "localhost", _text, "RabbitMQ host."),
    Spec("port", "RABBITMQ_PORT", "rabbitmq-port", "5672", _port, "RabbitMQ port."),
    Spec("user", "RABBITMQ_USER", "rabbitmq-user", "guest", _text, "RabbitMQ user."),
    Spec(
        "password",
        "RABBITMQ_PASS",
        "rabbitmq-pass",
        "guest",
        _any_text,
        "RabbitMQ password (never logged or shown).",
        secret=True,
    ),
    Spec("vhost", "RABBITMQ_VHOST", "rabbitmq-vhost", "/", _text, "RabbitMQ virtual host."),
    Spec(
        "url",
        "RABBITMQ_URL",
        "rabbitmq-url",
        None,
        _any_text,
        "amqp:// or amqps:// URL; overrides host, port, user, password and vhost.",
        secret=True,
    ),
    Spec(
        "queue",
        "RABBITMQ_QUEUE",
        "rabbitmq-queue",
        "audit_events",
        _text,
        "Queue to publish to (declared durable, no arguments).",
    ),
    Spec("app_port", "APP_PORT", "app-port", "5000", _port, "HTTP API port."),
    Spec(
        "prometheus_port",
        "PROMETHEUS_PORT",
        "prometheus-port",
        "8000",
        _port,
        "Prometheus metrics port (path /metrics).",
    ),
    Spec(
        "interval",
        "EVENT_GENERATION_INTERVAL_SECONDS",
        "interval",
        "5",
        _seconds,
        "Seconds between generated events; 0 turns generation off.",
    ),
    Spec(
        "rate",
        "AUDITGEN_RATE",
        "rate",
        None,
        _rate,
        "Events per second to generate (0.01 to 100000); overrides EVENT_GENERATION_INTERVAL_SECONDS.",
    ),
    Spec(
        "outbox_max",
        "AUDITGEN_OUTBOX_MAX",
        "outbox-max",
        "10000",
        _positive_int,
        "Events held while waiting for a broker confirm; when full, new events get 503.",
    ),
    Spec(
        "max_unconfirmed",
        "AUDITGEN_MAX_UNCONFIRMED",
        "max-unconfirmed",
        "1000",
        _positive_int,
        "Messages published but not yet confirmed, at most.",
    ),
    Spec(
        "confirm_wait",
        "AUDITGEN_CONFIRM_WAIT",
        "confirm-wait",
        "1",
        _seconds,
        "Seconds POST /generate_event waits for the confirm before answering 'queued'.",
    ),
    Spec(
        "connect_timeout",
        "AUDITGEN_CONNECT_TIMEOUT",
        "connect-timeout",
        "10",
        _positive_seconds,
        "Seconds allowed for the TCP connect, and again for the AMQP handshake.",
    ),
    Spec(
        "heartbeat",
        "AUDITGEN_HEARTBEAT",
        "heartbeat",
        "30",
        _non_negative_int,
        "AMQP heartbeat in seconds (0 turns it off).",
    ),
    Spec(
        "shutdown_timeout",
        "AUDITGEN_SHUTDOWN_TIMEOUT",
        "shutdown-timeout",
        "10",
        _seconds,
        "Seconds to wait for outstanding confirms on shutdown.",
    ),
    Spec(
        "spool_dir",
        "AUDITGEN_SPOOL_DIR",
        "spool-dir",
        None,
        _directory,
        "Directory of the durable outbox; events are on disk before they are acknowledged (unset: memory).",
    ),
    Spec(
        "spool_max_bytes",
        "AUDITGEN_SPOOL_MAX_BYTES",
        "spool-max-bytes",
        "1073741824",
        _positive_int,
        "Largest size of the events held in the spool, in bytes; when full, new events get 503.",
    ),
    Spec(
        "metrics_max_series",
        "AUDITGEN_METRICS_MAX_SERIES",
        "metrics-max-series",
        "1000",
        _positive_int,
        "Distinct label sets per metric; further ones are counted under the label value _overflow.",
    ),
    Spec(
        "max_body_bytes",
        "AUDITGEN_MAX_BODY_BYTES",
        "max-body-bytes",
        "1048576",
        _positive_int,
        "Largest request body the API accepts, in bytes.",
    ),
    Spec(
        "seed",
        "AUDITGEN_SEED",
        "seed",
        None,
        _text,
        "Seed for reproducible runs: the same seed and settings make the same events, ids included.",
    ),
    Spec(
        "log_format",
        "AUDITGEN_LOG_FORMAT",
        "log-format",
        "text",
        _choice("text", "json"),
        "Log lines as twistd's text, or as one JSON object per line (time, level, namespace, event, "
        "message, context) for log shippers.",
    ),
    Spec(
        "log_level",
        "AUDITGEN_LOG_LEVEL",
        "log-level",
        "info",
        _choice("debug", "info", "warn", "error"),
        "Lowest level logged; debug adds the repeats of a state already reported (each nack, each event a "
        "failing spool refused).",
    ),
)

_BROKER_KEYS = ("host", "port", "user", "password", "vhost")


def _parse_url(url: str) -> Broker:
    """Read an amqp(s):// URL the way RabbitMQ documents it: vhost is the percent-decoded path."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"malformed URL ({e})") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError("expected a URL starting with amqp:// or amqps://")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.query or parts.fragment:
        raise ValueError("query parameters and fragments are not supported in the URL")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    tls = parts.scheme == "amqps"
    return Broker(
        host=parts.hostname,
        port=port or (5671 if tls else 5672),
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
        tls=tls,
    )


def _redact(spec: Spec, raw: str) -> str:
    if spec.key == "url":
        try:
            parts = urlsplit(raw)
            if parts.password is not None:
                return raw.replace(f":{parts.password}@", ":***@", 1)
        except ValueError:
            return "<unparseable URL>"
        return raw
    return "***" if spec.secret else raw


def read_dotenv(path: str | None) -> dict[str, str]:
    """The .env file's values; a missing default file is fine, a missing named file is an error."""
    if path is None:
        candidate = Path(".env")
        if not candidate.is_file():
            return {}
    else:
        candidate = Path(path)
        if not candidate.is_file():
            raise ConfigError(f"--env-file: {path!r} is not a readable file")
    return {k: v for k, v in dotenv_values(candidate).items() if v is not None}


def load_settings(
    options: Mapping[str, str | None],
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
) -> Settings:
    """Merge the sources by precedence and check every value; raise ConfigError on the first bad one."""
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw, source = options.get(spec.option), f"--{spec.option}"
        if raw is None and spec.env in environ:
            raw, source = environ[spec.env], f"{spec.env} (environment)"
        if raw is None and spec.env in dotenv:
            raw, source = dotenv[spec.env], f"{spec.env} (.env file)"
        if raw is None:
            raw, source = spec.default, f"{spec.env} (default)"
        if raw is None:
            values[spec.key] = None
            continue
        try:
            values[spec.key] = _parse_url(raw) if spec.key == "url" else spec.parse(raw)
        except ValueError as e:
            raise ConfigError(f"invalid {source}: {_redact(spec, raw)!r}: {e}") from None
    url: Broker | None = values.pop("url")
    broker = url or Broker(**{k: values[k] for k in _BROKER_KEYS})
    for k in _BROKER_KEYS:
        del values[k]
    return Settings(broker=broker, **values)
