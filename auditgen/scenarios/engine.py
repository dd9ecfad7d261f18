"""The scenario engine: a scenario (read from a file by files.py) planned into one run's events.

A run is planned all at once: parameters checked or drawn, the run's id, each step's offsets, then its
events, completed by the template catalog as for the API. Delivery only stamps them: all within a window
that ends now (instant), or each when it is handed over (paced, and the generator's mix). Every event
carries ``details.scenario_id``; the run's ``expected`` says what a detection rule should make of it::

    {"outcome": "alert", "rule": "brute_force",
     "description": "5 or more user_login FAILURE for one user_id on one server_hostname within 30 s",
     "keys": {"user_id": "alice", "server_hostname": "web-01.prod.example.com"},
     "window": {"start": "2026-11-27T17:46:04.123456Z", "end": "2026-11-27T17:46:31.001122Z"},
     "event_ids": ["…", …]}

``outcome`` is "quiet" for a near miss, whose ``description`` says why a correct rule stays quiet.
"""

from __future__ import annotations

import ipaddress
import random
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from auditgen.checks import Check, CheckError, show
from auditgen.events import Catalog, EventFactory, Network
from auditgen.events.grounding import Grounding
from auditgen.events.templates import random_uuid

Pools = Mapping[str, tuple[Any, ...]]
DELIVERIES = ("instant", "paced")
OUTCOMES = ("alert", "quiet")
HOUR_SECONDS = 3540.0  # a run placed in an hour lies within its first 59 minutes
FALLBACK_NETWORK = "198.51.100.0/24"  # TEST-NET-2: addresses drawn from a pool the catalog lacks


class UnknownScenario(LookupError):
    """No scenario has that name; the message lists the known ones."""


# -- Values: what a file's strings refer to ---------------------------------------------------------------


@dataclass
class Context:
    """What references resolve against: the run's values, and the first event of each step made so far."""

    values: dict[str, Any]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lookup(self, ref: str) -> Any:
        if "." not in ref:
            return self.values[ref]
        step, *path = ref.split(".")
        value: Any = self.events.get(step)  # None: that step made no event in this run
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value


Expr = Callable[[Context], Any]
Draw = Callable[[random.Random, Pools], Any]


def text(value: Any) -> str:
    """How a value reads inside a string: 30.0 as 30, true as true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _const(value: Any) -> Expr:
    return lambda ctx: value


def _draw_from_pools(names: tuple[str, ...]) -> Draw:
    """A value of the first of these pools the catalog has (a user's catalog need only have hosts, users)."""

    def draw(rng: random.Random, pools: Pools) -> Any:
        for name in names:
            if pools.get(name):
                return rng.choice(pools[name])
        return rng.choice(pools["users"])

    return draw


def _draw_address(where: str) -> Draw:
    """An address in a network, or in one of a pool's networks (none: TEST-NET-2)."""
    try:
        ipaddress.ip_network(where)
    except ValueError:

        def in_pool(rng: random.Random, pools: Pools) -> str:
            cidr = rng.choice(pools.get(where) or (FALLBACK_NETWORK,))
            return Network.parse(cidr, where).draw(rng)

        return in_pool
    network = Network.parse(where, where)
    return lambda rng, pools: network.draw(rng)


def drawer(spec: Mapping[str, Any], choices: tuple[Any, ...] = ()) -> Draw:
    """A draw as files.py checked it: {pool: name or [names]}, {address: cidr or pool}, {choice: [...]},
    or {choice: choices} (one of the parameter's own choices)."""
    if "pool" in spec:
        names = spec["pool"]
        return _draw_from_pools((names,) if isinstance(names, str) else tuple(names))
    if "address" in spec:
        return _draw_address(spec["address"])
    options = choices if spec["choice"] == "choices" else tuple(spec["choice"])
    return lambda rng, pools: rng.choice(options)


# -- Parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter: its check, default (None: drawn per run), and the further rules a value obeys."""

    name: str
    check: Check
    description: str
    default: Any = None
    draw: Mapping[str, Any] | None = None
    exclude: tuple[Any, ...] = ()  # values refused, with the reason
    exclude_reason: str = ""
    address: bool = False  # an IPv4 or IPv6 address
    outside: str | None = None  # a pool of networks that the address must lie outside

    def describe(self) -> dict[str, Any]:
        """What GET /scenarios shows of this parameter."""
        shown: dict[str, Any] = {"name": self.name, "type": self.check.kind, "default": self.default}
        if self.check.minimum is not None:
            shown["minimum"] = self.check.minimum
        if self.check.maximum is not None:
            shown["maximum"] = self.check.maximum
        if self.check.choices:
            shown["choices"] = list(self.check.choices)
        shown["description"] = self.description
        return shown

    def value(self, rng: random.Random, pools: Pools) -> Any:
        """The default, or one drawn."""
        if self.draw is None:
            return self.default
        return drawer(self.draw, self.check.choices)(rng, pools)

    def parse(self, value: Any, pools: Pools) -> Any:
        """The caller's value, checked; CheckError names the parameter and what was expected."""
        value = self.check(value, self.name)
        if value in self.exclude:
            others = ", ".join(text(v) for v in self.exclude)
            reason = f" ({self.exclude_reason})" if self.exclude_reason else ""
            raise CheckError(
                self.name, f"must be a {self.name} other than {others}{reason}, not {show(value)}"
            )
        if self.address:
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise CheckError(self.name, f"must be an IPv4 or IPv6 address, not {show(value)}") from None
            for cidr in pools.get(self.outside or "", ()) if self.outside else ():
                if address in ipaddress.ip_network(cidr):
                    words = self.outside.replace("_", " ") if self.outside else ""
                    raise CheckError(
                        self.name, f"must be outside the usual {words} ({cidr} holds it), not {show(value)}"
                    )
        return value

    def schema(self, pools: Pools) -> dict[str, Any]:
        """This parameter as JSON Schema: what parse() accepts, so schema-valid means accepted."""
        schema = {**self.check.schema(), "description": self.description}
        if self.default is not None:
            schema["default"] = self.default
        if self.exclude:
            schema["not"] = {"enum": list(self.exclude)}
        if self.address:
            schema.update(_address_schema(pools.get(self.outside, ()) if self.outside else ()))
        return schema


def _address_schema(networks: tuple[Any, ...]) -> dict[str, Any]:
    """An IP address outside the networks; a network whose prefix is not whole octets cannot be written
    as a pattern and is left out (such an address gets a 400 the document does not predict)."""
    prefixes = []
    for cidr in networks:
        net = ipaddress.ip_network(cidr)
        if net.version == 4 and net.prefixlen % 8 == 0:
            octets = str(net.network_address).split(".")[: net.prefixlen // 8]
            prefixes.append("".join(re.escape(octet + ".") for octet in octets))
    ipv4: dict[str, Any] = {"format": "ipv4"}
    if prefixes:
        ipv4["not"] = {"pattern": f"^({'|'.join(prefixes)})"}
    return {"anyOf": [ipv4, {"format": "ipv6"}]}


# -- Steps -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeat:
    """A step made `count` times: spread `over` seconds (the last at most that long after the first), or
    `every` so many seconds. With `each`, every repetition is one event per item, the item's fields over
    the step's (a stop then a start)."""

    count: Expr
    over: Expr | None = None
    every: Expr | None = None
    spacing: str = "random"  # "random" or "even"
    first_gap: bool = False  # the first event one gap after the step's offset, not at it
    each: tuple[Expr, ...] = ()

    def offsets(self, rng: random.Random, ctx: Context) -> list[float]:
        total = int(self.count(ctx)) * max(1, len(self.each)) + self.first_gap
        even = self.spacing == "even"
        if self.every is not None:
            gap = float(self.every(ctx))
            offsets = [0.0]
            for _ in range(total - 1):
                offsets.append(offsets[-1] + (gap if even else gap * rng.uniform(1.0, 1.5)))
        else:
            assert self.over is not None
            offsets = _spread(rng, total, float(self.over(ctx)), even)
        return offsets[self.first_gap :]


@dataclass(frozen=True)
class Step:
    """One event of a scenario (or several, repeated) at an offset from the run's start, or from the last
    event of an earlier step (`after`)."""

    name: str
    event: Expr  # the fields, with references substituted
    at: Expr  # seconds; a number
    between: tuple[Expr, Expr] | None = None  # at is then drawn from [low, high), times `at`
    after: str | None = None
    repeat: Repeat | None = None
    when: Expr | None = None

    def offsets(self, rng: random.Random, ctx: Context, anchor: float) -> list[float]:
        if self.when is not None and not self.when(ctx):
            return []
        at = float(self.at(ctx))
        if self.between is not None:
            at *= rng.uniform(float(self.between[0](ctx)), float(self.between[1](ctx)))
        start = anchor + at
        if self.repeat is None:
            return [start]
        return [start + offset for offset in self.repeat.offsets(rng, ctx)]

    def fields(self, ctx: Context, occurrence: int) -> dict[str, Any]:
        """The fields of the step's n-th event: the step's, with its `each` item's over them."""
        fields: dict[str, Any] = self.event(ctx)
        each = self.repeat.each if self.repeat is not None else ()
        if each:
            item = each[occurrence % len(each)](ctx)
            details = {**fields.get("details", {}), **item.pop("details", {})}
            fields.update(item)
            if details:
                fields["details"] = details
        return fields


def _spread(rng: random.Random, count: int, seconds: float, even: bool) -> list[float]:
    """count offsets from 0, the last at most `seconds`: evenly, or irregular but never closer than half
    the even gap."""
    if count <= 1:
        return [0.0] * count
    gap = seconds / (count - 1)
    if even:
        return [gap * i for i in range(count)]
    offsets = [0.0]
    for _ in range(count - 1):
        offsets.append(offsets[-1] + gap * rng.uniform(0.5, 1.0))
    return offsets


# -- Scenarios and their runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A named scenario: parameters, values drawn per run, steps, and what a detection should make of it."""

    name: str
    description: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    expect: str  # "alert" or "quiet"
    summary: Expr  # alert: the rule in words; quiet: why a correct rule stays quiet
    keys: tuple[tuple[str, Expr], ...]
    delivery: str = "instant"
    values: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # name -> how it is drawn (see drawer)
    hour: Expr | None = None  # the run lies in the last such UTC hour (off_hours_admin: a night)
    origin: str = ""  # the file it was read from

    @classmethod
    def stored(cls, expectation: Mapping[str, Any]) -> Scenario:
        """A stand-in for a run restored after a restart: it says exactly what the run's plan said, even
        if the scenario's file changed or is gone meanwhile."""
        description = expectation["description"]
        keys = tuple((k, _const(v)) for k, v in expectation["keys"].items())
        return cls(expectation["rule"], "", (), (), expectation["outcome"], _const(description), keys)

    def describe(self) -> dict[str, Any]:
        """What GET /scenarios shows of this scenario."""
        return {
            "name": self.name,
            "description": self.description,
            "expect": self.expect,
            "delivery": self.delivery,
            "parameters": [p.describe() for p in self.params],
        }

    def parameter_schema(self, pools: Pools) -> dict[str, Any]:
        """The body of POST /scenarios/{name} as JSON Schema: the parameters and `delivery`."""
        properties = {p.name: p.schema(pools) for p in self.params}
        properties["delivery"] = {
            "type": "string",
            "enum": list(DELIVERIES),
            "default": self.delivery,
            "description": "instant: every event at once, stamped within a window that ends now; paced: "
            "each event handed over at its offset from the run's start, stamped then.",
        }
        return {"type": "object", "additionalProperties": False, "properties": properties}


@dataclass
class Plan:
    """One run of a scenario: its parameters, its events in order (not yet stamped) and their offsets."""

    scenario: Scenario
    scenario_id: str
    parameters: dict[str, Any]
    offsets: list[float]
    events: list[dict[str, Any]]
    lead: float = 0.0  # seconds into the hour, for a scenario placed in an hour

    @property
    def duration(self) -> float:
        return self.offsets[-1] - self.offsets[0]

    def start(self, latest: datetime) -> datetime:
        """When the run's first event lies, for a run whose first event could lie at `latest`: there, or
        for a scenario placed in an hour, the latest such hour (plus the run's lead) at or before it."""
        if self.scenario.hour is None:
            return latest
        hour = int(self.scenario.hour(Context(self.parameters)))
        start = latest.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
        start += timedelta(seconds=self.lead)
        return start if start <= latest else start - timedelta(days=1)

    def stamp_all(self, end: datetime) -> list[dict[str, Any]]:
        """Stamp every event at its offset, the run placed so that it ends at `end` at the latest."""
        start = self.start(end - timedelta(seconds=self.duration))
        for event, offset in zip(self.events, self.offsets, strict=True):
            stamp(event, start + timedelta(seconds=offset - self.offsets[0]))
        return self.events

    def expectation(self) -> dict[str, Any]:
        """What a detection should make of the run: the outcome, the rule and its grouping keys."""
        ctx = Context(self.parameters)
        return {
            "outcome": self.scenario.expect,
            "rule": self.scenario.name,
            "description": self.scenario.summary(ctx),
            "keys": {name: expr(ctx) for name, expr in self.scenario.keys},
        }

    def finish(self, origin: str) -> Run:
        """The run, once every event is stamped, with what a detection should make of it."""
        stamps = [e["timestamp"] for e in self.events]
        expected = {
            **self.expectation(),
            "window": {"start": min(stamps), "end": max(stamps)},
            "event_ids": [e["event_id"] for e in self.events],
        }
        return Run(self.scenario.name, self.scenario_id, origin, self.parameters, self.events, expected)


def stamp(event: dict[str, Any], at: datetime) -> None:
    """Set the event's timestamp, as EventFactory writes one (UTC, microseconds, Z)."""
    naive = at.astimezone(UTC).replace(tzinfo=None)
    event["timestamp"] = naive.isoformat(timespec="microseconds") + "Z"


@dataclass
class Run:
    """A scenario's events and what a detection should make of them; origin is "api" or "generator"."""

    scenario: str
    scenario_id: str
    origin: str
    parameters: dict[str, Any]
    events: list[dict[str, Any]]
    expected: dict[str, Any] = field(repr=False)


class StampedFactory:
    """An EventFactory for scenario events: the catalog fills what a step leaves out. With a grounding
    (the world of the stream the runs join, and its ledger), the runs' drawn parameters come from the
    world (auditgen.scenarios.world) and their events are fitted to it."""

    def __init__(self, catalog: Catalog, rng: random.Random, grounding: Grounding | None = None) -> None:
        from auditgen.scenarios.world import WorldDraws  # it builds on this module

        self.rng = rng
        self.pools = catalog.pools
        self.world = None if grounding is None else WorldDraws(grounding, catalog.pools)
        self._factory = EventFactory(
            catalog, rng, now=lambda: datetime.fromtimestamp(0, UTC), grounding=grounding
        )

    def complete(
        self, fields: Mapping[str, Any], source: str, session: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._factory.complete(fields, source, session)


def parameters(
    scenario: Scenario,
    given: Mapping[str, Any],
    rng: random.Random,
    pools: Pools,
    skip: Collection[str] = (),
) -> dict[str, Any]:
    """The caller's parameters checked, the others at their defaults or drawn (but those in `skip`, which
    the world draws); CheckError on a bad one."""
    known = {p.name: p for p in scenario.params}
    for name in given:
        if name not in known:
            listed = ", ".join(known) or "none"
            raise CheckError(f"{scenario.name}:", f"unknown parameter {show(name)} (known: {listed})")
    values: dict[str, Any] = {}
    for p in scenario.params:
        if p.name in skip and p.name not in given:
            continue
        try:
            values[p.name] = p.parse(given[p.name], pools) if p.name in given else p.value(rng, pools)
        except CheckError as e:
            raise CheckError(f"{scenario.name}: {e.path}", e.problem) from None
    return values


class _Sessions:
    """A run's audit sessions in a world: a successful login opens one for its user on its host, and that
    user's later steps there are in it (auditd's ses, login uid, terminal, sshd's pid), until a logout."""

    _KEPT = ("ses", "auid", "pid", "protocol")

    def __init__(self) -> None:
        self._open: dict[tuple[Any, Any], tuple[float, dict[str, Any]]] = {}

    def enter(self, fields: dict[str, Any], offset: float, rng: random.Random) -> dict[str, Any] | None:
        """The session a step's event is in (its user's on its host, opened before it; None: none), with
        the session's id and address set in the step's details, as every event of a session says them; a
        successful login gets the id of the session it opens."""
        details = fields["details"]
        opened = self._open.get((fields.get("user_id"), fields.get("server_hostname")))
        if opened is None or opened[0] > offset or fields.get("event_type") == "user_login":
            if fields.get("event_type") == "user_login" and fields.get("action_result") == "SUCCESS":
                details["session_id"] = random_uuid(rng)
            return None
        session = opened[1]
        details["session_id"] = session["session_id"]
        if "source_ip" in session:
            details.setdefault("ip_address", session["source_ip"])
        return session

    def follow(self, event: Mapping[str, Any], offset: float) -> None:
        key = (event["user_id"], event["server_hostname"])
        details = event["details"]
        if event["event_type"] == "user_logout":
            self._open.pop(key, None)
        elif event["event_type"] == "user_login" and event["action_result"] == "SUCCESS" and "ses" in details:
            session = {k: details[k] for k in self._KEPT if details.get(k) is not None}
            session["session_id"] = details.get("session_id")
            session["terminal"] = str(details.get("terminal", "")).removeprefix("/dev/")
            if details.get("ip_address"):
                session["source_ip"] = details["ip_address"]
            self._open[key] = (offset, session)


def plan(scenario: Scenario, given: Mapping[str, Any], factory: StampedFactory, source: str) -> Plan:
    """A run: parameters, id, offsets and the events (in time order), made with the factory's rng."""
    rng, pools = factory.rng, factory.pools
    if factory.world is None:
        params = parameters(scenario, given, rng, pools)
        scenario_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ctx = Context({**params, **{name: drawer(spec)(rng, pools) for name, spec in scenario.values}})
    else:
        params, drawn = factory.world.parameters(scenario, given, rng, pools)
        scenario_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ctx = Context({**params, **drawn})
    last: dict[str, float] = {}
    timed: list[tuple[float, Step, int]] = []
    for step in scenario.steps:
        anchor = last[step.after] if step.after is not None and step.after in last else 0.0
        offsets = step.offsets(rng, ctx, anchor)
        if offsets:
            last[step.name] = offsets[-1]
        timed += [(offset, step, n) for n, offset in enumerate(offsets)]
    if not timed:
        raise CheckError(f"{scenario.name}:", "these parameters make a run without events")
    made: list[tuple[float, dict[str, Any]]] = []
    sessions = _Sessions() if factory.world is not None else None
    for offset, step, n in timed:  # in the file's order, so a step refers only to events made before it
        fields = step.fields(ctx, n)
        fields["details"] = {**fields.get("details", {}), "scenario_id": scenario_id}
        session = None if sessions is None else sessions.enter(fields, offset, rng)
        event = factory.complete(fields, source, session)
        if sessions is not None:
            sessions.follow(event, offset)
        ctx.events.setdefault(step.name, event)
        made.append((offset, event))
    made.sort(key=lambda m: m[0])  # stable: at one offset, the file's order
    lead = 0.0
    if scenario.hour is not None and made:
        lead = rng.uniform(0.0, max(0.0, HOUR_SECONDS - (made[-1][0] - made[0][0])))
    return Plan(scenario, scenario_id, params, [m[0] for m in made], [m[1] for m in made], lead)
