"""What a caller may send to POST /generate_event and PUT /generator, checked before anything is done.

Each refusal is a 400 naming the field and the limit, so a caller can fix the request. What can be sent
but looks like a mistake (a typo in a field name, a value no template has) is a warning in the answer,
or a 400 with ?strict=true.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditgen.checks import (
    CheckError,
    check_json_value,
    closest,
    finite_number,
    has_lone_surrogate,
    parse_json_text,
    show,
    show_name,
)
from auditgen.config import MAX_RATE
from auditgen.events import SERVICE_FIELDS, Catalog
from auditgen.shapes import PARAMETERS, SHAPES

# -- Limits on what a caller may send. Each refusal is a 400 (413 for the body) naming the field and limit.
DEFAULT_MAX_BODY_BYTES = 1_048_576  # AUDITGEN_MAX_BODY_BYTES; the whole request body
MAX_EVENT_TYPE_CHARS = 64
MAX_SEVERITY_CHARS = 64
MAX_ACTION_RESULT_CHARS = 64
MAX_SERVER_HOSTNAME_CHARS = 255  # a DNS name
MAX_USER_ID_CHARS = 256
MAX_FIELDS = 64  # top-level fields of the body, event_type included
MAX_FIELD_NAME_CHARS = 128  # names of top-level fields
MAX_NESTING_DEPTH = 8  # objects/arrays inside one another in a field's value; `details` itself is level 1
MAX_DETAILS_BYTES = 64 * 1024  # `details` as sent to the broker (compact UTF-8 JSON)

TEXT_FIELD_LIMITS = {
    "event_type": MAX_EVENT_TYPE_CHARS,
    "server_hostname": MAX_SERVER_HOSTNAME_CHARS,
    "user_id": MAX_USER_ID_CHARS,
    "action_result": MAX_ACTION_RESULT_CHARS,
    "severity": MAX_SEVERITY_CHARS,
}
OPTIONAL_TEXT_FIELDS = ("server_hostname", "user_id", "action_result", "severity")
EVENT_FIELDS = frozenset({"event_type", "details", *OPTIONAL_TEXT_FIELDS, *SERVICE_FIELDS})
MAX_BULK_COUNT = 10_000  # events one POST /generate_event?count=N may create


class BadRequest(ValueError):
    """The request body cannot become an event; the message tells the caller why."""


def _query(args: Mapping[bytes, list[bytes]], name: str) -> bytes | None:
    """The one value of a query parameter; None when absent."""
    values = args.get(name.encode())
    if values is None:
        return None
    if len(values) != 1:
        raise BadRequest(f"{name} must be given once")
    return values[0]


def parse_count(args: Mapping[bytes, list[bytes]]) -> int | None:
    """The bulk trigger's ?count=N, from 1 to MAX_BULK_COUNT; None when absent."""
    value = _query(args, "count")
    if value is None:
        return None
    try:
        count = int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"count must be a whole number from 1 to {MAX_BULK_COUNT}") from None
    if not 1 <= count <= MAX_BULK_COUNT:
        raise BadRequest(f"count must be a whole number from 1 to {MAX_BULK_COUNT}")
    return count


def _check_limits(fields: dict[str, Any]) -> None:
    """The size limits of an event, and values that JSON allows but the wire or consumers do not."""
    for name, value in fields.items():
        if len(name) > MAX_FIELD_NAME_CHARS:
            raise BadRequest(
                f"field name {show_name(name)} is longer than {MAX_FIELD_NAME_CHARS} characters ({len(name)})"
            )
        if has_lone_surrogate(name):
            raise BadRequest(
                f"field name {show_name(name)} contains an unpaired UTF-16 surrogate, which cannot be "
                "encoded as UTF-8"
            )
        try:
            check_json_value(value, show_name(name), MAX_NESTING_DEPTH)
        except CheckError as e:
            raise BadRequest(str(e)) from None
    details = fields.get("details")
    if details is not None:
        size = len(json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_DETAILS_BYTES:
            raise BadRequest(f"details is {size} bytes as JSON; at most {MAX_DETAILS_BYTES} bytes (64 KiB)")


def parse_json_object(body: bytes, expected: str = "a JSON object") -> dict[str, Any]:
    """The body as a JSON object: UTF-8, no duplicate keys, no NaN or Infinity."""
    value = parse_json(body, expected)
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(value).__name__}")
    return value


def parse_json(body: bytes, expected: str) -> Any:
    """The body as any JSON value: UTF-8, no duplicate keys, no NaN or Infinity."""
    if not body.strip():
        raise BadRequest(f"request body is empty; expected {expected}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    try:
        return parse_json_text(text, "request body")
    except CheckError as e:
        raise BadRequest(str(e)) from None


def parse_strict(args: Mapping[bytes, list[bytes]], default: bool) -> bool:
    """?strict=true or false: whether warnings are refused (400) instead of answered; default if absent."""
    value = _query(args, "strict")
    if value is None:
        return default
    if value not in (b"true", b"false"):
        raise BadRequest("strict must be true or false")
    return value == b"true"


@dataclass(frozen=True)
class EventRequest:
    """A POST /generate_event body, checked."""

    fields: dict[str, Any]
    """The caller's fields, those the service assigns left out: what EventFactory.complete takes."""
    replaced: tuple[str, ...]
    """The fields the service assigns (event_id, timestamp, source_service) that the caller sent anyway,
    which get the service's own values, as with the legacy service (a client may replay whole events)."""


def parse_event_request(body: bytes) -> EventRequest:
    """The caller's fields, checked: a JSON object with a non-empty string event_type and typed extras.

    Whatever passes can be completed, encoded and published: a caller's mistake is a 400 here, never a
    500 later. Fields the service assigns are set aside unread, whatever their values: they are replaced.
    """
    fields = parse_json_object(body, "a JSON object with an event_type")
    if len(fields) > MAX_FIELDS:
        raise BadRequest(
            f"too many fields: {len(fields)}; an event has at most {MAX_FIELDS} top-level fields"
        )
    replaced = tuple(sorted(SERVICE_FIELDS.intersection(fields)))
    for name in replaced:
        del fields[name]
    event_type = fields.get("event_type")
    if event_type is None:
        raise BadRequest("event_type is required")
    if not isinstance(event_type, str) or not event_type.strip():
        raise BadRequest("event_type must be a non-empty string")
    for name in OPTIONAL_TEXT_FIELDS:
        if name in fields and (not isinstance(fields[name], str) or not fields[name].strip()):
            raise BadRequest(f"{name} must be a non-empty string")
    for name, limit in TEXT_FIELD_LIMITS.items():
        if name in fields and len(fields[name]) > limit:
            raise BadRequest(f"{name} is longer than {limit} characters ({len(fields[name])})")
    if "details" in fields and not isinstance(fields["details"], dict):
        raise BadRequest("details must be a JSON object")
    _check_limits(fields)
    return EventRequest(fields, replaced)


def event_warnings(fields: Mapping[str, Any], catalog: Catalog) -> list[str]:
    """What looks like a mistake in checked fields, though they can be sent as they are: a field name
    like a known one ("actoin_result"), an event type no template makes, a severity or action_result
    none of the event type's templates gives ("failure" where they say FAILURE)."""
    warnings = []
    for name in fields:
        if name not in EVENT_FIELDS and (known := closest(name, EVENT_FIELDS)) is not None:
            warnings.append(
                f"{show_name(name)} is not an event field (it is sent as an extra); did you mean {known}?"
            )
    event_type: str = fields["event_type"]
    values = catalog.template_values(event_type)
    if not values:
        hint = closest(event_type, catalog.event_types)
        warnings.append(
            f"no template makes event_type {show(event_type)}, so the fields left out get plain "
            f"defaults (severity INFO, action_result SUCCESS, no details){_did_you_mean(hint)}"
        )
    for name in ("action_result", "severity"):
        given = fields.get(name)
        if name in values and given is not None and given not in values[name]:
            allowed = sorted(values[name])
            consequence = ", so the details come from any of them" if name == "action_result" else ""
            warnings.append(
                f"{name} {show(given)} is none of those of the {event_type} templates "
                f"({', '.join(allowed)}){consequence}{_did_you_mean(closest(given, allowed))}"
            )
    return warnings


def _did_you_mean(known: str | None) -> str:
    return "" if known is None else f"; did you mean {show(known)}?"


GENERATOR_FIELDS = ("rate", "shape", "paused", *PARAMETERS)


def parse_generator_request(body: bytes) -> dict[str, Any]:
    """The changes PUT /generator asks for, every one checked, so that all or none are applied."""
    expected = f"any of {', '.join(GENERATOR_FIELDS)}"
    changes = parse_json_object(body, f"a JSON object with {expected}")
    for name in changes:
        if name not in GENERATOR_FIELDS:
            raise BadRequest(f"unknown field {show_name(name)}; expected {expected}")
    if not changes:
        raise BadRequest(f"nothing to change; expected {expected}")
    if "rate" in changes:
        rate = finite_number(changes["rate"])
        if rate is None or not 0 <= rate <= MAX_RATE:
            shown = show(changes["rate"])
            raise BadRequest(f"rate must be events per second from 0 (off) to {MAX_RATE}, not {shown}")
        changes["rate"] = rate
    if "shape" in changes and changes["shape"] not in SHAPES:
        raise BadRequest(f"shape must be one of {', '.join(SHAPES)}, not {show(changes['shape'])}")
    if "paused" in changes and not isinstance(changes["paused"], bool):
        raise BadRequest(f"paused must be true or false, not {show(changes['paused'])}")
    for name, check in PARAMETERS.items():
        if name in changes:
            value = finite_number(changes[name])
            try:
                if value is None:
                    raise ValueError("expected a number")
                changes[name] = check(value)
            except ValueError as e:
                raise BadRequest(f"{name}: {e}, not {show(changes[name])}") from None
    return changes
