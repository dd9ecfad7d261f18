"""Scenario runs with a world: their drawn parameters are the world's (a host, accounts in the roles the
scenario needs, a new name, a service, a person's own address), jointly consistent, and what the caller
gives is kept; without a world, runs are exactly what they were."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from twisted.internet.task import Clock

from auditgen import app
from auditgen.config import load_settings
from auditgen.events import SOURCE_GENERATED, Catalog, EventFactory, builtin_data
from auditgen.events.grounding import Grounding
from auditgen.scenario_mix import ScenarioMix
from auditgen.scenarios import BUILTIN, Run, ScenarioRunner
from auditgen.scenarios.files import scenarios_of
from auditgen.world import Host, World, build
from auditgen.world.files import from_data, to_data
from tests.support.consistency import Checker

NOW = datetime(2026, 11, 27, 14, 30, 0, tzinfo=UTC)
WORLD = build("scenarios", 24, 12)
VPN = ipaddress.ip_network("10.99.12.0/24")
CLIENT_NETWORKS = [ipaddress.ip_network(c) for c in Catalog.builtin().pools["client_networks"]]

# What each built-in's drawn parameters must be on the run's host: the role of each account drawn, and
# what the host must have for the events to happen as written.
FAILED_LOGINS = {"user": "login", "password_ssh": True, "address": "user"}
SUDO_SESSION = {"user": "admin", "address": "user"}
NEEDS: dict[str, dict[str, Any]] = {
    "brute_force": FAILED_LOGINS,
    "failed_logins_below_threshold": FAILED_LOGINS,
    "failed_logins_spread_out": FAILED_LOGINS,
    "privilege_escalation": SUDO_SESSION,
    "off_hours_admin": SUDO_SESSION,
    "admin_sudo_in_working_hours": SUDO_SESSION,
    "sensitive_file_tamper": {"user": "admin", "file": "path"},
    "file_next_to_sensitive": {"user": "admin", "file": "path"},
    "service_flapping": {"service": "service"},
    "service_restarted_once": {"service": "service"},
    "account_takeover": {"admin": "admin", "new": "account", "outside": "source_ip"},
}


def runner_and_ledger(
    seed: int, world: World = WORLD, catalog: Catalog | None = None
) -> tuple[ScenarioRunner, Grounding]:
    """The API's runner as app.parts builds it, sharing the API factory's grounding (world and ledger)."""
    catalog = catalog or Catalog.builtin()
    grounding = EventFactory(catalog, random.Random(f"{seed}/api"), world=world).grounding
    assert grounding is not None
    return ScenarioRunner(catalog, random.Random(seed), now=lambda: NOW, grounding=grounding), grounding


def runner(seed: int, world: World = WORLD, catalog: Catalog | None = None) -> ScenarioRunner:
    return runner_and_ledger(seed, world, catalog)[0]


def names(accounts: Any) -> set[str]:
    return {a.name for a in accounts}


def assert_drawn_from_the_world(name: str, run: Run, grounding: Grounding) -> Host:
    """The run's host is the world's, every event is on it, and each drawn parameter is what NEEDS says."""
    params = run.parameters
    host = WORLD.host(params["host"])
    assert host is not None, f"{name}: {params['host']} is not a host of the world"
    assert {e["server_hostname"] for e in run.events} == {host.name}
    needs = NEEDS[name]
    roles = {"login": host.logins, "admin": host.admins}
    for param in ("user", "admin"):
        if param in needs:
            assert params[param] in names(roles[needs[param]]), (name, param, params[param], host.name)
    if needs.get("password_ssh"):
        assert host.password_ssh, f"{name}: {host.name} takes no passwords over SSH"
        assert {e["details"]["reason"] for e in run.events} == {"invalid_password"}, "not rewritten"
    if "address" in needs:
        # A person's own addresses; a service account that may sudo (deploy) comes from the VPN.
        person = WORLD.person(params[needs["address"]])
        own = person.addresses if person is not None else ()
        for e in run.events:
            if e["event_type"] == "user_login":
                address = e["details"]["ip_address"]
                assert address in own or (not own and ipaddress.ip_address(address) in VPN), address
    if "file" in needs:
        assert params[needs["file"]] in host.profile.files
    if "service" in needs:
        assert params[needs["service"]] in host.profile.services
        assert all(host.account(e["user_id"]) is not None for e in run.events)
    if "new" in needs:
        account = params[needs["new"]]
        assert host.account(account) is None, "the new account is not one the world has"
        assert grounding.account(host, account) is not None, "it is in the ledger from now"
        address = ipaddress.ip_address(params[needs["outside"]])
        assert not any(address in net for net in CLIENT_NETWORKS), "an outside address is kept outside"
    return host


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", [s.name for s in BUILTIN])
def test_each_builtin_run_draws_its_host_and_accounts_from_the_world_in_their_roles(
    name: str, seed: int
) -> None:
    """With a world, each built-in's default run is on a host of the world, by accounts it has in the role
    the scenario needs (a person who can log in where SSH takes passwords, for failed password logins; an
    admin there for sudo and file changes; a new name it lacks), on its files and services, from the
    person's own address; the checker written apart from the generator finds nothing to object to."""
    r, grounding = runner_and_ledger(seed)
    run = r.run(name, {})
    assert_drawn_from_the_world(name, run, grounding)
    checker = Checker(to_data(WORLD))
    checker.read(run.events)
    assert checker.problems == []
    assert checker.checked["scenario events"] == len(run.events)
    assert run.expected["event_ids"] == [e["event_id"] for e in run.events]
    keys = run.expected["keys"]
    assert keys.get("server_hostname", run.parameters["host"]) == run.parameters["host"]


def test_the_same_seed_makes_the_same_run_with_a_world() -> None:
    """Drawing from the world keeps runs reproducible: ids, parameters and events."""
    for name in ("account_takeover", "brute_force"):
        a, b = runner(7).run(name, {}), runner(7).run(name, {})
        assert (a.parameters, a.events) == (b.parameters, b.events)
        assert runner(8).run(name, {}).parameters != a.parameters


def test_parameters_the_caller_gives_are_kept_inside_the_world_or_out() -> None:
    """A host outside the world is kept, and the rest drawn as without a world; a host of the world is
    kept and the accounts drawn on it; a given account steers the host towards one where it has an
    account; a given service towards a host that runs it."""
    outside = runner(1).run("brute_force", {"user": "mallory", "host": "bastion-01", "attempts": 4})
    assert (outside.parameters["user"], outside.parameters["host"]) == ("mallory", "bastion-01")
    assert {(e["user_id"], e["server_hostname"]) for e in outside.events} == {("mallory", "bastion-01")}
    assert {"auid", "ses", "exe"} <= set(outside.events[0]["details"]), "auditd's fields all the same"

    quiet = next(h for h in WORLD.hosts if not h.password_ssh and h.logins)
    kept = runner(2).run("brute_force", {"host": quiet.name})
    assert kept.parameters["host"] == quiet.name
    assert kept.parameters["user"] in names(quiet.logins)

    for seed in range(5):
        admin = next(p.name for p in WORLD.people if p.team == "ops")
        r = runner(seed)
        run = r.run("privilege_escalation", {"user": admin})
        host = WORLD.host(run.parameters["host"])
        assert run.parameters["user"] == admin and host is not None and admin in names(host.admins)
        flapping = r.run("service_flapping", {"service": "nginx"})
        host = WORLD.host(flapping.parameters["host"])
        assert host is not None and "nginx" in host.profile.services

    r, grounding = runner_and_ledger(3)
    web = next(h for h in WORLD.hosts if h.role == "web")
    taken = r.run("account_takeover", {"account": "eve", "host": web.name, "source_ip": "2001:db8::7"})
    assert (taken.parameters["account"], taken.parameters["source_ip"]) == ("eve", "2001:db8::7")
    assert taken.parameters["admin"] in names(web.admins)
    assert grounding.account(web, "eve") is not None, "a given new account is recorded too"


def test_a_new_account_is_never_one_that_exists_and_stays_in_the_ledger() -> None:
    """account_takeover again and again on one host: each new account is a name the host lacks at the
    time (the world's and those created before), and each is recorded: no plain event creates it again,
    and once the catalog's new names are used up, numbered ones follow."""
    r, grounding = runner_and_ledger(4)
    host = next(h for h in WORLD.hosts if h.admins)
    created = []
    for _ in range(12):
        run = r.run("account_takeover", {"host": host.name})
        account = run.parameters["account"]
        assert account not in created and host.account(account) is None
        created.append(account)
        assert grounding.account(host, account) is not None
    numbered = grounding.new_account_name(host, random.Random(0))
    assert numbered is not None and numbered[-1].isdigit(), "the catalog's names are used up: a numbered one"
    assert grounding.account(host, numbered) is None
    assert any(name[-1].isdigit() for name in created)


def test_a_run_lands_on_the_one_host_where_its_events_can_happen() -> None:
    """Sixty hosts, one of which takes passwords over SSH: every failed-password run lands on it, found
    after the random tries by going through the hosts in turn."""
    people = [{"name": "ann", "uid": 1000, "team": "ops", "addresses": ["10.1.0.1"]}]
    hosts = [
        {
            "name": f"h{i:02d}",
            "address": f"10.0.0.{i + 1}",
            "profile": "web/debian-12",
            "accounts": ["ann"],
            "password_ssh": i == 41,
        }
        for i in range(60)
    ]
    world = from_data({"hosts": hosts, "people": people})
    for seed in range(6):
        run = runner(seed, world).run("failed_logins_spread_out", {"delivery": "instant"})
        assert run.parameters["host"] == "h41" and run.parameters["user"] == "ann"


OWN = """
name: key_added_after_sudo
description: A user logs in, becomes root and adds a key to their own authorized_keys.
expect:
  alert: "sudo then a change of {key_file}"
  keys: {user_id: "{user}", server_hostname: "{host}"}
parameters:
  user: {type: string, draw: {pool: people}, description: The user.}
  host: {type: string, draw: {pool: hosts}, description: The host.}
  key_file: {type: string, default: /home/someone/.ssh/authorized_keys, description: The file.}
steps:
  - {name: login, event: {event_type: user_login, action_result: SUCCESS, user_id: "{user}",
                          server_hostname: "{host}", details: {protocol: ssh}}}
  - {name: sudo, at: 5, event: {event_type: sudo_command, action_result: SUCCESS, user_id: "{user}",
                                server_hostname: "{host}", details: {command: "sudo -i"}}}
  - {name: change, at: 10, event: {event_type: file_modified, action_result: MODIFIED, user_id: "{user}",
                                   server_hostname: "{host}", details: {resource: "{key_file}"}}}
"""


def test_a_users_scenario_gets_a_host_where_its_events_can_happen() -> None:
    """A user's scenario draws a person (any) who then runs sudo: the run lands on a host where the person
    drawn is an admin, though the pool names no role; its own file, which no host of the world lists, is
    kept and counts against none."""
    scenario = scenarios_of(yaml.safe_load(OWN), "own.yaml")
    for seed in range(6):
        catalog = Catalog.builtin()
        grounding = EventFactory(catalog, random.Random(seed), world=WORLD).grounding
        r = ScenarioRunner(
            catalog, random.Random(seed), now=lambda: NOW, scenarios=scenario, grounding=grounding
        )
        run = r.run("key_added_after_sudo", {})
        host = WORLD.host(run.parameters["host"])
        assert host is not None and run.parameters["user"] in names(host.admins)
        assert run.events[-1]["resource"] == "/home/someone/.ssh/authorized_keys"
        person = WORLD.person(run.parameters["user"])
        assert person is not None and run.events[0]["details"]["ip_address"] in person.addresses


def test_when_no_host_fits_the_run_is_made_on_the_best_one() -> None:
    """A world whose hosts take no passwords: a brute force is still made, on a host of the world by an
    account it has (the caller asked for a password failure, and gets it)."""
    world = from_data(
        {
            "hosts": [{"name": "h1", "address": "10.0.0.1", "profile": "web/debian-12", "accounts": ["ann"]}],
            "people": [{"name": "ann", "uid": 1000, "team": "ops", "addresses": ["10.1.0.1"]}],
        }
    )
    run = runner(1, world).run("brute_force", {})
    assert (run.parameters["host"], run.parameters["user"]) == ("h1", "ann")
    assert len(run.events) == 5


def test_a_users_own_pools_are_drawn_as_given() -> None:
    """A catalog that redefines `hosts` (the user's own hosts) gets runs on those hosts, as the templates
    do; the pools it leaves as built in are still the world's."""
    own = builtin_data()
    own["pools"]["hosts"] = ["mine-1", "mine-2"]
    catalog = Catalog.from_data(own)
    for seed in range(5):
        run = runner(seed, catalog=catalog).run("brute_force", {})
        assert run.parameters["host"] in {"mine-1", "mine-2"}
    own = builtin_data()
    own["pools"]["users"] = ["ursula"]
    run = runner(1, catalog=Catalog.from_data(own)).run("brute_force", {})
    assert run.parameters["user"] == "ursula" and WORLD.host(run.parameters["host"]) is not None


# --- the service wires it ---------------------------------------------------------------------------


def test_the_service_gives_api_runs_and_generated_runs_the_world() -> None:
    """With AUDITGEN_WORLD on, app.parts' runner draws from the world and records in the API's ledger, and
    the generator's mixed-in runs are on the world's hosts, contradicting nothing."""
    env = {
        "AUDITGEN_SEED": "wired",
        "AUDITGEN_WORLD": "true",
        "AUDITGEN_SCENARIO_RATE": "1000",
        "AUDITGEN_RATE": "100",
    }
    clock = Clock()
    parts = app.parts(load_settings({}, env, {}), Catalog.builtin(), clock)
    grounding = parts.factory.grounding
    assert grounding is not None
    run = parts.scenarios.run("account_takeover", {})
    host = grounding.world.host(run.parameters["host"])
    assert host is not None and grounding.account(host, run.parameters["account"]) is not None
    parts.generator.startService()
    for _ in range(50):
        clock.advance(0.1)
    parts.generator.stopService()
    events = []
    while (entry := parts.outbox.take()) is not None:
        events.append(json.loads(entry.body))
    generated = [
        e for e in events if "scenario_id" in e["details"] and e["source_service"] == SOURCE_GENERATED
    ]
    assert len(generated) > 100
    assert all(grounding.world.host(e["server_hostname"]) is not None for e in generated)
    checker = Checker(to_data(grounding.world))
    checker.read(events)
    assert checker.problems == []


def test_api_events_and_generated_events_share_one_state_of_the_world() -> None:
    """The API and the generator draw from one ledger: logins triggered by callers and generated ones on
    the same hosts never share a session number, and an account created through the API is not created
    again by the generator; read together, the two streams contradict nothing."""
    env = {"AUDITGEN_SEED": "one-state", "AUDITGEN_RATE": "200", "AUDITGEN_SESSION_SHARE": "0.5"}
    env |= {"AUDITGEN_WORLD_HOSTS": "3", "AUDITGEN_WORLD_PEOPLE": "4"}
    clock = Clock()
    parts = app.parts(load_settings({}, env, {}), Catalog.builtin(), clock)
    assert parts.generator is not None
    parts.generator.startService()
    for _ in range(40):  # as POST /generate_event puts them in the outbox, between the generator's ticks
        parts.outbox.add(parts.factory.complete({"event_type": "user_login", "action_result": "SUCCESS"}))
        parts.outbox.add(
            parts.factory.complete({"event_type": "user_account_management", "action_result": "CREATED"})
        )
        clock.advance(0.25)
    parts.generator.stopService()
    events = []
    while (entry := parts.outbox.take()) is not None:
        events.append(json.loads(entry.body))
    api = {e["event_id"] for e in events if e["source_service"] != SOURCE_GENERATED}
    assert len(api) == 80 and len(events) > 500
    grounding = parts.factory.grounding
    assert grounding is not None
    checker = Checker(to_data(grounding.world))
    checker.read(events)
    assert checker.problems == []


# --- without a world, nothing changes ----------------------------------------------------------------

# Digests of runs made before scenarios drew from the world (commit cbcc509): every built-in's default
# run for three seeds, and 3,000 events of a mix at 50 per 1,000 with its records.
RUNS_DIGEST = "d87b19277ff8dcc4deebe77793d2f835674d9de9e2bc77685adf9a795905ee73"
MIX_DIGEST = "e90b35d5c3783c2e6c839f87377afa9db66edc57d9a3b13a8a06c727a8ea3ea1"


def ticking() -> Callable[[], datetime]:
    now = [NOW]

    def read() -> datetime:
        now[0] += timedelta(milliseconds=50)
        return now[0]

    return read


def test_without_a_world_runs_and_the_mix_are_byte_for_byte_as_before() -> None:
    """No world (the default): the same seed makes the same runs and the same mixed stream, to the byte,
    as before scenarios drew from the world."""
    digest = hashlib.sha256()
    for seed in range(3):
        r = ScenarioRunner(Catalog.builtin(), random.Random(seed), now=lambda: NOW)
        for s in BUILTIN:
            run = r.run(s.name, {})
            digest.update(json.dumps([run.parameters, run.events, run.expected], sort_keys=True).encode())
    assert digest.hexdigest() == RUNS_DIGEST
    digest = hashlib.sha256()
    catalog = Catalog.builtin()
    now = ticking()
    inner = EventFactory(catalog, random.Random("g"), now).generate
    runs: list[Run] = []
    mix = ScenarioMix(inner, catalog, random.Random("m"), 50.0, runs.append, now)
    for _ in range(3000):
        digest.update(json.dumps(mix(), sort_keys=True).encode())
    digest.update(json.dumps([(r.parameters, r.expected) for r in runs], sort_keys=True).encode())
    assert digest.hexdigest() == MIX_DIGEST


@pytest.mark.parametrize("seed", range(3))
def test_a_runs_login_opens_the_audit_session_its_later_steps_are_in(seed: int) -> None:
    """In a world, privilege_escalation's login, sudo and file change are one audit session: the
    login's ses, login uid and terminal on each, one session_id and the login's address; without a
    world, runs carry no session (as before)."""
    run = runner(seed).run("privilege_escalation", {})
    login, *after = run.events
    assert (login["event_type"], login["action_result"]) == ("user_login", "SUCCESS")
    terminal = login["details"]["terminal"].removeprefix("/dev/")
    for event in after:
        d = event["details"]
        assert (d["ses"], d["auid"], d["terminal"]) == (
            login["details"]["ses"],
            login["details"]["auid"],
            terminal,
        ), event["event_type"]
        assert d["session_id"] == login["details"]["session_id"]
        assert d["ip_address"] == login["details"]["ip_address"]
    plain = ScenarioRunner(Catalog.builtin(), random.Random(seed), now=lambda: NOW).run(
        "privilege_escalation", {}
    )
    assert all("session_id" not in e["details"] for e in plain.events)
