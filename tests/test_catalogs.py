"""User template files: reading JSON and YAML, merging over the built-in set, the replace switch, the
errors that stop start-up, the twistd options, and the JSON Schema shipped with the package."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from twisted.python import usage

from auditgen.catalogs import load_catalog
from auditgen.events import Catalog, EventFactory, TemplateError, builtin_data
from auditgen.tap import Options

ROOT = Path(__file__).resolve().parent.parent
SESSION = {"session_id": "s-1", "user": "zoe", "host": "ws-zoe.example.com", "source_ip": "192.0.2.9"}

# One template per line of the list of generators, in a user file.
EVERY_KIND = """
pools:
  jump_hosts: [jump-01.example.com, jump-02.example.com]
  attacker_networks: [198.51.100.0/24, 2001:db8::/120]
  scripts: [/tmp/x.sh, /var/tmp/.hidden/run]
  shells: ["bash -i", "sh -c id"]
templates:
  - name: every_kind
    event_type: every_kind
    severity: WARNING
    action_result: FAILURE
    weight: 1
    server_hostname: {choice: "@jump_hosts"}
    details:
      pick: {choice: [a, b, c], weights: [0, 1, 0]}
      pooled: {choice: "@jump_hosts"}
      count: {int: [3, 5]}
      score: {float: [0.5, 0.75], digits: 3}
      cidr_ip: {ip: 10.1.0.0/30}
      pool_ip: {ip: "@attacker_networks"}
      digest: {hex: 12}
      trace: {uuid: true}
      path: {choice: "@scripts"}
      command: {choice: "@shells"}
      from_session: {session: source_ip, default: {ip: 203.0.113.0/24}}
      constant: {const: {k: [1]}}
      line: {format: "{user_id} ran {details.command} from {details.from_session}"}
"""
NOW = datetime(2026, 11, 27, 17, 46, 4, tzinfo=UTC)
ATTACKER_NETWORKS = ["198.51.100.0/24", "2001:db8::/120"]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def events(catalog: Catalog, event_type: str, n: int = 50, **kw: Any) -> list[dict[str, Any]]:
    f = EventFactory(catalog, random.Random(0), lambda: NOW)
    return [f.complete({"event_type": event_type}, **kw) for _ in range(n)]


def template(name: str, event_type: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "event_type": event_type or name,
        "severity": "INFO",
        "action_result": "SUCCESS",
        "weight": 1,
        "details": {},
        **fields,
    }


def test_a_yaml_file_adds_templates_with_every_kind_of_generator(tmp_path: Path) -> None:
    """Each declared generator in a user YAML file draws values of its kind; the built-ins remain."""
    catalog = load_catalog([write(tmp_path, "extra.yaml", EVERY_KIND)])
    assert catalog.event_types == Catalog.builtin().event_types | {"every_kind"}
    made = events(catalog, "every_kind", 200)
    for e in made:
        d = e["details"]
        assert e["server_hostname"] in ("jump-01.example.com", "jump-02.example.com")
        assert d["pick"] == "b" and d["pooled"] in ("jump-01.example.com", "jump-02.example.com")
        assert 3 <= d["count"] <= 5 and 0.5 <= d["score"] <= 0.75 and round(d["score"], 3) == d["score"]
        assert d["cidr_ip"] in ("10.1.0.1", "10.1.0.2")
        assert any(ipaddress.ip_address(d["pool_ip"]) in ipaddress.ip_network(n) for n in ATTACKER_NETWORKS)
        assert re.fullmatch(r"[0-9a-f]{12}", d["digest"]) and uuid.UUID(d["trace"]).version == 4
        assert d["path"] in ("/tmp/x.sh", "/var/tmp/.hidden/run") and d["command"] in ("bash -i", "sh -c id")
        assert ipaddress.ip_address(d["from_session"]) in ipaddress.ip_network("203.0.113.0/24")
        assert d["constant"] == {"k": [1]}
        assert d["line"] == f"{e['user_id']} ran {d['command']} from {d['from_session']}"
    assert {ipaddress.ip_address(e["details"]["pool_ip"]).version for e in made} == {4, 6}
    in_session = events(catalog, "every_kind", 1, session=SESSION)[0]
    assert in_session["details"]["from_session"] == "192.0.2.9"
    assert in_session["details"]["line"].endswith("from 192.0.2.9")


def test_json_and_yaml_files_of_the_same_data_load_the_same(tmp_path: Path) -> None:
    """The format is chosen by extension (.json, .yaml, .yml); the same data makes the same events."""
    data = yaml.safe_load(EVERY_KIND)
    paths = [
        write(tmp_path, "a.json", json.dumps(data)),
        write(tmp_path, "a.yml", EVERY_KIND),
        write(tmp_path, "a.YAML", EVERY_KIND),
    ]
    made = [events(load_catalog([p]), "every_kind", 20) for p in paths]
    assert made[0] == made[1] == made[2]


def test_a_file_replaces_builtin_templates_and_pools_by_name(tmp_path: Path) -> None:
    """A template named like a built-in one replaces it (same place, nothing added); a pool named like a
    built-in one replaces it for every template, built-in ones included."""
    replacement = template("user_login_success", "user_login", severity="NOTICE")
    text = json.dumps({"pools": {"hosts": ["only.example.com"]}, "templates": [replacement]})
    catalog = load_catalog([write(tmp_path, "override.json", text)])
    assert catalog.event_types == Catalog.builtin().event_types
    made = events(catalog, "user_login", 30)
    f = EventFactory(catalog, random.Random(1))
    assert {f.complete({"event_type": "user_login", "action_result": "SUCCESS"})["severity"]} == {"NOTICE"}
    assert {e["server_hostname"] for e in made} == {"only.example.com"}
    assert {f.generate()["server_hostname"] for _ in range(200)} == {"only.example.com"}


def test_files_apply_in_order_and_see_each_others_pools(tmp_path: Path) -> None:
    """The later file wins for a name both declare, and a template may use a pool of another file."""
    first = {"pools": {"regions": ["eu"]}, "templates": [template("t", severity="LOW")]}
    second = {"pools": {"zones": ["z1"]}, "templates": [template("t", severity="HIGH")]}
    second["templates"].append(
        template("u", details={"r": {"choice": "@regions"}, "z": {"choice": "@zones"}})
    )
    paths = [write(tmp_path, "1.json", json.dumps(first)), write(tmp_path, "2.json", json.dumps(second))]
    catalog = load_catalog(paths)
    assert {e["severity"] for e in events(catalog, "t", 5)} == {"HIGH"}
    assert events(catalog, "u", 1)[0]["details"] == {"r": "eu", "z": "z1"}


def test_the_replace_switch_uses_only_the_files(tmp_path: Path) -> None:
    """With replace, the built-in templates and pools are gone; the files must then bring hosts, users
    and at least one template."""
    own = {"pools": {"hosts": ["h"], "users": ["u"]}, "templates": [template("mine")]}
    catalog = load_catalog([write(tmp_path, "own.json", json.dumps(own))], replace=True)
    assert catalog.event_types == {"mine"}
    f = EventFactory(catalog, random.Random(0))
    assert {(e["server_hostname"], e["user_id"]) for e in (f.generate() for _ in range(20))} == {("h", "u")}
    no_users = write(tmp_path, "no_users.json", json.dumps({**own, "pools": {"hosts": ["h"]}}))
    with pytest.raises(TemplateError, match=f"^{re.escape(no_users)}: pools: missing required pool 'users'$"):
        load_catalog([no_users], replace=True)
    pools_only = write(tmp_path, "pools.yaml", "pools: {hosts: [h], users: [u]}")
    no_templates = re.escape(pools_only) + ": templates: expected at least one template$"
    with pytest.raises(TemplateError, match=no_templates):
        load_catalog([pools_only], replace=True)
    with pytest.raises(TemplateError, match="no templates file is named"):
        load_catalog([], replace=True)
    assert load_catalog([]) is Catalog.builtin()


def one_template(details: str, severity: str = "severity: W,", weight: str = "weight: 1,") -> str:
    """A YAML file of one template named brute with these details (and severity and weight lines)."""
    fields = f"name: brute, event_type: e, {severity} action_result: F, {weight} details: {details}"
    return f"templates:\n  - {{{fields}}}"


BAD_FILES: list[tuple[str, str, str]] = [
    ("f.txt", "{}", "{f}: unknown extension ('.txt'): expected .json, .yaml or .yml"),
    ("f", "{}", "{f}: unknown extension (none): expected .json, .yaml or .yml"),
    (
        "f.yaml",
        "templates:\n  - name: x\n    details: {a: [1,\n",
        "{f}: line 4, column 1: YAML syntax error: ",
    ),
    ("f.yaml", "pools: [a\n", "{f}: line 2, column 1: YAML syntax error: "),
    ("f.json", '{"templates": [}', "{f}: line 1, column 16: JSON syntax error: Expecting value"),
    ("f.json", '{"pools": {}, "pools": {}}', "{f}: duplicate key 'pools' in an object"),
    (
        "f.yaml",
        "templates:\n  - name: x\n    name: y\n",
        "{f}: line 3, column 5: YAML syntax error: while constructing a mapping found duplicate key 'name'",
    ),
    ("f.yaml", "- just\n- a list\n", "{f}: catalog: expected an object with 'pools' and 'templates'"),
    ("f.yaml", "", "{f}: catalog: expected an object"),
    ("f.yaml", "templates: {name: x}", "{f}: templates: expected a list of templates"),
    ("f.yaml", "pools: {hosts: [1]}", "{f}: pools.hosts: expected non-empty strings, got 1"),
    (
        "f.yaml",
        one_template("{source_ip: {ip: 10.0.0.1/8}}"),
        "{f}: template 'brute': details.source_ip: '10.0.0.1/8' is not a CIDR network",
    ),
    ("f.yaml", one_template("{}", weight=""), "{f}: template 'brute': weight: missing required key"),
    (
        "f.yaml",
        one_template("{}", severity="severity: 2026-01-02,"),
        "{f}: template 'brute': severity: expected a non-empty string, got datetime.date(2026, 1, 2)",
    ),
    (
        "f.yaml",
        one_template("{who: {session: user}}"),
        "{f}: template 'brute': details.who: session: missing 'default'",
    ),
    (
        "f.yaml",
        one_template("{cmd: {choice: '@comands'}}"),
        "{f}: template 'brute': details.cmd: unknown pool '@comands'",
    ),
    (
        "f.yaml",
        "templates:\n  - {event_type: e}",
        "{f}: templates[0]: name: missing required key",
    ),
    (
        "f.yaml",
        "pools:\n  client_networks: [not-a-network]",
        "auditgen/templates.json (built-in): template 'user_login_success': details.ip_address: default: "
        "pool '@client_networks' (declared in {f}): 'not-a-network' is not a CIDR network",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES, ids=[m for _, _, m in BAD_FILES])
def test_a_bad_file_is_refused_naming_file_template_field_and_expectation(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """Every mistake in a file is one TemplateError that starts with the file (and for content, the
    template and the field) and says what was expected."""
    path = write(tmp_path, name, text)
    with pytest.raises(TemplateError) as caught:
        load_catalog([path])
    assert str(caught.value).startswith(message.format(f=path)), str(caught.value)


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    """A missing file, a directory and a file that is not UTF-8 each get a clear error naming the path."""
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(TemplateError, match=f"^{re.escape(missing)}: cannot read the file: No such file"):
        load_catalog([missing])
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(TemplateError, match=f"^{re.escape(str(folder))}: cannot read the file: Is a dir"):
        load_catalog([str(folder)])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"pools: {hosts: [caf\xe9]}")
    with pytest.raises(TemplateError, match=f"^{re.escape(str(latin))}: expected UTF-8 text"):
        load_catalog([str(latin)])


# --- the twistd options ---


def parse(args: list[str]) -> Options:
    options = Options()
    options.parseOptions(args)
    return options


def test_options_load_the_files_and_a_bad_one_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--templates (or AUDITGEN_TEMPLATES) loads the files while options are parsed; a bad file is a
    UsageError (twistd exits non-zero) naming the file, the template and the field."""
    monkeypatch.delenv("AUDITGEN_TEMPLATES", raising=False)
    monkeypatch.delenv("AUDITGEN_TEMPLATES_REPLACE", raising=False)
    good = write(tmp_path, "good.yaml", EVERY_KIND)
    assert "every_kind" in parse(["--templates", good]).catalog.event_types
    assert parse([]).catalog is Catalog.builtin()
    bad = write(tmp_path, "bad.yaml", EVERY_KIND.replace("hex: 12", "hex: 0"))
    with pytest.raises(usage.UsageError) as caught:
        parse(["--templates", f"{good}, {bad}"])
    assert str(caught.value).startswith(
        f"templates: {bad}: template 'every_kind': details.digest: hex: expected"
    )
    monkeypatch.setenv("AUDITGEN_TEMPLATES", good)
    monkeypatch.setenv("AUDITGEN_TEMPLATES_REPLACE", "true")
    with pytest.raises(
        usage.UsageError, match=f"^templates: {re.escape(good)}: pools: missing required pool"
    ):
        parse([])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--templates", "a.yaml,,b.yaml"],
            "invalid --templates: 'a.yaml,,b.yaml': expected comma-separated",
        ),
        (["--templates-replace", "maybe"], "invalid --templates-replace: 'maybe': expected true or false"),
        (["--templates-replace", "true"], "templates: templates-replace is true, but no templates file"),
    ],
)
def test_bad_template_settings_are_usage_errors(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty path in the list, a replace switch that is not true/false, and replace without files."""
    monkeypatch.delenv("AUDITGEN_TEMPLATES", raising=False)
    monkeypatch.delenv("AUDITGEN_TEMPLATES_REPLACE", raising=False)
    with pytest.raises(usage.UsageError, match="^" + re.escape(message)):
        parse(args)


# --- the JSON Schema ---

SCHEMA = json.loads(resources.files("auditgen").joinpath("templates.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def docs_example() -> str:
    """The complete example file in the "Template files" section of docs/templates.md."""
    page = (ROOT / "docs" / "templates.md").read_text(encoding="utf-8")
    section = page[page.index("\n## Template files") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "the Template files section has a ```yaml example"
    return match.group(1)


def test_schema_is_valid_and_accepts_the_builtin_file_and_the_docs_example(tmp_path: Path) -> None:
    """The shipped schema is a valid 2020-12 schema; templates.json and the example of docs/templates.md pass
    it, and the example loads and makes events."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    VALIDATOR.validate(builtin_data())
    example = docs_example()
    VALIDATOR.validate(yaml.safe_load(example))
    catalog = load_catalog([write(tmp_path, "example.yaml", example)])
    f = EventFactory(catalog, random.Random(0))
    new_types = catalog.event_types - Catalog.builtin().event_types
    assert new_types
    for event_type in new_types:
        assert f.complete({"event_type": event_type})["details"]
        assert f.complete({"event_type": event_type}, session=SESSION)["details"]


def bad_detail(spec: Any) -> dict[str, Any]:
    return {"templates": [template("t", details={"x": spec})]}


BAD_DOCUMENTS: list[tuple[str, Callable[[], Any]]] = [
    ("a typo in a spec kind", lambda: bad_detail({"chioce": ["a"]})),
    ("two kinds in one spec", lambda: bad_detail({"int": [1, 2], "hex": 4})),
    ("a session without default", lambda: bad_detail({"session": "user"})),
    ("a session inside a default", lambda: bad_detail({"session": "a", "default": {"session": "b"}})),
    ("hex of 0 digits", lambda: bad_detail({"hex": 0})),
    ("uuid false", lambda: bad_detail({"uuid": False})),
    ("int with three numbers", lambda: bad_detail({"int": [1, 2, 3]})),
    ("a zero weight", lambda: {"templates": [template("t", weight=0)]}),
    ("a number user_id", lambda: {"templates": [template("t", user_id={"int": [1, 2]})]}),
    ("an unknown template key", lambda: {"templates": [template("t", sevrity="x")]}),
    (
        "a missing details",
        lambda: {"templates": [{k: v for k, v in template("t").items() if k != "details"}]},
    ),
    ("an unknown top-level key", lambda: {"pool": {}}),
    ("a bad pool name", lambda: {"pools": {"9lives": ["x"]}}),
    ("an empty pool", lambda: {"pools": {"hosts": []}}),
]


@pytest.mark.parametrize(("what", "document"), BAD_DOCUMENTS, ids=[w for w, _ in BAD_DOCUMENTS])
def test_bad_documents_are_rejected_by_both_the_schema_and_the_loader(
    tmp_path: Path, what: str, document: Callable[[], Any]
) -> None:
    """Schema and loader agree on these mistakes: both refuse the document."""
    data = document()
    assert not VALIDATOR.is_valid(data), what
    with pytest.raises(TemplateError):
        load_catalog([write(tmp_path, "bad.json", json.dumps(data))])
