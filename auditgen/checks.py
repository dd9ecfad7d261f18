"""Checks of JSON values, free of HTTP types: typed values (kind, range, allowed values) with the JSON Schema
that says the same, strict JSON text (no duplicate keys, NaN or Infinity), values that Java and JS consumers
can read (64-bit integers, finite floats, no lone surrogates, bounded nesting), and how names and values are
shown in messages and hints.

Shared by everything that takes JSON from a caller or a file (the API's validation.py, the scenarios); a
refusal is a CheckError, so the layer that answers decides how it is shown (validation.py and web.py make
it a 400). A check and its schema come from one object, so a schema-valid value is an accepted one.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("integer", "number", "string", "boolean")
MAX_STRING_CHARS = 255  # a DNS name: the longest of the values a string stands for (hosts, users, paths)
# A string: something besides white space, and no control characters (ASCII or C1).
TEXT_PATTERN = "^(?=.*\\S)[^\\x00-\\x1f\\x7f-\\x9f]+$"
_TEXT = re.compile(TEXT_PATTERN)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # cannot be encoded as UTF-8
_SHOWN_VALUE_CHARS = 40
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MIN_INT = -(2**63)  # integers must fit a signed 64-bit integer: Java's long, and what JS
MAX_INT = 2**63 - 1  # consumers can at least read with a BigInt-aware parser
NAME_CUTOFF = 0.8  # how alike (difflib's ratio, letter case ignored) a name must be to be taken for a typo


class CheckError(ValueError):
    """A value is not what was expected; the message starts with the path to it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def show(value: Any, limit: int = _SHOWN_VALUE_CHARS) -> str:
    """A value as JSON for a message, shortened (ASCII, so even a lone surrogate can be shown)."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def show_name(name: str) -> str:
    """A caller-chosen name (a key) for a message: shortened, and JSON-quoted unless it is plain."""
    if _PLAIN_NAME.fullmatch(name) and len(name) <= _SHOWN_VALUE_CHARS:
        return name
    if len(name) > _SHOWN_VALUE_CHARS:
        name = name[:_SHOWN_VALUE_CHARS] + "..."
    return json.dumps(name)  # ASCII, so even a lone surrogate in it can be shown


def has_lone_surrogate(text: str) -> bool:
    """text holds an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape): it cannot be UTF-8."""
    return _LONE_SURROGATE.search(text) is not None


def closest(word: str, known: Iterable[str], cutoff: float = NAME_CUTOFF) -> str | None:
    """The known word that `word` most looks like, letter case ignored ("actoin_result" for action_result,
    "failure" for FAILURE), if any is alike enough; a plain function, for any JSON check's hints."""
    by_folded = {k.casefold(): k for k in sorted(known)}
    match = difflib.get_close_matches(word.casefold(), by_folded, n=1, cutoff=cutoff)
    return by_folded[match[0]] if match else None


def finite_number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (true/false are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise CheckError(f"duplicate key {key!r}", "in a JSON object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise CheckError(name, "is not a valid JSON number")


def parse_json_text(text: str, what: str) -> Any:
    """text as a JSON value: no duplicate keys, no NaN or Infinity; CheckError names `what` was wrong."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except CheckError:
        raise
    except RecursionError:
        raise CheckError(what, "is nested too deeply") from None
    except ValueError as e:
        raise CheckError(what, f"is not valid JSON: {e}") from None


class _Invalid(Exception):
    """A value deep inside another is unusable; the path to it is collected on the way out."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def check_json_value(value: Any, path: str, max_depth: int) -> None:
    """value encodes to UTF-8 JSON that Java and JS consumers can read, nested at most max_depth levels;
    CheckError starts with path and the keys/indexes to what is wrong."""
    try:
        _check_value(value, 0, max_depth)
    except _Invalid as e:
        raise CheckError(path + "".join(reversed(e.path)), e.problem) from None


def _check_value(value: Any, depth: int, max_depth: int) -> None:
    """depth is how many objects/arrays enclose value within the checked one."""
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            raise _Invalid(
                "contains an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape), "
                "which is not a character and cannot be encoded as UTF-8"
            )
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _Invalid(f"is an integer outside the signed 64-bit range [{MIN_INT}, {MAX_INT}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("is a number too large for a 64-bit float (it would be sent as Infinity)")
    elif isinstance(value, dict | list):
        if depth >= max_depth:
            raise _Invalid(f"is nested more than {max_depth} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _LONE_SURROGATE.search(key):
                raise _Invalid(
                    "has a key with an unpaired UTF-16 surrogate, which cannot be encoded as UTF-8"
                )
            try:
                _check_value(item, depth + 1, max_depth)
            except _Invalid as e:
                e.path.append(f"[{key}]" if isinstance(key, int) else f".{show_name(key)}")
                raise


def is_kind(value: Any, kind: str, max_chars: int = MAX_STRING_CHARS) -> bool:
    """value is a JSON value of that kind; 5.0 is an integer, as JSON Schema says; true is no number."""
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and math.isfinite(value)
    return (
        isinstance(value, str)
        and len(value) <= max_chars
        and _TEXT.fullmatch(value) is not None
        and _LONE_SURROGATE.search(value) is None
    )


def _num(value: float | None) -> str:
    return "any" if value is None else f"{value:g}"


@dataclass(frozen=True)
class Check:
    """One typed value: its kind, range and allowed values."""

    kind: str  # one of KINDS
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    max_chars: int = MAX_STRING_CHARS

    def expected(self) -> str:
        """What a value must be, in words."""
        return {
            "integer": "a whole number",
            "number": "a number",
            "string": f"a non-empty string of at most {self.max_chars} characters, without control "
            "characters",
            "boolean": "true or false",
        }[self.kind]

    def __call__(self, value: Any, path: str) -> Any:
        """The value, as its kind (an integral 5.0 becomes 5, a number a float); CheckError if it is not."""
        if not is_kind(value, self.kind, self.max_chars):
            raise CheckError(path, f"must be {self.expected()}, not {show(value)}")
        if self.kind == "number":
            value = float(value)
        elif self.kind == "integer":
            value = int(value)
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise CheckError(path, f"must be from {_num(low)} to {_num(high)}, not {show(value)}")
        if self.choices and value not in self.choices:
            raise CheckError(path, f"must be one of {show(list(self.choices), 200)}, not {show(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        """The same check as JSON Schema."""
        schema: dict[str, Any] = {"type": self.kind}
        if self.kind == "string":
            schema.update(minLength=1, maxLength=self.max_chars, pattern=TEXT_PATTERN)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices:
            schema["enum"] = list(self.choices)
        return schema
