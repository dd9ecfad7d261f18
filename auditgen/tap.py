"""twistd wiring: the `auditgen` command's options, and the service tree they build.

Parsing options only reads settings (and the .env file); nothing is imported that installs a reactor and
nothing listens until makeService, so `twistd -r <reactor> auditgen` and `--help` stay side-effect free.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from auditgen.catalogs import load_catalog
from auditgen.config import SPECS, ConfigError, Settings, load_settings, read_dotenv
from auditgen.events import Catalog, TemplateError
from auditgen.routing import Topology
from auditgen.world import World
from auditgen.world.files import WorldError
from auditgen.world.files import load as load_world

if TYPE_CHECKING:  # imported for real in makeService, which may install the reactor
    from auditgen.metrics import Metrics
    from auditgen.outbox import Outbox
    from auditgen.publisher import Publisher


class Options(usage.Options):
    """Every setting as an option; unset options fall back to the environment, the .env file, the default."""

    synopsis = "[options]"
    longdesc = (
        "Generate realistic simulated audit events and publish them to a RabbitMQ queue with publisher "
        "confirms. Each option overrides its environment variable (shown in brackets), which overrides the "
        "same variable in the .env file, which overrides the default."
    )
    optParameters: ClassVar[list[list[str | None]]] = [
        ["env-file", None, None, "Read settings from this .env file [default: ./.env if present]."],
        *[
            [spec.option, None, None, f"{spec.help} [{spec.env}, default: {spec.default or 'unset'}]"]
            for spec in SPECS
        ],
    ]

    settings: Settings
    catalog: Catalog
    world: World | None
    """The user's world file, read here so a bad one is a usage error; None: built in makeService."""

    def postOptions(self) -> None:
        """Settings and templates are checked here, so a mistake is a usage error before anything starts."""
        try:
            dotenv = read_dotenv(self["env-file"])
            self.settings = load_settings(self, os.environ, dotenv)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        s = self.settings
        try:
            self.catalog = load_catalog(s.templates or (), s.templates_replace)
        except TemplateError as e:
            raise usage.UsageError(f"templates: {e}") from None
        try:
            self.world = load_world(s.world_file) if s.world_file else None
        except WorldError as e:
            raise usage.UsageError(f"world: {e}") from None


class AuditgenService(MultiService):
    """The whole service; a stop it completed is a clean exit, whatever signal asked for it.

    twistd re-raises SIGTERM on itself after shutdown, so the process would die "killed by SIGTERM"
    even after a graceful stop. SIGTERM is how systemd, Docker and Kubernetes ask for a normal stop, so
    once every child stopped we clear the recorded signal and twistd exits 0.
    """

    def __init__(self, reactor: Any, api: Any, log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self._api = api
        self._log_observer = log_observer

    def setServiceParent(self, parent: Any) -> None:
        """Under twistd the parent is the application: its ILogObserver is the one twistd starts with."""
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop the children one after another, in reverse order (MultiService stops them all at once).

        New API calls get 503 from the start; then the generator stops, the metrics port, the publisher
        (draining its confirms, bounded), the spool (committing the last acks), and last the API port.
        """
        self._api.closing = True
        Service.stopService(self)
        for child in reversed(list(self)):
            await maybeDeferred(child.stopService)
        if hasattr(self._reactor, "_exitSignal"):
            self._reactor._exitSignal = None


def makeService(options: Options) -> IService:
    """The API first and the generator last: on shutdown the generator stops first and the API last.

    The generator is made before the API, which controls it (GET/PUT /generator).
    """
    from twisted.internet import reactor

    from auditgen.events import EventFactory, seeded_rng
    from auditgen.generator import Generator
    from auditgen.groundtruth import GroundTruth
    from auditgen.logs import twistd_observer
    from auditgen.metrics import Metrics, metrics_site
    from auditgen.outbox import Outbox, OutboxService
    from auditgen.scenario_mix import ScenarioMix
    from auditgen.scenarios import ScenarioRunner
    from auditgen.sessions import SessionMix
    from auditgen.shapes import ShapeSettings
    from auditgen.spool import Spool
    from auditgen.web import AuditAPI
    from auditgen.world import build as build_world

    # pika logs through the stdlib at warning level for things this service reports itself, once per
    # state change (returns, nacks, every closed connection); keep its log for real failures only.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    s = options.settings
    _warn_about_secrets(s)
    if s.secret_options:
        _hide_from_process_title(s.secret_options)
    clock: Any = reactor
    metrics = Metrics(max_series=s.metrics_max_series)
    spool = Spool(s.spool_dir, reactor) if s.spool_dir else None
    outbox = Outbox(
        s.outbox_max, metrics, clock, spool=spool, spool_max_bytes=s.spool_max_bytes, routing=s.event_routing
    )
    catalog = options.catalog
    world = options.world or build_world(s.seed, s.world_hosts, s.world_people)
    factory = EventFactory(catalog, seeded_rng(s.seed, "api"), world=world)
    publisher = _publisher(s, reactor, s.topology, outbox, metrics)
    truth_outbox, truth_services = _ground_truth_outbox(s, reactor)
    ground_truth = GroundTruth(metrics, clock, truth_outbox)
    scenarios = ScenarioRunner(catalog, seeded_rng(s.seed, "scenarios"), ground_truth)
    generated = EventFactory(catalog, seeded_rng(s.seed, "generator"), world=world)
    make: Callable[[], Mapping[str, Any]] = generated.generate
    if s.session_share > 0:
        make = SessionMix(generated, seeded_rng(s.seed, "sessions"), s.session_share, s.sessions)
    if s.scenario_rate > 0:
        mix_rng = seeded_rng(s.seed, "generated-scenarios")  # its own stream: API calls do not shift it
        make = ScenarioMix(make, catalog, mix_rng, s.scenario_rate, scenarios.report)
    shape = ShapeSettings(
        s.shape, s.burst_on_seconds, s.burst_off_seconds, s.daily_peak_hour, s.daily_min_ratio
    )
    generator = Generator(
        clock,
        s.events_per_second,
        make,
        outbox,
        metrics,
        shape=shape,
        arrivals=seeded_rng(s.seed, "arrivals"),
    )
    api = AuditAPI(
        factory,
        outbox,
        publisher,
        metrics.registry,
        clock,
        confirm_wait=s.confirm_wait,
        max_body_bytes=s.max_body_bytes,
        generator=generator,
        scenarios=scenarios,
        token=s.api_token,
    )
    # options.parent is twistd's own options (--logfile, --nodaemon, ...), absent outside twistd.
    log_observer = twistd_observer(getattr(options, "parent", None), s.log_format, s.log_level)
    root = AuditgenService(reactor, api, log_observer)
    root.addService(_listen(reactor, s.app_host, s.app_port, api.site()))
    root.addService(OutboxService(outbox, spool, metrics))
    root.addService(publisher)
    for service in [*truth_services, ground_truth]:
        root.addService(service)
    root.addService(_listen(reactor, s.prometheus_host, s.prometheus_port, metrics_site(metrics.registry)))
    root.addService(generator)
    # Everything made so far (modules, templates, the service tree) lives as long as the process: keep it
    # out of the cyclic collector, whose full passes over it took tens of milliseconds, a latency spike
    # for every request in flight.
    gc.freeze()
    return root


def _publisher(s: Settings, reactor: Any, topology: Topology, outbox: Outbox, metrics: Metrics) -> Publisher:
    from auditgen.publisher import Publisher
    from auditgen.tls import ClientTLS

    return Publisher(
        reactor,
        s.brokers,
        topology.queue,
        outbox,
        metrics,
        max_unconfirmed=s.max_unconfirmed,
        connect_timeout=s.connect_timeout,
        heartbeat=s.heartbeat,
        shutdown_timeout=s.shutdown_timeout,
        topology=topology,
        tls=ClientTLS.load(s.tls_ca_file, s.tls_cert_file, s.tls_key_file, s.tls_verify_hostname),
    )


def _ground_truth_outbox(s: Settings, reactor: Any) -> tuple[Outbox | None, list[Service]]:
    """With AUDITGEN_GROUND_TRUTH_QUEUE: the records' own outbox (spooled in <spool>/ground-truth), and its
    spool service and publisher in start order; else (None, []).

    Their metrics are kept apart, so the service's counts stay those of audit events.
    """
    from auditgen.metrics import Metrics
    from auditgen.outbox import Outbox, OutboxService
    from auditgen.spool import Spool

    if s.ground_truth_queue is None:
        return None, []
    metrics = Metrics()
    spool = Spool(os.path.join(s.spool_dir, "ground-truth"), reactor) if s.spool_dir else None
    outbox = Outbox(s.outbox_max, metrics, reactor, spool=spool, spool_max_bytes=s.spool_max_bytes)
    # Records go straight to their queue (the default exchange), declared like the events' queue.
    topology = Topology(s.ground_truth_queue, queue_type=s.queue_type, declare=s.declare)
    publisher = _publisher(s, reactor, topology, outbox, metrics)
    return outbox, [OutboxService(outbox, spool, metrics), publisher]


def _listen(reactor: Any, host: str, port: int, site: Any) -> Service:
    """A TCP port on one address; an IPv6 address needs an IPv6 socket, a hostname binds its IPv4 one."""
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.abstract import isIPv6Address
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    endpoint = TCP6ServerEndpoint if isIPv6Address(host) else TCP4ServerEndpoint
    return StreamServerEndpointService(endpoint(reactor, port, interface=host), site)


def _warn_about_secrets(s: Settings) -> None:
    """Say so when a secret is where other users can read it, or a broker is not checked."""
    log = Logger()
    for option in s.secret_options:
        log.warn(
            "{option} was given on the command line: it is now hidden from the process list, but any user "
            "of this machine could read it there until now, and shell history keeps it; give it in the "
            "environment or in a file (see README, Security)",
            event="config.secret_on_command_line",
            option=option,
        )
    if s.broker.tls and not s.tls_verify_hostname:
        log.warn(
            "RABBITMQ_TLS_VERIFY_HOSTNAME is false: the broker's certificate is checked against the CAs "
            "but not against its host name {host!r}, so any host with a certificate from those CAs can "
            "pose as the broker",
            event="config.tls_hostname_unchecked",
            host=s.broker.host,
        )


def hidden_argv(argv: Sequence[str], options: Sequence[str]) -> list[str]:
    """argv with the values of these options (--opt=value or --opt value) replaced by ***."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if hide_next:
            shown.append("***")
        elif name in options and "=" in arg:
            shown.append(f"{name}=***")
        else:
            shown.append(arg)
        hide_next = arg in options
    return shown


def _hide_from_process_title(options: Sequence[str]) -> None:
    """A secret given as an option is in /proc/<pid>/cmdline, which every user can read: rewrite it.

    setproctitle overwrites the process's own argv memory, which is what ps and /proc show.
    """
    import setproctitle

    setproctitle.setproctitle(" ".join(hidden_argv(sys.argv, options)))
