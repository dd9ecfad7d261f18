"""The `Settings` type: one frozen group per topic (settings.broker, settings.tls, settings.shape, ...).

Built only by `load_settings`, so a Settings is always valid; the groups' field names are the spec
table's keys, and what each one means is said there, once.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from auditgen.amqp.topology import Topology
from auditgen.routing import RoutingKey
from auditgen.shapes import ShapeSettings


@dataclass(frozen=True)
class Broker:
    """One RabbitMQ node and how to log in; the password stays out of repr and logs."""

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
class BrokerSettings:
    """The nodes to try, in order, and how the connection to them behaves."""

    nodes: tuple[Broker, ...]
    connect_timeout: float
    heartbeat: int
    max_unconfirmed: int
    shutdown_timeout: float

    @property
    def node(self) -> Broker:
        """The first node: the one named in logs before a connection is made."""
        return self.nodes[0]


@dataclass(frozen=True)
class TLSSettings:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    verify_hostname: bool


@dataclass(frozen=True)
class RoutingSettings:
    """Where events go: the queue, and the exchange and keys in front of it."""

    queue: str
    exchange: str
    exchange_type: str
    routing_key: str | None  # a template; None: the queue name
    binding_key: str | None  # None: see `topology`
    declare: bool
    queue_type: str

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


@dataclass(frozen=True)
class ApiSettings:
    host: str
    port: int
    confirm_wait: float
    max_body_bytes: int
    strict: bool
    token: str | None = field(repr=False)


@dataclass(frozen=True)
class MetricsSettings:
    host: str
    port: int
    max_series: int


@dataclass(frozen=True)
class GeneratorSettings:
    interval: float
    rate: float | None
    seed: str | None
    instance: str | None  # None: the host name (see `identity`)
    instances: int
    rate_scope: str

    @property
    def events_per_second(self) -> float:
        """The generator's rate: AUDITGEN_RATE, else one event per interval, else 0 (off); with
        AUDITGEN_RATE_SCOPE=total, this instance's share of it."""
        rate = self.rate if self.rate is not None else 1.0 / self.interval if self.interval > 0 else 0.0
        return rate / self.instances if self.rate_scope == "total" else rate

    @property
    def identity(self) -> str:
        """The name this instance goes by in its messages and its AMQP connection: AUDITGEN_INSTANCE, else
        the host name (a StatefulSet's pod name, a container's id)."""
        return self.instance or socket.gethostname()

    @property
    def stream_seed(self) -> str | None:
        """The seed the random streams derive from: AUDITGEN_SEED, joined with the instance once instances
        are named (AUDITGEN_INSTANCE set, or AUDITGEN_INSTANCES above 1), so that no two instances make the
        same events and each repeats its own. A lone unnamed instance keeps the seed as it is, so its
        events do not change with the host (a container's host name changes on every run)."""
        if self.seed is None or (self.instance is None and self.instances == 1):
            return self.seed
        return f"{self.seed}/{self.identity}"


@dataclass(frozen=True)
class SessionSettings:
    share: float
    count: int


@dataclass(frozen=True)
class ScenarioSettings:
    rate: float
    ground_truth_queue: str | None
    files: tuple[str, ...] | None


@dataclass(frozen=True)
class AlertSettings:
    """Where the pipeline's alerts come from and how they name what triggered them (auditgen.verdicts)."""

    queue: str | None
    exchange: str | None
    binding_key: str
    event_fields: tuple[str, ...]
    key_fields: dict[str, str] | None
    detection_timeout: float


@dataclass(frozen=True)
class TemplateSettings:
    files: tuple[str, ...] | None
    replace: bool


@dataclass(frozen=True)
class WorldSettings:
    enabled: bool
    hosts: int
    people: int
    file: str | None


@dataclass(frozen=True)
class OutboxSettings:
    max_events: int
    spool_dir: str | None
    spool_max_bytes: int


@dataclass(frozen=True)
class LogSettings:
    format: str
    level: str


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start, by topic."""

    broker: BrokerSettings
    tls: TLSSettings
    routing: RoutingSettings
    api: ApiSettings
    metrics: MetricsSettings
    generator: GeneratorSettings
    shape: ShapeSettings
    sessions: SessionSettings
    scenarios: ScenarioSettings
    alerts: AlertSettings
    templates: TemplateSettings
    world: WorldSettings
    outbox: OutboxSettings
    logs: LogSettings
    secret_options: tuple[str, ...] = ()
    """The options that carried a secret on the command line, where the process list shows it."""
