"""Attack scenarios with ground truth: named sequences of events that a detection rule should catch.

Each scenario has typed parameters (checked like any request: a bad one is a 400 naming it) and makes
its events through EventFactory.complete, so the templates fill whatever the scenario does not fix.
Every event carries ``details.scenario_id``. Running a scenario also says what should be detected::

    {"rule": "brute_force",
     "description": "5 or more user_login FAILURE for one user_id on one server_hostname within 30 s",
     "keys": {"user_id": "alice", "server_hostname": "web-01.prod.example.com"},
     "window": {"start": "2026-11-27T17:46:04.123456Z", "end": "2026-11-27T17:46:31.001122Z"},
     "event_ids": ["…", …]}

``keys`` are the fields the rule groups by, ``window`` runs from the first to the last event's timestamp
and ``event_ids`` lists every event of the scenario, in order.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from auditgen.events import SOURCE_API, Catalog, EventFactory, Network
from auditgen.validation import MAX_SERVER_HOSTNAME_CHARS, BadRequest

Pools = Mapping[str, tuple[Any, ...]]
Params = Mapping[str, Any]

# The four files the platform's analysis service watches (its sensitive_file_tamper rule).
SENSITIVE_FILES = ("/etc/sudoers", "/root/.ssh/authorized_keys", "/etc/shadow", "/etc/passwd")
# Where account_takeover logs in from by default: TEST-NET-1, in none of the usual client networks.
UNUSUAL_NETWORK = "192.0.2.0/24"
BUSINESS_HOURS = (8, 18)  # UTC, [start, end): off_hours_admin happens outside them
OFF_HOURS = tuple(h for h in range(24) if not BUSINESS_HOURS[0] <= h < BUSINESS_HOURS[1])
_HOUR_SECONDS = 3540.0  # off_hours_admin's events all fall within the first 59 minutes of its hour
_SHOWN_VALUE_CHARS = 40
# A string parameter: something besides white space, and no control characters (ASCII or C1).
_TEXT_PATTERN = "^(?=.*\\S)[^\\x00-\\x1f\\x7f-\\x9f]+$"
_TEXT = re.compile(_TEXT_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnknownScenario(LookupError):
    """No scenario has that name; the message lists the known ones."""


@dataclass(frozen=True)
class Param:
    """One parameter: its JSON type, default (None: drawn at random per run), allowed values, meaning."""

    name: str
    kind: str  # "integer", "number", "string" or "boolean"
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    draw: Callable[[random.Random, Pools], Any] | None = None  # the value when default is None
    check: Callable[[Any, Pools], str | None] | None = None  # a further rule; returns what is wrong
    # The same further rule as JSON Schema, for the OpenAPI document (given the catalog's pools).
    check_schema: Callable[[Pools], dict[str, Any]] | None = None

    def describe(self) -> dict[str, Any]:
        """What GET /scenarios shows of this parameter."""
        shown: dict[str, Any] = {"name": self.name, "type": self.kind, "default": self.default}
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                shown[key] = getattr(self, key)
        if self.choices:
            shown["choices"] = list(self.choices)
        shown["description"] = self.description
        return shown

    def schema(self, pools: Pools) -> dict[str, Any]:
        """This parameter as JSON Schema: exactly what parse() accepts, so schema-valid means accepted."""
        schema: dict[str, Any] = {"type": self.kind, "description": self.description}
        if self.kind == "string":
            schema.update(minLength=1, maxLength=MAX_SERVER_HOSTNAME_CHARS, pattern=_TEXT_PATTERN)
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                schema[key] = getattr(self, key)
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.default is not None:
            schema["default"] = self.default
        if self.check_schema is not None:
            schema.update(self.check_schema(pools))
        return schema

    def parse(self, value: Any, pools: Pools) -> Any:
        """The caller's value, checked; BadRequest says what was expected."""
        expected = {
            "integer": "a whole number",
            "number": "a number",
            "string": f"a non-empty string of at most {MAX_SERVER_HOSTNAME_CHARS} characters, without "
            "control characters",
            "boolean": "true or false",
        }[self.kind]
        if not _is_kind(value, self.kind):
            raise BadRequest(f"{self.name} must be {expected}, not {_show(value)}")
        if self.kind == "number":
            value = float(value)
        elif self.kind == "integer":
            value = int(value)
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise BadRequest(f"{self.name} must be from {_num(low)} to {_num(high)}, not {_show(value)}")
        if self.choices and value not in self.choices:
            raise BadRequest(
                f"{self.name} must be one of {_show(list(self.choices), 200)}, not {_show(value)}"
            )
        problem = self.check(value, pools) if self.check is not None else None
        if problem:
            raise BadRequest(f"{self.name} {problem}, not {_show(value)}")
        return value


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # JSON true is no number
    if kind == "integer":  # 5.0 is an integer in JSON Schema's sense, and so here
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and abs(value) != float("inf")
    return (
        isinstance(value, str)
        and len(value) <= MAX_SERVER_HOSTNAME_CHARS
        and _TEXT.fullmatch(value) is not None
        and _SURROGATE.search(value) is None  # a lone surrogate cannot be encoded as UTF-8
    )


def _show(value: Any, limit: int = _SHOWN_VALUE_CHARS) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _num(value: float | None) -> str:
    return "any" if value is None else f"{value:g}"


@dataclass(frozen=True)
class Step:
    """One event of a scenario: seconds after the scenario's start, and the fields it is made from."""

    at: float
    fields: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """A named scenario: its parameters, the events it makes and the detection they should trip."""

    name: str
    description: str
    params: tuple[Param, ...]
    steps: Callable[[random.Random, Pools, Params], list[Step]]
    keys: Callable[[Params], dict[str, str]]
    rule: Callable[[Params], str]  # the detection, in words
    # The latest start at or before the given time that suits the scenario (off_hours_admin: a night).
    start: Callable[[datetime, Params], datetime] = lambda latest, params: latest

    def describe(self) -> dict[str, Any]:
        """What GET /scenarios shows of this scenario."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [p.describe() for p in self.params],
        }


@dataclass
class Plan:
    """One run of a scenario, before its events exist: resolved parameters and the steps."""

    scenario: Scenario
    scenario_id: str
    parameters: dict[str, Any]
    steps: list[Step]

    @property
    def duration(self) -> float:
        return self.steps[-1].at

    def event(self, factory: StampedFactory, index: int, at: datetime, source: str) -> dict[str, Any]:
        """The index-th event, stamped `at`, with details.scenario_id (and, as every event whose details
        name a resource, that resource at the top level too, where the platform's rules read it)."""
        fields = dict(self.steps[index].fields)
        fields["details"] = {**fields.get("details", {}), "scenario_id": self.scenario_id}
        return factory.complete(fields, at, source)

    def finish(self, events: list[dict[str, Any]], origin: str) -> Run:
        """The run, with the detection its events should trip."""
        stamps = [e["timestamp"] for e in events]
        expected = {
            "rule": self.scenario.name,
            "description": self.scenario.rule(self.parameters),
            "keys": self.scenario.keys(self.parameters),
            "window": {"start": min(stamps), "end": max(stamps)},
            "event_ids": [e["event_id"] for e in events],
        }
        return Run(self.scenario.name, self.scenario_id, origin, self.parameters, events, expected)


@dataclass
class Run:
    """A scenario's events and the detection they should trip; origin is "api" or "generator"."""

    scenario: str
    scenario_id: str
    origin: str
    parameters: dict[str, Any]
    events: list[dict[str, Any]]
    expected: dict[str, Any] = field(repr=False)


class StampedFactory:
    """An EventFactory whose next event's timestamp is the caller's choice."""

    def __init__(self, catalog: Catalog, rng: random.Random) -> None:
        self.rng = rng
        self.pools = catalog.pools
        self._at = datetime.fromtimestamp(0, UTC)
        self._factory = EventFactory(catalog, rng, now=lambda: self._at)

    def complete(self, fields: Mapping[str, Any], at: datetime, source: str) -> dict[str, Any]:
        self._at = at
        return self._factory.complete(fields, source)


def plan(scenario: Scenario, given: Mapping[str, Any], rng: random.Random, pools: Pools) -> Plan:
    """Check the caller's parameters, draw the random defaults and the steps; BadRequest on a bad one."""
    known = {p.name: p for p in scenario.params}
    for name in given:
        if name not in known:
            listed = ", ".join(known) or "none"
            raise BadRequest(f"{scenario.name}: unknown parameter {_show(name)} (known: {listed})")
    values: dict[str, Any] = {}
    for p in scenario.params:
        if p.name in given:
            try:
                values[p.name] = p.parse(given[p.name], pools)
            except BadRequest as e:
                raise BadRequest(f"{scenario.name}: {e}") from None
        elif p.default is None and p.draw is not None:
            values[p.name] = p.draw(rng, pools)
        else:
            values[p.name] = p.default
    scenario_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return Plan(scenario, scenario_id, values, scenario.steps(rng, pools, values))


class Reporter(Protocol):
    """Who is told of every run whose events were accepted: groundtruth.GroundTruth."""

    @property
    def full(self) -> bool:
        """No room to report one more run."""

    def report(self, run: Run) -> None: ...


class ScenarioRunner:
    """Runs scenarios on request: all events at once, stamped within a window that ends now."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random,
        reporter: Reporter | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        scenarios: Sequence[Scenario] | None = None,
    ) -> None:
        self._reporter = reporter
        self._factory = StampedFactory(catalog, rng)
        self._now = now
        self._scenarios = {s.name: s for s in (SCENARIOS if scenarios is None else scenarios)}

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self._scenarios.values()]

    def parameter_schemas(self) -> dict[str, dict[str, Any]]:
        """Each scenario's parameters as a JSON Schema object, for the OpenAPI document."""
        pools = self._factory.pools
        return {
            name: {
                "type": "object",
                "additionalProperties": False,
                "properties": {p.name: p.schema(pools) for p in scenario.params},
            }
            for name, scenario in self._scenarios.items()
        }

    @property
    def full(self) -> bool:
        """The reporter has no room: run nothing whose ground truth would have to wait."""
        return self._reporter is not None and self._reporter.full

    def report(self, run: Run) -> None:
        """The run's events were accepted."""
        if self._reporter is not None:
            self._reporter.report(run)

    def run(self, name: str, given: Mapping[str, Any]) -> Run:
        """The events of one run (not yet accepted anywhere) and their expected detection."""
        scenario = self._scenarios.get(name)
        if scenario is None:
            raise UnknownScenario(f"no scenario {_show(name)}; known: {', '.join(self._scenarios)}")
        p = plan(scenario, given, self._factory.rng, self._factory.pools)
        start = scenario.start(self._now() - timedelta(seconds=p.duration), p.parameters)
        events = [
            p.event(self._factory, i, start + timedelta(seconds=step.at), SOURCE_API)
            for i, step in enumerate(p.steps)
        ]
        return p.finish(events, "api")


# -- Drawing values -------------------------------------------------------------------------------------


def _pool(*names: str) -> Callable[[random.Random, Pools], Any]:
    """A value of the first of these pools the catalog has (custom catalogs need only hosts, users)."""

    def draw(rng: random.Random, pools: Pools) -> Any:
        for name in names:
            if pools.get(name):
                return rng.choice(pools[name])
        return rng.choice(pools["users"])

    return draw


def _address(rng: random.Random, cidr: str) -> str:
    """A host address in the network, drawn as the templates' ip spec draws one."""
    return Network.parse(cidr, cidr).draw(rng)


def _client_address(rng: random.Random, pools: Pools) -> str:
    networks = pools.get("client_networks") or ("198.51.100.0/24",)
    return _address(rng, rng.choice(networks))


def _spread(rng: random.Random, count: int, seconds: float) -> list[float]:
    """count offsets from 0, irregular but never closer than half the even gap, the last <= seconds."""
    if count == 1:
        return [0.0]
    gap = seconds / (count - 1)
    offsets = [0.0]
    for _ in range(count - 1):
        offsets.append(offsets[-1] + gap * rng.uniform(0.5, 1.0))
    return offsets


def _unusual_address(value: str, pools: Pools) -> str | None:
    """An address outside every usual client network, so that the login is unusual."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "must be an IPv4 or IPv6 address"
    for cidr in pools.get("client_networks", ()):
        if address in ipaddress.ip_network(cidr):
            return f"must be outside the usual client networks ({cidr} holds it)"
    return None


def _unusual_address_schema(pools: Pools) -> dict[str, Any]:
    """An IP address outside the client networks; a network whose prefix is not whole octets cannot be
    written as a pattern and is left out (such an address gets a 400 the document does not predict)."""
    prefixes = []
    for cidr in pools.get("client_networks", ()):
        net = ipaddress.ip_network(cidr)
        if net.version == 4 and net.prefixlen % 8 == 0:
            octets = str(net.network_address).split(".")[: net.prefixlen // 8]
            prefixes.append("".join(re.escape(octet + ".") for octet in octets))
    ipv4: dict[str, Any] = {"format": "ipv4"}
    if prefixes:
        ipv4["not"] = {"pattern": f"^({'|'.join(prefixes)})"}
    return {"anyOf": [ipv4, {"format": "ipv6"}]}


def _not_root(value: str, pools: Pools) -> str | None:
    return (
        "must be a user other than root (the scenario is a user becoming root)" if value == "root" else None
    )


def _login(user: str, host: str, ip: str, result: str) -> dict[str, Any]:
    details: dict[str, Any] = {"ip_address": ip, "protocol": "ssh"}
    if result == "FAILURE":
        details["reason"] = "invalid_password"
    return {
        "event_type": "user_login",
        "action_result": result,
        "user_id": user,
        "server_hostname": host,
        "details": details,
    }


def _sudo(user: str, host: str, command: str) -> dict[str, Any]:
    return {
        "event_type": "sudo_command",
        "action_result": "SUCCESS",
        "user_id": user,
        "server_hostname": host,
        "details": {"command": command, "run_as": "root"},
    }


def _file_modified(user: str, host: str, path: str) -> dict[str, Any]:
    return {
        "event_type": "file_modified",
        "action_result": "MODIFIED",
        "severity": "CRITICAL",
        "user_id": user,
        "server_hostname": host,
        "details": {"resource": path},
    }


# -- The scenarios --------------------------------------------------------------------------------------


def _drawn(name: str, meaning: str, *pools: str) -> Param:
    """A string parameter whose default is drawn per run from the first of these pools the catalog has."""
    description = f"{meaning}; default: drawn from the catalog's {pools[0]}."
    return Param(name, "string", None, description, draw=_pool(*pools))


_USER = _drawn("user", "The user", "users")
_HOST = _drawn("host", "The server_hostname", "hosts")


def _window(default: float, minimum: float, maximum: float, what: str) -> Param:
    return Param("window_seconds", "number", default, what, minimum=minimum, maximum=maximum)


def _brute_force(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    ip = _client_address(rng, pools)
    offsets = _spread(rng, p["attempts"], p["window_seconds"])
    steps = [Step(at, _login(p["user"], p["host"], ip, "FAILURE")) for at in offsets]
    if p["success"]:
        steps.append(Step(offsets[-1] + rng.uniform(1.0, 5.0), _login(p["user"], p["host"], ip, "SUCCESS")))
    return steps


BRUTE_FORCE = Scenario(
    name="brute_force",
    description="Failed password logins for one user on one host from one address, a few seconds apart, "
    "optionally followed by a successful login.",
    params=(
        _USER,
        _HOST,
        Param("attempts", "integer", 5, "Failed logins.", minimum=3, maximum=1000),
        _window(30.0, 1.0, 3600.0, "Seconds from the first failed login to the last."),
        Param("success", "boolean", False, "Whether a successful login follows the failures."),
    ),
    steps=_brute_force,
    keys=lambda p: {"user_id": p["user"], "server_hostname": p["host"]},
    rule=lambda p: (
        f"{p['attempts']} or more user_login FAILURE for one user_id on one server_hostname "
        f"within {p['window_seconds']:g} s" + (", then a user_login SUCCESS" if p["success"] else "")
    ),
)


def _privilege_escalation(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    user, host, window = p["user"], p["host"], p["window_seconds"]
    return [
        Step(0.0, _login(user, host, _client_address(rng, pools), "SUCCESS")),
        Step(window * rng.uniform(0.2, 0.5), _sudo(user, host, rng.choice(("sudo -i", "sudo su -")))),
        Step(window, _file_modified(user, host, p["target"])),
    ]


PRIVILEGE_ESCALATION = Scenario(
    name="privilege_escalation",
    description="A user logs in, becomes root with sudo, and changes who may be root: /etc/sudoers or "
    "root's authorized SSH keys.",
    params=(
        replace(
            _drawn("user", "The user (not root)", "sudoers", "people"),
            check=_not_root,
            check_schema=lambda pools: {"not": {"const": "root"}},
        ),
        _HOST,
        Param("target", "string", "/etc/sudoers", "The file changed.", choices=SENSITIVE_FILES[:2]),
        _window(120.0, 3.0, 3600.0, "Seconds from the login to the change."),
    ),
    steps=_privilege_escalation,
    keys=lambda p: {"user_id": p["user"], "server_hostname": p["host"], "resource": p["target"]},
    rule=lambda p: (
        "user_login SUCCESS, then sudo_command SUCCESS, then file_modified MODIFIED of "
        f"{p['target']} by one user_id on one server_hostname within {p['window_seconds']:g} s"
    ),
)


def _sensitive_file_tamper(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    offsets = _spread(rng, p["changes"], p["window_seconds"])
    return [Step(at, _file_modified(p["user"], p["host"], p["path"])) for at in offsets]


SENSITIVE_FILE_TAMPER = Scenario(
    name="sensitive_file_tamper",
    description="A file that decides who may log in or be root is modified: /etc/sudoers, "
    "/root/.ssh/authorized_keys, /etc/shadow or /etc/passwd.",
    params=(
        Param(
            "path",
            "string",
            None,
            "The file; default: one of the four, at random.",
            choices=SENSITIVE_FILES,
            draw=lambda rng, pools: rng.choice(SENSITIVE_FILES),
        ),
        _drawn("user", "Who changes it", "admins"),
        _HOST,
        Param("changes", "integer", 1, "Modifications of the file.", minimum=1, maximum=100),
        _window(60.0, 1.0, 3600.0, "Seconds from the first modification to the last."),
    ),
    steps=_sensitive_file_tamper,
    keys=lambda p: {"server_hostname": p["host"], "resource": p["path"]},
    rule=lambda p: f"file_modified MODIFIED whose top-level resource is {p['path']}",
)


def _service_flapping(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    offsets = _spread(rng, 2 * p["cycles"], p["window_seconds"])
    return [
        Step(
            at,
            {
                "event_type": "service_status_change",
                "action_result": "STARTED" if i % 2 else "STOPPED",
                "server_hostname": p["host"],
                "details": {"resource": p["service"]},
            },
        )
        for i, at in enumerate(offsets)
    ]


SERVICE_FLAPPING = Scenario(
    name="service_flapping",
    description="A service on one host stops and starts again, over and over.",
    params=(
        _drawn("service", "The service", "services"),
        _HOST,
        Param("cycles", "integer", 3, "Stop-then-start cycles.", minimum=2, maximum=100),
        _window(300.0, 1.0, 86400.0, "Seconds from the first stop to the last start."),
    ),
    steps=_service_flapping,
    keys=lambda p: {"server_hostname": p["host"], "resource": p["service"]},
    rule=lambda p: (
        f"{p['cycles']} or more service_status_change STOPPED, each followed by STARTED, for one "
        f"resource on one server_hostname within {p['window_seconds']:g} s"
    ),
)


def _account_takeover(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    account, host = p["account"], p["host"]
    created = {
        "event_type": "user_account_management",
        "action_result": "CREATED",
        "user_id": p["admin"],
        "server_hostname": host,
        "details": {"resource": account, "home_directory": f"/home/{account}"},
    }
    return [Step(0.0, created), Step(p["delay_seconds"], _login(account, host, p["source_ip"], "SUCCESS"))]


ACCOUNT_TAKEOVER = Scenario(
    name="account_takeover",
    description="An admin creates an account, and soon after it logs in from an address outside the usual "
    "client networks.",
    params=(
        _drawn("account", "The new account", "new_accounts"),
        _drawn("admin", "Who creates it", "admins"),
        _HOST,
        Param(
            "source_ip",
            "string",
            None,
            f"Where the account logs in from, outside the client networks; default: in {UNUSUAL_NETWORK}.",
            draw=lambda rng, pools: _address(rng, UNUSUAL_NETWORK),
            check=_unusual_address,
            check_schema=_unusual_address_schema,
        ),
        Param(
            "delay_seconds",
            "number",
            600.0,
            "Seconds from the creation to the login.",
            minimum=1.0,
            maximum=86400.0,
        ),
    ),
    steps=_account_takeover,
    keys=lambda p: {"user_id": p["account"], "server_hostname": p["host"], "source_ip": p["source_ip"]},
    rule=lambda p: (
        "user_account_management CREATED of an account (details.resource), then its user_login "
        f"SUCCESS from an address outside the usual client networks within {p['delay_seconds']:g} s"
    ),
)


def _off_hours_admin(rng: random.Random, pools: Pools, p: Params) -> list[Step]:
    user, host = p["user"], p["host"]
    commands = pools.get("sudo_commands") or ("systemctl restart sshd",)
    lead = rng.uniform(0.0, _HOUR_SECONDS - p["window_seconds"])  # some minutes past the hour
    offsets = [lead + at for at in _spread(rng, p["commands"] + 1, p["window_seconds"])]
    steps = [Step(offsets[0], _login(user, host, _client_address(rng, pools), "SUCCESS"))]
    return steps + [Step(at, _sudo(user, host, rng.choice(commands))) for at in offsets[1:]]


def _night(latest: datetime, p: Params) -> datetime:
    """The latest time at or before `latest` on the hour p["hour"] (UTC)."""
    start = latest.astimezone(UTC).replace(hour=p["hour"], minute=0, second=0, microsecond=0)
    return start if start <= latest else start - timedelta(days=1)


OFF_HOURS_ADMIN = Scenario(
    name="off_hours_admin",
    description="An admin logs in at night and runs commands as root. Its events are stamped at the last "
    "such hour (UTC), so they may lie up to a day in the past.",
    params=(
        _drawn("user", "The admin", "sudoers"),
        _HOST,
        Param(
            "hour",
            "integer",
            2,
            f"Hour of the day (UTC) it starts, outside business hours {BUSINESS_HOURS[0]:02}:00-"
            f"{BUSINESS_HOURS[1]:02}:00.",
            choices=OFF_HOURS,
        ),
        Param("commands", "integer", 3, "sudo commands after the login.", minimum=1, maximum=100),
        _window(600.0, 1.0, _HOUR_SECONDS, "Seconds from the login to the last command (within the hour)."),
    ),
    steps=_off_hours_admin,
    keys=lambda p: {"user_id": p["user"], "server_hostname": p["host"]},
    rule=lambda p: (
        f"sudo_command SUCCESS by one user_id on one server_hostname outside "
        f"{BUSINESS_HOURS[0]:02}:00-{BUSINESS_HOURS[1]:02}:00 UTC"
    ),
    start=_night,
)

SCENARIOS: tuple[Scenario, ...] = (
    BRUTE_FORCE,
    PRIVILEGE_ESCALATION,
    SENSITIVE_FILE_TAMPER,
    SERVICE_FLAPPING,
    ACCOUNT_TAKEOVER,
    OFF_HOURS_ADMIN,
)
