"""The service tree: `build(settings, catalog, reactor)` wires the parts together, and does nothing else.

It changes nothing outside the objects it makes (no global reactor, no log levels, no process title,
no gc.freeze: auditgen.process does those, once, for twistd), so tests build a service as often as they
like. Start order is the order below: both ports are opened first (in privilegedStartService, before
any other part starts), then the spool, the publisher, the ground truth and the generator; they stop in
reverse, one after another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from auditgen.amqp.publisher import Publisher
from auditgen.amqp.tls import ClientTLS
from auditgen.amqp.topology import Topology
from auditgen.config import Settings
from auditgen.console.resource import console_resource
from auditgen.console.state import ConsoleState
from auditgen.console.tail import EventTail
from auditgen.events import Catalog, EventFactory, seeded_rng
from auditgen.generator import Generator
from auditgen.groundtruth import GroundTruth
from auditgen.metrics import PREFIX, Metrics, metrics_site
from auditgen.outbox import Outbox, OutboxService
from auditgen.ports import Listener, PortInUse
from auditgen.scenario_mix import ScenarioMix
from auditgen.scenarios import BUILTIN, Run, Scenario, ScenarioRunner
from auditgen.scenarios.runs import RUN_STORE_FILE, RunStore
from auditgen.sessions import SessionMix
from auditgen.spool import Spool
from auditgen.verdicts.alerts import AlertFormat
from auditgen.verdicts.consumer import AlertConsumer
from auditgen.verdicts.link import AlertsLink
from auditgen.verdicts.service import VerdictService
from auditgen.web import AuditAPI
from auditgen.world import World
from auditgen.world import build as build_world


class Closable(Protocol):
    """What the tree needs of the API: to be told, first thing on shutdown, to refuse new work."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Parts:
    """The parts of one service, before they are put in a tree (tests look at them)."""

    settings: Settings
    metrics: Metrics
    outbox: Outbox
    spool: Spool | None
    factory: EventFactory  # the API's
    publisher: Publisher
    ground_truth: GroundTruth
    truth_services: list[Service]
    scenarios: ScenarioRunner
    generator: Generator
    api: AuditAPI
    verdicts: VerdictService
    alerts: AlertsLink | None  # with AUDITGEN_ALERTS_QUEUE or _EXCHANGE: the consumer on its own connection


def build(
    settings: Settings,
    catalog: Catalog,
    reactor: Any,
    log_observer: ILogObserver | None = None,
    scenarios: Sequence[Scenario] = BUILTIN,
    world: World | None = None,
) -> AuditgenService:
    """The whole service for these settings, on this reactor; nothing runs until it is started."""
    return tree(parts(settings, catalog, reactor, scenarios, world), reactor, log_observer)


def parts(
    s: Settings,
    catalog: Catalog,
    reactor: Any,
    scenarios: Sequence[Scenario] = BUILTIN,
    world: World | None = None,
) -> Parts:
    """Every part, each given what it uses. The generator is made before the API, which controls it.

    With AUDITGEN_WORLD on (the default), events are drawn from `world` (the user's file, read by the
    options), else from one built from the seed; with it off, from the template pools alone, and `world`
    is unused.
    """
    metrics = Metrics(max_series=s.metrics.max_series)
    spool = Spool(s.outbox.spool_dir, reactor) if s.outbox.spool_dir else None
    outbox = Outbox(
        s.outbox.max_events,
        metrics,
        reactor,
        spool=spool,
        spool_max_bytes=s.outbox.spool_max_bytes,
        routing=s.routing.event_routing,
    )
    seed = s.generator.stream_seed  # with named instances: the seed joined with this instance's name
    world = _world(s, world) if s.world.enabled else None
    factory = EventFactory(catalog, seeded_rng(seed, "api"), world=world)
    publisher = _publisher(s, reactor, s.routing.topology, outbox, metrics)
    truth_outbox, truth_services = _ground_truth_outbox(s, reactor)
    ground_truth = GroundTruth(metrics, reactor, truth_outbox)
    spool_dir = s.outbox.spool_dir
    runner = ScenarioRunner(
        catalog,
        seeded_rng(seed, "scenarios"),
        ground_truth,
        scenarios=scenarios,
        clock=reactor,
        outbox=outbox,
        store=RunStore(os.path.join(spool_dir, RUN_STORE_FILE)) if spool_dir else None,
        grounding=factory.grounding,  # the API's runs share the world and its one ledger
    )
    api: AuditAPI | None = None  # made below; no campaign starts while it is closing
    verdicts = VerdictService(
        reactor,
        metrics,
        runner,
        outbox,
        AlertFormat(s.alerts.event_fields, s.alerts.key_fields),
        s.alerts.detection_timeout,
        s.api.max_body_bytes,
        store_dir=spool_dir,
        closing=lambda: api is not None and api.closing,
    )
    alerts = _alerts_link(s, reactor, verdicts, metrics)
    # One world, one state of it: the generator shares the API's ledger (accounts created and deleted,
    # each host's session numbers), so no event of one contradicts an event of the other.
    generated = EventFactory(catalog, seeded_rng(seed, "generator"), grounding=factory.grounding)
    make: Callable[[], Mapping[str, Any]] = generated.generate
    if s.sessions.share > 0:
        make = SessionMix(generated, seeded_rng(seed, "sessions"), s.sessions.share, s.sessions.count)
    if s.scenarios.rate > 0:
        mix_rng = seeded_rng(seed, "generated-scenarios")  # its own stream: API calls do not shift it
        attacks = [scenario for scenario in scenarios if scenario.expect == "alert"]

        def report(run: Run) -> None:
            runner.report(run)
            verdicts.report(run)

        make = ScenarioMix(
            make,
            catalog,
            mix_rng,
            s.scenarios.rate,
            report,
            scenarios=attacks,
            grounding=generated.grounding,  # the world and its one ledger
        )
    generator = Generator(
        reactor,
        s.generator.events_per_second,
        make,
        outbox,
        metrics,
        shape=s.shape,
        arrivals=seeded_rng(seed, "arrivals"),
    )
    features = {"scenarios": True, "campaigns": True, "token_required": s.api.token is not None}
    console_state = ConsoleState(
        metrics.registry, publisher, reactor, s.outbox.max_events, generator.state, features
    )
    api = AuditAPI(
        factory,
        outbox,
        publisher,
        metrics.registry,
        reactor,
        confirm_wait=s.api.confirm_wait,
        max_body_bytes=s.api.max_body_bytes,
        generator=generator,
        scenarios=runner,
        token=s.api.token,
        catalog=catalog,
        strict=s.api.strict,
        console=console_resource(console_state, EventTail(outbox, reactor)),
        verdicts=verdicts.routes,
        alerts=None if alerts is None else alerts.consumer,
    )
    return Parts(
        s,
        metrics,
        outbox,
        spool,
        factory,
        publisher,
        ground_truth,
        truth_services,
        runner,
        generator,
        api,
        verdicts,
        alerts,
    )


def _world(s: Settings, given: World | None) -> World:
    """The user's world file, read with the options, else one built from the sizes and AUDITGEN_SEED itself,
    not the instance's stream seed: named instances of one seed share one world."""
    return given or build_world(s.generator.seed, s.world.hosts, s.world.people)


def tree(p: Parts, reactor: Any, log_observer: ILogObserver | None = None) -> AuditgenService:
    """The API port first and the generator last: on shutdown the generator stops first, the API last."""
    s = p.settings
    api_site, metrics_site_ = p.api.site(), metrics_site(p.metrics.registry)
    for site in (api_site, metrics_site_):
        site.noisy = False  # no "Starting factory <...>" lines: the ready line says what listens
    api_port = Listener(reactor, "APP_PORT", s.api.host, s.api.port, api_site)
    metrics_port = Listener(reactor, "PROMETHEUS_PORT", s.metrics.host, s.metrics.port, metrics_site_)
    outbox_service = OutboxService(p.outbox, p.spool, p.metrics)
    root = AuditgenService(reactor, p.api, log_observer)
    root.parts = p
    grounding = p.factory.grounding
    world = None if grounding is None else grounding.world
    root.status = Status(s, p.outbox, p.metrics, api_port, metrics_port, outbox_service, world)
    for service in (
        p.verdicts,  # first: restored before the API answers, stopped after it
        api_port,
        metrics_port,
        outbox_service,
        p.publisher,
        *([] if p.alerts is None else [p.alerts]),
        *p.truth_services,
        p.ground_truth,
        p.scenarios,
        p.generator,
    ):
        root.addService(service)
    return root


class AuditgenService(MultiService):
    """The whole service; a stop it completed is a clean exit, whatever signal asked for it.

    twistd re-raises SIGTERM on itself after shutdown, so the process would die "killed by SIGTERM"
    even after a graceful stop. SIGTERM is how systemd, Docker and Kubernetes ask for a normal stop, so
    once every child stopped we clear the recorded signal and twistd exits 0.
    """

    log = Logger()
    parts: Parts | None = None
    status: Status | None = None

    def __init__(self, reactor: Any, api: Closable, log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self._api = api
        self._log_observer = log_observer

    def setServiceParent(self, parent: Any) -> None:
        """Under twistd the parent is the application: its ILogObserver is the one twistd starts with."""
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Open the ports; a port that cannot be opened stops start-up here, before anything is sent."""
        try:
            super().privilegedStartService()
        except PortInUse as e:
            for child in self:
                if isinstance(child, Listener):
                    child.close()
            self.log.critical(
                "{line}", line=e.line, event="service.port_in_use", setting=e.setting, port=e.port
            )
            raise

    def startService(self) -> None:
        super().startService()
        if self.status is not None:
            self.status.ready().addCallback(self._ready)

    def _ready(self, fields: dict[str, Any]) -> None:
        self.log.info(READY, event="service.ready", **fields)

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop the children one after another, in reverse order (MultiService stops them all at once).

        New API calls get 503 from the start; then the generator stops, the publisher (draining its
        confirms, bounded), the spool (committing the last acks), and last the ports.
        """
        self._api.close()
        Service.stopService(self)
        for child in reversed(list(self)):
            await maybeDeferred(child.stopService)
        if self.status is not None:
            self.log.info(STOPPED, event="service.stopped", **self.status.stopped_fields())
        if hasattr(self._reactor, "_exitSignal"):
            self._reactor._exitSignal = None


READY = (
    "ready: API on http://{api}, metrics on http://{metrics}/metrics, broker {broker} queue {queue!r}, "
    "generator {generator}, {held}, {world}"
)
STOPPED = "stopped: {confirmed} events confirmed by the broker, {left} events {where}"


def _world_line(world: World | None, s: Settings) -> str:
    """Which world events are drawn from, for the ready line."""
    if world is None:
        return "no world (AUDITGEN_WORLD=false)"
    if s.world.file:
        source = s.world.file
    elif s.generator.seed:
        source = f"seed {s.generator.seed!r}"
    else:
        source = "a random seed"
    size = f"{len(world.hosts)} hosts and {len(world.people)} people"
    return f"events drawn from a world of {size} ({source}; GET /world)"


class Status:
    """The two lines an operator reads first: ready (what listens, where events go) and stopped."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        metrics: Metrics,
        api: Listener,
        metrics_port: Listener,
        outbox_service: OutboxService,
        world: World | None = None,
    ) -> None:
        self._s = settings
        self._world = world
        self._outbox = outbox
        self._metrics = metrics
        self._api = api
        self._metrics_port = metrics_port
        self._outbox_service = outbox_service

    def ready(self) -> Deferred[dict[str, Any]]:
        """The ready line's fields, once the spool (if any) has been read back."""
        return self._outbox_service.opened().addCallback(lambda _: self.ready_fields())

    def ready_fields(self) -> dict[str, Any]:
        s = self._s
        g = s.generator
        if g.rate is not None:
            generating = f"{g.rate:g} events/s ({s.shape.shape})"
        elif g.interval > 0:
            generating = f"one event every {g.interval:g} s ({s.shape.shape})"
        else:
            generating = "off"
        spool, replayed = s.outbox.spool_dir, self._outbox_service.replayed
        held = f"spool {spool} holding {replayed} events" if spool else "no spool (events wait in memory)"
        w = self._world
        return {
            "world": _world_line(w, s),
            "world_hosts": None if w is None else len(w.hosts),
            "api": self._api.address(),
            "metrics": self._metrics_port.address(),
            "broker": s.broker.node.describe(),
            "queue": s.routing.queue,
            "generator": generating,
            "rate": g.events_per_second,
            "spool": spool,
            "spool_events": replayed if spool else None,
            "held": held,
        }

    def stopped_fields(self) -> dict[str, Any]:
        sample = self._metrics.registry.get_sample_value(f"{PREFIX}_published_success_total")
        spool = self._s.outbox.spool_dir
        return {
            "confirmed": int(sample or 0),
            "left": len(self._outbox),
            "spool": spool,
            "where": f"left in spool {spool} for the next run" if spool else "not sent, lost (no spool)",
        }


def _publisher(s: Settings, reactor: Any, topology: Topology, outbox: Outbox, metrics: Metrics) -> Publisher:
    return Publisher(
        reactor,
        s.broker.nodes,
        topology.queue,
        outbox,
        metrics,
        max_unconfirmed=s.broker.max_unconfirmed,
        connect_timeout=s.broker.connect_timeout,
        heartbeat=s.broker.heartbeat,
        shutdown_timeout=s.broker.shutdown_timeout,
        topology=topology,
        tls=ClientTLS.load(s.tls.ca_file, s.tls.cert_file, s.tls.key_file, s.tls.verify_hostname),
        instance=s.generator.identity,
    )


def _alerts_link(s: Settings, reactor: Any, verdicts: VerdictService, metrics: Metrics) -> AlertsLink | None:
    """With AUDITGEN_ALERTS_QUEUE or _EXCHANGE: the alerts consumer on a connection of its own to the same
    nodes, acknowledging each alert once the verdict store has it (at once without a spool)."""
    a = s.alerts
    if a.queue is None and a.exchange is None:
        return None
    store = verdicts.store
    consumer = AlertConsumer(
        verdicts.tracker,
        queue=a.queue,
        exchange=a.exchange,
        binding_key=a.binding_key,
        metrics=metrics,
        recorded=store.flushed if store is not None else lambda: succeed(None),
    )
    return AlertsLink(
        reactor,
        s.broker.nodes,
        consumer,
        tls=ClientTLS.load(s.tls.ca_file, s.tls.cert_file, s.tls.key_file, s.tls.verify_hostname),
        connect_timeout=s.broker.connect_timeout,
        heartbeat=s.broker.heartbeat,
        shutdown_timeout=s.broker.shutdown_timeout,
        name=f"auditgen alerts {s.generator.identity}",
    )


def _ground_truth_outbox(s: Settings, reactor: Any) -> tuple[Outbox | None, list[Service]]:
    """With AUDITGEN_GROUND_TRUTH_QUEUE: the records' own outbox (spooled in <spool>/ground-truth), and its
    spool service and publisher in start order; else (None, []).

    Their metrics are kept apart, so the service's counts stay those of audit events.
    """
    queue = s.scenarios.ground_truth_queue
    if queue is None:
        return None, []
    metrics = Metrics()
    spool_dir = s.outbox.spool_dir
    spool = Spool(os.path.join(spool_dir, "ground-truth"), reactor) if spool_dir else None
    outbox = Outbox(
        s.outbox.max_events, metrics, reactor, spool=spool, spool_max_bytes=s.outbox.spool_max_bytes
    )
    # Records go straight to their queue (the default exchange), declared like the events' queue.
    topology = Topology(queue, queue_type=s.routing.queue_type, declare=s.routing.declare)
    publisher = _publisher(s, reactor, topology, outbox, metrics)
    return outbox, [OutboxService(outbox, spool, metrics), publisher]
