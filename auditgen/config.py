"""Settings: one table of every setting, read from twistd options, the environment and a .env file.

Precedence is option > environment > .env file > default. Every value is checked here, before any port
opens, so a typo stops start-up with one line that names the setting and the value instead of a
service that half works.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from auditgen import shapes, world
from auditgen.routing import EXCHANGE_TYPES, QUEUE_TYPES, RoutingKey, Topology, parse_template

MAX_RATE = 100_000
MAX_SESSIONS = 100_000
MAX_SCENARIO_RATE = 1000  # every generated event part of a scenario


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
    session_share: float = 0.3
    sessions: int = 20
    shape: str = shapes.ShapeSettings.shape
    burst_on_seconds: float = shapes.ShapeSettings.burst_on_seconds
    burst_off_seconds: float = shapes.ShapeSettings.burst_off_seconds
    daily_peak_hour: float = shapes.ShapeSettings.daily_peak_hour
    daily_min_ratio: float = shapes.ShapeSettings.daily_min_ratio
    templates: tuple[str, ...] | None = None
    templates_replace: bool = False
    ground_truth_queue: str | None = None
    scenario_rate: float = 0.0
    world_hosts: int = world.DEFAULT_HOSTS
    world_people: int = world.DEFAULT_PEOPLE
    world_file: str | None = None
    brokers: tuple[Broker, ...] = ()  # every node to try, in order; `broker` is the first
    exchange: str = ""
    exchange_type: str = "topic"
    routing_key: str | None = None  # a template; None: the queue name
    binding_key: str | None = None  # None: see `topology`
    declare: bool = True
    queue_type: str = "classic"

    def __post_init__(self) -> None:
        if not self.brokers:
            object.__setattr__(self, "brokers", (self.broker,))

    @property
    def routing(self) -> RoutingKey:
        """The routing key of each event: the template, or the queue name."""
        if self.routing_key is None:
            return RoutingKey.literal(self.queue)
        return RoutingKey(self.routing_key)

    @property
    def event_routing(self) -> RoutingKey | None:
        """The key stored with each accepted event (and in the spool): None without a template, so an event
        takes the publisher's key when sent, the queue of the run that sends it (a spool left by a run with
        another RABBITMQ_QUEUE goes to this run's queue, as the events it makes do)."""
        return None if self.routing_key is None else self.routing

    @property
    def topology(self) -> Topology:
        """What to declare. The binding key defaults to '#' for a topic exchange (every event), to the
        routing key for a direct one, and to '' for fanout and headers (which ignore it)."""
        binding = self.binding_key
        if binding is None:
            defaults = {"topic": "#", "direct": self.routing.fixed or ""}
            binding = defaults.get(self.exchange_type, "")
        return Topology(
            queue=self.queue,
            queue_type=self.queue_type,
            exchange=self.exchange,
            exchange_type=self.exchange_type,
            binding_key=binding,
            declare=self.declare,
        )

    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify_hostname: bool = True
    api_token: str | None = field(default=None, repr=False)
    app_host: str = "0.0.0.0"
    prometheus_host: str = "0.0.0.0"
    secret_options: tuple[str, ...] = ()
    """The options that carried a secret on the command line, where the process list shows it."""
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


def _number_from(what: str, low: float, high: float) -> Callable[[str], float]:
    """A parser of a number from low to high, both included (NaN and infinity are outside)."""

    def parse(text: str) -> float:
        value = _number(text, what)
        if not low <= value <= high:
            raise ValueError(f"expected {what} from {low} to {high}")
        return value

    return parse


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


def _session_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SESSIONS:
        raise ValueError(f"expected a whole number from 1 to {MAX_SESSIONS}")
    return value


def _count_up_to(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > maximum:
            raise ValueError(f"expected a whole number from 1 to {maximum}")
        return value

    return parse


def _any_text(text: str) -> str:
    return text


def _shape_parameter(name: str, what: str) -> Callable[[str], float]:
    """A shape parameter's parser: a number, then the same check PUT /generator applies."""
    check = shapes.PARAMETERS[name]
    return lambda text: check(_number(text, what))


def _shape_default(name: str) -> str:
    return f"{getattr(shapes.ShapeSettings, name):g}"


def _paths(text: str) -> tuple[str, ...]:
    """Comma-separated file paths; the files are read (and checked) when the templates load."""
    paths = tuple(path.strip() for path in text.split(","))
    if not all(paths):
        raise ValueError("expected comma-separated paths of .json, .yaml or .yml files, none empty")
    return paths


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false")


def _exchange(text: str) -> str:
    if len(text.encode()) > 255:
        raise ValueError("expected an exchange name of at most 255 bytes")
    if text and not text.strip():
        raise ValueError("expected a name, or nothing for the default exchange")
    return text


_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host(text: str) -> str:
    """An address to listen on: an IPv4 or IPv6 address, or a hostname (resolved to IPv4 on start)."""
    value = text.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    # An all-digit last label is a mistyped IP address (256.1.1.1), not a hostname (RFC 3696).
    valid = all(_HOSTNAME_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
    if len(value) > 253 or not valid:
        raise ValueError("expected an IP address (such as 0.0.0.0, 127.0.0.1 or ::) or a hostname")
    return value


def _readable_file(text: str) -> str:
    path = Path(_text(text)).expanduser().absolute()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError("expected a readable file")
    return str(path)


def _ca_file(text: str) -> str:
    from auditgen.tls import load_certificates

    path = _readable_file(text)
    load_certificates(path)
    return path


MAX_SECRET_FILE_BYTES = 65_536


def _secret_file(text: str) -> str:
    """The secret in a file (a Docker or Kubernetes secret), without its trailing newline."""
    path = _readable_file(text)
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"the file is larger than {MAX_SECRET_FILE_BYTES} bytes; expected one secret")
    try:
        secret = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None
    if not secret:
        raise ValueError("the file is empty")
    return secret


def _token(text: str) -> str:
    if not text or not all("!" <= c <= "~" for c in text):
        raise ValueError("expected a non-empty token of printable ASCII characters without spaces")
    return text


def _token_file(text: str) -> str:
    return _token(_secret_file(text))


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


def _parse_urls(text: str) -> tuple[Broker, ...]:
    """A comma-separated list of URLs, the nodes of one cluster; an error says which one is wrong."""
    items = text.split(",")
    brokers = []
    for n, item in enumerate(items, 1):
        which = f"URL {n} of {len(items)}: " if len(items) > 1 else ""
        if not item.strip():
            raise ValueError(f"{which}empty; expected a comma-separated list of amqp:// or amqps:// URLs")
        try:
            brokers.append(_parse_url(item))
        except ValueError as e:
            raise ValueError(f"{which}{e}") from None
    return tuple(brokers)


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
        _parse_urls,
        "amqp:// or amqps:// URL, or a comma-separated list (cluster nodes, tried in turn); overrides "
        "host, port, user, password and vhost.",
        secret=True,
    ),
    Spec(
        "queue",
        "RABBITMQ_QUEUE",
        "rabbitmq-queue",
        "audit_events",
        _text,
        "Queue to publish to (declared durable; see RABBITMQ_QUEUE_TYPE).",
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
        _number_from("events per second", 0.01, MAX_RATE),
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
        "session_share",
        "AUDITGEN_SESSION_SHARE",
        "session-share",
        "0.3",
        _number_from("a share of events", 0, 1),
        "Share of generated events (0 to 1) that are steps of stateful sessions; 0 turns sessions off.",
    ),
    Spec(
        "sessions",
        "AUDITGEN_SESSIONS",
        "sessions",
        "20",
        _session_count,
        "Sessions in progress at once (1 to 100000); their steps interleave in the generated stream.",
    ),
    Spec(
        "shape",
        "AUDITGEN_SHAPE",
        "shape",
        shapes.ShapeSettings.shape,
        lambda text: shapes.shape_name(text.strip()),
        f"Traffic shape: {', '.join(shapes.SHAPES)}; the rate is its peak (see the README).",
    ),
    Spec(
        "burst_on_seconds",
        "AUDITGEN_BURST_ON_SECONDS",
        "burst-on-seconds",
        _shape_default("burst_on_seconds"),
        _shape_parameter("burst_on_seconds", "seconds"),
        "Shape bursts: seconds of each burst at the full rate.",
    ),
    Spec(
        "burst_off_seconds",
        "AUDITGEN_BURST_OFF_SECONDS",
        "burst-off-seconds",
        _shape_default("burst_off_seconds"),
        _shape_parameter("burst_off_seconds", "seconds"),
        "Shape bursts: seconds of silence after each burst.",
    ),
    Spec(
        "daily_peak_hour",
        "AUDITGEN_DAILY_PEAK_HOUR",
        "daily-peak-hour",
        _shape_default("daily_peak_hour"),
        _shape_parameter("daily_peak_hour", "an hour of the day"),
        "Shape daily: the UTC hour of the full rate (0 to below 24; 14.5 is 14:30).",
    ),
    Spec(
        "daily_min_ratio",
        "AUDITGEN_DAILY_MIN_RATIO",
        "daily-min-ratio",
        _shape_default("daily_min_ratio"),
        _shape_parameter("daily_min_ratio", "a fraction of the rate"),
        "Shape daily: the rate twelve hours from the peak, as a fraction of the full rate (0 to 1).",
    ),
    Spec(
        "templates",
        "AUDITGEN_TEMPLATES",
        "templates",
        None,
        _paths,
        "Template files (.json, .yaml, .yml), comma-separated, applied in order over the built-in ones.",
    ),
    Spec(
        "templates_replace",
        "AUDITGEN_TEMPLATES_REPLACE",
        "templates-replace",
        "false",
        _bool,
        "true: the template files replace the built-in templates and pools instead of adding to them.",
    ),
    Spec(
        "ground_truth_queue",
        "AUDITGEN_GROUND_TRUTH_QUEUE",
        "ground-truth-queue",
        None,
        _text,
        "Queue for each scenario's ground-truth record (durable, confirmed like events); unset: none.",
    ),
    Spec(
        "scenario_rate",
        "AUDITGEN_SCENARIO_RATE",
        "scenario-rate",
        "0",
        _number_from("scenarios per 1,000 events", 0, MAX_SCENARIO_RATE),
        "Scenarios started per 1,000 generated events (0 to 1000, a number); 0: none.",
    ),
    Spec(
        "world_hosts",
        "AUDITGEN_WORLD_HOSTS",
        "world-hosts",
        str(world.DEFAULT_HOSTS),
        _count_up_to(world.MAX_HOSTS),
        f"Hosts in the world events are drawn from (1 to {world.MAX_HOSTS}), built from the seed.",
    ),
    Spec(
        "world_people",
        "AUDITGEN_WORLD_PEOPLE",
        "world-people",
        str(world.DEFAULT_PEOPLE),
        _count_up_to(world.MAX_PEOPLE),
        f"People with accounts in the world (1 to {world.MAX_PEOPLE}); a third are admins.",
    ),
    Spec(
        "world_file",
        "AUDITGEN_WORLD_FILE",
        "world-file",
        None,
        _text,
        "A world file (.json, .yaml, .yml) to draw events from instead of a built one (docs/world.md).",
    ),
    Spec(
        "exchange",
        "RABBITMQ_EXCHANGE",
        "rabbitmq-exchange",
        "",
        _exchange,
        "Exchange to publish to, declared durable and bound to the queue; empty: the default exchange.",
    ),
    Spec(
        "exchange_type",
        "RABBITMQ_EXCHANGE_TYPE",
        "rabbitmq-exchange-type",
        "topic",
        _choice(*EXCHANGE_TYPES),
        "Type of RABBITMQ_EXCHANGE: direct, fanout, topic or headers.",
    ),
    Spec(
        "routing_key",
        "RABBITMQ_ROUTING_KEY",
        "rabbitmq-routing-key",
        None,
        parse_template,
        "Routing key template over event fields, e.g. audit.{event_type}.{action_result}; unset: the queue.",
    ),
    Spec(
        "binding_key",
        "RABBITMQ_BINDING_KEY",
        "rabbitmq-binding-key",
        None,
        _any_text,
        "Key binding the queue to RABBITMQ_EXCHANGE; unset: # for topic, the routing key for direct.",
    ),
    Spec(
        "declare",
        "RABBITMQ_DECLARE",
        "rabbitmq-declare",
        "true",
        _bool,
        "Declare exchange, queue and binding (true), or nothing, for consumers that own the topology.",
    ),
    Spec(
        "queue_type",
        "RABBITMQ_QUEUE_TYPE",
        "rabbitmq-queue-type",
        "classic",
        _choice(*QUEUE_TYPES),
        "classic (no queue arguments, as legacy consumers declare it) or quorum (x-queue-type=quorum).",
    ),
    Spec(
        "password_file",
        "RABBITMQ_PASS_FILE",
        "rabbitmq-pass-file",
        None,
        _secret_file,
        "File holding the RabbitMQ password (trailing newline ignored); instead of RABBITMQ_PASS.",
    ),
    Spec(
        "tls_ca_file",
        "RABBITMQ_TLS_CA_FILE",
        "rabbitmq-tls-ca-file",
        None,
        _ca_file,
        "PEM file of the CAs that sign the broker's certificate, for amqps:// (unset: the system's).",
    ),
    Spec(
        "tls_cert_file",
        "RABBITMQ_TLS_CERT_FILE",
        "rabbitmq-tls-cert-file",
        None,
        _readable_file,
        "PEM client certificate (and its chain) for amqps://; needs RABBITMQ_TLS_KEY_FILE.",
    ),
    Spec(
        "tls_key_file",
        "RABBITMQ_TLS_KEY_FILE",
        "rabbitmq-tls-key-file",
        None,
        _readable_file,
        "Unencrypted PEM key of the client certificate.",
    ),
    Spec(
        "tls_verify_hostname",
        "RABBITMQ_TLS_VERIFY_HOSTNAME",
        "rabbitmq-tls-verify-hostname",
        "true",
        _bool,
        "Check that the broker's certificate names its host (false: chain only, with a warning).",
    ),
    Spec(
        "api_token",
        "AUDITGEN_API_TOKEN",
        "api-token",
        None,
        _token,
        "Bearer token that every API call other than GET needs (unset: no token).",
        secret=True,
    ),
    Spec(
        "api_token_file",
        "AUDITGEN_API_TOKEN_FILE",
        "api-token-file",
        None,
        _token_file,
        "File holding the API token (trailing newline ignored); instead of AUDITGEN_API_TOKEN.",
    ),
    Spec("app_host", "APP_HOST", "app-host", "0.0.0.0", _host, "Address the HTTP API listens on."),
    Spec(
        "prometheus_host",
        "PROMETHEUS_HOST",
        "prometheus-host",
        "0.0.0.0",
        _host,
        "Address the metrics port listens on.",
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


def _redact_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
        if parts.password is not None:
            return raw.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        return "<unparseable URL>"
    return raw


def _redact(spec: Spec, raw: str) -> str:
    if spec.key == "url":
        return ",".join(_redact_url(item) for item in raw.split(","))
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
    given: dict[str, str] = {}  # key -> where a value other than the default came from
    url_has_password = False
    for spec in SPECS:
        raw, source = options.get(spec.option), f"--{spec.option}"
        if raw is None and spec.env in environ:
            raw, source = environ[spec.env], f"{spec.env} (environment)"
        if raw is None and spec.env in dotenv:
            raw, source = dotenv[spec.env], f"{spec.env} (.env file)"
        if raw is not None:
            given[spec.key] = source
        else:
            raw, source = spec.default, f"{spec.env} (default)"
        if raw is None:
            values[spec.key] = None
            continue
        try:
            values[spec.key] = spec.parse(raw)
        except ValueError as e:
            raise ConfigError(f"invalid {source}: {_redact(spec, raw)!r}: {e}") from None
        if spec.key == "url":
            url_has_password = any(urlsplit(u.strip()).password is not None for u in raw.split(","))
    values["password"] = _one_of(given, values, "password", "password_file")
    values["api_token"] = _one_of(given, values, "api_token", "api_token_file")
    urls: tuple[Broker, ...] | None = values.pop("url")
    if urls is not None and "password_file" in given:
        # The URLs name the brokers, the file holds the password: a URL with a password too is ambiguous.
        if url_has_password:
            raise ConfigError(
                f"{given['password_file']} and a password in RABBITMQ_URL are both set; use one"
            )
        urls = tuple(replace(url, password=values["password"]) for url in urls)
    brokers = urls or (Broker(**{k: values[k] for k in _BROKER_KEYS}),)
    for k in (*_BROKER_KEYS, "password_file", "api_token_file"):
        del values[k]
    _check_tls(given, values, brokers)
    if values["ground_truth_queue"] == values["queue"]:
        raise ConfigError(
            f"invalid AUDITGEN_GROUND_TRUTH_QUEUE: {values['queue']!r}: expected a queue other than "
            "RABBITMQ_QUEUE; records there would reach the event consumers"
        )
    secret_options = tuple(
        f"--{spec.option}"
        for spec in SPECS
        if spec.secret
        and given.get(spec.key, "").startswith("--")
        and (spec.key != "url" or url_has_password)
    )
    settings = Settings(broker=brokers[0], brokers=brokers, secret_options=secret_options, **values)
    _check_routing(settings)
    return settings


def _check_routing(s: Settings) -> None:
    """A direct exchange binds one key: with a templated routing key it cannot be guessed."""
    if s.exchange and s.exchange_type == "direct" and s.binding_key is None and s.routing.fixed is None:
        raise ConfigError(
            f"RABBITMQ_BINDING_KEY must be set: a direct exchange ({s.exchange!r}) with the routing key "
            f"template {s.routing_key!r} gets events with many keys, and the queue is bound with one"
        )


def _one_of(given: Mapping[str, str], values: Mapping[str, Any], key: str, file_key: str) -> Any:
    """A secret given directly or in a file, never both (which one would win is a guess)."""
    if key in given and file_key in given:
        raise ConfigError(f"{given[key]} and {given[file_key]} are both set; use one")
    return values[file_key] if file_key in given else values[key]


def _check_tls(given: Mapping[str, str], values: Mapping[str, Any], brokers: tuple[Broker, ...]) -> None:
    """TLS files only with an amqps:// broker, a certificate only with its key, and both readable."""
    tls_keys = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_verify_hostname")
    if not any(broker.tls for broker in brokers) and (named := [given[k] for k in tls_keys if k in given]):
        raise ConfigError(
            f"{named[0]} is set but the broker is not amqps://; TLS needs an amqps:// RABBITMQ_URL"
        )
    cert, key = given.get("tls_cert_file"), given.get("tls_key_file")
    if (cert is None) != (key is None):
        missing = "RABBITMQ_TLS_KEY_FILE" if cert else "RABBITMQ_TLS_CERT_FILE"
        raise ConfigError(f"{cert or key} is set without {missing}; give both")
    if cert is not None:
        from auditgen.tls import load_client_certificate

        try:
            load_client_certificate(values["tls_cert_file"], values["tls_key_file"])
        except ValueError as e:
            raise ConfigError(f"invalid {cert} / {key}: {e}") from None
