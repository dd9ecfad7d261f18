"""The world events are drawn from: hosts with their software and accounts, the people who use them, and
the attackers who try to get in.

Immutable data. Hosts of one role and release share a `Profile` (packages, services, files, system
accounts), so a world of 100,000 hosts holds each host's own facts only: its name, address, the accounts of
people and services on it, and whether it takes passwords over SSH.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNSET_ID = 4294967295  # auditd's "unset" auid and ses: (uint32)-1
KINDS = ("system", "admin", "developer", "service")
ROLES = ("web", "database", "cache", "bastion", "mail", "build", "kubernetes")


@dataclass(frozen=True, slots=True)
class Account:
    """A local account. `kind`: system (uid < 1000, no login), admin (in the host's sudo or wheel group),
    developer (a person without sudo) or service (a non-person account that may log in by key)."""

    name: str
    uid: int
    kind: str
    groups: tuple[str, ...] = ()
    shell: str = "/bin/bash"
    sudo: bool = False

    @property
    def home(self) -> str:
        return "/root" if self.uid == 0 else f"/home/{self.name}"

    @property
    def can_log_in(self) -> bool:
        return not self.shell.endswith("nologin") and not self.shell.endswith("false")


@dataclass(frozen=True, slots=True, eq=False)
class Release:
    """An OS release: its package manager, the group of its admins and the version of each package it
    ships (what `apt-get install` or `dnf install` would install there)."""

    name: str  # e.g. "ubuntu-24.04"
    manager: str  # "apt" or "dnf"
    admin_group: str  # "sudo" or "wheel"
    versions: Mapping[str, str]


@dataclass(frozen=True, slots=True, eq=False)
class Profile:
    """What hosts of one role and release have in common."""

    role: str
    release: Release
    packages: Mapping[str, str]  # installed: name -> version
    services: tuple[str, ...]  # systemd units it runs
    files: tuple[str, ...]  # configuration files worth watching
    system_accounts: tuple[Account, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Host:
    """One host. `accounts` are its people's and services' accounts (uid >= 1000); system accounts (and
    root) come from its profile."""

    name: str
    address: str
    profile: Profile
    password_ssh: bool
    accounts: tuple[Account, ...]
    sudoers: tuple[Account, ...] = field(init=False)
    admins: tuple[Account, ...] = field(init=False)  # sudoers other than root
    developers: tuple[Account, ...] = field(init=False)
    logins: tuple[Account, ...] = field(init=False)

    def __post_init__(self) -> None:
        every = (*self.profile.system_accounts, *self.accounts)
        object.__setattr__(self, "sudoers", tuple(a for a in every if a.sudo))
        object.__setattr__(self, "admins", tuple(a for a in self.sudoers if a.uid != 0))
        object.__setattr__(self, "developers", tuple(a for a in self.accounts if a.kind == "developer"))
        object.__setattr__(
            self, "logins", tuple(a for a in self.accounts if a.kind in ("admin", "developer"))
        )

    @property
    def role(self) -> str:
        return self.profile.role

    def account(self, name: str) -> Account | None:
        """The account of that name on this host, if there is one."""
        for account in self.accounts:
            if account.name == name:
                return account
        for account in self.profile.system_accounts:
            if account.name == name:
                return account
        return None


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who works on the hosts: their account name and uid (the same on every host), team (ops
    people are admins, dev people developers), the time zone and hours they work, and where they connect
    from (their workstation, or the VPN)."""

    name: str
    uid: int
    team: str
    timezone: str
    hours: tuple[int, int]  # local [start, end)
    workstation: str
    addresses: tuple[str, ...]  # workstation address first, then the VPN's


@dataclass(frozen=True, slots=True)
class Attackers:
    """Where unwelcome logins come from, and the names they try (none of which exists on the hosts)."""

    networks: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class World:
    """Hosts, people and attackers; `seed` and the sizes it was built from (None for a user's file)."""

    hosts: tuple[Host, ...]
    people: tuple[Person, ...]
    attackers: Attackers
    seed: str | None = None
    _hosts_by_name: dict[str, Host] = field(init=False, repr=False, compare=False)
    _people_by_name: dict[str, Person] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts_by_name", {h.name: h for h in self.hosts})
        object.__setattr__(self, "_people_by_name", {p.name: p for p in self.people})

    def host(self, name: str) -> Host | None:
        """The host of that name, or None for a host outside the world (a user's template may name one)."""
        return self._hosts_by_name.get(name)

    def person(self, name: str) -> Person | None:
        return self._people_by_name.get(name)
