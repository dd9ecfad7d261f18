"""Scenario files: the built-ins shipped in builtin/, and a user's (AUDITGEN_SCENARIOS), read and checked.

A file (YAML or JSON) holds one scenario, or several under ``scenarios:``. It is checked field by field
when the options are parsed, so a bad one stops start-up with a message that names the file, the scenario,
the step and the field. The format is described in docs/scenarios.md and, as a JSON Schema, in
scenario.schema.json next to this module; keep the three in step.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, NoReturn

import yaml

from auditgen.catalogs import read_file
from auditgen.checks import KINDS, Check, CheckError, is_kind
from auditgen.events import SERVICE_FIELDS, TemplateError
from auditgen.scenarios.engine import (
    DELIVERIES,
    OUTCOMES,
    Expr,
    Param,
    Repeat,
    Scenario,
    Step,
    drawer,
    text,
)

BUILTIN_ORIGIN = "auditgen/scenarios/builtin"
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
RESERVED = ("delivery",)  # a POST body's field beside the parameters
_REF = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_EVENT_FIELDS = (
    "event_type",
    "server_hostname",
    "user_id",
    "action_result",
    "severity",
    "details",
    "resource",
)


class ScenarioFileError(ValueError):
    """A scenario file cannot be used; the message names the file, scenario, step and field."""


def _fail(where: str, message: str) -> NoReturn:
    raise ScenarioFileError(f"{where}: {message}")


def _keys(data: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        _fail(where, f"expected an object, got {data!r}")
    for key in data:
        if key not in allowed:
            _fail(where, f"unknown key {key!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in data:
            _fail(where, f"missing {key!r}")
    return data


def _text_of(data: Any, where: str) -> str:
    if not isinstance(data, str) or not data.strip():
        _fail(where, f"expected a non-empty string, got {data!r}")
    return data


def _name(data: Any, where: str) -> str:
    if not isinstance(data, str) or not NAME.fullmatch(data):
        _fail(
            where,
            f"expected a name of lower-case letters, digits and _, starting with a letter, got {data!r}",
        )
    return data


# -- References: "{name}" is a value, "{step.details.ip_address}" a field of an earlier step's event -----


class _Refs:
    """What a string may refer to: the run's values (with their kinds) and, in events, earlier steps."""

    def __init__(self, kinds: Mapping[str, str], steps: Sequence[str] = ()) -> None:
        self.kinds = kinds
        self.steps = steps

    def check(self, ref: str, where: str) -> None:
        head = ref.split(".", 1)[0]
        if "." in ref and head in self.steps:
            return
        if "." not in ref and ref in self.kinds:
            return
        known = [*self.kinds, *(f"{s}.<field>" for s in self.steps)]
        _fail(where, f"unknown reference {{{ref}}} (can use: {', '.join(known) or 'none'})")


def _compile(raw: Any, prefix: str, path: str, refs: _Refs) -> Expr:
    """A value with its references substituted per run: a string that is one reference keeps the value's
    type; other strings are formatted; objects and lists are compiled inside. Errors name
    `prefix: field 'path'`."""
    where = f"{prefix}: field {path!r}"
    if isinstance(raw, str):
        return _string(raw, where, refs)
    if isinstance(raw, Mapping):
        items = []
        for key, value in raw.items():
            if not isinstance(key, str):
                _fail(where, f"object keys must be strings, got {key!r}")
            items.append((key, _compile(value, prefix, f"{path}.{key}", refs)))
        return lambda ctx: {key: expr(ctx) for key, expr in items}
    if isinstance(raw, list):
        exprs = [_compile(value, prefix, f"{path}[{i}]", refs) for i, value in enumerate(raw)]
        return lambda ctx: [expr(ctx) for expr in exprs]
    if raw is None or isinstance(raw, bool | int | float):
        if isinstance(raw, float) and not is_kind(raw, "number"):
            _fail(where, f"expected a finite number, got {raw!r}")
        return lambda ctx: raw
    _fail(where, f"expected a JSON value, got {type(raw).__name__}")


def _string(raw: str, where: str, refs: _Refs) -> Expr:
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _REF.finditer(raw):
        parts.append(raw[pos : m.start()])
        pos = m.end()
        if m.group(0) in ("{{", "}}"):
            parts.append(m.group(0)[0])
        elif m.group(1) is None:
            _fail(where, f"unmatched {m.group(0)!r} in {raw!r} (write {m.group(0) * 2} for the character)")
        else:
            ref = m.group(1).strip()
            refs.check(ref, where)
            parts.append((ref,))
    parts.append(raw[pos:])
    pieces = [p for p in parts if p != ""]
    if len(pieces) == 1 and isinstance(pieces[0], tuple):
        ref = pieces[0][0]
        return lambda ctx: copy.deepcopy(ctx.lookup(ref))
    if not any(isinstance(p, tuple) for p in pieces):
        return lambda ctx: raw.replace("{{", "{").replace("}}", "}")
    return lambda ctx: "".join(p if isinstance(p, str) else text(ctx.lookup(p[0])) for p in pieces)


def _typed(raw: Any, where: str, refs: _Refs, kinds: tuple[str, ...], what: str) -> Expr:
    """A number (or boolean) field: a constant of that kind, or one reference to a value of it."""
    if isinstance(raw, str):
        m = re.fullmatch(r"\{([^{}.]+)\}", raw.strip())
        if m is None or refs.kinds.get(m.group(1).strip()) not in kinds:
            _fail(where, f"expected {what} or a reference to a {' or '.join(kinds)} parameter, got {raw!r}")
        name = m.group(1).strip()
        return lambda ctx: ctx.lookup(name)
    if not any(is_kind(raw, kind) for kind in kinds):
        _fail(where, f"expected {what}, got {raw!r}")
    return lambda ctx: raw


def _number(raw: Any, where: str, refs: _Refs) -> Expr:
    return _typed(raw, where, refs, ("number", "integer"), "a number of seconds")


# -- Parameters and drawn values -------------------------------------------------------------------------

_PARAM_KEYS = (
    "type",
    "description",
    "default",
    "draw",
    "minimum",
    "maximum",
    "choices",
    "not",
    "not_because",
    "format",
    "outside",
)


def _draw(
    raw: Any, prefix: str, path: str, kind: str | None, choices: tuple[Any, ...] = ()
) -> Mapping[str, Any]:
    where = f"{prefix}: field {path!r}"

    def at(key: str) -> str:
        return f"{prefix}: field '{path}.{key}'"

    spec = _keys(raw, where, ("pool", "address", "choice"))
    if len(spec) != 1:
        _fail(where, "expected exactly one of 'pool', 'address', 'choice'")
    if "pool" in spec:
        pools = spec["pool"]
        names = [pools] if isinstance(pools, str) else pools
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            _fail(at("pool"), f"expected a pool name or a list of them, got {pools!r}")
    elif "address" in spec:
        if kind not in (None, "string"):
            _fail(at("address"), "an address is a string: the parameter's type must be string")
        _text_of(spec["address"], at("address"))
        try:
            drawer(spec)
        except TemplateError as e:
            _fail(at("address"), str(e))
    elif spec["choice"] == "choices":
        if not choices:
            _fail(at("choice"), "'choices' draws from the parameter's choices, and it has none")
    elif not isinstance(spec["choice"], list) or not spec["choice"]:
        _fail(at("choice"), f"expected a non-empty list of values, or 'choices', got {spec['choice']!r}")
    return dict(spec)


def _param(name: str, raw: Any, prefix: str) -> Param:
    where = f"{prefix}: field 'parameters.{name}'"

    def at(key: str) -> str:
        return f"{prefix}: field 'parameters.{name}.{key}'"

    _name(name, where)
    if name in RESERVED:
        _fail(where, f"{name!r} is reserved: POST /scenarios/{{name}} takes it beside the parameters")
    spec = _keys(raw, where, _PARAM_KEYS, ("type", "description"))
    kind = spec["type"]
    if kind not in KINDS:
        _fail(at("type"), f"expected one of {', '.join(KINDS)}, got {kind!r}")
    bounds: dict[str, float] = {}
    for key in ("minimum", "maximum"):
        if key in spec:
            if kind not in ("integer", "number"):
                _fail(f"{where}.{key}", f"only a number or integer parameter has a {key}")
            if not is_kind(spec[key], "number"):
                _fail(f"{where}.{key}", f"expected a number, got {spec[key]!r}")
            bounds[key] = spec[key]
    choices: tuple[Any, ...] = ()
    if "choices" in spec:
        raw_choices = spec["choices"]
        if not isinstance(raw_choices, list) or not raw_choices:
            _fail(at("choices"), f"expected a non-empty list, got {raw_choices!r}")
        for i, choice in enumerate(raw_choices):
            if not is_kind(choice, kind):
                _fail(at(f"choices[{i}]"), f"expected a value of type {kind}, got {choice!r}")
        choices = tuple(raw_choices)
    excluded = spec.get("not", [])
    if not isinstance(excluded, list):
        _fail(at("not"), f"expected a list of refused values, got {excluded!r}")
    address = False
    if "format" in spec:
        if spec["format"] != "ip" or kind != "string":
            _fail(at("format"), f"expected 'ip' on a string parameter, got {spec['format']!r}")
        address = True
    if "outside" in spec and not address:
        _fail(at("outside"), "only an address (format: ip) can be outside networks")
    if ("default" in spec) == ("draw" in spec):
        _fail(where, "expected exactly one of 'default' (a value) and 'draw' (how to draw one per run)")
    param = Param(
        name,
        Check(kind, bounds.get("minimum"), bounds.get("maximum"), choices),
        _text_of(spec["description"], at("description")),
        default=spec.get("default"),
        draw=_draw(spec["draw"], prefix, f"parameters.{name}.draw", kind, choices)
        if "draw" in spec
        else None,
        exclude=tuple(excluded),
        exclude_reason=_text_of(spec["not_because"], at("not_because")) if "not_because" in spec else "",
        address=address,
        outside=_text_of(spec["outside"], at("outside")) if "outside" in spec else None,
    )
    if "default" in spec:
        try:
            param.parse(spec["default"], {})
        except CheckError as e:
            _fail(at("default"), e.problem)
    return param


# -- Steps -----------------------------------------------------------------------------------------------

_STEP_KEYS = ("name", "event", "at", "after", "repeat", "when")


def _step(raw: Any, index: int, earlier: list[str], kinds: Mapping[str, str], where: str) -> Step:
    if isinstance(raw, Mapping) and "name" in raw:
        name = _name(raw["name"], f"{where}: step {index + 1}: field 'name'")
        where = f"{where}: step {name!r}"
    else:
        name = f"step{index + 1}"
        where = f"{where}: step {index + 1}"
    if name in earlier:
        _fail(where, "a step of that name comes earlier")
    spec = _keys(raw, where, _STEP_KEYS, ("event",))
    refs = _Refs(kinds)

    def field(key: str) -> str:
        return f"{where}: field {key!r}"

    event = _keys(spec["event"], field("event"), (*_EVENT_FIELDS, *SERVICE_FIELDS), ("event_type",))
    for key in SERVICE_FIELDS:
        if key in event:
            _fail(field(f"event.{key}"), "is set by the service for every event; leave it out")
    if not isinstance(event["event_type"], str) or not event["event_type"]:
        _fail(field("event.event_type"), f"expected a non-empty string, got {event['event_type']!r}")
    if "details" in event and not isinstance(event["details"], Mapping):
        _fail(field("event.details"), f"expected an object, got {event['details']!r}")
    for key in ("server_hostname", "user_id", "action_result", "severity", "resource"):
        if key in event and not isinstance(event[key], str):
            _fail(field(f"event.{key}"), f"expected a string, got {event[key]!r}")
    compiled = _compile(dict(event), where, "event", _Refs(kinds, earlier))
    at: Expr = lambda ctx: 0.0  # noqa: E731
    between = None
    if "at" in spec:
        if isinstance(spec["at"], Mapping):
            ranged = _keys(spec["at"], field("at"), ("between", "times"), ("between",))
            pair = ranged["between"]
            if not isinstance(pair, list) or len(pair) != 2:
                _fail(field("at.between"), f"expected [low, high], got {pair!r}")
            between = (
                _number(pair[0], field("at.between[0]"), refs),
                _number(pair[1], field("at.between[1]"), refs),
            )
            times = ranged.get("times", 1.0)
            at = _number(times, field("at.times"), refs)
        else:
            at = _number(spec["at"], field("at"), refs)
    after = spec.get("after")
    if after is not None and after not in earlier:
        _fail(
            field("after"),
            f"expected the name of an earlier step ({', '.join(earlier) or 'none'}), got {after!r}",
        )
    repeat = None
    if "repeat" in spec:
        r = _keys(
            spec["repeat"],
            field("repeat"),
            ("count", "over", "every", "spacing", "first_gap", "each"),
            ("count",),
        )
        if ("over" in r) == ("every" in r):
            _fail(
                field("repeat"),
                "expected exactly one of 'over' (seconds from first to last) and 'every' (a gap)",
            )
        spacing = r.get("spacing", "random")
        if spacing not in ("random", "even"):
            _fail(field("repeat.spacing"), f"expected random or even, got {spacing!r}")
        first_gap = r.get("first_gap", False)
        if not isinstance(first_gap, bool):
            _fail(field("repeat.first_gap"), f"expected true or false, got {first_gap!r}")
        count = _typed(r["count"], field("repeat.count"), refs, ("integer",), "a whole number")
        each = r.get("each", [])
        if not isinstance(each, list):
            _fail(field("repeat.each"), f"expected a list of objects of event fields, got {each!r}")
        for i, item in enumerate(each):
            _keys(item, field(f"repeat.each[{i}]"), _EVENT_FIELDS[1:])
            if not isinstance(item.get("details", {}), Mapping):
                _fail(field(f"repeat.each[{i}].details"), f"expected an object, got {item['details']!r}")
        repeat = Repeat(
            count,
            _number(r["over"], field("repeat.over"), refs) if "over" in r else None,
            _number(r["every"], field("repeat.every"), refs) if "every" in r else None,
            spacing,
            first_gap,
            tuple(
                _compile(dict(item), where, f"repeat.each[{i}]", _Refs(kinds, earlier))
                for i, item in enumerate(each)
            ),
        )
    when = None
    if "when" in spec:
        when = _typed(spec["when"], field("when"), refs, ("boolean",), "true or false")
    return Step(name, compiled, at, between, after, repeat, when)


# -- Scenarios -------------------------------------------------------------------------------------------

_SCENARIO_KEYS = ("name", "description", "expect", "delivery", "start", "parameters", "values", "steps")


def scenario(raw: Any, where: str, origin: str = "") -> Scenario:
    """One scenario from its parsed data; ScenarioFileError names what is wrong where."""
    if isinstance(raw, Mapping) and "name" in raw:
        name = _name(raw["name"], f"{where}: field 'name'")
        where = f"{where}: scenario {name!r}"
    spec = _keys(raw, where, _SCENARIO_KEYS, ("name", "description", "expect", "steps"))

    def field(key: str) -> str:
        return f"{where}: field {key!r}"

    raw_params = spec.get("parameters", {})
    if not isinstance(raw_params, Mapping):
        _fail(field("parameters"), f"expected an object of name -> parameter, got {raw_params!r}")
    params = tuple(_param(n, p, where) for n, p in raw_params.items())
    kinds = {p.name: p.check.kind for p in params}
    raw_values = spec.get("values", {})
    if not isinstance(raw_values, Mapping):
        _fail(field("values"), f"expected an object of name -> draw, got {raw_values!r}")
    values = []
    for value_name, draw in raw_values.items():
        _name(value_name, field(f"values.{value_name}"))
        if value_name in kinds or value_name in RESERVED:
            _fail(field(f"values.{value_name}"), "a parameter (or delivery) has that name")
        values.append((value_name, _draw(draw, where, f"values.{value_name}", None)))
        kinds[value_name] = "string"
    expect = _keys(spec["expect"], field("expect"), (*OUTCOMES, "keys"))
    outcomes = [o for o in OUTCOMES if o in expect]
    if len(outcomes) != 1:
        _fail(field("expect"), "expected exactly one of 'alert' (the rule, in words) and 'quiet' (why)")
    outcome = outcomes[0]
    param_refs = _Refs({p.name: p.check.kind for p in params})
    summary = _string(
        _text_of(expect[outcome], field(f"expect.{outcome}")), field(f"expect.{outcome}"), param_refs
    )
    raw_keys = expect.get("keys", {})
    if outcome == "alert" and not raw_keys:
        _fail(field("expect.keys"), "an alert names the fields the rule groups by, e.g. {user_id: '{user}'}")
    if not isinstance(raw_keys, Mapping):
        _fail(field("expect.keys"), f"expected an object of field -> value, got {raw_keys!r}")
    keys = tuple(
        (k, _string(_text_of(v, field(f"expect.keys.{k}")), field(f"expect.keys.{k}"), param_refs))
        for k, v in raw_keys.items()
    )
    delivery = spec.get("delivery", "instant")
    if delivery not in DELIVERIES:
        _fail(field("delivery"), f"expected one of {', '.join(DELIVERIES)}, got {delivery!r}")
    hour = None
    if "start" in spec:
        start = _keys(spec["start"], field("start"), ("hour",), ("hour",))
        hour = _typed(start["hour"], field("start.hour"), param_refs, ("integer",), "an hour from 0 to 23")
        if isinstance(start["hour"], int) and not 0 <= start["hour"] <= 23:
            _fail(field("start.hour"), f"expected an hour from 0 to 23, got {start['hour']!r}")
    raw_steps = spec["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        _fail(field("steps"), f"expected a non-empty list of steps, got {raw_steps!r}")
    steps: list[Step] = []
    for i, raw_step in enumerate(raw_steps):
        steps.append(_step(raw_step, i, [s.name for s in steps], kinds, where))
    if all(s.when is not None for s in steps):
        _fail(field("steps"), "every step has a 'when': a run could have no event")
    _check_hour_choices(params, spec.get("start"), field("start.hour"))
    return Scenario(
        name,
        _text_of(spec["description"], field("description")),
        params,
        tuple(steps),
        outcome,
        summary,
        keys,
        delivery,
        tuple(values),
        hour,
        origin,
    )


def _check_hour_choices(params: tuple[Param, ...], start: Any, where: str) -> None:
    """A start hour taken from a parameter must be an hour of the day whatever the caller sends."""
    if not isinstance(start, Mapping) or not isinstance(start.get("hour"), str):
        return
    ref = start["hour"].strip()[1:-1].strip()
    p = next(p for p in params if p.name == ref)
    if p.check.choices:
        ok = all(0 <= c <= 23 for c in p.check.choices)
    else:
        ok = p.check.minimum is not None and p.check.maximum is not None
        ok = ok and 0 <= p.check.minimum <= p.check.maximum <= 23  # type: ignore[operator]
    if not ok:
        _fail(where, f"parameter {ref!r} must be limited to hours 0 to 23 (choices, or minimum and maximum)")


def scenarios_of(data: Any, origin: str) -> list[Scenario]:
    """The scenarios of one parsed file: one scenario, or several under `scenarios`."""
    if isinstance(data, Mapping) and set(data) == {"scenarios"}:
        listed = data["scenarios"]
        if not isinstance(listed, list) or not listed:
            _fail(f"{origin}: field 'scenarios'", f"expected a non-empty list of scenarios, got {listed!r}")
        found = [
            scenario(s, origin if "name" in s else f"{origin}: scenario {i + 1}", origin)
            if isinstance(s, Mapping)
            else _fail(f"{origin}: scenario {i + 1}", f"expected an object, got {s!r}")
            for i, s in enumerate(listed)
        ]
    else:
        found = [scenario(data, origin, origin)]
    names = [s.name for s in found]
    for name in names:
        if names.count(name) > 1:
            _fail(origin, f"scenario {name!r} is defined twice")
    return found


@functools.cache
def builtin() -> tuple[Scenario, ...]:
    """The scenarios shipped in the package, in the order of their file names (read once per process:
    a Scenario is immutable)."""
    folder = resources.files("auditgen.scenarios").joinpath("builtin")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: several times faster
    found: list[Scenario] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            origin = f"{BUILTIN_ORIGIN}/{entry.name}"
            found += scenarios_of(yaml.load(entry.read_text(encoding="utf-8"), Loader=loader), origin)
    return tuple(found)


def load_scenarios(paths: Sequence[str]) -> tuple[Scenario, ...]:
    """The built-ins with each file's scenarios after them; one with a built-in's name replaces it (in its
    place). Raises ScenarioFileError naming the file, scenario, step and field."""
    by_name = {s.name: s for s in builtin()}
    for path in paths:
        try:
            data = read_file(path)
        except TemplateError as e:
            raise ScenarioFileError(str(e)) from None
        for s in scenarios_of(data, path):
            by_name[s.name] = s
    return tuple(by_name.values())
