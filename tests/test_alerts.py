"""Alerts in: the shapes a payload may have, the paths where an alert names events and keys, and what
counts as malformed."""

from __future__ import annotations

import pytest

from auditgen.verdicts.alerts import AlertFormat, lookup, parse_event_fields, parse_key_fields
from tests.support.verdicts import platform_alert


def test_platform_alert_names_its_event_once() -> None:
    """correlation_id and raw_event_data.event_id name the same event: it is listed once."""
    parsed = AlertFormat().parse(platform_alert("e1"), "amqp", 5.0)
    assert parsed.malformed == []
    [alert] = parsed.alerts
    assert (alert.event_ids, alert.source, alert.received) == (("e1",), "amqp", 5.0)


def test_array_of_alerts_and_a_list_of_ids() -> None:
    """An array holds several alerts; event_ids may be a list, and a string may list ids with commas."""
    parsed = AlertFormat().parse([{"event_ids": ["a", "b"]}, {"event_id": "c, d"}], "http", 0.0)
    assert [a.event_ids for a in parsed.alerts] == [("a", "b"), ("c", "d")]


def test_alertmanager_payload_reads_labels_and_annotations_and_skips_resolved() -> None:
    """An Alertmanager webhook's alerts carry ids in labels or annotations; a resolved one is no new alert."""
    payload = {
        "version": "4",
        "receiver": "auditgen",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "X", "correlation_id": "e1"}, "annotations": {}},
            {"status": "firing", "labels": {"alertname": "Y"}, "annotations": {"event_ids": "e2,e3"}},
            {"status": "resolved", "labels": {"correlation_id": "e9"}},
        ],
    }
    parsed = AlertFormat().parse(payload, "http", 0.0)
    assert [a.event_ids for a in parsed.alerts] == [("e1",), ("e2", "e3")]
    assert parsed.malformed == []


def test_key_fields_are_read_at_their_paths() -> None:
    """With a key mapping, an alert's keys are read from its paths; one naming no event is still an alert."""
    fmt = AlertFormat(
        event_fields=("correlation_id",),
        key_fields=parse_key_fields(
            "user_id=triggered_by.actor_id, server_hostname=impacted_resource.server_hostname"
        ),
    )
    alert = platform_alert("e1")
    del alert["correlation_id"]
    [parsed] = fmt.parse(alert, "amqp", 0.0).alerts
    assert parsed.event_ids == ()
    assert parsed.keys == {"user_id": "mallory", "server_hostname": "web-01"}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"correlation_id": 5}, "correlation_id must be an event id or a list of them, not 5"),
        ({"event_ids": ["a", 1]}, "event_ids must be an event id or a list of them"),
        ({"alert_name": "x"}, "names no event and no key"),
        ("text", "expected an alert object, an array of them or an Alertmanager payload"),
    ],
)
def test_malformed_alerts_are_reported_not_raised(payload: object, problem: str) -> None:
    """A malformed alert is a line in the result, saying what is wrong."""
    parsed = AlertFormat().parse(payload, "http", 0.0)
    assert parsed.alerts == []
    [line] = parsed.malformed
    assert problem in line


def test_one_bad_alert_does_not_hide_the_others() -> None:
    """In an array, the bad alert is reported by position and the good ones are kept."""
    parsed = AlertFormat().parse([{"event_id": "a"}, 7, {"event_id": "b"}], "http", 0.0)
    assert [a.event_ids for a in parsed.alerts] == [("a",), ("b",)]
    assert parsed.malformed == ["alert 1: expected an object, not 7"]


def test_settings_parsers_reject_empty_paths_and_bad_pairs() -> None:
    """The two settings' parsers say what they expected."""
    assert parse_event_fields("a, b.c") == ("a", "b.c")
    for bad in ("", "a,,b", "a..b"):
        with pytest.raises(ValueError, match="dotted paths"):
            parse_event_fields(bad)
    for bad in ("user_id", "=x", "user_id=", "a=b..c"):
        with pytest.raises(ValueError, match=r"key=dotted\.path"):
            parse_key_fields(bad)
    with pytest.raises(ValueError, match="mapped twice"):
        parse_key_fields("a=x,a=y")


def test_lookup_follows_objects_only() -> None:
    """A dotted path that meets a non-object ends in None."""
    assert lookup({"a": {"b": 1}}, "a.b") == 1
    assert lookup({"a": [1]}, "a.b") is None
