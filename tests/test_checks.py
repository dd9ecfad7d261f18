"""auditgen.checks: typed JSON-value checks, and the JSON Schema each says it is."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from auditgen.checks import Check, CheckError


@pytest.mark.parametrize(
    ("check", "value", "accepted"),
    [
        (Check("integer"), 5.0, 5),  # integral floats are integers, as JSON Schema says
        (Check("integer"), -3, -3),
        (Check("number"), 2, 2.0),
        (Check("string"), "web-01", "web-01"),
        (Check("boolean"), False, False),
        (Check("integer", minimum=1, maximum=3), 3, 3),
        (Check("string", choices=("a", "b")), "b", "b"),
    ],
)
def test_a_value_of_the_kind_is_accepted_as_that_kind(check: Check, value: Any, accepted: Any) -> None:
    """The value comes back as its kind (5.0 as 5, 2 as 2.0), and the schema accepts it too."""
    result = check(value, "x")
    assert result == accepted and type(result) is type(accepted)
    jsonschema.validate(value, check.schema())


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (Check("integer"), 4.5, "x must be a whole number, not 4.5"),
        (Check("integer"), True, "x must be a whole number, not true"),
        (Check("number"), "1", 'x must be a number, not "1"'),
        (Check("number"), float("inf"), "x must be a number, not Infinity"),
        (Check("boolean"), 0, "x must be true or false, not 0"),
        (Check("string"), "", "x must be a non-empty string of at most 255 characters"),
        (Check("string"), "  ", "x must be a non-empty string"),
        (
            Check("string"),
            "a\x1b[31m",
            "x must be a non-empty string of at most 255 characters, without control",
        ),
        (Check("string"), "a\x85", "x must be a non-empty string of at most 255 characters, without"),  # C1
        (Check("string"), "a\ud800", "x must be a non-empty string"),
        (Check("string", max_chars=3), "abcd", "x must be a non-empty string of at most 3 characters"),
        (Check("integer", minimum=3), 2, "x must be from 3 to any, not 2"),
        (Check("number", maximum=1), 1.5, "x must be from any to 1, not 1.5"),
        (Check("integer", choices=(1, 2)), 3, "x must be one of [1, 2], not 3"),
    ],
)
def test_a_wrong_value_names_the_path_and_what_was_expected(check: Check, value: Any, message: str) -> None:
    """A CheckError (no HTTP type: the caller decides how to answer) naming the path first."""
    with pytest.raises(CheckError) as caught:
        check(value, "x")
    assert str(caught.value).startswith(message)
    assert caught.value.path == "x"
    if value == value and value not in (float("inf"),) and not (isinstance(value, str) and "\ud800" in value):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, check.schema())
