"""The world events are drawn from: built from a seed, read from and printed to a file, served at /world;
and 100,000 generated events read by a checker written apart from the generator, finding no contradiction."""

from __future__ import annotations

import copy
import functools
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python import usage

from auditgen import app
from auditgen.config import ConfigError, load_settings
from auditgen.events import SOURCE_API, Catalog, EventFactory, builtin_data
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from auditgen.scenario_mix import ScenarioMix
from auditgen.sessions import SessionMix
from auditgen.tap import Options
from auditgen.web import AuditAPI
from auditgen.world import World, build
from auditgen.world.__main__ import main as print_world
from auditgen.world.files import WorldError, from_data, load, to_data
from tests.support.consistency import UNSET, Checker
from tests.support.web import FakeHealth

SCHEMA = json.loads(
    resources.files("auditgen.world").joinpath("world.schema.json").read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
AUDIT_KEYS = {"pid", "uid", "auid", "ses", "exe", "terminal", "res"}


def ticking(step: timedelta = timedelta(milliseconds=50)) -> Callable[[], datetime]:
    """A clock that moves on by step at every reading, so sessions last a while."""
    now = [START]

    def read() -> datetime:
        now[0] += step
        return now[0]

    return read


def stream(world: World, seed: str, count: int, scenario_rate: float = 0.0) -> Iterator[dict[str, Any]]:
    """The generator's stream as the service builds it: sessions (share 0.3, 20 at once) and scenarios."""
    catalog = Catalog.builtin()
    now = ticking()
    factory = EventFactory(catalog, random.Random(f"{seed}/generator"), now, world=world)
    make: Callable[[], Mapping[str, Any]] = SessionMix(factory, random.Random(f"{seed}/sessions"), 0.3, 20)
    if scenario_rate:
        make = ScenarioMix(
            make,
            catalog,
            random.Random(f"{seed}/mix"),
            scenario_rate,
            lambda run: None,
            now,
            grounding=factory.grounding,  # the generator's world and ledger, as app.parts gives it
        )
    for _ in range(count):
        yield dict(make())


# --- the world -------------------------------------------------------------------------------------


def test_the_same_seed_and_sizes_build_the_same_world() -> None:
    """Seed and sizes decide the world: the same ones give the same data, another seed another world."""
    assert to_data(build("a", 30, 12)) == to_data(build("a", 30, 12))
    assert to_data(build("a", 30, 12)) != to_data(build("b", 30, 12))
    world = build("a", 30, 12)
    assert (len(world.hosts), len(world.people)) == (30, 12)
    assert len({h.name for h in world.hosts}) == len({h.address for h in world.hosts}) == 30


def test_hosts_have_a_role_a_release_and_software_and_accounts_that_fit_them() -> None:
    """Every role is present; packages are at their release's version; admins are in the release's admin
    group and may sudo, developers may not; a person has the same uid on every host; bastions take
    passwords over SSH."""
    world = build("roles", 200, 30)
    assert {h.role for h in world.hosts} == {
        "web", "database", "cache", "bastion", "mail", "build", "kubernetes",
    }  # fmt: skip
    uids: dict[str, set[int]] = {}
    for host in world.hosts:
        release = host.profile.release
        assert host.profile.packages and host.profile.services
        for package, version in host.profile.packages.items():
            assert release.versions[package] == version
        assert host.account("root") is not None and host.account("root") in host.sudoers
        for account in host.accounts:
            uids.setdefault(account.name, set()).add(account.uid)
            assert (release.admin_group in account.groups) == account.sudo
            if account.kind == "developer":
                assert not account.sudo and account not in host.sudoers
        assert host.password_ssh or host.role != "bastion"
        assert {"nginx": "web", "postgresql": "database"}.get(
            host.profile.services[-1], host.role
        ) == host.role
    assert all(len(u) == 1 for u in uids.values()), "one uid per account name"
    assert {h.profile.release.name for h in world.hosts} == {
        "ubuntu-24.04",
        "ubuntu-22.04",
        "debian-12",
        "rhel-9",
    }


def test_sizes_out_of_range_are_refused() -> None:
    """No empty world and none beyond the documented maximum; the settings say the same."""
    for hosts, people in ((0, 1), (1, 0), (100_001, 1), (1, 10_001)):
        with pytest.raises(ValueError, match="expected a whole number"):
            build("x", hosts, people)
    for env in ({"AUDITGEN_WORLD_HOSTS": "0"}, {"AUDITGEN_WORLD_PEOPLE": "10001"}):
        with pytest.raises(ConfigError, match="AUDITGEN_WORLD_"):
            load_settings({}, env, {})
    s = load_settings({}, {"AUDITGEN_WORLD_HOSTS": "100000", "AUDITGEN_WORLD_PEOPLE": "3"}, {})
    assert (s.world.hosts, s.world.people, s.world.file) == (100_000, 3, None)


def test_the_world_is_on_unless_turned_off() -> None:
    """Every event comes from the world unless AUDITGEN_WORLD=false; it takes only true or false, and a
    world file with the world off is refused rather than silently unused."""
    assert load_settings({}, {}, {}).world.enabled is True
    assert load_settings({}, {"AUDITGEN_WORLD": "false"}, {}).world.enabled is False
    with pytest.raises(ConfigError, match=r"invalid AUDITGEN_WORLD .*'maybe': expected true or false"):
        load_settings({}, {"AUDITGEN_WORLD": "maybe"}, {})
    with pytest.raises(ConfigError, match=r"AUDITGEN_WORLD_FILE .* is set but the world is off"):
        load_settings({}, {"AUDITGEN_WORLD_FILE": "w.yaml", "AUDITGEN_WORLD": "false"}, {})


@pytest.mark.parametrize("on", [True, False])
def test_the_service_draws_from_a_world_only_when_it_is_on(on: bool) -> None:
    """app.parts gives the generator and the API a world built from AUDITGEN_SEED and the sizes when
    AUDITGEN_WORLD is true, and none otherwise: then events carry no auditd fields, as before the world."""
    env = {"AUDITGEN_SEED": "parts", "AUDITGEN_WORLD_HOSTS": "7", "AUDITGEN_WORLD_PEOPLE": "4"}
    if not on:
        env["AUDITGEN_WORLD"] = "false"
    parts = app.parts(load_settings({}, env, {}), Catalog.builtin(), Clock())
    grounding = parts.factory.grounding
    if not on:
        assert grounding is None
        event = parts.factory.complete({"event_type": "user_login"})
        assert AUDIT_KEYS.isdisjoint(event["details"])
        return
    assert grounding is not None and to_data(grounding.world) == to_data(build("parts", 7, 4))
    event = parts.factory.complete({"event_type": "user_login"})
    assert set(event["details"]) >= AUDIT_KEYS
    assert grounding.world.host(event["server_hostname"]) is not None


def test_named_instances_share_one_world() -> None:
    """The world comes from AUDITGEN_SEED itself, not an instance's stream seed: instances of one seed
    simulate one estate (their events differ, their hosts and accounts do not)."""
    worlds = []
    for name in ("auditgen-0", "auditgen-1"):
        env = {"AUDITGEN_SEED": "fleet", "AUDITGEN_WORLD": "true", "AUDITGEN_INSTANCE": name}
        grounding = app.parts(load_settings({}, env, {}), Catalog.builtin(), Clock()).factory.grounding
        assert grounding is not None
        worlds.append(to_data(grounding.world))
    assert worlds[0] == worlds[1]


def test_a_large_world_spreads_events_over_its_hosts() -> None:
    """20,000 hosts: plain events land on thousands of them, each event consistent with its host."""
    world = build("large", 20_000, 200)
    factory = EventFactory(Catalog.builtin(), random.Random(3), world=world)
    events = [factory.generate() for _ in range(5000)]
    assert len({e["server_hostname"] for e in events}) > 3000
    checker = Checker(to_data(world))
    checker.read(events)
    assert checker.problems == []


# --- the file format -------------------------------------------------------------------------------


def test_a_printed_world_loads_back_the_same_from_json_and_yaml(tmp_path: Path) -> None:
    """python -m auditgen.world prints the world; that file, JSON or YAML, loads back to the same world
    (hosts of one role and release still share one profile), and the schema accepts it."""
    for name, flags in (("w.json", []), ("w.yaml", ["--yaml"])):
        out = io.StringIO()
        with redirect_stdout(out):
            assert print_world(["--seed", "p", "--hosts", "40", "--people", "9", *flags]) == 0
        path = tmp_path / name
        path.write_text(out.getvalue())
        loaded = load(str(path))
        assert to_data(loaded) == to_data(build("p", 40, 9))
        assert len({id(h.profile) for h in loaded.hosts}) == len(to_data(loaded)["profiles"])
        VALIDATOR.validate(yaml.safe_load(out.getvalue()))


def test_a_small_hand_written_world_loads_with_defaults_from_the_builtin_data() -> None:
    """A host names a built-in "role/release" profile; people's accounts are given by name, a service
    account in full; releases' versions and the role's packages and services fill the rest."""
    data = {
        "hosts": [
            {
                "name": "app1",
                "address": "192.168.10.5",
                "profile": "web/rhel-9",
                "accounts": ["ann", "ben", {"name": "etl", "uid": 1700, "kind": "service"}],
            }
        ],
        "people": [
            {"name": "ann", "uid": 1000, "team": "ops", "addresses": ["192.168.20.7"]},
            {"name": "ben", "uid": 1001, "team": "dev", "addresses": ["192.168.20.8"]},
        ],
    }
    VALIDATOR.validate(data)
    host = from_data(data).hosts[0]
    assert [a.name for a in host.sudoers] == ["root", "ann"]
    assert "wheel" in host.sudoers[1].groups and host.developers[0].name == "ben"
    assert host.profile.packages["nginx"] == "1:1.20.1-16.el9_4.1" and "nginx" in host.profile.services
    factory = EventFactory(Catalog.builtin(), random.Random(1), world=from_data(data))
    for _ in range(300):
        event = factory.generate()
        assert event["server_hostname"] == "app1"
        assert (
            event["user_id"] in {"root", "ann", "ben", "etl"}
            or event["details"].get("reason") == "unknown_user"
        )


def base_world() -> dict[str, Any]:
    return {
        "hosts": [{"name": "h1", "address": "10.0.0.1", "profile": "web/debian-12", "accounts": ["ann"]}],
        "people": [{"name": "ann", "uid": 1000, "team": "ops", "addresses": ["10.1.0.1"]}],
    }


def changed(path: str, value: Any) -> Callable[[], Any]:
    """The base world with the value at a dotted path (list indexes as numbers) set, or removed if ..."""

    def make() -> Any:
        data = base_world()
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = data
        for p in parents:
            target = target[p]
        if value is ...:
            del target[last]
        else:
            target[last] = value
        return data

    return make


BAD_WORLDS = [
    ("an unknown top-level key", changed("hostz", []), "world: unknown key 'hostz'"),
    ("no hosts", changed("hosts", []), "hosts: expected at least one host"),
    ("a host without address", changed("hosts.0.address", ...), "hosts[0]: address: missing required key"),
    ("a bad address", changed("hosts.0.address", "10.0.0.300"), "host 'h1'.address: expected an IP address"),
    ("a bad team", changed("people.0.team", "sales"), "person 'ann'.team: expected one of ops, dev"),
    ("a bad uid", changed("people.0.uid", -1), "person 'ann'.uid: expected a uid"),
    ("no address", changed("people.0.addresses", []), "person 'ann'.addresses: expected at least one"),
    (
        "an account kind",
        changed("hosts.0.accounts", [{"name": "x", "uid": 5, "kind": "robot"}]),
        "host 'h1'.accounts[0]: kind: expected one of system, admin, developer, service",
    ),
    (
        "a bad release",
        changed("releases", {"os-1": {"manager": "pkg", "admin_group": "w", "versions": {}}}),
        "manager",
    ),
]


@pytest.mark.parametrize(("what", "make", "message"), BAD_WORLDS, ids=[w for w, _, _ in BAD_WORLDS])
def test_a_bad_world_file_is_refused_naming_the_entry_and_field_by_loader_and_schema(
    tmp_path: Path, what: str, make: Callable[[], Any], message: str
) -> None:
    """Loader and schema agree on these mistakes; the loader's message names the file, entry and field."""
    data = make()
    assert not VALIDATOR.is_valid(data), what
    path = tmp_path / "world.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WorldError) as raised:
        load(str(path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value), str(raised.value)
    assert VALIDATOR.is_valid(base_world())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (changed("hosts.0.profile", "web/plan9"), "host 'h1'.profile: unknown profile 'web/plan9'"),
        (changed("hosts.0.accounts", ["zed"]), "'zed' is neither a person nor a built-in service account"),
    ],
)
def test_names_the_schema_cannot_know_are_refused_by_the_loader(
    make: Callable[[], Any], message: str
) -> None:
    """A profile or a person named but not defined: only the loader can tell, and it says which."""
    with pytest.raises(WorldError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        from_data(make())


def test_a_bad_world_file_stops_start_up_with_a_usage_error(tmp_path: Path) -> None:
    """AUDITGEN_WORLD_FILE is read with the options: a mistake is a usage error naming the file."""
    path = tmp_path / "world.yaml"
    path.write_text("hosts: [}\n")
    with pytest.raises(usage.UsageError, match=rf"world: {path}: line 1, column 9: YAML syntax error"):
        Options().parseOptions(["--world=true", f"--world-file={path}"])
    path.write_text(yaml.safe_dump(base_world()))
    options = Options()
    options.parseOptions(["--world=true", f"--world-file={path}"])
    assert options.world is not None and options.world.hosts[0].name == "h1"
    parts = app.parts(options.settings, options.catalog, Clock(), options.scenarios, options.world)
    assert parts.factory.grounding is not None and parts.factory.grounding.world is options.world


# --- events drawn from the world -------------------------------------------------------------------


def test_100000_generated_events_with_sessions_and_scenarios_contradict_nothing() -> None:
    """The checker (tests/support/consistency.py, written apart from the generator) reads 100,000 events
    of a seeded stream with sessions and scenarios mixed in: it checks every kind the issue names, many
    times each, and finds no contradiction."""
    world = build("consistency", 40, 16)
    checker = Checker(to_data(world))
    checker.read(stream(world, "consistency", 100_000, scenario_rate=2.0))
    assert checker.problems == [], f"{len(checker.problems)} contradictions, e.g. {checker.problems[:5]}"
    for kind in (
        "console logins", "ssh logins", "failed logins", "sudo", "services", "packages", "accounts created",
        "accounts deleted", "commands with effects", "effects followed", "session events", "auditd fields",
        "scenario events",
    ):  # fmt: skip
        assert checker.checked[kind] >= 100, (kind, checker.checked)


def good_events() -> tuple[World, list[dict[str, Any]]]:
    world = build("bad", 12, 10)
    return world, list(stream(world, "bad", 4000))


def first(events: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return copy.deepcopy(next(e for e in events if test(e)))


def test_the_checker_reports_each_kind_of_contradiction() -> None:
    """Each contradiction the issue found in the old stream, planted in a consistent one, is reported:
    the checker can fail."""
    world, events = good_events()
    data = to_data(world)
    checker = Checker(data)
    checker.read(events)
    assert checker.problems == []

    def login(e: dict[str, Any], protocol: str) -> bool:
        return bool(e["event_type"] == "user_login" and e["details"].get("protocol") == protocol)

    console = first(events, lambda e: login(e, "console"))
    console["details"]["ip_address"] = "10.99.12.240"
    unknown = first(events, lambda e: e["details"].get("reason") == "unknown_user")
    unknown["user_id"] = next(h for h in world.hosts if h.name == unknown["server_hostname"]).accounts[0].name
    in_session = first(events, lambda e: e["event_type"] == "sudo_command" and "session_id" in e["details"])
    in_session["details"]["tty"] = in_session["details"]["terminal"] = "tty1"
    package = first(events, lambda e: e["event_type"] == "package_install")
    package["details"]["version"] = "15.6-0ubuntu0.23.10.1"
    restart = first(events, lambda e: e["details"].get("command", "").startswith("systemctl restart"))
    plain_restart = {**restart, "details": {**restart["details"], "ses": 999_999}}
    del plain_restart["details"]["session_id"]
    created = first(events, lambda e: e["action_result"] == "CREATED")
    created["details"]["resource"] = "root"
    bare = first(events, lambda e: e["event_type"] == "file_modified")
    for key in AUDIT_KEYS:
        bare["details"].pop(key)
    refused = first(events, lambda e: e["event_type"] == "sudo_command" and e["action_result"] == "SUCCESS")
    host = next(h for h in world.hosts if h.name == refused["server_hostname"])
    refused["user_id"] = "nobody" if not host.developers else host.developers[0].name
    refused["details"].pop("session_id", None)
    expected = {
        "console login from a remote address": [console],
        "unknown_user for an account that exists": [unknown],
        "a session changing terminal": [in_session],
        "a version the release does not ship": [package],
        "a command whose effect no event can follow": [plain_restart],
        "a new account that already exists": [created],
        "auditd fields missing": [bare],
        "sudo by an account not allowed to": [refused],
    }
    for kind, planted in expected.items():
        checker = Checker(data)
        checker.read(
            events[: events.index(next(e for e in events if e["event_id"] == planted[0]["event_id"]))]
        )
        checker.read(planted)
        assert any(p.startswith(kind) for p in checker.problems), (kind, checker.problems)


def test_a_restart_followed_by_another_service_and_a_useradd_never_followed_are_reported() -> None:
    """The issue's "systemctl restart nginx, then cron STOPPED/STARTED" and "useradd -m frank never
    followed by an account being created": the checker reports both at the session's end."""
    world, events = good_events()
    restart = next(e for e in events if e["details"].get("command", "").startswith("systemctl restart"))
    sid = restart["details"]["session_id"]
    session = [copy.deepcopy(e) for e in events if e["details"].get("session_id") == sid]
    for e in session:
        if e["event_type"] == "service_status_change":
            e["details"]["resource"] = "cron-other"
    checker = Checker(to_data(world))
    checker.read(session)
    assert any(p.startswith("a command followed by another effect") for p in checker.problems), (
        checker.problems
    )
    useradd = next(e for e in events if e["details"].get("command", "").startswith("useradd"))
    sid = useradd["details"]["session_id"]
    session = [
        e
        for e in events
        if e["details"].get("session_id") == sid and e["event_type"] != "user_account_management"
    ]
    checker = Checker(to_data(world))
    checker.read(session)
    assert any(p.startswith("a command's effect that never followed") for p in checker.problems), (
        checker.problems
    )


def test_events_carry_auditd_fields_consistent_across_a_session() -> None:
    """Every event has pid, uid, auid, ses, exe, terminal and res; a session's events share ses, auid and
    terminal from its login on; logins have addr and hostname; service changes are systemd's."""
    _, events = good_events()
    sessions: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        assert set(e["details"]) >= AUDIT_KEYS, e
        if "session_id" in e["details"]:
            sessions.setdefault(e["details"]["session_id"], []).append(e)
        if e["event_type"] == "user_login":
            assert {"addr", "hostname"} <= set(e["details"])
        if e["event_type"] == "service_status_change":
            assert (e["details"]["pid"], e["details"]["exe"]) == (1, "/usr/lib/systemd/systemd")
    checked = 0
    for session in sessions.values():
        logged_in = [
            i
            for i, e in enumerate(session)
            if e["event_type"] == "user_login" and e["action_result"] == "SUCCESS"
        ]
        if not logged_in:
            assert all(e["details"]["ses"] == UNSET for e in session)
            continue
        after = [e for e in session[logged_in[0] :] if e["event_type"] != "service_status_change"]
        assert len({e["details"]["ses"] for e in after}) == 1
        assert len({e["details"]["auid"] for e in after}) == 1
        assert len({e["details"]["terminal"].removeprefix("/dev/") for e in after}) == 1
        checked += 1
    assert checked > 50


def test_the_same_seed_makes_the_same_events_with_a_world() -> None:
    """Seeds stay reproducible: the same world and seeds give the same stream, ids included."""
    world = build("r", 20, 8)
    assert list(stream(world, "r", 3000)) == list(stream(build("r", 20, 8), "r", 3000))
    assert list(stream(world, "r", 300)) != list(stream(world, "s", 300))


def test_hosts_and_users_named_outside_the_world_are_accepted_as_given(tmp_path: Path) -> None:
    """A caller's host or user outside the world, and a user's own hosts pool, are kept as given; they get
    auditd's fields all the same."""
    factory = EventFactory(Catalog.builtin(), random.Random(1), world=build("g"))
    event = factory.complete(
        {"event_type": "sudo_command", "server_hostname": "far.example.org", "user_id": "zoe"}
    )
    assert (event["server_hostname"], event["user_id"], event["source_service"]) == (
        "far.example.org",
        "zoe",
        SOURCE_API,
    )
    assert set(event["details"]) >= AUDIT_KEYS
    own = builtin_data()
    own["pools"]["hosts"] = ["mine-1", "mine-2"]
    own_factory = EventFactory(Catalog.from_data(own), random.Random(1), world=build("g"))
    assert {own_factory.generate()["server_hostname"] for _ in range(200)} <= {"mine-1", "mine-2"}


def test_world_roles_decide_who_does_what() -> None:
    """Without a caller's choice, sudo successes are by sudoers of the host, refusals by its developers,
    invalid users are names the host lacks, and a console login has no address."""
    world = build("who", 30, 15)
    factory = EventFactory(Catalog.builtin(), random.Random(2), world=world)
    seen: Counter[str] = Counter()
    for _ in range(300):
        for result in ("SUCCESS", "FAILURE"):
            e = factory.complete({"event_type": "sudo_command", "action_result": result})
            host = world.host(e["server_hostname"])
            assert host is not None
            account = host.account(e["user_id"])
            assert account is not None and account.sudo == (result == "SUCCESS")
            seen[result] += 1
        e = factory.complete(
            {"event_type": "user_login", "action_result": "FAILURE", "details": {"reason": "unknown_user"}}
        )
        host = world.host(e["server_hostname"])
        assert host is not None and host.account(e["user_id"]) is None
        e = factory.complete({"event_type": "user_login", "details": {"protocol": "console"}})
        assert e["details"]["ip_address"] is None and e["details"]["addr"] == "?"
    assert seen["SUCCESS"] == seen["FAILURE"] == 300


# --- GET /world ------------------------------------------------------------------------------------


def api(world: World | None) -> StubTreq:
    clock = Clock()
    metrics = Metrics()
    factory = EventFactory(Catalog.builtin(), random.Random(0), world=world)
    service = AuditAPI(factory, Outbox(10, metrics, clock), FakeHealth(), metrics.registry, clock)
    return StubTreq(service.resource())


@pytest.mark.parametrize("with_world", [True, False])
def test_get_world_serves_the_world_the_service_draws_from(with_world: bool) -> None:
    """GET /world answers the world in the file format; a service without a world answers 404."""
    world = build("served", 15, 6) if with_world else None
    stub = api(world)
    response = stub.get("http://localhost/world")
    result: list[Any] = []
    response.addCallback(
        lambda r: stub.json_content(r).addCallback(lambda body: result.append((r.code, body)))
    )
    stub.flush()
    code, body = result[0]
    if world is None:
        assert (code, body) == (404, {"error": "the world is off: set AUDITGEN_WORLD=true (docs/world.md)"})
    else:
        assert code == 200 and body == json.loads(json.dumps(to_data(world)))
        VALIDATOR.validate(body)


# -- working hours --------------------------------------------------------------------------------------


def _at(when: datetime) -> datetime:
    return when


def _local_hour(person: Any, when: datetime) -> int:
    """The hour on the person's wall clock, read with zoneinfo here (not the generator's code)."""
    from zoneinfo import ZoneInfo

    return when.astimezone(ZoneInfo(person.timezone)).hour


def test_people_work_in_their_hours_and_someone_is_on_call_when_nobody_is() -> None:
    """Plain generated events are done by people at work at the events' time, in their own time zone
    (India's half hour included); at an hour when nobody of a team is at work, its work is still done,
    by whoever is on call."""
    world = build("hours", 40, 20)
    people = {p.name: p for p in world.people}
    day = datetime(2026, 3, 10, tzinfo=UTC)
    checked = 0
    for quarter in range(0, 96, 2):
        when = day + timedelta(minutes=15 * quarter)
        working = {n for n, p in people.items() if p.hours[0] <= _local_hour(p, when) < p.hours[1]}
        factory = EventFactory(
            Catalog.builtin(), random.Random(quarter), functools.partial(_at, when), world=world
        )
        by_people = [e for e in (factory.generate() for _ in range(300)) if e["user_id"] in people]
        assert by_people, f"{when:%H:%M} UTC: no event by a person"
        teams_at_work = {people[n].team for n in working}
        if teams_at_work == {"ops", "dev"}:  # someone of each team at work: they do the work
            share = sum(e["user_id"] in working for e in by_people) / len(by_people)
            assert share >= 0.9, f"{when:%H:%M} UTC: only {share:.0%} of people's events by people at work"
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "a world of 12 hosts and 10 people (a random seed; GET /world)"),
        ({"AUDITGEN_SEED": "demo"}, "(seed 'demo'; GET /world)"),
        ({"AUDITGEN_WORLD_FILE": "w.yaml"}, "(w.yaml; GET /world)"),
        ({"AUDITGEN_WORLD": "false"}, "no world (AUDITGEN_WORLD=false)"),
    ],
)
def test_the_ready_line_names_the_world_events_come_from(env: dict[str, str], says: str) -> None:
    """The ready line's world: built from a random seed or the seed, read from the file (with or without
    a seed), or none."""
    settings = load_settings({}, env, {})
    world = None if not settings.world.enabled else build(settings.generator.seed)
    assert says in app._world_line(world, settings)
