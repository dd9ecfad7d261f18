"""A scenario run's drawn parameters taken from the world, jointly: a host, and on it the accounts, the
service and the address the scenario's pools stand for, chosen so that every event of the run can happen
there as written.

Without a world, `{pool: hosts}`, `{pool: admins}`, ... draw from the catalog's template pools, each on
its own: a brute force against a host the world lacks, by an admin who is no admin there. With one, the
pools the world stands in for (ROLES, while the catalog's pool is still the built-in one: a user's own
pool is theirs) are drawn together with the run's host:

- ``hosts``: the run's host (every such draw of a run gets the same one);
- ``users``, ``people``: an account of a person on it; ``admins``, ``sudoers``: an admin there (may sudo,
  not root); ``non_sudoers``: a developer there; ``new_accounts``: a name it does not have;
- ``services``: a service it runs;
- ``{address: client_networks}``: where the run's first account connects from (their workstation or
  the VPN); an address from a network the file names (an outside one) is drawn as without a world.

The host is one where the run's events, as the steps write them with these values, contradict nothing
(a password failure over SSH only where SSH takes passwords, sudo only by a sudoer, the files and
services the events name on it, ...): a few hosts are tried at random, then the others in turn, and the
best one is taken. What the caller gives is kept as given: a host outside the world makes the other draws
as without a world; a given account or service steers the choice of host towards one that has it.
Accounts the run creates are recorded in the ledger, so that nothing else creates them again.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from auditgen.events import Catalog
from auditgen.events.grounding import ROLE_ACCOUNTS, Grounding
from auditgen.scenarios.engine import Context, Pools, Scenario, drawer, parameters
from auditgen.world.model import Host

ROLES: Mapping[str, str] = {
    "hosts": "host",
    "users": "login",
    "people": "login",
    "admins": "admin",
    "sudoers": "admin",
    "non_sudoers": "developer",
    "new_accounts": "new_account",
    "services": "service",
}
ADDRESS_ROLES: Mapping[str, str] = {"client_networks": "source"}
ACCOUNT_ROLES = frozenset(ROLE_ACCOUNTS)  # "login", "admin", "developer"
TRIES = 24  # hosts drawn at random before the others are tried in turn
SCAN = 2000  # hosts tried in turn at most (a large world has many that fit)
_PASSWORD_REASONS = frozenset({"invalid_password", "expired_password"})
_MISS = 1000  # a role the host cannot fill weighs more than any contradiction


@dataclass(frozen=True)
class _Slot:
    """A parameter or value the world draws: its name, role and the values it may not take."""

    name: str
    role: str
    exclude: tuple[Any, ...] = ()
    choices: tuple[Any, ...] = ()
    spec: Mapping[str, Any] | None = None

    def allows(self, value: Any) -> bool:
        return value not in self.exclude and (not self.choices or value in self.choices)


class _Known(NamedTuple):
    accounts: frozenset[str]
    services: frozenset[str]
    files: frozenset[str]


class WorldDraws:
    """Draws scenario parameters from a grounding's world, with its ledger (the stream's accounts)."""

    def __init__(self, grounding: Grounding, pools: Pools) -> None:
        self.grounding = grounding
        self._pools = pools
        builtin = Catalog.builtin().pools
        names = (*ROLES, *ADDRESS_ROLES)
        self._standing = frozenset(n for n in names if n in pools and pools[n] == builtin.get(n))
        self._everywhere: _Known | None = None

    def role(self, spec: Mapping[str, Any] | None) -> str | None:
        """The world's role for a draw: that of the pool the catalog would draw from, if it stands in."""
        if spec is None:
            return None
        if "pool" in spec:
            names = (spec["pool"],) if isinstance(spec["pool"], str) else tuple(spec["pool"])
            name = next((n for n in names if self._pools.get(n)), "users")
            return ROLES.get(name) if name in self._standing else None
        where = spec.get("address")
        if isinstance(where, str) and where in self._standing:
            return ADDRESS_ROLES.get(where)
        return None

    def parameters(
        self, scenario: Scenario, given: Mapping[str, Any], rng: random.Random, pools: Pools
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's parameters (the caller's checked, the rest drawn) and its values."""
        slots: list[_Slot] = []
        for p in scenario.params:
            role = self.role(p.draw)
            if role is not None and p.name not in given:
                slots.append(_Slot(p.name, role, p.exclude, p.check.choices, p.draw))
        params = parameters(scenario, given, rng, pools, skip={s.name for s in slots})
        values: dict[str, Any] = {}
        for name, spec in scenario.values:
            role = self.role(spec)
            if role is None:
                values[name] = drawn_value(spec, rng, pools)
            else:
                slots.append(_Slot(name, role, spec=spec))
        if slots:
            host_name = next(
                (params[p.name] for p in scenario.params if p.name in given and self.role(p.draw) == "host"),
                None,
            )
            drawn = self._draw(scenario, slots, {**params, **values}, host_name, rng, pools)
            params = {p.name: drawn.get(p.name, params.get(p.name)) for p in scenario.params}
            values = {name: drawn.get(name, values.get(name)) for name, _ in scenario.values}
        self._record(probe(scenario, {**params, **values}))
        return params, values

    # -- choosing the host ----------------------------------------------------------------------------

    def _draw(
        self,
        scenario: Scenario,
        slots: Sequence[_Slot],
        fixed: Mapping[str, Any],
        host_name: str | None,
        rng: random.Random,
        pools: Pools,
    ) -> dict[str, Any]:
        """The slots' values: on the first host where the run contradicts nothing, else the best tried."""
        if host_name is not None and self.grounding.world.host(host_name) is None:
            # A host outside the world: as given, and the rest drawn as without a world.
            return {s.name: drawn_value(s.spec, rng, pools) for s in slots}
        accounts = [
            name
            for name, spec in (*((p.name, p.draw) for p in scenario.params), *scenario.values)
            if self.role(spec) in ACCOUNT_ROLES
        ]
        best: tuple[int, dict[str, Any]] | None = None
        for host in self._candidates(fixed, accounts, host_name, rng):
            drawn, misses = self._on(host, slots, fixed, accounts, rng, pools)
            score = misses * _MISS + self._contradictions(scenario, host, {**fixed, **drawn})
            if best is None or score < best[0]:
                best = (score, drawn)
            if score == 0:
                break
        assert best is not None
        return best[1]

    def _candidates(
        self, fixed: Mapping[str, Any], accounts: Sequence[str], host_name: str | None, rng: random.Random
    ) -> Iterator[Host]:
        """The given host (tried with other draws on it); or hosts at random (one where a given account
        has an account, if it has one in the world), then every host in turn from a random one."""
        world, grounding = self.grounding.world, self.grounding
        if host_name is not None:
            host = world.host(host_name)
            assert host is not None
            for _ in range(TRIES):
                yield host
            return
        hosts = world.hosts
        given = [fixed[name] for name in accounts if isinstance(fixed.get(name), str)]
        for _ in range(TRIES):
            found = next((h for h in (grounding.host_for(n, rng) for n in given) if h is not None), None)
            yield found if found is not None else _one(rng, hosts)
        start = int(rng.random() * len(hosts))
        for i in range(min(len(hosts), SCAN)):
            yield hosts[(start + i) % len(hosts)]

    def _on(
        self,
        host: Host,
        slots: Sequence[_Slot],
        fixed: Mapping[str, Any],
        accounts: Sequence[str],
        rng: random.Random,
        pools: Pools,
    ) -> tuple[dict[str, Any], int]:
        """Each slot drawn on the host, and how many roles it could not fill (drawn as without a world).
        An address is where the run's first account connects from."""
        drawn: dict[str, Any] = {}
        misses = 0
        for slot in slots:
            if slot.role != "source":
                value = self._fill(host, slot, drawn.values(), rng)
                if value is None:
                    misses += 1
                    value = drawn_value(slot.spec, rng, pools)
                drawn[slot.name] = value
        run = {**fixed, **drawn}
        person = next((run[n] for n in accounts if isinstance(run.get(n), str)), None)
        for slot in slots:
            if slot.role == "source" and person is not None:
                drawn[slot.name] = self.grounding.source(person, rng)
            elif slot.role == "source":
                drawn[slot.name] = drawn_value(slot.spec, rng, pools)
        return drawn, misses

    def _fill(self, host: Host, slot: _Slot, taken: Collection[Any], rng: random.Random) -> Any:
        """The slot's value on the host, or None if the host has none for it."""
        if slot.role == "host":
            return host.name if slot.allows(host.name) else None
        if slot.role == "new_account":
            return self._new_name(host, slot, taken, rng)
        candidates: Sequence[Any]
        if slot.role == "service":
            candidates = [s for s in host.profile.services if slot.allows(s)]
        else:
            candidates = [a.name for a in ROLE_ACCOUNTS[slot.role](host) if slot.allows(a.name)]
        return _one(rng, candidates) if candidates else None

    def _new_name(self, host: Host, slot: _Slot, taken: Collection[Any], rng: random.Random) -> str | None:
        """A name the host does not have (nor the run already): from the catalog's new accounts, else one
        of them with a number (None: none found)."""
        return self.grounding.new_account_name(host, rng, lambda n: n not in taken and slot.allows(n))

    # -- the run's events on a host ------------------------------------------------------------------

    def _contradictions(self, scenario: Scenario, host: Host, run: Mapping[str, Any]) -> int:
        """How many of the run's events, as its steps write them with these values, could not happen on
        the host: a name created that exists, a password failure over SSH where it takes none, a known
        user's failure for a name it lacks (or unknown_user for one it has), an account it lacks, sudo
        by an account not allowed to (or refused to one allowed), a service or file it lacks. An account,
        service or file that no host of the world has counts nowhere: the scenario's own, as given."""
        grounding, known = self.grounding, self._known()
        events = probe(scenario, run)
        born = {n for result, h, n in _changes(events) if result == "CREATED" and h == host.name}
        bad = 0
        for e in events:
            if e.get("server_hostname") != host.name:
                continue
            kind, result, user = e["event_type"], e.get("action_result"), e.get("user_id")
            details = e.get("details")
            d: Mapping[str, Any] = details if isinstance(details, Mapping) else {}
            resource = d.get("resource", e.get("resource"))
            if (kind, result) == _CREATED and isinstance(resource, str):
                bad += grounding.account(host, resource) is not None
            if isinstance(user, str):
                account = grounding.account(host, user)
                exists = account is not None or user in born
                if kind == "user_login" and result == "FAILURE":
                    reason = d.get("reason")
                    if reason == "unknown_user":
                        bad += exists
                    elif reason is not None:
                        bad += not exists and user in known.accounts
                        remote = d.get("protocol", "ssh") != "console"
                        bad += reason in _PASSWORD_REASONS and remote and not host.password_ssh
                elif not exists:
                    bad += user in known.accounts
                elif account is not None:
                    if kind == "sudo_command" and result is not None:
                        bad += account.sudo != (result == "SUCCESS")
                    if kind == "user_login" and result == "SUCCESS":
                        bad += not account.can_log_in
            if isinstance(resource, str):
                if kind == "service_status_change":
                    bad += resource not in host.profile.services and resource in known.services
                elif kind in ("file_modified", "permission_change"):
                    bad += resource not in host.profile.files and resource in known.files
        return bad

    def _known(self) -> _Known:
        """The accounts, services and files some host of the world has (found once)."""
        if self._everywhere is None:
            profiles = {id(h.profile): h.profile for h in self.grounding.world.hosts}.values()
            accounts = {a.name for h in self.grounding.world.hosts for a in h.accounts}
            self._everywhere = _Known(
                frozenset(accounts | {a.name for p in profiles for a in p.system_accounts}),
                frozenset(s for p in profiles for s in p.services),
                frozenset(f for p in profiles for f in p.files),
            )
        return self._everywhere

    def _record(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Accounts the run creates on hosts of the world, and does not delete, are in the ledger from
        now: nothing else creates them again (a plain deletion may delete them later)."""
        world, grounding = self.grounding.world, self.grounding
        created: dict[tuple[str, str], None] = {}
        for result, host_name, name in _changes(events):
            host = world.host(host_name)
            if host is None:
                continue
            if result == "CREATED" and grounding.account(host, name) is None:
                created[host_name, name] = None
            elif result == "DELETED":
                created.pop((host_name, name), None)
        for host_name, name in created:
            host = world.host(host_name)
            assert host is not None
            grounding.create_plain(host, name)


_CREATED = ("user_account_management", "CREATED")


def _changes(events: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Any, str, str]]:
    """(action_result, host, account) of the run's account changes, in order."""
    for e in events:
        host = e.get("server_hostname")
        if e["event_type"] != "user_account_management" or not isinstance(host, str):
            continue
        details = e.get("details")
        resource = details.get("resource") if isinstance(details, Mapping) else None
        resource = e.get("resource") if resource is None else resource
        if isinstance(resource, str):
            yield e.get("action_result"), host, resource


def probe(scenario: Scenario, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields of the run's events as its steps write them (one per step, or per `each` item),
    before the catalog fills the rest; references to earlier steps' events are still null."""
    ctx = Context(dict(run))
    out: list[dict[str, Any]] = []
    for step in scenario.steps:
        if step.when is not None and not step.when(ctx):
            continue
        items = len(step.repeat.each) if step.repeat is not None and step.repeat.each else 1
        out += [step.fields(ctx, i) for i in range(items)]
    return out


def drawn_value(spec: Mapping[str, Any] | None, rng: random.Random, pools: Pools) -> Any:
    """A value drawn as without a world."""
    return drawer(spec or {"pool": "users"})(rng, pools)


def _one(rng: random.Random, values: Sequence[Any]) -> Any:
    return values[int(rng.random() * len(values))]
