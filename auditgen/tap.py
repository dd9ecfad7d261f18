"""twistd wiring: the `auditgen` command's options, and a makeService that builds the tree (auditgen.app).

Parsing options only reads settings (and the .env file); nothing is imported that installs a reactor and
nothing listens until makeService, so `twistd -r <reactor> auditgen` and `--help` stay side-effect free.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Sequence
from typing import ClassVar

from twisted.application.service import IService
from twisted.python import usage

from auditgen import __version__
from auditgen.catalogs import load_catalog
from auditgen.config import SPECS, TOPICS, ConfigError, Settings, load_settings, read_dotenv
from auditgen.events import Catalog, TemplateError
from auditgen.scenarios import Scenario
from auditgen.scenarios.files import ScenarioFileError, load_scenarios
from auditgen.world import World
from auditgen.world.files import WorldError
from auditgen.world.files import load as load_world

GENERAL = ("env-file", "version", "help")


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
            [
                spec.option,
                None,
                None,
                f"{spec.help.replace('`', '')} [{spec.env}, default: {spec.default or 'unset'}]",
            ]
            for spec in SPECS
        ],
    ]

    settings: Settings
    catalog: Catalog
    scenarios: tuple[Scenario, ...]
    world: World | None
    """The user's world file, read here so a bad one is a usage error; None: none, or built in app.parts."""

    def opt_version(self) -> None:
        """Display auditgen's version and exit."""
        _print(f"auditgen {__version__}")
        sys.exit(0)

    def opt_help(self) -> None:
        """Display this help and exit."""
        _print(str(self))
        sys.exit(0)

    def getUsage(self, width: int | None = None) -> str:
        """The options under one heading per topic, in the order of the spec table (alphabetical within
        a topic, as Twisted sorts them)."""
        width = width or int(os.environ.get("COLUMNS", "80"))
        by_title: dict[str, list[str]] = {"General": list(GENERAL)}
        for spec in SPECS:
            by_title.setdefault(TOPICS[spec.topic], []).append(spec.option)
        sections = []
        for title, options in by_title.items():
            rows = [
                {
                    "long": option,
                    "short": None,
                    "doc": self.docs[option],
                    "optType": "parameter" if option in self.defaults else "flag",
                    "default": None,
                    "dispatch": None,
                }
                for option in options
            ]
            sections.append(f"{title}:\n{''.join(usage.docMakeChunks(rows, width))}")
        longdesc = "\n".join(textwrap.wrap(self.longdesc, width))
        return "\n".join(sections) + "\n" + longdesc + "\n"

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Under twistd, a bad option or setting prints its one line and a hint to stderr and exits 1
        (twistd would print the whole help first); alone (in tests) it raises UsageError."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            print(f"auditgen: {e}", file=sys.stderr)
            print("Run 'twistd auditgen --help' for the settings and their values.", file=sys.stderr)
            sys.exit(1)

    def postOptions(self) -> None:
        """Settings and templates are checked here, so a mistake is a usage error before anything starts."""
        try:
            dotenv = read_dotenv(self["env-file"])
            self.settings = load_settings(self, os.environ, dotenv)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        templates = self.settings.templates
        try:
            self.catalog = load_catalog(templates.files or (), templates.replace)
        except TemplateError as e:
            raise usage.UsageError(f"templates: {e}") from None
        try:
            self.scenarios = load_scenarios(self.settings.scenarios.files or ())
        except ScenarioFileError as e:
            raise usage.UsageError(f"scenarios: {e}") from None
        world_file = self.settings.world.file
        try:
            self.world = load_world(world_file) if world_file else None
        except WorldError as e:
            raise usage.UsageError(f"world: {e}") from None


def makeService(options: Options) -> IService:
    """The service tree for these options on the global reactor; then the process is made auditgen's."""
    from twisted.internet import reactor

    from auditgen import app, process
    from auditgen.logs import twistd_observer

    s = options.settings
    # options.parent is twistd's own options (--logfile, --nodaemon, ...), absent outside twistd.
    log_observer = twistd_observer(getattr(options, "parent", None), s.logs.format, s.logs.level)
    root = app.build(s, options.catalog, reactor, log_observer, options.scenarios, options.world)
    process.take_over(s)
    return root


def _print(text: str) -> None:
    """Print to stdout; a reader that closed the pipe early (`--help | head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that raises nothing either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
