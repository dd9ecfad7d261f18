"""twistd wiring: the `auditgen` command's options, and the service tree they build.

Parsing options only reads settings (and the .env file); nothing is imported that installs a reactor and
nothing listens until makeService, so `twistd -r <reactor> auditgen` and `--help` stay side-effect free.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, ClassVar

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized

from auditgen.config import SPECS, ConfigError, Settings, load_settings, read_dotenv


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

    def postOptions(self) -> None:
        try:
            dotenv = read_dotenv(self["env-file"])
            self.settings = load_settings(self, os.environ, dotenv)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


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
    """The API first and the generator last: on shutdown the generator stops first and the API last."""
    from twisted.internet import reactor

    from auditgen.events import Catalog, EventFactory, seeded_rng
    from auditgen.generator import Generator
    from auditgen.logs import twistd_observer
    from auditgen.metrics import Metrics, metrics_site
    from auditgen.outbox import Outbox, OutboxService
    from auditgen.publisher import Publisher
    from auditgen.spool import Spool
    from auditgen.web import AuditAPI

    # pika logs through the stdlib at warning level for things this service reports itself, once per
    # state change (returns, nacks, every closed connection); keep its log for real failures only.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    s = options.settings
    clock: Any = reactor
    metrics = Metrics(max_series=s.metrics_max_series)
    spool = Spool(s.spool_dir, reactor) if s.spool_dir else None
    outbox = Outbox(s.outbox_max, metrics, clock, spool=spool, spool_max_bytes=s.spool_max_bytes)
    catalog = Catalog.builtin()
    factory = EventFactory(catalog, seeded_rng(s.seed, "api"))
    publisher = Publisher(
        reactor,
        s.broker,
        s.queue,
        outbox,
        metrics,
        max_unconfirmed=s.max_unconfirmed,
        connect_timeout=s.connect_timeout,
        heartbeat=s.heartbeat,
        shutdown_timeout=s.shutdown_timeout,
    )
    api = AuditAPI(
        factory,
        outbox,
        publisher,
        metrics.registry,
        clock,
        confirm_wait=s.confirm_wait,
        max_body_bytes=s.max_body_bytes,
    )
    # options.parent is twistd's own options (--logfile, --nodaemon, ...), absent outside twistd.
    log_observer = twistd_observer(getattr(options, "parent", None), s.log_format, s.log_level)
    root = AuditgenService(reactor, api, log_observer)
    root.addService(_listen(reactor, s.app_port, api.site()))
    root.addService(OutboxService(outbox, spool, metrics))
    root.addService(publisher)
    root.addService(_listen(reactor, s.prometheus_port, metrics_site(metrics.registry)))
    generated = EventFactory(catalog, seeded_rng(s.seed, "generator"))
    root.addService(Generator(clock, s.events_per_second, generated.generate, outbox, metrics))
    # Everything made so far (modules, templates, the service tree) lives as long as the process: keep it
    # out of the cyclic collector, whose full passes over it took tens of milliseconds, a latency spike
    # for every request in flight.
    gc.freeze()
    return root


def _listen(reactor: Any, port: int, site: Any) -> Service:
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.endpoints import TCP4ServerEndpoint

    return StreamServerEndpointService(TCP4ServerEndpoint(reactor, port), site)
