"""Checks of single JSON values (type, range, allowed values), with the JSON Schema that says the same.

Shared by everything that takes typed values from a caller or a file; free of HTTP types, so the layer that
answers decides how a refusal is shown (web.py makes a CheckError a 400). A check and its schema come
from one object, so a schema-valid value is an accepted one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

KINDS = ("integer", "number", "string", "boolean")
MAX_STRING_CHARS = 255  # a DNS name: the longest of the values a string stands for (hosts, users, paths)
# A string: something besides white space, and no control characters (ASCII or C1).
TEXT_PATTERN = "^(?=.*\\S)[^\\x00-\\x1f\\x7f-\\x9f]+$"
_TEXT = re.compile(TEXT_PATTERN)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # cannot be encoded as UTF-8
_SHOWN_VALUE_CHARS = 40


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
