"""The service's TCP ports: opened before any other part starts, and the error that says which setting
could not be opened, and who holds the port.

Who holds it is found the way `ss -ltnp` does, from /proc: the listening socket's inode in
/proc/net/tcp{,6}, then the process with that inode among its open files. Best effort: other users'
processes are not readable without privileges, and other systems have no /proc; then it is not named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


class PortInUse(CannotListenError):
    """The port of a setting cannot be opened; str() is the one line that says so."""

    def __init__(
        self, setting: str, host: str, port: int, error: CannotListenError, holder: str | None
    ) -> None:
        super().__init__(host, port, error.socketError)
        self.setting = setting
        reason = error.socketError
        why = getattr(reason, "strerror", None) or str(reason)
        held = f", held by {holder}" if holder else ""
        self.line = (
            f"cannot listen on {host}:{port} ({setting}): {why}{held}; nothing was started, exiting; "
            f"stop what holds the port or choose another with {setting}"
        )

    def __str__(self) -> str:
        return self.line


class Listener(Service):
    """A TCP port opened in privilegedStartService; in use, it raises PortInUse naming its setting."""

    def __init__(self, reactor: Any, setting: str, host: str, port: int, factory: Any) -> None:
        # An IPv6 address needs an IPv6 socket; a hostname binds its IPv4 address.
        endpoint = TCP6ServerEndpoint if isIPv6Address(host) else TCP4ServerEndpoint
        self.endpoint = endpoint(reactor, port, interface=host)
        self.setting, self.host, self.port = setting, host, port
        self._factory = factory
        self.listening: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        outcome: list[Any] = []
        self.endpoint.listen(self._factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"{self.setting}: the endpoint did not answer at once, as TCP endpoints do")
        result = outcome[0]
        if IListeningPort.providedBy(result):
            self.listening = result
            return
        error = getattr(result, "value", result)
        if isinstance(error, CannotListenError):
            raise PortInUse(self.setting, self.host, self.port, error, holder_of(self.port)) from None
        raise error

    def startService(self) -> None:
        if self.listening is None and not self.running:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return self.close()

    def close(self) -> Deferred[None] | None:
        """Stop listening, if listening."""
        listening, self.listening = self.listening, None
        return None if listening is None else maybeDeferred(listening.stopListening)  # type: ignore[call-overload]

    def address(self) -> str:
        """host:port as bound (the real port when 0 was asked for)."""
        port = getattr(self.listening.getHost(), "port", self.port) if self.listening else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"


def holder_of(port: int, proc: Path = Path("/proc")) -> str | None:
    """'pid 1234 (python3)' for the process listening on this TCP port, if /proc tells; else None."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        if sockets & _open_files(proc / pid / "fd"):
            try:
                name = (proc / pid / "comm").read_text().strip()
            except OSError:
                name = "?"
            return f"pid {pid} ({name})"
    return None


def _open_files(fd_dir: Path) -> set[str]:
    """What a process's file descriptors point at; those that close meanwhile, or that we may not
    read, are left out."""
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    links = set()
    for fd in fds:
        try:
            links.add(os.readlink(fd_dir / fd))
        except OSError:
            continue
    return links


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """The inodes of the sockets listening on this port, IPv4 and IPv6."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    return inodes
