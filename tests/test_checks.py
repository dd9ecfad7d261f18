"""auditgen.checks: typed JSON-value checks, and the JSON Schema each says it is."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from auditgen.checks import (
    Check,
    CheckError,
    check_json_value,
    closest,
    finite_number,
    parse_json_text,
    show_name,
)


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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": 2**63}]}, "x.a[1].b is an integer outside the signed 64-bit range"),
        ({"a": "\ud800"}, "x.a contains an unpaired UTF-16 surrogate"),
        ({"\udc00": 1}, "x has a key with an unpaired UTF-16 surrogate"),
        ([1e308 * 10], "x[0] is a number too large for a 64-bit float"),
        ([[[[1]]]], "x[0][0][0] is nested more than 3 levels deep"),
        ({"two words": [[[]]]}, 'x."two words"[0][0] is nested more than 3 levels deep'),
    ],
)
def test_a_json_value_consumers_cannot_read_is_refused_with_the_path_to_it(value: Any, message: str) -> None:
    """The CheckError (no HTTP type) names the keys and indexes down to the bad part and what is wrong."""
    with pytest.raises(CheckError) as raised:
        check_json_value(value, "x", max_depth=3)
    assert str(raised.value).startswith(message), raised.value


def test_a_json_value_within_the_limits_passes() -> None:
    """Nesting up to the limit, 64-bit integers, finite floats and paired surrogates are all fine."""
    check_json_value({"a": [2**63 - 1, -(2**63), 1.5, "\U0001f600", None, True]}, "x", max_depth=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1, "a": 2}', "duplicate key 'a' in a JSON object"),
        ('{"a": NaN}', "NaN is not a valid JSON number"),
        ("[-Infinity]", "-Infinity is not a valid JSON number"),
        ("{", "body is not valid JSON: Expecting property name"),
        ("[" * 100_000 + "]" * 100_000, "body is nested too deeply"),
    ],
)
def test_json_text_that_is_not_plain_json_is_refused(text: str, message: str) -> None:
    """Duplicate keys, NaN/Infinity, syntax errors and runaway nesting are a CheckError, never a value."""
    with pytest.raises(CheckError) as raised:
        parse_json_text(text, "body")
    assert str(raised.value).startswith(message), raised.value


def test_names_and_numbers_for_messages_and_hints() -> None:
    """Plain names are shown bare, others JSON-quoted and cut; numbers are finite and never booleans;
    a typo finds the known word it looks like, letter case ignored."""
    assert show_name("user_id") == "user_id"
    assert show_name("a b") == '"a b"'
    assert show_name("x" * 50) == '"' + "x" * 40 + '..."'
    assert [finite_number(v) for v in (3, 2.5, True, "1", 10**400)] == [3.0, 2.5, None, None, None]
    assert closest("actoin_result", ["action_result", "severity"]) == "action_result"
    assert closest("failure", ["SUCCESS", "FAILURE"]) == "FAILURE"
    assert closest("zzz", ["severity"]) is None
