"""Alerts in: one alert object, an array of them, or a Prometheus Alertmanager webhook payload.

An alert names the events that triggered it at configurable dotted paths (a string, a comma-separated
string, or a list of strings at each); the platform's analysis service puts the triggering event's id in
`correlation_id` and the whole event under `raw_event_data`. An alert that names no event may still carry
the grouping keys of a scenario (who, which host) at paths given by a key mapping. A malformed alert is
reported back and counted by the caller, never raised: one bad alert must not stop the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_EVENT_FIELDS = ("correlation_id", "raw_event_data.event_id", "event_id", "event_ids")
MAX_IDS_PER_ALERT = 10_000  # an alert naming more is malformed (a bound on what one alert costs)
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class Alert:
    """One alert as received: the events it names, the grouping keys it carries, and the alert itself."""

    event_ids: tuple[str, ...]
    keys: Mapping[str, str]
    body: Mapping[str, Any] = field(repr=False)
    source: str  # "amqp" or "http"
    received: float  # clock seconds when it arrived


@dataclass(frozen=True)
class Parsed:
    """What a payload held: the well-formed alerts, and a line about each malformed one."""

    alerts: list[Alert]
    malformed: list[str]


def parse_event_fields(text: str) -> tuple[str, ...]:
    """AUDITGEN_ALERT_EVENT_FIELDS: comma-separated dotted paths, none empty."""
    paths = tuple(p.strip() for p in text.split(","))
    if not all(paths) or any(not part for p in paths for part in p.split(".")):
        raise ValueError(
            "expected comma-separated dotted paths such as correlation_id,raw_event_data.event_id"
        )
    return paths


def parse_key_fields(text: str) -> dict[str, str]:
    """AUDITGEN_ALERT_KEY_FIELDS: comma-separated key=dotted.path pairs (user_id=triggered_by.actor_id)."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        key, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not key or not path or any(not part for part in path.split(".")):
            raise ValueError(
                f"expected comma-separated key=dotted.path pairs such as user_id=triggered_by.actor_id, "
                f"not {item.strip()!r}"
            )
        if key in mapping:
            raise ValueError(f"the key {key!r} is mapped twice")
        mapping[key] = path
    return mapping


def lookup(obj: Any, path: str) -> Any:
    """The value at a dotted path in nested objects, or None where the path leads nowhere."""
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _ids(value: Any) -> list[str] | None:
    """The event ids in a value found at an event path; None if it is neither a string nor strings."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def _show_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


class AlertFormat:
    """Where alerts name their events and keys; turns payloads into Alerts."""

    def __init__(
        self,
        event_fields: Sequence[str] = DEFAULT_EVENT_FIELDS,
        key_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.event_fields = tuple(event_fields)
        self.key_fields = dict(key_fields or {})

    def parse(self, payload: Any, source: str, received: float) -> Parsed:
        """Every alert in a decoded JSON payload; a payload of no known shape is one malformed alert."""
        alerts: list[Alert] = []
        malformed: list[str] = []
        items, where = _items(payload)
        if items is None:
            shapes = "an alert object, an array of them or an Alertmanager payload"
            return Parsed([], [f"expected {shapes}, not {_show_repr(payload)}"])
        for n, item in enumerate(items):
            if isinstance(item, Mapping) and item.get("status") == "resolved" and where == "alertmanager":
                continue  # the end of an alert already counted when it fired
            try:
                alerts.append(self._alert(item, source, received, where == "alertmanager"))
            except ValueError as e:
                malformed.append(f"alert {n}: {e}" if len(items) > 1 else str(e))
        return Parsed(alerts, malformed)

    def _alert(self, item: Any, source: str, received: float, alertmanager: bool) -> Alert:
        if not isinstance(item, Mapping):
            raise ValueError(f"expected an object, not {_show_repr(item)}")
        # Alertmanager puts what the rule knows in labels and annotations (string values only).
        scopes = [item, item.get("labels"), item.get("annotations")] if alertmanager else [item]
        ids: list[str] = []
        for path in self.event_fields:
            for scope in scopes:
                value = lookup(scope, path)
                if value is None:
                    continue
                found = _ids(value)
                if found is None:
                    raise ValueError(f"{path} must be an event id or a list of them, not {_show_repr(value)}")
                ids.extend(i for i in found if i not in ids)
        if len(ids) > MAX_IDS_PER_ALERT:
            raise ValueError(f"names {len(ids)} events; at most {MAX_IDS_PER_ALERT} are read")
        keys: dict[str, str] = {}
        for key, path in self.key_fields.items():
            for scope in scopes:
                value = lookup(scope, path)
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    keys[key] = str(value)
                    break
        if not ids and not keys:
            fields = ", ".join(self.event_fields + tuple(self.key_fields.values()))
            raise ValueError(f"names no event and no key (looked at {fields})")
        return Alert(tuple(ids), keys, item, source, received)


def _items(payload: Any) -> tuple[list[Any] | None, str]:
    """The alerts of a payload and its shape: "alertmanager", "array" or "object"."""
    if isinstance(payload, list):
        return payload, "array"
    if isinstance(payload, Mapping):
        if isinstance(payload.get("alerts"), list) and ("receiver" in payload or "version" in payload):
            return payload["alerts"], "alertmanager"
        return [payload], "object"
    return None, ""
