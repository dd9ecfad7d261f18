"""A world as data: read from a user's file (JSON or YAML, described by ``world.schema.json``), and
written out (`to_data`) in the same format, so a printed world can be edited and loaded again.

The format keeps large worlds small: releases and profiles (what hosts of one role and release share) are
written once, and a host lists its accounts by name where the name says everything (a person's account,
or one of the built-in service accounts); any other account is written out in full.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from auditgen.catalogs import read_file
from auditgen.events.templates import TemplateError
from auditgen.world.build import person_account, reference, releases, service_account
from auditgen.world.build import profile as builtin_profile
from auditgen.world.model import KINDS, Account, Attackers, Host, Person, Profile, Release, World

_TOP_KEYS = frozenset({"releases", "profiles", "hosts", "people", "attackers"})
_HOST_KEYS = frozenset({"name", "address", "profile", "password_ssh", "accounts"})
_PROFILE_KEYS = frozenset({"role", "release", "packages", "services", "files", "system_accounts"})
_RELEASE_KEYS = frozenset({"manager", "admin_group", "versions"})
_ACCOUNT_KEYS = frozenset({"name", "uid", "kind", "groups", "shell", "sudo"})
_PERSON_KEYS = frozenset({"name", "uid", "team", "timezone", "hours", "workstation", "addresses"})
_MANAGERS = ("apt", "dnf")
_TEAMS = ("ops", "dev")


class WorldError(ValueError):
    """A world file cannot be used; the message names the file, the entry and the field."""


def _fail(where: str, message: str) -> NoReturn:
    raise WorldError(f"{where}: {message}")


def load(path: str) -> World:
    """The world in a JSON or YAML file; WorldError names what is wrong."""
    try:
        data = read_file(path)
    except TemplateError as e:
        raise WorldError(str(e)) from None
    try:
        return from_data(data)
    except WorldError as e:
        raise WorldError(f"{path}: {e}") from None


def from_data(data: Any) -> World:
    """A world from parsed data (the file's format); WorldError names the entry and the field."""
    if not isinstance(data, Mapping):
        _fail("world", f"expected an object with hosts, people and attackers, got {_show(data)}")
    for key in data:
        if key not in _TOP_KEYS:
            _fail("world", f"unknown key {key!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    known = dict(releases())
    for name, spec in _mapping(data.get("releases", {}), "releases").items():
        release = _release(name, spec)
        builtin = known.get(name)
        same = builtin is not None and (release.manager, release.admin_group, dict(release.versions)) == (
            builtin.manager,
            builtin.admin_group,
            dict(builtin.versions),
        )
        if not same:  # a printed world repeats the built-in releases: keep them, and their profiles
            known[name] = release
    people = tuple(_person(i, p) for i, p in enumerate(_list(data.get("people"), "people")))
    _unique([p.name for p in people], "people", "name")
    by_name = {p.name: p for p in people}
    profiles = {
        name: _profile(f"profiles.{name}", spec, known)
        for name, spec in _mapping(data.get("profiles", {}), "profiles").items()
    }
    hosts = tuple(
        _host(i, h, profiles, known, by_name) for i, h in enumerate(_list(data.get("hosts"), "hosts"))
    )
    _unique([h.name for h in hosts], "hosts", "name")
    if not hosts:
        _fail("hosts", "expected at least one host")
    return World(hosts, people, _attackers(data.get("attackers")), None)


def to_data(world: World) -> dict[str, Any]:
    """The world in the file format: what exists, as a test author reads it."""
    used: dict[str, Release] = {}
    profiles: dict[Profile, str] = {}
    for host in world.hosts:
        used.setdefault(host.profile.release.name, host.profile.release)
        if host.profile not in profiles:
            base = f"{host.profile.role}/{host.profile.release.name}"
            taken = set(profiles.values())
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}#{n}"
            profiles[host.profile] = name
    people = {p.name: p for p in world.people}
    return {
        "releases": {
            name: {"manager": r.manager, "admin_group": r.admin_group, "versions": dict(r.versions)}
            for name, r in used.items()
        },
        "profiles": {
            name: {
                "role": p.role,
                "release": p.release.name,
                "packages": dict(p.packages),
                "services": list(p.services),
                "files": list(p.files),
                "system_accounts": [_account_data(a) for a in p.system_accounts],
            }
            for p, name in profiles.items()
        },
        "hosts": [
            {
                "name": h.name,
                "address": h.address,
                "profile": profiles[h.profile],
                "password_ssh": h.password_ssh,
                "accounts": [_account_ref(a, h.profile.release, people) for a in h.accounts],
            }
            for h in world.hosts
        ],
        "people": [
            {
                "name": p.name,
                "uid": p.uid,
                "team": p.team,
                "timezone": p.timezone,
                "hours": list(p.hours),
                "workstation": p.workstation,
                "addresses": list(p.addresses),
            }
            for p in world.people
        ],
        "attackers": {"networks": list(world.attackers.networks), "names": list(world.attackers.names)},
    }


# -- writing ---------------------------------------------------------------------------------------------


def _account_data(a: Account) -> dict[str, Any]:
    return {
        "name": a.name,
        "uid": a.uid,
        "kind": a.kind,
        "groups": list(a.groups),
        "shell": a.shell,
        "sudo": a.sudo,
    }


def _account_ref(a: Account, release: Release, people: Mapping[str, Person]) -> str | dict[str, Any]:
    """A person's account by name when reading the name back gives the same account (the people list
    says the rest), any other account in full."""
    person = people.get(a.name)
    implied = person_account(person, release) if person is not None else None
    return a.name if implied == a else _account_data(a)


def _implied(name: str, release: Release, person: Person | None) -> Account | None:
    """What an account given by name only is: a person's, or one of the built-in service accounts."""
    return person_account(person, release) if person is not None else service_account(name, release)


# -- reading ---------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, f"expected an object, got {_show(value)}")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        _fail(where, f"expected a list, got {_show(value)}")
    return value


def _keys(value: Any, where: str, allowed: frozenset[str], required: Sequence[str]) -> Mapping[str, Any]:
    value = _mapping(value, where)
    for key in value:
        if key not in allowed:
            _fail(where, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in value:
            _fail(where, f"{key}: missing required key")
    return dict(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, f"expected a non-empty string, got {_show(value)}")
    return value


def _texts(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _uid(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 4294967295:
        _fail(where, f"expected a uid, a whole number from 0 to 4294967294, got {_show(value)}")
    return value


def _address(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(_text(value, where)))
    except ValueError:
        _fail(where, f"expected an IP address, got {_show(value)}")


def _unique(names: Sequence[str], where: str, key: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            _fail(f"{where}[{index}]", f"{key}: {name!r} appears twice")
        seen.add(name)


def _release(name: str, spec: Any) -> Release:
    where = f"releases.{name}"
    spec = _keys(spec, where, _RELEASE_KEYS, ("manager", "admin_group", "versions"))
    manager = spec["manager"]
    if manager not in _MANAGERS:
        _fail(where, f"manager: expected one of {', '.join(_MANAGERS)}, got {_show(manager)}")
    versions = {
        _text(k, f"{where}.versions"): _text(v, f"{where}.versions.{k}")
        for k, v in _mapping(spec["versions"], f"{where}.versions").items()
    }
    return Release(name, manager, _text(spec["admin_group"], f"{where}.admin_group"), versions)


def _profile(where: str, spec: Any, known: Mapping[str, Release]) -> Profile:
    spec = _keys(spec, where, _PROFILE_KEYS, ("role", "release"))
    role = _text(spec["role"], f"{where}.role")
    release_name = _text(spec["release"], f"{where}.release")
    release = known.get(release_name)
    if release is None:
        _fail(f"{where}.release", f"unknown release {release_name!r} (known: {', '.join(sorted(known))})")
    default = builtin_profile(role, release_name) if role in reference()["roles"] else None
    if default is not None and default.release is not release:
        default = None  # the user redefined a built-in release
    if default is None:
        for key in ("packages", "services", "files"):
            if key not in spec:
                _fail(where, f"{key}: missing (required for a role or release the built-in data lacks)")
    packages = default.packages if default and "packages" not in spec else {}
    if "packages" in spec:
        packages = {}
        for name, version in _mapping(spec["packages"], f"{where}.packages").items():
            packages[_text(name, f"{where}.packages")] = _text(version, f"{where}.packages.{name}")
    services = _texts(spec["services"], f"{where}.services") if "services" in spec else default.services  # type: ignore[union-attr]
    files = _texts(spec["files"], f"{where}.files") if "files" in spec else default.files  # type: ignore[union-attr]
    if "system_accounts" in spec:
        system = tuple(
            _account(a, f"{where}.system_accounts[{i}]", release, {})
            for i, a in enumerate(_list(spec["system_accounts"], f"{where}.system_accounts"))
        )
    elif default is not None:
        system = default.system_accounts
    else:
        system = (Account("root", 0, "system", ("root",), "/bin/bash", sudo=True),)
    if default is not None and (packages, services, files, system) == (
        default.packages,
        default.services,
        default.files,
        default.system_accounts,
    ):
        return default
    return Profile(role, release, packages, services, files, system)


def _account(spec: Any, where: str, release: Release, people: Mapping[str, Person]) -> Account:
    if isinstance(spec, str):
        account = _implied(spec, release, people.get(spec))
        if account is None:
            _fail(where, f"{spec!r} is neither a person nor a built-in service account: give it in full")
        return account
    spec = _keys(spec, where, _ACCOUNT_KEYS, ("name", "uid", "kind"))
    kind = spec["kind"]
    if kind not in KINDS:
        _fail(where, f"kind: expected one of {', '.join(KINDS)}, got {_show(kind)}")
    sudo = spec.get("sudo", kind == "admin")
    if not isinstance(sudo, bool):
        _fail(where, f"sudo: expected true or false, got {_show(sudo)}")
    name = _text(spec["name"], f"{where}.name")
    groups = _texts(spec["groups"], f"{where}.groups") if "groups" in spec else (name,)
    shell = _text(
        spec.get("shell", "/usr/sbin/nologin" if kind == "system" else "/bin/bash"), f"{where}.shell"
    )
    return Account(name, _uid(spec["uid"], f"{where}.uid"), kind, groups, shell, sudo)


def _host(
    index: int,
    spec: Any,
    profiles: Mapping[str, Profile],
    known: Mapping[str, Release],
    people: Mapping[str, Person],
) -> Host:
    where = f"hosts[{index}]"
    spec = _keys(spec, where, _HOST_KEYS, ("name", "address", "profile"))
    name = _text(spec["name"], f"{where}.name")
    where = f"host {name!r}"
    ref = spec["profile"]
    if isinstance(ref, str):
        profile = profiles.get(ref)
        if profile is None and "/" in ref:  # "role/release" of the built-in data
            role, _, release = ref.partition("/")
            if role in reference()["roles"] and release in releases():
                profile = builtin_profile(role, release)
        if profile is None:
            _fail(f"{where}.profile", f"unknown profile {ref!r} (known: {', '.join(sorted(profiles))})")
    else:
        profile = _profile(f"{where}.profile", ref, known)
    password_ssh = spec.get("password_ssh", False)
    if not isinstance(password_ssh, bool):
        _fail(f"{where}.password_ssh", f"expected true or false, got {_show(password_ssh)}")
    accounts = tuple(
        _account(a, f"{where}.accounts[{i}]", profile.release, people)
        for i, a in enumerate(_list(spec.get("accounts", []), f"{where}.accounts"))
    )
    _unique([a.name for a in (*profile.system_accounts, *accounts)], f"{where}.accounts", "name")
    return Host(name, _address(spec["address"], f"{where}.address"), profile, password_ssh, accounts)


def _person(index: int, spec: Any) -> Person:
    where = f"people[{index}]"
    spec = _keys(spec, where, _PERSON_KEYS, ("name", "uid", "team", "addresses"))
    name = _text(spec["name"], f"{where}.name")
    where = f"person {name!r}"
    team = spec["team"]
    if team not in _TEAMS:
        _fail(f"{where}.team", f"expected one of {', '.join(_TEAMS)}, got {_show(team)}")
    hours = spec.get("hours", [9, 18])
    if not (
        isinstance(hours, list | tuple)
        and len(hours) == 2
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 24 for h in hours)
        and hours[0] < hours[1]
    ):
        _fail(
            f"{where}.hours",
            f"expected [start, end], two hours from 0 to 24, start first, got {_show(hours)}",
        )
    addresses = tuple(
        _address(a, f"{where}.addresses[{i}]")
        for i, a in enumerate(_list(spec["addresses"], f"{where}.addresses"))
    )
    if not addresses:
        _fail(f"{where}.addresses", "expected at least one address")
    return Person(
        name=name,
        uid=_uid(spec["uid"], f"{where}.uid"),
        team=team,
        timezone=_text(spec.get("timezone", "UTC"), f"{where}.timezone"),
        hours=(hours[0], hours[1]),
        workstation=_text(spec.get("workstation", f"ws-{name}"), f"{where}.workstation"),
        addresses=addresses,
    )


def _attackers(spec: Any) -> Attackers:
    if spec is None:
        ref = reference()["attackers"]
        return Attackers(tuple(ref["networks"]), tuple(ref["names"]))
    spec = _keys(spec, "attackers", frozenset({"networks", "names"}), ("networks", "names"))
    networks = _texts(spec["networks"], "attackers.networks")
    for i, net in enumerate(networks):
        try:
            ipaddress.ip_network(net, strict=True)
        except ValueError as e:
            _fail(f"attackers.networks[{i}]", f"{net!r} is not a CIDR network ({e})")
    names = _texts(spec["names"], "attackers.names")
    if not networks or not names:
        _fail("attackers", "expected at least one network and one name")
    return Attackers(networks, names)
