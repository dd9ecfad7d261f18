"""The spec table: every setting, described once.

Each row gives the setting's topic (its group in `Settings`), its key in that group, its environment
variable, its twistd option, its default, its parser and what it means. The options, `--help`, the
loading and the configuration reference (docs/configuration.md) are all made from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditgen.amqp.topology import EXCHANGE_TYPES, QUEUE_TYPES
from auditgen.config import parsers as p
from auditgen.routing import parse_template
from auditgen.shapes import SHAPES, ShapeSettings
from auditgen.verdicts.alerts import DEFAULT_EVENT_FIELDS, parse_event_fields, parse_key_fields
from auditgen.world import DEFAULT_HOSTS, DEFAULT_PEOPLE, MAX_HOSTS, MAX_PEOPLE

MAX_RATE = 100_000
MAX_SESSIONS = 100_000
MAX_SCENARIO_RATE = 1000  # every generated event part of a scenario
MAX_INSTANCES = 10_000
MAX_DETECTION_TIMEOUT = 3600.0  # seconds

TOPICS: dict[str, str] = {
    "broker": "Broker",
    "tls": "TLS to the broker",
    "routing": "Queue, exchange and routing",
    "api": "HTTP API",
    "metrics": "Metrics",
    "generator": "Generator",
    "shape": "Traffic shape",
    "sessions": "Sessions",
    "scenarios": "Scenarios",
    "alerts": "Alerts and verdicts",
    "templates": "Templates",
    "world": "World",
    "outbox": "Outbox and spool",
    "logs": "Logs",
}
"""Each topic (a group of `Settings`) and its heading in --help and the reference, in their order."""


@dataclass(frozen=True)
class Spec:
    """One setting: where it is read from, how it is parsed, and what it means."""

    topic: str
    key: str
    env: str
    option: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def _shape_default(name: str) -> str:
    return f"{getattr(ShapeSettings, name):g}"


SPECS: tuple[Spec, ...] = (
    # -- broker
    Spec("broker", "host", "RABBITMQ_HOST", "rabbitmq-host", "localhost", p.text, "Broker host."),
    Spec("broker", "port", "RABBITMQ_PORT", "rabbitmq-port", "5672", p.port, "Broker port."),
    Spec("broker", "user", "RABBITMQ_USER", "rabbitmq-user", "guest", p.text, "User."),
    Spec(
        "broker", "password", "RABBITMQ_PASS", "rabbitmq-pass", "guest", p.any_text,
        "Password; never logged, never in a response.",
        secret=True,
    ),
    Spec(
        "broker", "password_file", "RABBITMQ_PASS_FILE", "rabbitmq-pass-file", None, p.secret_file,
        "File holding the password (a Docker or Kubernetes secret; a trailing newline is ignored); instead "
        "of `RABBITMQ_PASS`, or with a `RABBITMQ_URL` that has no password. Both ways at once is refused.",
    ),
    Spec("broker", "vhost", "RABBITMQ_VHOST", "rabbitmq-vhost", "/", p.text, "Virtual host."),
    Spec(
        "broker", "url", "RABBITMQ_URL", "rabbitmq-url", None, p.amqp_urls,
        "`amqp://user:pass@host:port/vhost` or `amqps://...` (TLS, port 5671 by default), or a "
        "comma-separated list of them, the nodes of a cluster, tried in turn; overrides host, port, user, "
        "password and vhost.",
        secret=True,
    ),
    Spec(
        "broker", "connect_timeout", "AUDITGEN_CONNECT_TIMEOUT", "connect-timeout", "10", p.positive_seconds,
        "Seconds for the TCP connect, and again for the AMQP handshake.",
    ),
    Spec(
        "broker", "heartbeat", "AUDITGEN_HEARTBEAT", "heartbeat", "30", p.non_negative_int,
        "AMQP heartbeat in seconds; `0` turns it off.",
    ),
    Spec(
        "broker", "max_unconfirmed", "AUDITGEN_MAX_UNCONFIRMED", "max-unconfirmed", "1000", p.positive_int,
        "Messages published and not yet confirmed, at most.",
    ),
    Spec(
        "broker", "shutdown_timeout", "AUDITGEN_SHUTDOWN_TIMEOUT", "shutdown-timeout", "10", p.seconds,
        "Seconds to wait on shutdown for outstanding confirms.",
    ),
    # -- tls
    Spec(
        "tls", "ca_file", "RABBITMQ_TLS_CA_FILE", "rabbitmq-tls-ca-file", None, p.ca_file,
        "PEM file of the CAs that sign the broker's certificate (`amqps://` only); unset: the system's "
        "trust store.",
    ),
    Spec(
        "tls", "cert_file", "RABBITMQ_TLS_CERT_FILE", "rabbitmq-tls-cert-file", None, p.readable_file,
        "PEM client certificate, optionally followed by its intermediate CAs, for brokers that ask for one; "
        "needs `RABBITMQ_TLS_KEY_FILE`.",
    ),
    Spec(
        "tls", "key_file", "RABBITMQ_TLS_KEY_FILE", "rabbitmq-tls-key-file", None, p.readable_file,
        "The client certificate's private key (PEM, unencrypted).",
    ),
    Spec(
        "tls", "verify_hostname", "RABBITMQ_TLS_VERIFY_HOSTNAME", "rabbitmq-tls-verify-hostname", "true",
        p.boolean,
        "Check that the broker's certificate names the host in `RABBITMQ_URL`; `false` checks the chain "
        "only, and logs a warning at start.",
    ),
    # -- routing
    Spec(
        "routing", "queue", "RABBITMQ_QUEUE", "rabbitmq-queue", "audit_events", p.text,
        "Queue; declared durable (with no arguments unless `RABBITMQ_QUEUE_TYPE=quorum`).",
    ),
    Spec(
        "routing", "queue_type", "RABBITMQ_QUEUE_TYPE", "rabbitmq-queue-type", "classic",
        p.choice(*QUEUE_TYPES),
        "`classic` (no queue arguments, as legacy consumers declare it) or `quorum` "
        "(`x-queue-type=quorum`, replicated on a cluster).",
    ),
    Spec(
        "routing", "exchange", "RABBITMQ_EXCHANGE", "rabbitmq-exchange", "", p.exchange,
        "Exchange to publish to, declared durable and bound to the queue; empty: the default exchange.",
    ),
    Spec(
        "routing", "exchange_type", "RABBITMQ_EXCHANGE_TYPE", "rabbitmq-exchange-type", "topic",
        p.choice(*EXCHANGE_TYPES),
        "Type of `RABBITMQ_EXCHANGE`: `direct`, `fanout`, `topic` or `headers`.",
    ),
    Spec(
        "routing", "routing_key", "RABBITMQ_ROUTING_KEY", "rabbitmq-routing-key", None, parse_template,
        "Routing key template over the event's fields `event_type`, `action_result`, `severity`, "
        "`server_hostname`, `user_id`, `source_service`, e.g. `audit.{event_type}.{action_result}`; any "
        "other placeholder stops start-up; unset: the queue name.",
    ),
    Spec(
        "routing", "binding_key", "RABBITMQ_BINDING_KEY", "rabbitmq-binding-key", None, p.any_text,
        "Key binding the queue to `RABBITMQ_EXCHANGE`; unset: `#` for topic, the routing key for direct, "
        "empty for fanout and headers. Required for a direct exchange with a templated routing key.",
    ),
    Spec(
        "routing", "declare", "RABBITMQ_DECLARE", "rabbitmq-declare", "true", p.boolean,
        "`true`: declare the exchange, the queue and the binding on every connection; `false`: declare "
        "nothing (consumers own the topology).",
    ),
    # -- api
    Spec("api", "port", "APP_PORT", "app-port", "5000", p.port, "HTTP API port."),
    Spec(
        "api", "host", "APP_HOST", "app-host", "0.0.0.0", p.host,
        "Address the HTTP API listens on: an IPv4 or IPv6 address (`::` for every IPv6 one), or a "
        "hostname (its IPv4 address).",
    ),
    Spec(
        "api", "confirm_wait", "AUDITGEN_CONFIRM_WAIT", "confirm-wait", "1", p.seconds,
        "Seconds `POST /generate_event` waits for the confirm before answering `queued`.",
    ),
    Spec(
        "api", "max_body_bytes", "AUDITGEN_MAX_BODY_BYTES", "max-body-bytes", "1048576", p.positive_int,
        "Largest request body the API accepts, in bytes.",
    ),
    Spec(
        "api", "strict", "AUDITGEN_STRICT", "strict", "false", p.boolean,
        "`true`: `POST /generate_event` refuses (400) what it would otherwise accept with warnings (a field "
        "name like a known one, a value no template has); a call's `?strict=` wins.",
    ),
    Spec(
        "api", "token", "AUDITGEN_API_TOKEN", "api-token", None, p.token,
        "When set, every API call but `GET`/`HEAD` needs `Authorization: Bearer <token>` (printable "
        "ASCII, no spaces); never logged or shown.",
        secret=True,
    ),
    Spec(
        "api", "token_file", "AUDITGEN_API_TOKEN_FILE", "api-token-file", None, p.token_file,
        "File holding the API token (trailing newline ignored); instead of `AUDITGEN_API_TOKEN`.",
    ),
    # -- metrics
    Spec(
        "metrics", "port", "PROMETHEUS_PORT", "prometheus-port", "8000", p.port,
        "Prometheus metrics port, path `/metrics`.",
    ),
    Spec(
        "metrics", "host", "PROMETHEUS_HOST", "prometheus-host", "0.0.0.0", p.host,
        "Address the metrics port listens on, as `APP_HOST`.",
    ),
    Spec(
        "metrics", "max_series", "AUDITGEN_METRICS_MAX_SERIES", "metrics-max-series", "1000", p.positive_int,
        "Distinct label sets a metric may have; further values (caller-chosen hostnames, event types) are "
        "counted under `_overflow`.",
    ),
    # -- generator
    Spec(
        "generator", "interval", "EVENT_GENERATION_INTERVAL_SECONDS", "interval", "5", p.seconds,
        "Seconds between generated events (a float); `0` turns generation off.",
    ),
    Spec(
        "generator", "rate", "AUDITGEN_RATE", "rate", None,
        p.number_from("events per second", 0.01, MAX_RATE),
        f"Events per second to generate, from 0.01 to {MAX_RATE}; overrides the interval. Exact on average, "
        "spread evenly (every 10 ms at high rates); while the outbox is full the generator holds back "
        "instead of growing memory. Under `AUDITGEN_SHAPE` it is the peak rate.",
    ),
    Spec(
        "generator", "seed", "AUDITGEN_SEED", "seed", None, p.text,
        "Any text; the same seed and settings make the same generated events in the same order, "
        "`event_id`s included (still UUID4s), at any rate and in any shape (with `poisson`, at the same "
        "times); only timestamps follow the clock. API-triggered events draw from their own seeded "
        "stream, so calls do not shift the generated sequence. With named instances, each derives its "
        "own streams from the seed and its name (`AUDITGEN_INSTANCE`).",
    ),
    Spec(
        "generator", "instance", "AUDITGEN_INSTANCE", "instance", None, p.instance_name,
        "This instance's name, in each message's `x-auditgen-instance` header, its AMQP connection name "
        "and its seed (unset: the host name; a StatefulSet's pod name).",
    ),
    Spec(
        "generator", "instances", "AUDITGEN_INSTANCES", "instances", "1", p.int_from(1, MAX_INSTANCES),
        f"How many instances share the load (1 to {MAX_INSTANCES}): with a seed, each derives its own "
        "streams from the seed and its name; with `AUDITGEN_RATE_SCOPE=total`, each makes this share of the "
        "rate.",
    ),
    Spec(
        "generator", "rate_scope", "AUDITGEN_RATE_SCOPE", "rate-scope", "instance",
        p.choice("instance", "total"),
        "`instance`: `AUDITGEN_RATE` (or the interval) is this instance's rate; `total`: the rate of all "
        "`AUDITGEN_INSTANCES` together, of which each instance generates an equal share.",
    ),
    # -- shape: the fields of shapes.ShapeSettings, its defaults and its checks (those of PUT /generator)
    Spec(
        "shape", "shape", "AUDITGEN_SHAPE", "shape", ShapeSettings.shape, p.shape_name,
        f"Traffic shape of the generator: {', '.join(f'`{name}`' for name in SHAPES)}; the rate is its peak.",
    ),
    Spec(
        "shape", "burst_on_seconds", "AUDITGEN_BURST_ON_SECONDS", "burst-on-seconds",
        _shape_default("burst_on_seconds"), p.shape_parameter("burst_on_seconds", "seconds"),
        "`bursts`: seconds of each burst at the full rate (more than 0).",
    ),
    Spec(
        "shape", "burst_off_seconds", "AUDITGEN_BURST_OFF_SECONDS", "burst-off-seconds",
        _shape_default("burst_off_seconds"), p.shape_parameter("burst_off_seconds", "seconds"),
        "`bursts`: seconds of silence after each burst (0 or more).",
    ),
    Spec(
        "shape", "daily_peak_hour", "AUDITGEN_DAILY_PEAK_HOUR", "daily-peak-hour",
        _shape_default("daily_peak_hour"), p.shape_parameter("daily_peak_hour", "an hour of the day"),
        "`daily`: the hour of the full rate, in UTC, from 0 to less than 24 (`14.5` is 14:30).",
    ),
    Spec(
        "shape", "daily_min_ratio", "AUDITGEN_DAILY_MIN_RATIO", "daily-min-ratio",
        _shape_default("daily_min_ratio"), p.shape_parameter("daily_min_ratio", "a fraction of the rate"),
        "`daily`: the rate twelve hours from the peak, as a fraction of the full rate (0 to 1).",
    ),
    # -- sessions
    Spec(
        "sessions", "share", "AUDITGEN_SESSION_SHARE", "session-share", "0.3",
        p.number_from("a share of events", 0, 1),
        "Share of generated events (0 to 1) that are steps of stateful sessions; `0` turns sessions off: "
        "every generated event is an independent template event.",
    ),
    Spec(
        "sessions", "count", "AUDITGEN_SESSIONS", "sessions", "20", p.int_from(1, MAX_SESSIONS),
        f"Sessions in progress at once (1 to {MAX_SESSIONS}); their steps interleave, so more sessions "
        "spread each one's steps further apart.",
    ),
    # -- scenarios
    Spec(
        "scenarios", "rate", "AUDITGEN_SCENARIO_RATE", "scenario-rate", "0",
        p.number_from("scenarios per 1,000 events", 0, MAX_SCENARIO_RATE),
        f"Scenarios started per 1,000 generated events (a number from 0 to {MAX_SCENARIO_RATE}); `0` turns "
        "mixing off.",
    ),
    Spec(
        "scenarios", "ground_truth_queue", "AUDITGEN_GROUND_TRUTH_QUEUE", "ground-truth-queue", None, p.text,
        "Queue for each scenario's ground-truth record, declared durable like the event queue and "
        "published in confirm mode through an outbox of its own (with a spool: "
        "`<AUDITGEN_SPOOL_DIR>/ground-truth`); must differ from `RABBITMQ_QUEUE`; unset: no records.",
    ),
    Spec(
        "scenarios", "files", "AUDITGEN_SCENARIOS", "scenarios", None, p.paths,
        "Scenario files (`.json`, `.yaml`, `.yml`), comma-separated: each adds scenarios, or replaces a "
        "built-in of the same name (docs/scenarios.md); a bad file stops start-up naming the file, the "
        "scenario, the step and the field.",
    ),
    # -- alerts: the pipeline's verdicts (auditgen.verdicts)
    Spec(
        "alerts", "queue", "AUDITGEN_ALERTS_QUEUE", "alerts-queue", None, p.text,
        "Queue to consume the pipeline's alerts from (declared durable), to score scenario runs; unset: "
        "alerts come only by `POST /alerts`.",
    ),
    Spec(
        "alerts", "exchange", "AUDITGEN_ALERTS_EXCHANGE", "alerts-exchange", None, p.text,
        "Exchange the pipeline publishes alerts to: auditgen binds a queue of its own to it (instead of "
        "`AUDITGEN_ALERTS_QUEUE`), so other consumers of the alerts keep theirs.",
    ),
    Spec(
        "alerts", "binding_key", "AUDITGEN_ALERTS_BINDING_KEY", "alerts-binding-key", "#", p.any_text,
        "Key binding auditgen's own queue to `AUDITGEN_ALERTS_EXCHANGE`.",
    ),
    Spec(
        "alerts", "event_fields", "AUDITGEN_ALERT_EVENT_FIELDS", "alert-event-fields",
        ",".join(DEFAULT_EVENT_FIELDS), parse_event_fields,
        "Comma-separated dotted paths where an alert names the events that triggered it (a string or a "
        "list of strings at each).",
    ),
    Spec(
        "alerts", "key_fields", "AUDITGEN_ALERT_KEY_FIELDS", "alert-key-fields", None, parse_key_fields,
        "For alerts that name no event: `key=dotted.path` pairs mapping a scenario's grouping keys to alert "
        "fields, e.g. `user_id=triggered_by.actor_id,server_hostname=impacted_resource.server_hostname`.",
    ),
    Spec(
        "alerts", "detection_timeout", "AUDITGEN_DETECTION_TIMEOUT", "detection-timeout", "60",
        p.number_from("seconds", 0.001, MAX_DETECTION_TIMEOUT),
        "Seconds after a scenario run's last confirmed event that an alert may take before the run is "
        "missed (or quiet); campaigns may set their own.",
    ),
    # -- templates
    Spec(
        "templates", "files", "AUDITGEN_TEMPLATES", "templates", None, p.paths,
        "Template files (`.json`, `.yaml`, `.yml`), comma-separated, applied in order over the built-in "
        "templates; a bad file stops start-up naming the file, the template and the field.",
    ),
    Spec(
        "templates", "replace", "AUDITGEN_TEMPLATES_REPLACE", "templates-replace", "false", p.boolean,
        "`true`: the files replace the built-in templates and pools instead of adding to them.",
    ),
    # -- world
    Spec(
        "world", "enabled", "AUDITGEN_WORLD", "world", "true", p.boolean,
        "`true`: draw every event from a seeded world of hosts, accounts and software, with auditd's "
        "fields in `details` (docs/world.md). `false`: events as before the world (byte for byte, with a "
        "seed), the pools drawn from independently.",
    ),
    Spec(
        "world", "hosts", "AUDITGEN_WORLD_HOSTS", "world-hosts", str(DEFAULT_HOSTS),
        p.int_from(1, MAX_HOSTS),
        f"Hosts in the world (1 to {MAX_HOSTS}), built from `AUDITGEN_SEED`; unused with "
        "`AUDITGEN_WORLD=false`.",
    ),
    Spec(
        "world", "people", "AUDITGEN_WORLD_PEOPLE", "world-people", str(DEFAULT_PEOPLE),
        p.int_from(1, MAX_PEOPLE),
        f"People with accounts in the world (1 to {MAX_PEOPLE}); a third are admins. Unused with "
        "`AUDITGEN_WORLD=false`.",
    ),
    Spec(
        "world", "file", "AUDITGEN_WORLD_FILE", "world-file", None, p.text,
        "A world file (`.json`, `.yaml`, `.yml`) to draw events from instead of a built world; refused with "
        "`AUDITGEN_WORLD=false`. A bad file stops start-up naming the file, the entry and the field.",
    ),
    # -- outbox
    Spec(
        "outbox", "max_events", "AUDITGEN_OUTBOX_MAX", "outbox-max", "10000", p.positive_int,
        "Events held until the broker confirms them; when full, the API answers 503 (refusals counted in "
        "`audit_events_generator_dropped_total`) and the generator pauses instead of dropping.",
    ),
    Spec(
        "outbox", "spool_dir", "AUDITGEN_SPOOL_DIR", "spool-dir", None, p.directory,
        "Directory of the durable outbox: every event is on disk (SQLite) before anyone is told about it, "
        "and removed when the broker confirms it; unset keeps the outbox in memory only.",
    ),
    Spec(
        "outbox", "spool_max_bytes", "AUDITGEN_SPOOL_MAX_BYTES", "spool-max-bytes", "1073741824",
        p.positive_int,
        "Largest size of the events in the spool, in bytes; when full, the API answers 503 and the "
        "generator pauses.",
    ),
    # -- logs
    Spec(
        "logs", "format", "AUDITGEN_LOG_FORMAT", "log-format", "text", p.choice("text", "json"),
        "`text` (twistd's lines) or `json` (one JSON object per line: time, level, namespace, event, "
        "message, context; for log shippers).",
    ),
    Spec(
        "logs", "level", "AUDITGEN_LOG_LEVEL", "log-level", "info",
        p.choice("debug", "info", "warn", "error"),
        "Lowest level logged: `debug`, `info`, `warn` or `error`; `debug` adds the repeats of a state "
        "already reported (each nack, each event a failing spool refused).",
    ),
)  # fmt: skip
