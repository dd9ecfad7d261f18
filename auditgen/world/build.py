"""A world built from a seed and a size: the same seed and sizes give the same world.

The releases, roles and names it draws from are data (``releases.json`` next to this module). Hosts of
one role and release share one Profile, and each person has one account per package family, so building
100,000 hosts takes seconds and holds little more than each host's name, address and accounts.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import random
from collections.abc import Mapping, Sequence
from importlib import resources
from itertools import accumulate
from typing import Any

from auditgen.world.model import Account, Attackers, Host, Person, Profile, Release, World

DEFAULT_HOSTS = 12
DEFAULT_PEOPLE = 10
MAX_HOSTS = 100_000
MAX_PEOPLE = 10_000
ENVIRONMENTS = ("prod", "staging")
ADMINS_PER_HOST = (1, 3)
DEVELOPERS_PER_HOST = (0, 3)
PASSWORD_SSH_SHARE = 0.2  # hosts that still take passwords over SSH (bastions always do)
FIRST_PERSON_UID = 1000
_RELEASE_WEIGHTS = {"ubuntu-24.04": 4, "ubuntu-22.04": 3, "debian-12": 2, "rhel-9": 2}
_PEOPLE_START_HOURS = (7, 8, 9, 10)
_WORKDAY_HOURS = 9


@functools.cache
def reference() -> Mapping[str, Any]:
    """The shipped reference data: releases with their package versions, roles, names and networks."""
    text = resources.files("auditgen.world").joinpath("releases.json").read_text(encoding="utf-8")
    data: Mapping[str, Any] = json.loads(text)
    return data


@functools.cache
def releases() -> Mapping[str, Release]:
    """Every known OS release, by name."""
    families = reference()["families"]
    out = {}
    for name, r in reference()["releases"].items():
        out[name] = Release(name, r["manager"], r["admin_group"], dict(r["versions"]))
        assert all(p in r["versions"] for p in families[r["manager"]]["base_packages"]), name
    return out


def build(seed: str | None, hosts: int = DEFAULT_HOSTS, people: int = DEFAULT_PEOPLE) -> World:
    """A world of `hosts` hosts and `people` people (at least one of each), drawn from the seed."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise ValueError(f"hosts: expected a whole number from 1 to {MAX_HOSTS}")
    if not 1 <= people <= MAX_PEOPLE:
        raise ValueError(f"people: expected a whole number from 1 to {MAX_PEOPLE}")
    rng = random.Random(f"{seed}/world/{hosts}/{people}")
    ref = reference()
    crowd = _people(rng, people)
    ops = [p for p in crowd if p.team == "ops"]
    devs = [p for p in crowd if p.team == "dev"]
    roles = list(ref["roles"])
    role_weights = [ref["roles"][r]["weight"] for r in roles]
    release_names = list(_RELEASE_WEIGHTS)
    release_weights = list(_RELEASE_WEIGHTS.values())
    servers = ipaddress.ip_network(ref["networks"]["servers"])
    role_cum = list(accumulate(role_weights))
    release_cum = list(accumulate(release_weights))
    width = max(2, len(str(hosts)))
    counts: dict[tuple[str, str], int] = {}
    accounts: dict[tuple[str, str], Account] = {}  # (person or service, release) -> its account
    made = []
    for index in range(hosts):
        # The first hosts cover every role, so even a small world has each kind of machine.
        role = roles[index] if index < len(roles) else rng.choices(roles, cum_weights=role_cum)[0]
        env = ENVIRONMENTS[0] if rng.random() < 0.8 else ENVIRONMENTS[1]
        counts[role, env] = number = counts.get((role, env), 0) + 1
        kind = profile(role, rng.choices(release_names, cum_weights=release_cum)[0])
        release = kind.release
        own: list[Account] = []
        chosen = [
            *rng.sample(ops, min(len(ops), rng.randint(*ADMINS_PER_HOST))),
            *rng.sample(devs, min(len(devs), rng.randint(*DEVELOPERS_PER_HOST))),
        ]
        for person in chosen:
            own.append(_cached(accounts, person.name, release, lambda: person_account(person, release)))  # noqa: B023
        for name in ("svc-monitoring", *ref["roles"][role]["service_accounts"]):
            own.append(_cached(accounts, name, release, lambda: service_account(name, release)))  # noqa: B023
        made.append(
            Host(
                name=f"{_short(role)}-{number:0{width}d}.{env}.example.com",
                address=_address(servers, index),
                profile=kind,
                password_ssh=role == "bastion" or rng.random() < PASSWORD_SSH_SHARE,
                accounts=tuple(sorted(own, key=lambda a: a.uid)),
            )
        )
    attackers = Attackers(tuple(ref["attackers"]["networks"]), tuple(ref["attackers"]["names"]))
    return World(tuple(made), tuple(crowd), attackers, seed)


def _address(network: ipaddress.IPv4Network | ipaddress.IPv6Network, index: int) -> str:
    """The index-th host address of an IPv4 network, skipping every .0 and .255 (wrapping if it is full)."""
    first = int(network.network_address) + 1
    usable = (network.num_addresses - 2) // 256 * 254 or network.num_addresses - 2
    index %= usable
    n = first + (index // 254) * 256 + index % 254 if network.num_addresses > 256 else first + index
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _short(role: str) -> str:
    return {"database": "db", "kubernetes": "k8s-node", "build": "ci-runner"}.get(role, role)


def _people(rng: random.Random, count: int) -> list[Person]:
    """People: one in three is in ops (an admin), the rest developers; at least one of each with two."""
    ref = reference()
    names: Sequence[str] = ref["people"]
    office = ipaddress.ip_network(ref["networks"]["office"])
    vpn = ipaddress.ip_network(ref["networks"]["vpn"])
    crowd = []
    for index in range(count):
        name = names[index] if index < len(names) else f"{names[index % len(names)]}{index // len(names)}"
        team = "ops" if index % 3 == 0 else "dev"
        zone, _offset = rng.choice(ref["timezones"])
        start = rng.choice(_PEOPLE_START_HOURS)
        crowd.append(
            Person(
                name=name,
                uid=FIRST_PERSON_UID + index,
                team=team,
                timezone=zone,
                hours=(start, start + _WORKDAY_HOURS),
                workstation=f"ws-{name}.corp.example.com",
                addresses=(_address(office, index), _address(vpn, index)),
            )
        )
    if count == 1:  # the one person does both jobs
        crowd[0] = Person(**{**_fields(crowd[0]), "team": "ops"})
    return crowd


def _fields(person: Person) -> dict[str, Any]:
    return {name: getattr(person, name) for name in Person.__slots__}


def person_account(person: Person, release: Release) -> Account:
    """A person's account on a host of that release: an admin (in its sudo or wheel group) for ops, a
    developer for dev; the same uid everywhere."""
    if person.team == "ops":
        groups = (person.name, release.admin_group)
        return Account(person.name, person.uid, "admin", groups, "/bin/bash", True)
    return Account(person.name, person.uid, "developer", (person.name, "developers"), "/bin/bash", False)


def service_account(name: str, release: Release) -> Account | None:
    """One of the built-in service accounts (deploy, svc-backup, ...) on a host of that release."""
    spec = reference()["service_accounts"].get(name)
    if spec is None:
        return None
    groups: tuple[str, ...] = (name, release.admin_group) if spec["sudo"] else (name,)
    return Account(name, spec["uid"], "service", groups, spec["shell"], spec["sudo"])


def _cached(cache: dict[tuple[str, str], Account], name: str, release: Release, make: Any) -> Account:
    """One account object per name and release, shared by every host that has it."""
    account = cache.get((name, release.name))
    if account is None:
        account = cache[name, release.name] = make()
    return account


@functools.cache
def profile(role: str, release_name: str) -> Profile:
    """One Profile per role and release, shared by every host of that kind."""
    ref = reference()
    release = releases()[release_name]
    family = ref["families"][release.manager]
    spec = ref["roles"][role]
    wanted = [*family["base_packages"], family["monitoring"][0], *spec["packages"][release.manager]]
    packages = {}
    for name in wanted:
        resolved = _versioned(release, name)
        packages[resolved] = release.versions[resolved]
    services = (*family["base_services"], family["monitoring"][1], *spec["services"][release.manager])
    pg_major = next((p.split("-")[1] for p in packages if p.startswith("postgresql-")), "")
    pg_hba = f"/etc/postgresql/{pg_major}/main/pg_hba.conf" if pg_major else "/var/lib/pgsql/data/pg_hba.conf"
    files = tuple(f.replace("{pg_hba}", pg_hba) for f in (*ref["base_files"], *spec["files"]))
    system = [
        Account(n, uid, "system", ("root",) if uid == 0 else (n,), "/usr/sbin/nologin")
        for n, uid in (
            *ref["base_system_accounts"],
            *spec["system_accounts"][release.manager],
        )
    ]
    # root has a shell and, like every sudoers file says, may run anything.
    system[0] = Account("root", 0, "system", ("root",), "/bin/bash", sudo=True)
    return Profile(role, release, packages, tuple(dict.fromkeys(services)), files, tuple(system))


def _versioned(release: Release, name: str) -> str:
    """A package name as the release ships it: "postgresql" is "postgresql-16" on Ubuntu 24.04."""
    if name in release.versions:
        return name
    return next(p for p in release.versions if p.startswith(name + "-") and p[len(name) + 1 :].isdigit())
