"""Events: the wire format, the built-in templates, the template format's interpreter and its validation."""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import pytest

from auditgen.events import (
    SERVICE_FIELDS,
    SOURCE_API,
    SOURCE_GENERATED,
    Catalog,
    EventFactory,
    TemplateError,
    encode,
)
from auditgen.events.stamps import WallStamps

EVENT_FIELDS = [
    "event_id",
    "timestamp",
    "source_service",
    "server_hostname",
    "event_type",
    "severity",
    "user_id",
    "action_result",
    "details",
]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIXED_NOW = datetime(2026, 11, 27, 17, 46, 4, 123456, tzinfo=UTC)
BUILTIN: dict[str, Any] = json.loads(
    resources.files("auditgen").joinpath("templates.json").read_text(encoding="utf-8")
)
POOLS: dict[str, list[Any]] = BUILTIN["pools"]
TEMPLATES: dict[str, dict[str, Any]] = {t["name"]: t for t in BUILTIN["templates"]}


def clock(now: datetime) -> Callable[[], datetime]:
    return lambda: now


def factory(catalog: Catalog | None = None, seed: int = 0) -> EventFactory:
    return EventFactory(catalog or Catalog.builtin(), random.Random(seed), clock(FIXED_NOW))


def catalog_of(*templates: dict[str, Any], **pools: list[Any]) -> Catalog:
    """A catalog of the given templates, with minimal required pools plus any given."""
    return Catalog.from_data(
        {"pools": {"hosts": ["h1"], "users": ["u1"], **pools}, "templates": list(templates)}
    )


def template(name: str = "t", weight: float = 1, **details: Any) -> dict[str, Any]:
    return {
        "name": name,
        "event_type": "test_event",
        "severity": "INFO",
        "action_result": "SUCCESS",
        "weight": weight,
        "details": details,
    }


def single_detail(spec: Any, n: int = 1, seed: int = 0, **pools: list[Any]) -> list[Any]:
    """The values n events get for one detail field with the given spec."""
    f = factory(catalog_of(template(x=spec), **pools), seed)
    return [f.generate()["details"]["x"] for _ in range(n)]


def in_networks(address: str, cidrs: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(c) for c in cidrs)


# --- the built-in templates ---


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_builtin_template_makes_well_formed_events(name: str) -> None:
    """Each built-in template alone gives events with exactly the wire fields, in order, of right types
    (and the top-level resource right after details when details have one)."""
    spec = TEMPLATES[name]
    f = EventFactory(Catalog.from_data({"pools": POOLS, "templates": [spec]}), random.Random(1))
    for _ in range(30):
        event = f.generate()
        assert list(event) == EVENT_FIELDS + (["resource"] if "resource" in spec["details"] else [])
        assert uuid.UUID(event["event_id"]).version == 4
        assert str(uuid.UUID(event["event_id"])) == event["event_id"]
        assert TIMESTAMP.fullmatch(event["timestamp"])
        assert event["source_service"] == SOURCE_GENERATED
        for field in ("server_hostname", "user_id"):
            assert isinstance(event[field], str) and event[field]
        assert (event["event_type"], event["severity"], event["action_result"]) == (
            spec["event_type"],
            spec["severity"],
            spec["action_result"],
        )
        assert list(event["details"]) == list(spec["details"])
        assert json.loads(encode(event)) == event


def test_builtin_catalog_has_the_expected_breadth() -> None:
    """The shipped catalog loads, has 15-25 templates, and its event types are those of its templates."""
    assert 15 <= len(TEMPLATES) <= 25
    assert len(TEMPLATES) == len(BUILTIN["templates"])  # names unique
    assert Catalog.builtin().event_types == {t["event_type"] for t in BUILTIN["templates"]}
    assert len(Catalog.builtin().event_types) >= 10


def test_template_values_are_the_severities_and_results_of_the_types_templates() -> None:
    """What the API compares a caller's severity and action_result with: the values of that event type's
    templates only, and nothing for an event type no template makes."""
    catalog = catalog_of(
        {**template("a"), "severity": "WARNING", "action_result": "DENIED"},
        template("b"),
        {**template("c"), "event_type": "other", "action_result": "FAILURE"},
    )
    assert catalog.template_values("test_event") == {
        "severity": {"INFO", "WARNING"},
        "action_result": {"DENIED", "SUCCESS"},
    }
    assert catalog.template_values("other") == {"severity": {"INFO"}, "action_result": {"FAILURE"}}
    assert catalog.template_values("nothing") == {}


def test_builtin_catalog_is_loaded_once() -> None:
    """builtin() is cached, so every factory shares one compiled catalog."""
    assert Catalog.builtin() is Catalog.builtin()


@pytest.mark.parametrize(
    ("event_type", "result", "severity", "keys"),
    [
        ("user_login", "FAILURE", "WARNING", ["reason", "ip_address", "protocol"]),
        ("user_login", "SUCCESS", "INFO", ["ip_address", "protocol"]),
        ("sudo_command", "SUCCESS", "INFO", ["command", "tty", "cwd"]),
        (
            "file_modified",
            "MODIFIED",
            "CRITICAL",
            ["resource", "old_checksum", "new_checksum", "size_change_bytes"],
        ),
        ("service_status_change", "STARTED", "INFO", ["resource", "previous_state", "message"]),
        ("service_status_change", "STOPPED", "WARNING", ["resource", "previous_state", "message"]),
        ("user_account_management", "CREATED", "INFO", ["resource", "group", "home_directory"]),
    ],
)
def test_legacy_templates_keep_their_exact_details(
    event_type: str, result: str, severity: str, keys: list[str]
) -> None:
    """The legacy service's event kinds exist with the same severity and exactly the same details keys."""
    f = factory()
    for _ in range(20):
        event = f.complete({"event_type": event_type, "action_result": result})
        assert event["severity"] == severity
        assert list(event["details"]) == keys


def test_builtin_values_come_from_the_pools() -> None:
    """Hosts, users, addresses, files, commands and checksums are drawn from the declared pools and shapes."""
    f = factory(seed=3)
    seen_types = set()
    for _ in range(2000):
        event = f.generate()
        d = event["details"]
        seen_types.add(event["event_type"])
        assert event["server_hostname"] in POOLS["hosts"]
        assert event["user_id"] in POOLS["users"]
        if "ip_address" in d:
            assert in_networks(d["ip_address"], POOLS["client_networks"])
        for key in ("old_checksum", "new_checksum"):
            if key in d:
                assert SHA256.fullmatch(d[key])
        if event["event_type"] == "file_modified":
            assert d["resource"] in POOLS["sensitive_files"]
            assert isinstance(d["size_change_bytes"], int)
        if event["event_type"] == "sudo_command":
            assert d["command"] in POOLS["sudo_commands"]
            assert d["tty"] in POOLS["ttys"]
        if event["event_type"] == "service_status_change":
            assert d["resource"] in POOLS["services"]
    assert seen_types == Catalog.builtin().event_types


def test_builtin_formats_keep_events_consistent() -> None:
    """Derived details agree with the fields they describe (home directory, service message, commands)."""
    f = factory(seed=5)
    checked: Counter[str] = Counter()
    for _ in range(3000):
        event = f.generate()
        d, kind = event["details"], event["event_type"]
        if kind == "user_account_management" and "home_directory" in d:
            assert d["home_directory"] == f"/home/{d['resource']}"
        elif kind == "service_status_change":
            assert d["resource"] in d["message"]
        elif kind == "permission_change":
            assert d["command"].startswith(d["operation"] + " ")
            assert d["command"].endswith(" " + d["resource"])
        elif kind == "ssh_key_added":
            assert d["resource"] == f"/home/{event['user_id']}/.ssh/authorized_keys"
        elif kind == "sudo_command" and event["action_result"] == "FAILURE":
            assert d["reason"].startswith(f"{event['user_id']} is not in the sudoers file")
        else:
            continue
        checked[kind] += 1
    assert len(checked) == 5


# --- the value specs ---


def test_ip_spec_leaves_out_network_and_broadcast_addresses() -> None:
    """A /30 gives only its two host addresses, a /32 its one address, and IPv6 networks work too."""
    assert set(single_detail({"ip": "192.168.7.0/30"}, 200)) == {"192.168.7.1", "192.168.7.2"}
    assert set(single_detail({"ip": "198.51.100.7/32"}, 20)) == {"198.51.100.7"}
    v6 = single_detail({"ip": "2001:db8::/120"}, 50)
    assert all(in_networks(a, ["2001:db8::/120"]) for a in v6)
    assert len(set(v6)) > 10


def test_ip_spec_draws_from_every_network_in_a_pool() -> None:
    """With a pool of CIDRs, addresses fall in those networks, and in each of them."""
    nets = ["10.20.0.0/16", "203.0.113.0/24", "192.168.50.0/24"]
    values = single_detail({"ip": "@nets"}, 300, nets=nets)
    for net in nets:
        assert any(in_networks(v, [net]) for v in values)
    assert all(in_networks(v, nets) for v in values)


def test_numeric_hex_and_uuid_specs_produce_their_shapes() -> None:
    """int is inclusive, float is rounded to its digits, hex has n digits, uuid is a version-4 UUID."""
    ints = single_detail({"int": [-2, 2]}, 300)
    assert set(ints) == {-2, -1, 0, 1, 2}
    floats = single_detail({"float": [0.5, 1.5], "digits": 1}, 100)
    assert all(0.5 <= x <= 1.5 and round(x, 1) == x for x in floats)
    assert all(isinstance(x, float) for x in single_detail({"float": [0, 10]}, 10))
    assert all(SHA256.fullmatch(x) for x in single_detail({"hex": 64}, 50))
    assert all(re.fullmatch(r"[0-9a-f]{5}", x) for x in single_detail({"hex": 5}, 50))
    ids = single_detail({"uuid": True}, 20)
    assert all(uuid.UUID(x).version == 4 for x in ids) and len(set(ids)) == 20


def test_constants_are_fresh_copies_for_every_event() -> None:
    """A caller editing one event's constant list or object cannot change the next event."""
    f = factory(catalog_of(template(tags=["a", "b"], meta={"const": {"k": [1]}}, n=None)))
    first = f.generate()["details"]
    first["tags"].append("x")
    first["meta"]["k"].append(2)
    second = f.generate()["details"]
    assert second == {"tags": ["a", "b"], "meta": {"k": [1]}, "n": None}


def test_format_reads_top_level_fields_and_earlier_formats() -> None:
    """Formats see top-level fields, plain details and formats declared before them; order is as declared."""
    spec = template(
        first={"format": "{details.a}!"},
        a={"choice": ["x"]},
        b={"format": "{user_id}@{server_hostname}:{details.a}"},
        c={"format": "{details.b}/{event_type}/{severity}/{action_result} {{literal}} {details.flag}"},
        flag=True,
    )
    details = factory(catalog_of(spec)).generate()["details"]
    assert details == {
        "first": "x!",
        "a": "x",
        "b": "u1@h1:x",
        "c": "u1@h1:x/test_event/INFO/SUCCESS {literal} true",
        "flag": True,
    }


def test_template_weights_set_how_often_each_is_chosen() -> None:
    """A template of weight 3 is chosen about three times as often as one of weight 1."""
    f = factory(catalog_of(template("light", 1, which="light"), template("heavy", 3, which="heavy")), seed=11)
    names = Counter(f.generate()["details"]["which"] for _ in range(4000))
    assert set(names) == {"light", "heavy"}
    assert 0.72 < names["heavy"] / 4000 < 0.78


def test_choice_weights_set_how_often_each_value_is_chosen() -> None:
    """Weighted choice follows its weights, and a value of weight 0 never appears."""
    values = Counter(single_detail({"choice": ["a", "b", "c"], "weights": [1, 9, 0]}, 3000, seed=2))
    assert set(values) == {"a", "b"}
    assert 0.87 < values["b"] / 3000 < 0.93


# --- sessions ---

SESSION = {"session_id": "s-1", "user": "zoe", "host": "ws-zoe.example.com", "source_ip": "192.0.2.9"}
FROM_SESSION = {"session": "source_ip", "default": {"ip": "10.9.0.0/24"}}


def in_session(
    f: EventFactory, session: dict[str, Any] | None, event_type: str = "test_event"
) -> dict[str, Any]:
    """An event of event_type in the session (None: in none), made as SessionMix makes its steps."""
    return f.complete({"event_type": event_type}, session=session)


def test_session_spec_copies_the_sessions_value_or_draws_its_default() -> None:
    """In a session that has the key, the session's value; without a session, or in one without the key,
    the default spec's value."""
    f = factory(catalog_of(template(x=FROM_SESSION)))
    assert in_session(f, SESSION)["details"]["x"] == "192.0.2.9"
    for session in (None, {"session_id": "s-2", "user": "u", "host": "h"}):
        values = [in_session(f, session)["details"]["x"] for _ in range(20)]
        assert all(in_networks(v, ["10.9.0.0/24"]) for v in values)


def test_session_values_are_seen_by_formats_and_copied_per_event() -> None:
    """A format built on a session detail uses the session's value; an object taken from the session is a
    copy, so editing one event changes neither the session nor the next event."""
    spec = template(
        x=FROM_SESSION,
        tags={"session": "tags", "default": []},
        line={"format": "login from {details.x}"},
    )
    f = factory(catalog_of(spec))
    session = {**SESSION, "tags": ["vpn"]}
    first = in_session(f, session)["details"]
    assert first["line"] == "login from 192.0.2.9"
    first["tags"].append("edited")
    assert session["tags"] == ["vpn"]
    assert in_session(f, session)["details"]["tags"] == ["vpn"]


def test_session_fills_host_and_user_unless_the_template_says_otherwise() -> None:
    """Templates without their own server_hostname/user_id take the session's host and user; a template
    with its own user_id keeps drawing it; the built-in logins use the session's address."""
    own_user = {**template("admin"), "user_id": {"choice": ["root"]}}
    f = factory(catalog_of(template("plain"), own_user), seed=2)
    events = [in_session(f, SESSION) for _ in range(40)]
    assert {e["server_hostname"] for e in events} == {"ws-zoe.example.com"}
    assert {e["user_id"] for e in events} == {"zoe", "root"}
    builtin = factory(seed=3)
    every_type = [in_session(builtin, SESSION, t) for t in sorted(Catalog.builtin().event_types) * 30]
    logins = [e for e in every_type if "ip_address" in e["details"]]
    assert {e["event_type"] for e in logins} == {"user_login", "user_logout"}
    assert all((e["user_id"], e["details"]["ip_address"]) == ("zoe", "192.0.2.9") for e in logins)


def test_a_session_does_not_shift_the_random_stream() -> None:
    """Seeded factories draw the same numbers with or without a session, so ids and templates match."""
    with_session = factory(seed=9)
    without = factory(seed=9)
    for event_type in sorted(Catalog.builtin().event_types) * 10:
        a, b = in_session(with_session, SESSION, event_type), in_session(without, None, event_type)
        assert (a["event_id"], a["event_type"], a["action_result"]) == (
            b["event_id"],
            b["event_type"],
            b["action_result"],
        )


def test_complete_uses_the_session_where_the_caller_gave_nothing() -> None:
    """complete() in a session fills host, user and session details from it; the caller's fields and
    details still win; an event type without a template takes host and user from the session too."""
    f = factory()
    event = f.complete({"event_type": "user_login", "action_result": "SUCCESS"}, session=SESSION)
    assert (event["server_hostname"], event["user_id"]) == ("ws-zoe.example.com", "zoe")
    assert event["details"]["ip_address"] == "192.0.2.9"
    fields = {"event_type": "user_login", "user_id": "amy", "details": {"ip_address": "198.51.100.1"}}
    event = f.complete(fields, session=SESSION)
    assert (event["user_id"], event["details"]["ip_address"]) == ("amy", "198.51.100.1")
    assert event["server_hostname"] == "ws-zoe.example.com"
    event = f.complete({"event_type": "custom_thing"}, session=SESSION)
    assert (event["server_hostname"], event["user_id"]) == ("ws-zoe.example.com", "zoe")


# --- the top-level resource ---


def test_a_resource_in_details_is_also_at_the_top_level_after_details() -> None:
    """Generated and completed events whose details name a resource carry it right after details too;
    details keep theirs, and events without one have no top-level resource."""
    f = factory(seed=4)
    seen: Counter[bool] = Counter()
    for _ in range(300):
        event = f.generate()
        has = "resource" in event["details"]
        seen[has] += 1
        assert list(event)[len(EVENT_FIELDS) :] == (["resource"] if has else [])
        if has:
            assert event["resource"] == event["details"]["resource"]
    assert seen[True] and seen[False]
    event = f.complete({"event_type": "custom", "details": {"resource": "/srv/x"}, "ticket": 1})
    assert list(event) == [*EVENT_FIELDS, "resource", "ticket"]
    assert event["resource"] == event["details"]["resource"] == "/srv/x"


def test_the_callers_top_level_resource_is_kept() -> None:
    """A caller who gives a top-level resource keeps it (still right after details); details keep the
    template's or the caller's own."""
    event = factory().complete({"event_type": "file_modified", "note": "n", "resource": "db-main"})
    assert event["resource"] == "db-main"
    assert event["details"]["resource"] in POOLS["sensitive_files"]
    assert list(event) == [*EVENT_FIELDS, "resource", "note"]
    event = factory().complete({"event_type": "user_login", "resource": "vpn"})
    assert "resource" not in event["details"] and event["resource"] == "vpn"


# --- reproducibility and the timestamp ---


def test_seeded_factories_repeat_exactly() -> None:
    """Same seed and clock give the same events, event_id included; different seeds give other events."""

    def run(seed: int) -> list[dict[str, Any]]:
        f = factory(seed=seed)
        out = [f.generate() for _ in range(200)]
        out += [f.complete({"event_type": t}) for t in ("user_login", "nope", "file_modified")]
        return out

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert len({e["event_id"] for e in first}) == len(first)
    assert [e["event_id"] for e in first] != [e["event_id"] for e in other]


def test_timestamp_is_utc_with_microseconds_and_z() -> None:
    """The clock's time is written in UTC with six fraction digits and a Z; naive times are taken as UTC."""
    cases = [
        (FIXED_NOW, "2026-11-27T17:46:04.123456Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2026-01-02T01:04:05.000000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 7), "2026-01-02T03:04:05.000007Z"),
    ]
    for now, expected in cases:
        f = EventFactory(Catalog.builtin(), random.Random(0), clock(now))
        assert f.generate()["timestamp"] == expected
        assert f.complete({"event_type": "x"})["timestamp"] == expected


def test_default_clock_is_the_current_utc_time() -> None:
    """Without a clock the timestamp is now, in UTC."""
    before = datetime.now(UTC).replace(tzinfo=None)
    stamp = EventFactory(Catalog.builtin()).generate()["timestamp"]
    after = datetime.now(UTC).replace(tzinfo=None)
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") <= after


def test_wall_stamps_read_as_datetimes_text_across_seconds() -> None:
    """The wall clock's stamps, whose second is formatted once a second, are datetime's own text for every
    nanosecond reading: at a second's first and last microsecond, as the second and the day roll over."""
    readings = iter(
        [
            1_764_265_564_000_000_000,  # 2025-11-27T17:46:04.000000
            1_764_265_564_999_999_999,
            1_764_265_565_000_000_999,  # the next second: formatted anew
            1_767_225_599_123_456_789,  # 2025-12-31T23:59:59.123456
            1_767_225_600_000_001_000,  # the new year
            1_767_225_599_500_000_000,  # a clock stepped back: still right
        ]
    )
    stamps = WallStamps(lambda: next(readings))
    for ns in (
        1_764_265_564_000_000_000,
        1_764_265_564_999_999_999,
        1_764_265_565_000_000_999,
        1_767_225_599_123_456_789,
        1_767_225_600_000_001_000,
        1_767_225_599_500_000_000,
    ):
        moment = datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC).replace(
            microsecond=ns // 1000 % 1_000_000
        )
        assert stamps() == moment.isoformat(timespec="microseconds")[:-6] + "Z"


# --- complete() ---


def test_complete_fills_missing_fields_from_a_template() -> None:
    """Given only an event_type, the event gets that type's severity, result, details, host and user."""
    event = factory().complete({"event_type": "file_modified"})
    assert list(event) == [*EVENT_FIELDS, "resource"]
    assert event["source_service"] == SOURCE_API
    assert (event["severity"], event["action_result"]) == ("CRITICAL", "MODIFIED")
    assert list(event["details"]) == ["resource", "old_checksum", "new_checksum", "size_change_bytes"]
    assert event["server_hostname"] in POOLS["hosts"]
    assert event["user_id"] in POOLS["users"]


def test_complete_keeps_every_field_the_caller_gave() -> None:
    """The caller's host, user, severity and result are kept as given, even where a template disagrees."""
    fields = {
        "event_type": "user_login",
        "server_hostname": "my-host",
        "user_id": "zoe",
        "severity": "CRITICAL",
        "action_result": "SUCCESS",
    }
    event = factory().complete(fields)
    assert {k: event[k] for k in fields} == fields
    assert list(event["details"]) == ["ip_address", "protocol"]


def test_complete_merges_caller_details_over_the_templates() -> None:
    """Caller details win over generated ones, generated keys stay, and the caller's new keys come last."""
    event = factory().complete(
        {"event_type": "file_modified", "details": {"ticket": "CHG-1", "resource": "/etc/motd"}}
    )
    d = event["details"]
    assert list(d) == ["resource", "old_checksum", "new_checksum", "size_change_bytes", "ticket"]
    assert d["resource"] == "/etc/motd" and d["ticket"] == "CHG-1"
    assert SHA256.fullmatch(d["old_checksum"])


def test_complete_builds_formats_from_the_callers_values() -> None:
    """A derived detail follows the caller's value it derives from, unless the caller gave it too."""
    f = factory()
    created = {"event_type": "user_account_management", "action_result": "CREATED"}
    event = f.complete({**created, "details": {"resource": "zoe"}})
    assert event["details"]["home_directory"] == "/home/zoe"
    event = f.complete({**created, "details": {"resource": "zoe", "home_directory": "/srv/zoe"}})
    assert event["details"]["home_directory"] == "/srv/zoe"
    event = f.complete({"event_type": "ssh_key_added", "user_id": "zoe"})
    assert event["details"]["resource"] == "/home/zoe/.ssh/authorized_keys"
    chained = template(a="x", b={"format": "{details.a}-b"}, c={"format": "{details.b}-c"})
    event = factory(catalog_of(chained)).complete({"event_type": "test_event", "details": {"b": "given"}})
    assert event["details"] == {"a": "x", "b": "given", "c": "given-c"}


def test_complete_prefers_a_template_with_the_callers_action_result() -> None:
    """With action_result given, the template for that result is used (its severity and details)."""
    f = factory(seed=4)
    for _ in range(30):
        failure = f.complete({"event_type": "user_login", "action_result": "FAILURE"})
        assert failure["severity"] == "WARNING" and "reason" in failure["details"]
        success = f.complete({"event_type": "user_login", "action_result": "SUCCESS"})
        assert success["severity"] == "INFO" and "reason" not in success["details"]


def test_complete_with_an_unmatched_action_result_still_uses_the_types_templates() -> None:
    """An action_result no template has is kept, and details come from one of the event type's templates."""
    f = factory(seed=6)
    shapes = set()
    for _ in range(100):
        event = f.complete({"event_type": "user_login", "action_result": "TIMEOUT"})
        assert event["action_result"] == "TIMEOUT"
        assert "ip_address" in event["details"]
        shapes.add(event["severity"])
    assert shapes == {"INFO", "WARNING"}


def test_complete_with_an_unknown_event_type_uses_plain_defaults() -> None:
    """No template for the type: INFO, SUCCESS, empty (or the caller's) details, host and user from pools."""
    f = factory()
    event = f.complete({"event_type": "custom_thing"})
    assert (event["severity"], event["action_result"], event["details"]) == ("INFO", "SUCCESS", {})
    assert event["server_hostname"] in POOLS["hosts"] and event["user_id"] in POOLS["users"]
    assert list(event) == EVENT_FIELDS
    given = {"k": [1, 2]}
    event = f.complete({"event_type": "custom_thing", "details": given, "severity": "ERROR"})
    assert event["details"] == given and event["details"] is not given
    assert event["severity"] == "ERROR"


def test_complete_keeps_extra_fields_after_the_wire_fields() -> None:
    """Top-level fields the service does not know are kept as given, in the caller's order, after details."""
    event = factory().complete({"zeta": 1, "event_type": "user_logout", "alpha": {"nested": [None]}})
    assert list(event) == [*EVENT_FIELDS, "zeta", "alpha"]
    assert event["zeta"] == 1 and event["alpha"] == {"nested": [None]}


def test_service_fields_are_always_assigned_by_the_service() -> None:
    """event_id, timestamp and source_service come from the factory, never from caller fields."""
    assert {"event_id", "timestamp", "source_service"} == SERVICE_FIELDS
    fields = {"event_type": "user_login", "event_id": "mine", "timestamp": "then", "source_service": "me"}
    event = factory().complete(fields)
    assert event["event_id"] != "mine" and uuid.UUID(event["event_id"]).version == 4
    assert event["timestamp"] == "2026-11-27T17:46:04.123456Z"
    assert event["source_service"] == SOURCE_API
    assert factory().generate()["source_service"] == SOURCE_GENERATED


# --- encode() ---


def test_encode_is_compact_utf8_json_that_round_trips() -> None:
    """encode() writes JSON without spaces, keeps non-ASCII as UTF-8, and decodes back to the same event."""
    event = factory().complete({"event_type": "note", "details": {"text": "café ✓", "n": [1, 2]}})
    body = encode(event)
    assert json.loads(body.decode("utf-8")) == event
    assert "café ✓".encode() in body
    assert b"\\u" not in body
    assert b": " not in body and b", " not in body
    assert body.startswith(b'{"event_id":')


# --- validation ---


def base() -> dict[str, Any]:
    """Valid data; each bad case below changes one thing in it."""
    return {
        "pools": {"hosts": ["h1"], "users": ["u1"], "nets": ["10.0.0.0/24"]},
        "templates": [
            {
                "name": "login",
                "event_type": "user_login",
                "severity": "INFO",
                "action_result": "SUCCESS",
                "weight": 1,
                "details": {"ip_address": {"ip": "@nets"}, "x": "constant"},
            }
        ],
    }


def with_detail(spec: Any) -> dict[str, Any]:
    data = base()
    data["templates"][0]["details"]["x"] = spec
    return data


def with_template(**changes: Any) -> dict[str, Any]:
    data = base()
    data["templates"][0].update(changes)
    return data


def without(key: str) -> dict[str, Any]:
    data = base()
    del data["templates"][0][key]
    return data


def with_pools(**pools: Any) -> dict[str, Any]:
    data = base()
    data["pools"].update(pools)
    return data


def twice() -> dict[str, Any]:
    data = base()
    data["templates"].append(copy.deepcopy(data["templates"][0]))
    return data


def second_unnamed() -> dict[str, Any]:
    data = twice()
    del data["templates"][1]["name"]
    return data


def missing_pool() -> dict[str, Any]:
    data = base()
    del data["pools"]["users"]
    return data


T = "template 'login': "
BAD_DATA = [
    (with_detail({"ip": "@nope"}), T + "details.x: unknown pool '@nope'"),
    (with_detail({"ip": "10.0.0.1/24"}), T + "details.x: '10.0.0.1/24' is not a CIDR network"),
    (
        with_detail({"ip": "300.1.0.0/16"}),
        T + "details.x: '300.1.0.0/16' is not a CIDR network",
    ),
    (with_detail({"ip": 10}), T + "details.x: expected a CIDR string"),
    (with_pools(nets=["10.0.0.0/33"]), T + "details.ip_address: pool '@nets': '10.0.0.0/33' is not a CIDR"),
    (with_detail({"int": [5, 1]}), T + "details.x: int: expected lo <= hi"),
    (with_detail({"int": [1.5, 3]}), T + "details.x: int: expected [lo, hi], two integers"),
    (with_detail({"int": [True, 3]}), T + "details.x: int: expected [lo, hi], two integers"),
    (with_detail({"float": [0, "a"]}), T + "details.x: float: expected [lo, hi], two numbers"),
    (
        with_detail({"float": [0, 1], "digits": -1}),
        T + "details.x: digits: expected an integer",
    ),
    (with_detail({"hex": 0}), T + "details.x: hex: expected a number of digits"),
    (with_detail({"uuid": False}), T + "details.x: uuid: expected true"),
    (with_detail({"choice": ["a"], "weight": [1]}), T + "details.x: unknown key 'weight' in a 'choice' spec"),
    (with_detail({"int": [1, 2], "digits": 2}), T + "details.x: unknown key 'digits' in a 'int' spec"),
    (with_detail({"chioce": ["a"]}), T + "details.x: expected a spec with exactly one of"),
    (with_detail({"int": [1, 2], "hex": 4}), T + "details.x: expected a spec with exactly one of"),
    (with_detail({"choice": []}), T + "details.x: choice: expected a non-empty list"),
    (
        with_detail({"choice": "nets"}),
        T + "details.x: choice: expected a non-empty list or a pool",
    ),
    (
        with_detail({"choice": ["a", "b"], "weights": [1]}),
        T + "details.x: weights: expected a list of 2 numbers",
    ),
    (with_detail({"choice": ["a", "b"], "weights": [0, 0]}), T + "details.x: weights: expected non-negative"),
    (
        with_detail({"choice": ["a", "b"], "weights": [1, -1]}),
        T + "details.x: weights: expected non-negative",
    ),
    (with_detail({"format": "{details.nope}"}), T + "details.x: format: unknown field {details.nope}"),
    (with_detail({"format": "{hostname}"}), T + "details.x: format: unknown field {hostname}"),
    (with_detail({"format": "{0}"}), T + "details.x: format: unknown field {0}"),
    (with_detail({"format": "{user_id!r}"}), T + "details.x: format: placeholder {user_id} may not have"),
    (with_detail({"format": "{user_id:>9}"}), T + "details.x: format: placeholder {user_id} may not have"),
    (with_detail({"format": "{user_id"}), T + "details.x: format: "),
    (with_detail({"format": 3}), T + "details.x: format: expected a string"),
    (with_detail(float("nan")), T + "details.x: expected a finite number"),
    (with_detail({"const": {1: "a"}}), T + "details.x: object keys must be strings"),
    (
        with_template(user_id={"format": "{server_hostname}"}),
        T + "user_id: format specs are only",
    ),
    (with_template(user_id={"int": [1, 2]}), T + "user_id: expected a spec producing strings"),
    (with_template(user_id={"choice": ["a", 1]}), T + "user_id: choice: expected strings"),
    (
        with_template(user_id={"session": "user", "default": {"int": [1, 2]}}),
        T + "user_id: default: expected a spec producing strings",
    ),
    (with_detail({"session": "source_ip"}), T + "details.x: session: missing 'default'"),
    (with_detail({"session": "", "default": "x"}), T + "details.x: session: expected the name of"),
    (with_detail({"session": ["user"], "default": "x"}), T + "details.x: session: expected the name of"),
    (
        with_detail({"session": "user", "defaults": "x"}),
        T + "details.x: unknown key 'defaults' in a 'session' spec (allowed: default)",
    ),
    (
        with_detail({"session": "a", "default": {"session": "b", "default": "x"}}),
        T + "details.x: default: session specs are only allowed as a field's own spec",
    ),
    (
        with_detail({"session": "a", "default": {"format": "{user_id}"}}),
        T + "details.x: default: format specs are only allowed as a detail's own spec",
    ),
    (with_detail({"session": "a", "default": {"ip": "@nope"}}), T + "details.x: default: unknown pool"),
    (with_template(server_hostname=5), T + "server_hostname: expected a string, got 5"),
    (with_template(weight=0), T + "weight: expected a positive number, got 0"),
    (with_template(weight=True), T + "weight: expected a positive number, got True"),
    (with_template(weight="2"), T + "weight: expected a positive number"),
    (with_template(severity=""), T + "severity: expected a non-empty string"),
    (with_template(sevrity="INFO"), T + "unknown key 'sevrity'"),
    (with_template(details=["x"]), T + "details: expected an object"),
    (with_template(name=""), "templates[0]: name: expected a non-empty string"),
    (without("event_type"), T + "event_type: missing required key"),
    (without("weight"), T + "weight: missing required key"),
    (without("details"), T + "details: missing required key"),
    (without("name"), "templates[0]: name: missing required key"),
    (twice(), T + "name: duplicate template name (also templates[0])"),
    (second_unnamed(), "templates[1]: name: missing required key"),
    (missing_pool(), "pools: missing required pool 'users'"),
    (with_pools(nets=[]), "pools.nets: expected a non-empty list"),
    (with_pools(hosts=["ok", ""]), "pools.hosts: expected non-empty strings"),
    (with_pools(**{"9lives": ["x"]}), "pools: pool name '9lives'"),
    ({**base(), "templates": []}, "templates: expected at least one template"),
    ({"templates": base()["templates"]}, "pools: missing required pool 'hosts'"),
    ({**base(), "extra": 1}, "catalog: unknown key 'extra'"),
    ({**base(), "templates": ["login"]}, "templates[0]: expected an object"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DATA, ids=[m for _, m in BAD_DATA])
def test_bad_template_data_is_refused_naming_template_and_field(data: dict[str, Any], message: str) -> None:
    """Load-time validation rejects the mistake with a TemplateError that says where and what was expected."""
    with pytest.raises(TemplateError, match="^" + re.escape(message)):
        Catalog.from_data(data)


def test_base_data_for_the_bad_cases_is_valid() -> None:
    """The bad cases fail because of their one change: the data they start from loads and generates."""
    event = factory(Catalog.from_data(base())).generate()
    assert event["details"]["x"] == "constant"
    assert in_networks(event["details"]["ip_address"], ["10.0.0.0/24"])


def test_template_error_is_a_value_error() -> None:
    """Callers that catch ValueError for bad input also catch bad templates."""
    assert issubclass(TemplateError, ValueError)
