"""Scenario files: the format's validation messages, the shipped schema, a user's own files, start-up."""

from __future__ import annotations

import json
import random
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from twisted.python import usage

from auditgen.checks import CheckError
from auditgen.events import Catalog
from auditgen.scenarios import (
    BUILTIN,
    NEAR_MISSES,
    SCENARIOS,
    ScenarioFileError,
    ScenarioRunner,
    load_scenarios,
)
from auditgen.tap import Options

SCHEMA = json.loads(resources.files("auditgen.scenarios").joinpath("scenario.schema.json").read_text())
BUILTIN_DIR = resources.files("auditgen.scenarios").joinpath("builtin")

ROOT = Path(__file__).resolve().parent.parent


def docs_example() -> str:
    """The complete example of a user's own scenario and its near miss, in docs/scenarios.md."""
    docs = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
    section = docs.split("### A complete example", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


OWN = docs_example()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_schema_is_valid_and_every_built_in_file_passes_it() -> None:
    """The shipped JSON Schema is a valid 2020-12 schema, and the shipped files and the docs' example keep
    to it (an editor with the schema then flags the same mistakes start-up would)."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    files = [f for f in BUILTIN_DIR.iterdir() if f.name.endswith(".yaml")]
    assert len(files) == len(BUILTIN) >= 11
    for f in files:
        jsonschema.validate(yaml.safe_load(f.read_text(encoding="utf-8")), SCHEMA)
    jsonschema.validate(yaml.safe_load(OWN), SCHEMA)


def test_the_built_ins_are_six_attacks_and_the_near_misses_the_issue_lists() -> None:
    """Six attacks expecting an alert; near misses expecting quiet: below a threshold, spread over more
    than the window, a file next to a sensitive one, sudo in working hours, a service restarted once."""
    assert [s.name for s in SCENARIOS] == [
        "brute_force",
        "privilege_escalation",
        "sensitive_file_tamper",
        "service_flapping",
        "account_takeover",
        "off_hours_admin",
    ]
    assert [s.name for s in NEAR_MISSES] == [
        "failed_logins_below_threshold",
        "failed_logins_spread_out",
        "file_next_to_sensitive",
        "admin_sudo_in_working_hours",
        "service_restarted_once",
    ]
    assert {s.delivery for s in SCENARIOS} == {"instant"}
    assert next(s for s in NEAR_MISSES if s.name == "failed_logins_spread_out").delivery == "paced"


def shape(name: str, given: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    run = ScenarioRunner(Catalog.builtin(), random.Random(7)).run(name, given or {})
    return [(e["event_type"], e["action_result"]) for e in run.events]


def test_the_built_ins_make_the_documented_events() -> None:
    """Each file makes the sequence docs/scenarios.md describes, with its defaults and with parameters."""
    login, sudo, change = (
        ("user_login", "SUCCESS"),
        ("sudo_command", "SUCCESS"),
        ("file_modified", "MODIFIED"),
    )
    fail, stop, start = (
        ("user_login", "FAILURE"),
        ("service_status_change", "STOPPED"),
        (
            "service_status_change",
            "STARTED",
        ),
    )
    assert shape("brute_force") == [fail] * 5
    assert shape("brute_force", {"attempts": 3, "success": True}) == [fail] * 3 + [login]
    assert shape("privilege_escalation") == [login, sudo, change]
    assert shape("sensitive_file_tamper", {"changes": 3}) == [change] * 3
    assert shape("service_flapping") == [stop, start] * 3
    assert shape("account_takeover") == [("user_account_management", "CREATED"), login]
    assert shape("off_hours_admin", {"commands": 2}) == [login, sudo, sudo]
    assert shape("failed_logins_below_threshold") == [fail] * 2
    assert shape("failed_logins_spread_out", {"attempts": 6}) == [fail] * 6
    assert shape("file_next_to_sensitive") == [change]
    assert shape("admin_sudo_in_working_hours") == [login, sudo, sudo, sudo]
    assert shape("service_restarted_once") == [stop, start]


def test_a_step_refers_to_an_earlier_steps_values() -> None:
    """brute_force's success comes from the failures' address (a reference to the first step's event)."""
    run = ScenarioRunner(Catalog.builtin(), random.Random(3)).run("brute_force", {"success": True})
    assert len({e["details"]["ip_address"] for e in run.events}) == 1


def test_a_users_file_adds_scenarios_and_replaces_a_built_in_by_name(tmp_path: Path) -> None:
    """The docs' example loads after the built-ins; a file whose scenario is named brute_force takes the
    built-in's place in the list."""
    own = write(tmp_path, "own.yaml", OWN)
    replaced = write(
        tmp_path,
        "brute.json",
        json.dumps(
            {
                "name": "brute_force",
                "description": "Three failures, no parameters.",
                "expect": {"alert": "3 failures", "keys": {"user_id": "mallory"}},
                "steps": [
                    {
                        "repeat": {"count": 3, "every": 2, "spacing": "even"},
                        "event": {
                            "event_type": "user_login",
                            "action_result": "FAILURE",
                            "user_id": "mallory",
                        },
                    }
                ],
            }
        ),
    )
    loaded = load_scenarios([own, replaced])
    names = [s.name for s in loaded]
    assert names == [s.name for s in BUILTIN] + [
        "ssh_key_added_after_login",
        "ssh_key_added_by_config_management",
    ]
    runner = ScenarioRunner(Catalog.builtin(), random.Random(1), scenarios=loaded)
    brute = runner.run("brute_force", {})
    assert [e["user_id"] for e in brute.events] == ["mallory"] * 3
    assert brute.expected["outcome"] == "alert"
    run = runner.run("ssh_key_added_after_login", {"user": "carol"})
    login, change = run.events
    assert change["details"]["ip_address"] == login["details"]["ip_address"]
    assert change["resource"] == "/home/alice/.ssh/authorized_keys"
    quiet = runner.run("ssh_key_added_by_config_management", {})
    assert quiet.expected["outcome"] == "quiet"
    assert quiet.expected["description"].startswith("deploy changes /home/alice/.ssh/authorized_keys")


BRUTE = (BUILTIN_DIR / "01-brute_force.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'user_id: "{user}"\n      server_hostname: "{host}"\n      details: {ip_address: "{address}"',
            'user_id: "{usr}"\n      server_hostname: "{host}"\n      details: {ip_address: "{address}"',
            "scenario 'brute_force': step 'failure': field 'event.user_id': unknown reference {usr} "
            "(can use: user, host, attempts, window_seconds, success, address)",
        ),
        (
            'ip_address: "{failure.details.ip_address}"',
            'ip_address: "{success.details.ip_address}"',
            "step 'success': field 'event.details.ip_address': unknown reference {success.details",
        ),
        (
            'count: "{attempts}"',
            'count: "{window_seconds}"',
            "step 'failure': field 'repeat.count': expected a whole number or a reference to a integer "
            "parameter, got '{window_seconds}'",
        ),
        (
            "after: failure",
            "after: later",
            "step 'success': field 'after': expected the name of an earlier step",
        ),
        (
            "default: 5,",
            "default: 2,",
            "field 'parameters.attempts.default': must be from 3 to 1000, not 2",
        ),
        ("type: integer", "type: int", "field 'parameters.attempts.type': expected one of integer, number,"),
        (
            "at: {between: [1, 5]}",
            "at: {between: [1]}",
            "step 'success': field 'at.between': expected [low, high]",
        ),
        (
            'count: "{attempts}", over',
            'each: [{action_result: FAILURE, event_type: x}], count: "{attempts}", over',
            "step 'failure': field 'repeat.each[0]': unknown key 'event_type' (allowed: server_hostname,",
        ),
        ("    when:", "    whenever:", "step 'success': unknown key 'whenever' (allowed: name, event, at,"),
        (
            "event_type: user_login\n      action_result: FAILURE",
            "action_result: FAILURE",
            "missing 'event_type'",
        ),
        ("draw: {pool: users}", "draw: {pool: users}, default: bob", "expected exactly one of 'default'"),
        (
            "  keys: {user_id",
            "  quiet: too\n  keys: {user_id",
            "scenario 'brute_force': field 'expect': expected exactly one",
        ),
        ("name: brute_force", "name: Brute-Force", "field 'name': expected a name of lower-case letters"),
        ("  success: {type", "  delivery: {type", "field 'parameters.delivery': 'delivery' is reserved"),
        (
            '{ip_address: "{address}", protocol: ssh, reason',
            '{ip_address: "{address", protocol: ssh, reason',
            "unmatched '{'",
        ),
    ],
)
def test_a_bad_file_names_the_file_scenario_step_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """Each mistake is one ScenarioFileError starting with the file, then scenario, step, field."""
    assert old in BRUTE, old
    path = write(tmp_path, "mine.yaml", BRUTE.replace(old, new, 1))
    with pytest.raises(ScenarioFileError) as caught:
        load_scenarios([path])
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected an object, got [1, 2]"),
        ("name: x\n", "scenario 'x': missing 'description'"),
        ("scenarios: []\n", "field 'scenarios': expected a non-empty list"),
        ("name: a\nname: b\n", "YAML syntax error"),
        (
            textwrap.dedent(OWN).replace("ssh_key_added_by_config_management", "ssh_key_added_after_login"),
            "scenario 'ssh_key_added_after_login' is defined twice",
        ),
    ],
)
def test_a_bad_file_at_the_top_level(tmp_path: Path, text: str, message: str) -> None:
    """The file's shape, its syntax (with duplicate keys refused) and repeated names."""
    path = write(tmp_path, "top.yaml", text)
    with pytest.raises(ScenarioFileError) as caught:
        load_scenarios([path])
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_an_unreadable_or_unknown_file_is_named(tmp_path: Path) -> None:
    """A missing file or a wrong extension names the file, as for templates."""
    with pytest.raises(ScenarioFileError, match=r"nope\.yaml: cannot read the file"):
        load_scenarios([str(tmp_path / "nope.yaml")])
    with pytest.raises(ScenarioFileError, match=r"x\.txt: unknown extension"):
        load_scenarios([write(tmp_path, "x.txt", "{}")])


def test_a_bad_scenario_file_stops_start_up_with_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--scenarios (or AUDITGEN_SCENARIOS) is read when the options are parsed: a bad file is a usage
    error naming it, before anything starts; a good one's scenarios are on the options."""
    monkeypatch.delenv("AUDITGEN_SCENARIOS", raising=False)
    good = write(tmp_path, "own.yaml", OWN)
    options = Options()
    options.parseOptions(["--scenarios", good])
    assert options.scenarios[-1].name == "ssh_key_added_by_config_management"
    bad = write(tmp_path, "bad.yaml", BRUTE.replace("after: failure", "after: nowhere"))
    monkeypatch.setenv("AUDITGEN_SCENARIOS", bad)
    with pytest.raises(usage.UsageError, match=f"^scenarios: {re.escape(bad)}: scenario 'brute_force': step"):
        Options().parseOptions([])


def test_parameters_that_leave_a_run_without_events_are_refused(tmp_path: Path) -> None:
    """A count parameter that may be 0 can empty a run: that request is a CheckError (a 400), not an
    empty run."""
    text = BRUTE.replace("minimum: 3, maximum: 1000", "minimum: 0, maximum: 1000").replace(
        "default: 5,", "default: 0,"
    )
    runner = ScenarioRunner(
        Catalog.builtin(), random.Random(1), scenarios=load_scenarios([write(tmp_path, "b.yaml", text)])
    )
    with pytest.raises(CheckError, match="brute_force: these parameters make a run without events"):
        runner.run("brute_force", {})
    assert len(runner.run("brute_force", {"success": True}).events) == 1
