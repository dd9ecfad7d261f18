"""Hypothesis strategies for what a hostile or careless client may POST: any JSON, event objects with odd
fields, good events, and the odd values (huge numbers, lone surrogates, deep nesting) to put in them.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from hypothesis import strategies as st

from auditgen import checks, validation
from auditgen.events import SERVICE_FIELDS

TEMPLATES = json.loads(resources.files("auditgen").joinpath("templates.json").read_text())["templates"]
EVENT_TYPES = sorted({t["event_type"] for t in TEMPLATES})
RESULTS = sorted({t["action_result"] for t in TEMPLATES})
DETAIL_KEYS = sorted({k for t in TEMPLATES for k in t["details"]})
KNOWN_FIELDS = SERVICE_FIELDS | {"event_type", "details", *validation.TEXT_FIELD_LIMITS}


def mostly(
    usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int
) -> st.SearchStrategy[Any]:
    """usual, and rare about one time in one_in (one_of would pick each about as often)."""
    return st.sampled_from([False] * (one_in - 1) + [True]).flatmap(lambda r: rare if r else usual)


# Number literals json.dumps never writes: beyond a float (parsed as inf), beyond 64-bit integers, and
# extremes that are fine. A string "@raw:<literal>" is sent as the bare literal (see `encoded`).
RAW = "@raw:"
huge_floats = st.sampled_from(["1e400", "-1e400", "1E+999"]).map(lambda n: RAW + n)
huge_ints = st.sampled_from(["9223372036854775808", "-9223372036854775809", "1" * 30, "-" + "9" * 400]).map(
    lambda n: RAW + n
)
edge_numbers = st.sampled_from(["0.5e-400", "9223372036854775807", "-9223372036854775808", "1.7e308"]).map(
    lambda n: RAW + n
)

# Text, and text with a lone surrogate (hypothesis leaves those out by default).
plain_text = st.text(max_size=12)
some_text = st.text(min_size=1, max_size=12).filter(str.strip)
surrogate_text = st.tuples(
    plain_text, st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), plain_text
).map("".join)


def alternating(levels: int) -> Any:
    """Arrays and objects inside one another, levels deep."""
    value: Any = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


deep_values = st.integers(min_value=1, max_value=12).map(alternating)  # around MAX_NESTING_DEPTH


def json_of(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


# Anything JSON can say, and then some: NaN/Infinity, huge numbers, lone surrogates.
json_values = json_of(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**64)
    | st.integers(min_value=-(2**64), max_value=-(2**62))
    | st.floats()
    | huge_floats
    | huge_ints
    | edge_numbers
    | plain_text
    | surrogate_text,
    plain_text | surrogate_text,
)
# Values every consumer can hold, nested at most 4 deep (so a good event stays within the limits).
safe_values = json_of(
    st.none()
    | st.booleans()
    | st.integers(min_value=checks.MIN_INT, max_value=checks.MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text,
    plain_text,
).filter(lambda v: depth(v) <= 4)


def text_up_to(limit: int) -> st.SearchStrategy[str]:
    """Short text, or plain text around a field's length limit."""
    return mostly(some_text, st.integers(limit - 2, limit + 2).map(lambda n: "t" * n), 4)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field of the right kind most of the time, and any JSON value sometimes."""
    return mostly(strategy, json_values, 10)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """An object with an event_type (of a template, or not), known fields and extras, any of them odd."""
    fields = {
        "event_type": draw(maybe(st.sampled_from(EVENT_TYPES) | text_up_to(validation.MAX_EVENT_TYPE_CHARS)))
    }
    optional = {
        "server_hostname": maybe(text_up_to(validation.MAX_SERVER_HOSTNAME_CHARS)),
        "user_id": maybe(text_up_to(validation.MAX_USER_ID_CHARS)),
        "action_result": maybe(st.sampled_from(RESULTS) | text_up_to(validation.MAX_ACTION_RESULT_CHARS)),
        "severity": maybe(st.sampled_from(["INFO", "WARNING"]) | text_up_to(validation.MAX_SEVERITY_CHARS)),
        "details": maybe(st.dictionaries(st.sampled_from(DETAIL_KEYS) | plain_text, json_values, max_size=5)),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            fields[name] = draw(strategy)
    extras = st.dictionaries(plain_text | surrogate_text | st.just("x" * 129), json_values, max_size=3)
    many = st.integers(60, 66).map(lambda n: {f"f{i}": i for i in range(n)})  # around MAX_FIELDS
    fields.update(draw(mostly(extras, many, 10)))
    if draw(mostly(st.just(False), st.just(True), 20)):
        fields[draw(st.sampled_from(sorted(SERVICE_FIELDS)))] = draw(json_values)
    return fields


@st.composite
def good_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event well within every limit."""
    fields: dict[str, Any] = {"event_type": draw(st.sampled_from(EVENT_TYPES) | some_text)}
    for name in ("server_hostname", "user_id", "severity"):
        if draw(st.booleans()):
            fields[name] = draw(some_text)
    if draw(st.booleans()):
        fields["action_result"] = draw(st.sampled_from(RESULTS) | some_text)
    if draw(st.booleans()):
        fields["details"] = draw(
            st.dictionaries(st.sampled_from(DETAIL_KEYS) | plain_text, safe_values, max_size=4)
        )
    extra_names = plain_text.filter(lambda k: k not in KNOWN_FIELDS)
    fields.update(draw(st.dictionaries(extra_names, safe_values, max_size=3)))
    return fields


# One odd value put into a good event, and the phrase of the 400 it must get (None: it must be accepted).
ODD_VALUES: dict[str, tuple[st.SearchStrategy[Any], str | None]] = {
    "huge float": (huge_floats, "is a number too large for a 64-bit float"),
    "huge int": (huge_ints, "is an integer outside the signed 64-bit range"),
    "edge number": (edge_numbers, None),
    "lone surrogate": (surrogate_text, "unpaired UTF-16 surrogate"),
    "deep": (deep_values, "levels deep"),
}


def to_body(value: Any, ascii: bool = True) -> bytes:
    """value as JSON: ASCII-escaped, or UTF-8 (a lone surrogate then becomes invalid CESU-8 bytes)."""
    text = re.sub(f'"{RAW}([-+.0-9eE]+)"', r"\1", json.dumps(value, ensure_ascii=ascii))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A value as a client might send it, mostly ASCII-escaped."""
    return to_body(draw(values), ascii=draw(mostly(st.just(True), st.just(False), 3)))


# Mostly types read as JSON, sometimes one that gets 415 (no Content-Type at all too).
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "application/json; charset=utf-8", "application/vnd.audit+json"] * 3
    + ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz"]
)


def depth(value: Any) -> int:
    """How many objects/arrays are inside one another in value."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0
