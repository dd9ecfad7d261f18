"""Scenarios: each one's events trip its rule (computed here, independently), parameters are checked."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditgen.checks import CheckError
from auditgen.events import SOURCE_API, Catalog, EventFactory
from auditgen.scenarios import BUILTIN, SCENARIOS, ScenarioRunner, UnknownScenario
from auditgen.world import build
from tests.support import detect

NOW = datetime(2026, 11, 27, 14, 30, 0, tzinfo=UTC)  # business hours: off_hours_admin must look back
NOW_STAMP = "2026-11-27T14:30:00.000000Z"

WITH_PARAMETERS: dict[str, dict[str, Any]] = {
    "brute_force": {
        "user": "mallory",
        "host": "bastion-01",
        "attempts": 12,
        "window_seconds": 600,
        "success": True,
    },
    "privilege_escalation": {"user": "dave", "target": "/root/.ssh/authorized_keys", "window_seconds": 30},
    "sensitive_file_tamper": {"path": "/etc/passwd", "changes": 4, "window_seconds": 10, "host": "db-01"},
    "service_flapping": {"service": "nginx", "cycles": 6, "window_seconds": 60.5},
    "account_takeover": {"account": "eve", "source_ip": "2001:db8::7", "delay_seconds": 30},
    "off_hours_admin": {"hour": 22, "commands": 7, "window_seconds": 1200, "user": "root"},
}


WORLD = build("scenarios", 12, 10)
# Every rule is checked without a world (the default) and with one, whose draws are the world's.
WORLDS = pytest.mark.parametrize("world", [False, True], ids=["no-world", "world"])


def runner(seed: int = 1, now: datetime = NOW, world: bool = False) -> ScenarioRunner:
    """A seeded runner; with world, drawing from WORLD with a ledger of its own (as the API's runner)."""
    grounding = EventFactory(Catalog.builtin(), random.Random(seed), world=WORLD).grounding if world else None
    return ScenarioRunner(Catalog.builtin(), random.Random(seed), now=lambda: now, grounding=grounding)


def test_there_are_at_least_six_scenarios_and_every_one_has_parameters_to_try() -> None:
    """The registry holds the six named in the issue, and this file exercises each with parameters."""
    names = [s.name for s in SCENARIOS]
    assert set(WITH_PARAMETERS) == set(names)
    assert len(names) >= 6


@WORLDS
@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
@pytest.mark.parametrize("seed", range(5))
def test_every_scenario_with_its_defaults_trips_its_rule(name: str, seed: int, world: bool) -> None:
    """With the defaults, the rule computed from the events finds exactly the expected keys and window."""
    run = runner(seed, world=world).run(name, {})
    detect.assert_expected(run.expected, name, run.events, run.parameters)
    assert_well_formed(run)


@WORLDS
@pytest.mark.parametrize("name", list(WITH_PARAMETERS))
def test_every_scenario_with_parameters_trips_its_rule_for_those_parameters(name: str, world: bool) -> None:
    """The caller's parameters shape the events (kept as given, in the world or out of it); the rule tuned
    by them finds the expected keys."""
    given = WITH_PARAMETERS[name]
    run = runner(world=world).run(name, given)
    for key, value in given.items():
        assert run.parameters[key] == value
    detect.assert_expected(run.expected, name, run.events, run.parameters)
    assert_well_formed(run)


def assert_well_formed(run: Any) -> None:
    """Every event carries the scenario_id, a resource on top where details name one, and the API's source;
    the expected event_ids are the events, in order."""
    assert run.expected["event_ids"] == [e["event_id"] for e in run.events]
    assert len(set(run.expected["event_ids"])) == len(run.events)
    for e in run.events:
        assert e["details"]["scenario_id"] == run.scenario_id
        assert e["source_service"] == SOURCE_API
        if "resource" in e["details"]:
            assert e["resource"] == e["details"]["resource"]
    stamps = [e["timestamp"] for e in run.events]
    assert stamps == sorted(stamps), "events are made in the order they happen"


@WORLDS
def test_the_platforms_rules_fire_on_the_defaults(world: bool) -> None:
    """brute_force with defaults trips "3 FAILURE for one user and host within 60 s"; sensitive_file_tamper
    trips "file_modified MODIFIED whose top-level resource contains one of the four files"."""
    for seed in range(20):
        r = runner(seed, world=world)
        bf = r.run("brute_force", {})
        assert list(detect.brute_force(bf.events)) == [tuple(bf.expected["keys"].values())]
        tamper = r.run("sensitive_file_tamper", {})
        assert list(detect.sensitive_file_tamper(tamper.events)) == [tuple(tamper.expected["keys"].values())]


def test_brute_force_attempts_are_seconds_apart_and_end_now() -> None:
    """API runs are stamped within a window that ends now, with attempts a few seconds apart."""
    run = runner().run("brute_force", {})
    times = [detect.when(e) for e in run.events]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert run.events[-1]["timestamp"] == NOW_STAMP
    assert all(3.0 <= g <= 7.5 for g in gaps), gaps
    assert (times[-1] - times[0]).total_seconds() <= 30


def test_off_hours_admin_is_stamped_at_the_last_night_hour() -> None:
    """At 14:30 the 02:00 hour of today has passed: the events lie in it; at 01:00, in yesterday's."""
    run = runner().run("off_hours_admin", {})
    assert {detect.when(e).replace(minute=0, second=0, microsecond=0) for e in run.events} == {
        NOW.replace(hour=2, minute=0)
    }
    early = NOW.replace(hour=1, minute=0)
    run = runner(now=early).run("off_hours_admin", {"hour": 2})
    assert {detect.when(e).date() for e in run.events} == {(early - timedelta(days=1)).date()}
    assert all(detect.when(e) <= early for e in run.events)


def test_the_same_seed_makes_the_same_run() -> None:
    """A seeded runner is reproducible: ids, parameters drawn and timestamps."""
    a, b = runner(seed=3).run("account_takeover", {}), runner(seed=3).run("account_takeover", {})
    assert a.events == b.events
    assert a.scenario_id == b.scenario_id
    assert runner(seed=4).run("account_takeover", {}).scenario_id != a.scenario_id


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("brute_force", {"attempt": 5}, 'brute_force: unknown parameter "attempt" (known: user, host,'),
        ("brute_force", {"attempts": "5"}, 'attempts must be a whole number, not "5"'),
        ("brute_force", {"attempts": True}, "attempts must be a whole number, not true"),
        ("brute_force", {"attempts": 4.5}, "attempts must be a whole number, not 4.5"),
        ("brute_force", {"attempts": 2}, "attempts must be from 3 to 1000, not 2"),
        ("brute_force", {"window_seconds": 0}, "window_seconds must be from 1 to 3600, not 0.0"),
        ("brute_force", {"success": "yes"}, 'success must be true or false, not "yes"'),
        ("brute_force", {"user": ""}, "user must be a non-empty string"),
        ("brute_force", {"user": "a\ud800"}, "user must be a non-empty string"),
        ("brute_force", {"user": "a\x1b[31m"}, "without control characters"),
        ("brute_force", {"host": "x" * 256}, "host must be a non-empty string of at most 255"),
        ("sensitive_file_tamper", {"path": "/etc/hosts"}, 'path must be one of ["/etc/sudoers",'),
        ("privilege_escalation", {"user": "root"}, "user must be a user other than root"),
        ("off_hours_admin", {"hour": 9}, "hour must be one of [0, 1, 2"),
        (
            "account_takeover",
            {"source_ip": "10.20.1.1"},
            "source_ip must be outside the usual client networks",
        ),
        ("account_takeover", {"source_ip": "nowhere"}, "source_ip must be an IPv4 or IPv6 address"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    name: str, given: dict[str, Any], message: str
) -> None:
    """Unknown names, wrong types, out of range and disallowed values each say what was expected."""
    with pytest.raises(CheckError) as e:
        runner().run(name, given)
    assert f"{name}: " in str(e.value)
    assert message in str(e.value)


def test_an_unknown_scenario_lists_the_known_ones() -> None:
    """A typo in the name is answered with the names that exist."""
    with pytest.raises(UnknownScenario) as e:
        runner().run("brute-force", {})
    assert "brute_force, privilege_escalation" in str(e.value)


def test_every_parameter_is_described_with_type_default_and_meaning() -> None:
    """GET /scenarios shows these (the attacks, then the near misses): each parameter has a type, a default
    (null: random) and a description."""
    described = runner().describe()
    assert [d["name"] for d in described] == [s.name for s in BUILTIN]
    for scenario in described:
        assert scenario["description"]
        for p in scenario["parameters"]:
            assert p["type"] in ("integer", "number", "string", "boolean")
            assert "default" in p and p["description"]
    brute = described[0]["parameters"]
    assert {"name": "attempts", "type": "integer", "default": 5, "minimum": 3, "maximum": 1000}.items() <= (
        next(p for p in brute if p["name"] == "attempts").items()
    )
