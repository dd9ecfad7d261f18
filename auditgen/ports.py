"""A port the service was told to open and cannot: the error that says which setting, and who holds it.

Who holds it is found the way `ss -ltnp` does, from /proc: the listening socket's inode in
/proc/net/tcp{,6}, then the process with that inode among its open files. Best effort: other users'
processes are not readable without privileges, and other systems have no /proc; then it is not named.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.error import CannotListenError

LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


class PortInUse(CannotListenError):
    """The port of a setting cannot be opened; str() is the one line that says so."""

    def __init__(
        self, setting: str, host: str, port: int, error: CannotListenError, holder: str | None
    ) -> None:
        super().__init__(host, port, error.socketError)  # type: ignore[no-untyped-call]
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
