"""What running as the auditgen process changes for the whole process, in one place.

makeService calls `take_over` once, after the tree is built; `app.build` never does any of this, so tests
that build services leave the interpreter as they found it.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from twisted.logger import Logger

from auditgen.config import Settings
from auditgen.ports import PortInUse

log = Logger(namespace="auditgen.process")


def take_over(s: Settings) -> None:
    """Quiet pika, warn about exposed secrets, hide them from the process list, keep start-up errors to
    their one line, and freeze the heap built so far."""
    # pika logs through the stdlib at warning level for things this service reports itself, once per
    # state change (returns, nacks, every closed connection); keep its log for real failures only.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    warn_about_secrets(s)
    if s.secret_options:
        hide_from_process_title(s.secret_options)
    sys.excepthook = _one_line_for_port_in_use(sys.excepthook)
    # Everything made so far (modules, templates, the service tree) lives as long as the process: keep it
    # out of the cyclic collector, whose full passes over it took tens of milliseconds, a latency spike
    # for every request in flight.
    gc.freeze()


def warn_about_secrets(s: Settings) -> None:
    """Say so when a secret is where other users can read it, or a broker is not checked."""
    for option in s.secret_options:
        log.warn(
            "{option} was given on the command line: it is now hidden from the process list, but any user "
            "of this machine could read it there until now, and shell history keeps it; give it in the "
            "environment or in a file (see docs/security.md)",
            event="config.secret_on_command_line",
            option=option,
        )
    if s.broker.node.tls and not s.tls.verify_hostname:
        log.warn(
            "RABBITMQ_TLS_VERIFY_HOSTNAME is false: the broker's certificate is checked against the CAs "
            "but not against its host name {host!r}, so any host with a certificate from those CAs can "
            "pose as the broker",
            event="config.tls_hostname_unchecked",
            host=s.broker.node.host,
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


def hide_from_process_title(options: Sequence[str]) -> None:
    """A secret given as an option is in /proc/<pid>/cmdline, which every user can read: rewrite it.

    setproctitle overwrites the process's own argv memory, which is what ps and /proc show.
    """
    import setproctitle

    setproctitle.setproctitle(" ".join(hidden_argv(sys.argv, options)))


Hook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def _one_line_for_port_in_use(previous: Hook) -> Hook:
    """A port in use ends twistd with an exception (exit status 1) that the service already logged in one
    line: no traceback after it. Anything else keeps its traceback."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(value, PortInUse):
            previous(kind, value, tb)

    return hook
