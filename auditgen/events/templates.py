"""The template language: value specs compiled into small functions, and the checks of a template file.

Templates are data: ``auditgen/templates.json``, plus the user's own files (auditgen/catalogs.py reads
them, auditgen.events.catalog merges them). Everything is checked when a catalog loads, and each value
spec is compiled into a small function then, so generating an event never validates anything and never
fails.

The file format (pools, templates, and the value specs that draw each field) is described in docs/templates.md
and, as a JSON Schema, in ``auditgen/templates.schema.json``; keep all three in step.
Pools are declared once and referred to as ``"@name"``; ``hosts`` and ``users`` are required, and fill
``server_hostname`` and ``user_id`` wherever a template does not say how (from the event's session first,
if it has one). Every JSON object in a template is read as a value spec, so a typo such as
``{"chioce": [...]}`` is reported rather than sent as a constant.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import random
import re
import string
from bisect import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NoReturn

# Top-level fields a format spec may refer to: all of them exist before any detail is formatted.
_FORMAT_TOP_FIELDS = frozenset({"server_hostname", "user_id", "event_type", "severity", "action_result"})
REQUIRED_POOLS = ("hosts", "users")
_POOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TEMPLATE_STRINGS = ("name", "event_type", "severity", "action_result")
_TEMPLATE_KEYS = frozenset({*_TEMPLATE_STRINGS, "weight", "details", "server_hostname", "user_id"})
# Spec kind -> the modifier keys it accepts besides its own.
_SPEC_KEYS: dict[str, frozenset[str]] = {
    "const": frozenset(),
    "choice": frozenset({"weights"}),
    "int": frozenset(),
    "float": frozenset({"digits"}),
    "ip": frozenset(),
    "hex": frozenset(),
    "uuid": frozenset(),
    "format": frozenset(),
    "session": frozenset({"default"}),
}
# What server_hostname and user_id are when a template does not say.
_DEFAULT_HOST = {"session": "host", "default": {"choice": "@hosts"}}
_DEFAULT_USER = {"session": "user", "default": {"choice": "@users"}}
# How complete() fills an event type no template makes: host and user drawn (or taken from the session)
# as for a template that does not say, the plain severity and result, no details of its own.
UNTEMPLATED: dict[str, Any] = {
    "name": "(no template)",
    "event_type": "(any other)",
    "severity": "INFO",
    "action_result": "SUCCESS",
    "weight": 1,
    "details": {},
}
_MAX_HEX_DIGITS = 1024
_MAX_FLOAT_DIGITS = 15

_Gen = Callable[[random.Random], Any]
_Fmt = Callable[[Mapping[str, Any], Mapping[str, Any]], str]


class TemplateError(ValueError):
    """Template data cannot be used; the message names the template, the field and what was expected."""


def _fail(where: str, message: str) -> NoReturn:
    raise TemplateError(f"{where}: {message}")


def _is_number(value: object) -> bool:
    """bool is an int in Python but never a number in a template."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json(value: object, where: str) -> Any:
    """Constants as plain JSON (dicts, lists, scalars), so encode() cannot fail on them at run time."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(where, f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, list | tuple):
        return [_json(item, where) for item in value]
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                _fail(where, f"object keys must be strings, got {key!r}")
            plain[key] = _json(item, where)
        return plain
    _fail(where, f"expected a JSON value, got {type(value).__name__}")


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def _text(value: Any) -> str:
    """How a value reads inside a format string: strings and numbers as themselves, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _const(value: Any) -> _Gen:
    if is_scalar(value):
        return lambda rng: value
    # Each event gets its own copy, so one consumer editing an event cannot change the next.
    return lambda rng: copy.deepcopy(value)


@dataclass(frozen=True)
class Network:
    """A network ready for drawing: first usable address and how many there are."""

    first: int
    count: int
    v4: bool

    @classmethod
    def parse(cls, text: object, where: str) -> Network:
        if not isinstance(text, str):
            _fail(where, f"expected a CIDR string such as '10.0.0.0/8', got {text!r}")
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            _fail(where, f"{text!r} is not a CIDR network ({e})")
        first, count = int(net.network_address), net.num_addresses
        if count > 2:  # leave out the network and broadcast addresses
            first, count = first + 1, count - 2
        return cls(first, count, net.version == 4)

    def draw(self, rng: random.Random) -> str:
        n = self.first + rng.randrange(self.count)
        if self.v4:
            return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        return str(ipaddress.IPv6Address(n))


class Compiler:
    """Turns one template's value specs into generators, failing with the template's name and field."""

    def __init__(
        self, pools: Mapping[str, tuple[Any, ...]], origins: Mapping[str, str] | None = None
    ) -> None:
        """origins: pool name -> the file that declared it, named in errors about the pool's values."""
        self._pools = pools
        self._origins = origins or {}

    def pool(self, ref: object, where: str) -> tuple[Any, ...] | None:
        """The values of "@name", or None when ref is not a pool reference."""
        if not (isinstance(ref, str) and ref.startswith("@")):
            return None
        values = self._pools.get(ref[1:])
        if values is None:
            known = ", ".join(f"@{name}" for name in sorted(self._pools))
            _fail(where, f"unknown pool {ref!r} (known: {known})")
        return values

    def field(self, spec: Any, where: str, want_str: bool = False) -> tuple[_Gen, str | None]:
        """A generator for a non-format spec, and the session key whose value overrides it (or None).

        A session spec compiles to its default's generator: the event's session, when it has the key,
        replaces the drawn value, so an event draws the same random numbers with or without a session.
        """
        if not (isinstance(spec, Mapping) and "session" in spec):
            return self.value(spec, where, want_str), None
        self.kind(spec, where)
        key = spec["session"]
        if not isinstance(key, str) or not key:
            _fail(where, f"session: expected the name of a session value such as 'source_ip', got {key!r}")
        if "default" not in spec:
            _fail(where, "session: missing 'default', the value spec for events without that session value")
        return self.value(spec["default"], f"{where}: default", want_str), key

    def value(self, spec: Any, where: str, want_str: bool = False) -> _Gen:
        """A generator for a spec other than format and session; want_str for fields that must be strings."""
        if not isinstance(spec, Mapping):
            spec = {"const": spec}
        kind = self.kind(spec, where)
        arg = spec[kind]
        if kind == "format":
            _fail(where, "format specs are only allowed as a detail's own spec")
        if kind == "session":
            _fail(where, "session specs are only allowed as a field's own spec, not as a default")
        if want_str and kind in ("int", "float"):
            _fail(where, f"expected a spec producing strings, got {kind!r}")
        if kind == "const":
            if want_str and not isinstance(arg, str):
                _fail(where, f"expected a string, got {arg!r}")
            return _const(_json(arg, where))
        if kind == "choice":
            return self.choice(arg, spec.get("weights"), where, want_str)
        if kind == "int":
            lo, hi = self.range(arg, where, "int", integers=True)
            return lambda rng: rng.randint(lo, hi)
        if kind == "float":
            flo, fhi = self.range(arg, where, "float", integers=False)
            digits = spec.get("digits", 2)
            if not (isinstance(digits, int) and not isinstance(digits, bool)) or not (
                0 <= digits <= _MAX_FLOAT_DIGITS
            ):
                _fail(where, f"digits: expected an integer from 0 to {_MAX_FLOAT_DIGITS}, got {digits!r}")
            return lambda rng: round(rng.uniform(flo, fhi), digits)
        if kind == "ip":
            return self.ip(arg, where)
        if kind == "hex":
            if not (isinstance(arg, int) and not isinstance(arg, bool)) or not 1 <= arg <= _MAX_HEX_DIGITS:
                _fail(where, f"hex: expected a number of digits from 1 to {_MAX_HEX_DIGITS}, got {arg!r}")
            bits, pattern = 4 * arg, f"0{arg}x"
            return lambda rng: format(rng.getrandbits(bits), pattern)
        # uuid, the only kind left
        if arg is not True:
            _fail(where, f"uuid: expected true, got {arg!r}")
        return random_uuid

    @staticmethod
    def kind(spec: Mapping[Any, Any], where: str) -> str:
        """The spec's one generator key, after checking there is exactly one and no unknown modifier."""
        kinds = [key for key in spec if key in _SPEC_KEYS]
        if len(kinds) != 1:
            found = "none" if not kinds else " and ".join(repr(k) for k in kinds)
            _fail(where, f"expected a spec with exactly one of {', '.join(_SPEC_KEYS)}; found {found}")
        kind: str = kinds[0]
        allowed = _SPEC_KEYS[kind]
        for key in spec:
            if key != kind and key not in allowed:
                extra = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
                _fail(where, f"unknown key {key!r} in a {kind!r} spec{extra}")
        return kind

    def choice(self, arg: Any, weights: Any, where: str, want_str: bool) -> _Gen:
        values = self.pool(arg, where)
        if values is None:
            if not isinstance(arg, list | tuple) or not arg:
                _fail(where, f"choice: expected a non-empty list or a pool '@name', got {arg!r}")
            values = tuple(_json(arg, where))
        if want_str:
            for v in values:
                if not isinstance(v, str):
                    _fail(where, f"choice: expected strings, got {v!r}")
        pick: _Gen
        if weights is None:
            pick = lambda rng: rng.choice(values)  # noqa: E731
        else:
            if not isinstance(weights, list | tuple) or len(weights) != len(values):
                _fail(
                    where,
                    f"weights: expected a list of {len(values)} numbers, one per choice, got {weights!r}",
                )
            if not all(_is_number(w) and w >= 0 for w in weights) or not sum(weights) > 0:
                _fail(where, f"weights: expected non-negative numbers, not all zero, got {weights!r}")
            cum = list(accumulate(float(w) for w in weights))
            pick = lambda rng: values[weighted_index(rng, cum)]  # noqa: E731
        if all(is_scalar(v) for v in values):
            return pick
        return lambda rng: copy.deepcopy(pick(rng))

    @staticmethod
    def range(arg: Any, where: str, kind: str, integers: bool) -> tuple[Any, Any]:
        ok = isinstance(arg, list | tuple) and len(arg) == 2
        ok = ok and all(
            (isinstance(x, int) and not isinstance(x, bool)) if integers else _is_number(x) for x in arg
        )
        what = "integers" if integers else "numbers"
        if not ok:
            _fail(where, f"{kind}: expected [lo, hi], two {what}, got {arg!r}")
        lo, hi = arg
        if lo > hi:
            _fail(where, f"{kind}: expected lo <= hi, got {arg!r}")
        return lo, hi

    def ip(self, arg: Any, where: str) -> _Gen:
        cidrs = self.pool(arg, where)
        if cidrs is None:
            net = Network.parse(arg, where)
            return net.draw
        origin = self._origins.get(arg[1:])
        pool = f"pool {arg!r}" + (f" (declared in {origin})" if origin else "")
        nets = tuple(Network.parse(c, f"{where}: {pool}") for c in cidrs)
        if len(nets) == 1:
            return nets[0].draw
        return lambda rng: rng.choice(nets).draw(rng)

    def format(self, arg: Any, where: str, available: set[str]) -> _Fmt:
        """A formatter reading top-level fields and the details named in available."""
        if not isinstance(arg, str):
            _fail(where, f"format: expected a string, got {arg!r}")
        try:
            parsed = list(string.Formatter().parse(arg))
        except ValueError as e:
            _fail(where, f"format: {e} in {arg!r} (write literal braces as {{{{ and }}}})")
        refs: list[tuple[bool, str]] = []
        pattern: list[str] = []
        for literal, field, spec, conversion in parsed:
            pattern.append(literal.replace("{", "{{").replace("}", "}}"))
            if field is None:
                continue
            if conversion or spec:
                _fail(where, f"format: placeholder {{{field}}} may not have a conversion or format spec")
            if field in _FORMAT_TOP_FIELDS:
                refs.append((False, field))
            elif field.startswith("details.") and field[len("details.") :] in available:
                refs.append((True, field[len("details.") :]))
            else:
                choices = sorted(_FORMAT_TOP_FIELDS) + [f"details.{d}" for d in sorted(available)]
                _fail(where, f"format: unknown field {{{field}}} (can use: {', '.join(choices)})")
            pattern.append(f"{{{len(refs) - 1}}}")
        template = "".join(pattern)

        def fmt(top: Mapping[str, Any], details: Mapping[str, Any]) -> str:
            return template.format(*[_text(details[k] if in_details else top[k]) for in_details, k in refs])

        return fmt


@dataclass(frozen=True, eq=False)
class Template:
    """A compiled template: constants for the fixed fields and generators for the rest."""

    name: str
    event_type: str
    severity: str
    action_result: str
    weight: float
    host: _Gen
    user: _Gen
    plain: tuple[tuple[str, _Gen], ...]
    formats: tuple[tuple[str, _Fmt], ...]
    order: tuple[str, ...]
    # Session keys whose values replace the drawn ones when the event's session has them.
    host_from: str | None
    user_from: str | None
    from_session: tuple[tuple[str, str], ...]  # (detail, session key)
    # The pool the host and the user are drawn from (spec {"choice": "@name"}, directly or as a session
    # default), or None when the template names them otherwise: a world may draw pooled values itself,
    # and keeps a value the template names as given.
    host_pool: str | None = None
    user_pool: str | None = None


_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def random_uuid(rng: random.Random) -> str:
    """str(uuid.UUID(int=rng.getrandbits(128), version=4)), the same string, without building a UUID
    (every event has one: this is a tenth of the cost of making an event)."""
    h = ((rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def weighted_index(rng: random.Random, cum_weights: Sequence[float]) -> int:
    """What rng.choices(cum_weights=...)[0] picks, without its per-call set-up (this runs per event)."""
    return bisect(cum_weights, rng.random() * cum_weights[-1], 0, len(cum_weights) - 1)


@contextmanager
def within(origin: str | None) -> Iterator[None]:
    """TemplateErrors raised inside name the file the data came from first."""
    if origin is None:
        yield
        return
    try:
        yield
    except TemplateError as e:
        raise TemplateError(f"{origin}: {e}") from None


def read_sections(data: Any) -> tuple[dict[str, tuple[Any, ...]], dict[str, Mapping[Any, Any]]]:
    """A file's checked pools, and its templates by name (still uncompiled: merging comes first)."""
    raw_pools, raw_templates = _sections(data)
    return _load_pools(raw_pools), _named(raw_templates)


def pool_of(spec: Any) -> str | None:
    """The pool an unweighted {"choice": "@name"} spec draws from (or a session spec's default does)."""
    if isinstance(spec, Mapping) and "session" in spec:
        spec = spec.get("default")
    if not isinstance(spec, Mapping) or set(spec) != {"choice"}:
        return None
    ref = spec["choice"]
    return ref[1:] if isinstance(ref, str) and ref.startswith("@") else None


def _sections(data: Any) -> tuple[Mapping[Any, Any], Sequence[Any]]:
    """A file's pools and templates (each may be left out), after checking its top level."""
    if not isinstance(data, Mapping):
        _fail("catalog", f"expected an object with 'pools' and 'templates', got {data!r}")
    for key in data:
        if key not in ("pools", "templates"):
            _fail("catalog", f"unknown key {key!r} (allowed: pools, templates)")
    pools = data.get("pools", {})
    if not isinstance(pools, Mapping):
        _fail("pools", f"expected an object of pool name -> list of values, got {pools!r}")
    templates = data.get("templates", [])
    if not isinstance(templates, list | tuple):
        _fail("templates", f"expected a list of templates, got {templates!r}")
    return pools, templates


def _load_pools(data: Mapping[Any, Any]) -> dict[str, tuple[Any, ...]]:
    pools: dict[str, tuple[Any, ...]] = {}
    for name, values in data.items():
        if not isinstance(name, str) or not _POOL_NAME.fullmatch(name):
            _fail(
                "pools",
                f"pool name {name!r}: expected letters, digits, '_' and '-', starting with a letter or '_'",
            )
        if not isinstance(values, list | tuple) or not values:
            _fail(f"pools.{name}", f"expected a non-empty list, got {values!r}")
        pools[name] = tuple(_json(values, f"pools.{name}"))
    for name in REQUIRED_POOLS:
        for value in pools.get(name, ()):
            if not isinstance(value, str) or not value:
                _fail(f"pools.{name}", f"expected non-empty strings, got {value!r}")
    return pools


def _named(templates: Sequence[Any]) -> dict[str, Mapping[Any, Any]]:
    """A file's templates by name, after checking that each has a name no other in the file has."""
    named: dict[str, Mapping[Any, Any]] = {}
    index_of: dict[str, int] = {}
    for index, data in enumerate(templates):
        if not isinstance(data, Mapping):
            _fail(f"templates[{index}]", f"expected an object, got {data!r}")
        if "name" not in data:
            _fail(f"templates[{index}]", "name: missing required key")
        name = data["name"]
        if not isinstance(name, str) or not name:
            _fail(f"templates[{index}]", f"name: expected a non-empty string, got {name!r}")
        if name in index_of:
            _fail(f"template {name!r}", f"name: duplicate template name (also templates[{index_of[name]}])")
        index_of[name] = index
        named[name] = data
    return named


def compile_template(name: str, data: Mapping[Any, Any], compiler: Compiler) -> Template:
    """One template checked and compiled against the compiler's pools; TemplateError names the field."""
    label = f"template {name!r}"
    for key in data:
        if key not in _TEMPLATE_KEYS:
            _fail(label, f"unknown key {key!r} (allowed: {', '.join(sorted(_TEMPLATE_KEYS))})")
    for key in (*_TEMPLATE_STRINGS, "weight", "details"):
        if key not in data:
            _fail(label, f"{key}: missing required key")
    for key in _TEMPLATE_STRINGS:
        if not isinstance(data[key], str) or not data[key]:
            _fail(label, f"{key}: expected a non-empty string, got {data[key]!r}")
    weight = data["weight"]
    if not _is_number(weight) or weight <= 0:
        _fail(label, f"weight: expected a positive number, got {weight!r}")
    host_spec = data.get("server_hostname", _DEFAULT_HOST)
    host, host_from = compiler.field(host_spec, f"{label}: server_hostname", want_str=True)
    user_spec = data.get("user_id", _DEFAULT_USER)
    user, user_from = compiler.field(user_spec, f"{label}: user_id", want_str=True)

    details = data["details"]
    if not isinstance(details, Mapping):
        _fail(label, f"details: expected an object of field -> value spec, got {details!r}")
    for key in details:
        if not isinstance(key, str) or not key:
            _fail(label, f"details: field names must be non-empty strings, got {key!r}")
    # Plain fields first, so every format can see all of them; formats see the formats before them.
    plain: list[tuple[str, _Gen]] = []
    from_session: list[tuple[str, str]] = []
    available: set[str] = set()
    for key, spec in details.items():
        if not (isinstance(spec, Mapping) and "format" in spec):
            gen, session_key = compiler.field(spec, f"{label}: details.{key}")
            plain.append((key, gen))
            if session_key is not None:
                from_session.append((key, session_key))
            available.add(key)
    formats: list[tuple[str, _Fmt]] = []
    for key, spec in details.items():
        if isinstance(spec, Mapping) and "format" in spec:
            where = f"{label}: details.{key}"
            compiler.kind(spec, where)
            formats.append((key, compiler.format(spec["format"], where, available)))
            available.add(key)
    return Template(
        name=name,
        event_type=data["event_type"],
        severity=data["severity"],
        action_result=data["action_result"],
        weight=float(weight),
        host=host,
        user=user,
        plain=tuple(plain),
        formats=tuple(formats),
        order=tuple(details),
        host_from=host_from,
        user_from=user_from,
        from_session=tuple(from_session),
        host_pool=pool_of(host_spec),
        user_pool=pool_of(user_spec),
    )
