"""Audit events: the wire format, and a catalog of templates that says how to make realistic ones.

Templates are data (``auditgen/templates.json``), so new kinds of event need no code and users can later
bring their own files. Everything is checked when a catalog loads, and each value spec is compiled into a
small function then, so generating an event never validates anything and never fails.

Template file format
--------------------
A JSON object (YAML of the same shape will do) with two keys::

    {
      "pools": {"hosts": ["web-01.prod.example.com", ...], "users": ["alice", ...],
                "client_networks": ["10.20.0.0/16", "203.0.113.0/24"], ...},
      "templates": [
        {"name": "user_login_failure", "event_type": "user_login", "severity": "WARNING",
         "action_result": "FAILURE", "weight": 4,
         "details": {"reason": {"choice": ["invalid_password", "unknown_user"], "weights": [3, 1]},
                     "ip_address": {"ip": "@client_networks"},
                     "protocol": {"choice": ["ssh", "console"]}}}
      ]
    }

``pools`` maps a name (letters, digits, ``_`` and ``-``, starting with a letter or ``_``) to a non-empty
list of values, declared once and referred to as ``"@name"``. The pools ``hosts`` and ``users`` are
required (lists of strings): they fill ``server_hostname`` and ``user_id`` whenever nothing more specific
says how.

Each template has the keys ``name`` (unique), ``event_type``, ``severity``, ``action_result`` (non-empty
strings), ``weight`` (positive number: relative frequency among templates), ``details`` (field -> value
spec, may be empty) and, optionally, ``server_hostname`` and ``user_id`` (value specs producing strings;
default ``{"choice": "@hosts"}`` and ``{"choice": "@users"}``). Any other key is an error.

Value specs
-----------
- a JSON string, number, boolean, null or list: that constant, as is (specs inside a list are not read);
- ``{"const": value}``: the constant ``value``, for a constant object. Every JSON object is read as a spec,
  so a typo such as ``{"chioce": [...]}`` is reported rather than sent as a constant;
- ``{"choice": [v, ...] | "@pool"}`` with optional ``"weights": [w, ...]`` (one non-negative number per
  value): one of the values;
- ``{"int": [lo, hi]}``: an integer, both ends included;
- ``{"float": [lo, hi]}`` with optional ``"digits": n`` (default 2): a number rounded to n decimals;
- ``{"ip": "CIDR" | "@pool"}``: a host address in the network (or in one network of a pool of them,
  picked uniformly); the network and broadcast addresses are left out where the network has others.
  Host bits must be zero (``10.0.0.0/8``, not ``10.0.0.1/8``); IPv6 networks work too;
- ``{"hex": n}``: n lowercase hex digits (``{"hex": 64}`` looks like a SHA-256 checksum);
- ``{"uuid": true}``: a random UUID4 string;
- ``{"format": "/home/{details.resource}"}`` (details only): a string built from fields already made.
  A placeholder names a top-level field (``server_hostname``, ``user_id``, ``event_type``, ``severity``,
  ``action_result``) or ``details.X`` where X is a non-format detail of the same template or a format
  detail declared before this one. Placeholders take no conversions or format specs; literal braces are
  doubled (``{{``). Formats are evaluated after every other field, so they stay consistent with them.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import math
import random
import re
import string
import uuid
from bisect import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from itertools import accumulate
from types import MappingProxyType
from typing import Any, NoReturn

import orjson

SOURCE_GENERATED = "audit-event-generator"
SOURCE_API = "audit-event-generator-api"
SERVICE_FIELDS = frozenset({"event_id", "timestamp", "source_service"})

# Fields every event has, in wire order; the caller's extras follow them.
_EVENT_FIELDS = (
    "event_id",
    "timestamp",
    "source_service",
    "server_hostname",
    "event_type",
    "severity",
    "user_id",
    "action_result",
    "details",
)
_KNOWN_FIELDS = frozenset(_EVENT_FIELDS)
# Top-level fields a format spec may refer to: all of them exist before any detail is formatted.
_FORMAT_TOP_FIELDS = frozenset({"server_hostname", "user_id", "event_type", "severity", "action_result"})
_REQUIRED_POOLS = ("hosts", "users")
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


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def _text(value: Any) -> str:
    """How a value reads inside a format string: strings and numbers as themselves, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _const(value: Any) -> _Gen:
    if _is_scalar(value):
        return lambda rng: value
    # Each event gets its own copy, so one consumer editing an event cannot change the next.
    return lambda rng: copy.deepcopy(value)


@dataclass(frozen=True)
class _Net:
    """A network ready for drawing: first usable address and how many there are."""

    first: int
    count: int
    v4: bool

    @classmethod
    def parse(cls, text: object, where: str) -> _Net:
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


class _Compiler:
    """Turns one template's value specs into generators, failing with the template's name and field."""

    def __init__(self, pools: Mapping[str, tuple[Any, ...]]) -> None:
        self._pools = pools

    def pool(self, ref: object, where: str) -> tuple[Any, ...] | None:
        """The values of "@name", or None when ref is not a pool reference."""
        if not (isinstance(ref, str) and ref.startswith("@")):
            return None
        values = self._pools.get(ref[1:])
        if values is None:
            known = ", ".join(f"@{name}" for name in sorted(self._pools))
            _fail(where, f"unknown pool {ref!r} (known: {known})")
        return values

    def value(self, spec: Any, where: str, want_str: bool = False) -> _Gen:
        """A generator for a non-format spec; want_str for top-level fields, which must be strings."""
        if not isinstance(spec, Mapping):
            spec = {"const": spec}
        kind = self.kind(spec, where)
        arg = spec[kind]
        if kind == "format":
            _fail(where, "format specs are only allowed in details")
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
        return lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4))

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
            pick = lambda rng: values[_weighted_index(rng, cum)]  # noqa: E731
        if all(_is_scalar(v) for v in values):
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
            net = _Net.parse(arg, where)
            return net.draw
        nets = tuple(_Net.parse(c, f"{where}: pool {arg!r}") for c in cidrs)
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
class _Template:
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


def _weighted_index(rng: random.Random, cum_weights: Sequence[float]) -> int:
    """What rng.choices(cum_weights=...)[0] picks, without its per-call set-up (this runs per event)."""
    return bisect(cum_weights, rng.random() * cum_weights[-1], 0, len(cum_weights) - 1)


@dataclass(frozen=True, eq=False)
class _Group:
    """Templates to choose among by weight."""

    templates: tuple[_Template, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, templates: Sequence[_Template]) -> _Group:
        return cls(tuple(templates), tuple(accumulate(t.weight for t in templates)))

    def pick(self, rng: random.Random) -> _Template:
        if len(self.templates) == 1:
            return self.templates[0]
        return self.templates[_weighted_index(rng, self.cum_weights)]


def _load_pools(data: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(data, Mapping):
        _fail("pools", f"expected an object of pool name -> list of values, got {data!r}")
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
    for name in _REQUIRED_POOLS:
        if name not in pools:
            _fail("pools", f"missing required pool {name!r}")
        for value in pools[name]:
            if not isinstance(value, str) or not value:
                _fail(f"pools.{name}", f"expected non-empty strings, got {value!r}")
    return pools


def _load_template(index: int, data: Any, compiler: _Compiler, seen: dict[str, int]) -> _Template:
    if not isinstance(data, Mapping):
        _fail(f"templates[{index}]", f"expected an object, got {data!r}")
    name = data.get("name")
    label = f"template {name!r}" if isinstance(name, str) and name else f"templates[{index}]"
    for key in data:
        if key not in _TEMPLATE_KEYS:
            _fail(label, f"unknown key {key!r} (allowed: {', '.join(sorted(_TEMPLATE_KEYS))})")
    for key in (*_TEMPLATE_STRINGS, "weight", "details"):
        if key not in data:
            _fail(label, f"{key}: missing required key")
    for key in _TEMPLATE_STRINGS:
        if not isinstance(data[key], str) or not data[key]:
            _fail(label, f"{key}: expected a non-empty string, got {data[key]!r}")
    name = data["name"]
    if name in seen:
        _fail(label, f"name: duplicate template name (also templates[{seen[name]}])")
    seen[name] = index
    weight = data["weight"]
    if not _is_number(weight) or weight <= 0:
        _fail(label, f"weight: expected a positive number, got {weight!r}")
    host_spec = data.get("server_hostname", {"choice": "@hosts"})
    host = compiler.value(host_spec, f"{label}: server_hostname", want_str=True)
    user = compiler.value(data.get("user_id", {"choice": "@users"}), f"{label}: user_id", want_str=True)

    details = data["details"]
    if not isinstance(details, Mapping):
        _fail(label, f"details: expected an object of field -> value spec, got {details!r}")
    for key in details:
        if not isinstance(key, str) or not key:
            _fail(label, f"details: field names must be non-empty strings, got {key!r}")
    # Plain fields first, so every format can see all of them; formats see the formats before them.
    plain: list[tuple[str, _Gen]] = []
    available: set[str] = set()
    for key, spec in details.items():
        if not (isinstance(spec, Mapping) and "format" in spec):
            plain.append((key, compiler.value(spec, f"{label}: details.{key}")))
            available.add(key)
    formats: list[tuple[str, _Fmt]] = []
    for key, spec in details.items():
        if isinstance(spec, Mapping) and "format" in spec:
            where = f"{label}: details.{key}"
            compiler.kind(spec, where)
            formats.append((key, compiler.format(spec["format"], where, available)))
            available.add(key)
    return _Template(
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
    )


class Catalog:
    """A validated, compiled set of templates and pools; immutable, so one can serve every factory."""

    def __init__(self, templates: Sequence[_Template], pools: Mapping[str, tuple[Any, ...]]) -> None:
        """Use from_data() or builtin(); this trusts its arguments."""
        self._all = _Group.of(templates)
        by_type: dict[str, list[_Template]] = {}
        by_result: dict[tuple[str, str], list[_Template]] = {}
        for t in templates:
            by_type.setdefault(t.event_type, []).append(t)
            by_result.setdefault((t.event_type, t.action_result), []).append(t)
        self._by_type = {k: _Group.of(v) for k, v in by_type.items()}
        self._by_result = {k: _Group.of(v) for k, v in by_result.items()}
        self.pools: Mapping[str, tuple[Any, ...]] = MappingProxyType(dict(pools))
        """The shared value pools, for code that builds events of its own (scenarios)."""
        hosts, users = pools["hosts"], pools["users"]
        self._default_host: _Gen = lambda rng: rng.choice(hosts)
        self._default_user: _Gen = lambda rng: rng.choice(users)

    @classmethod
    def builtin(cls) -> Catalog:
        """The templates shipped with the package, loaded and checked once per process."""
        return _builtin()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Catalog:
        """Check and compile template data (the parsed file); raises TemplateError naming what is wrong."""
        if not isinstance(data, Mapping):
            _fail("catalog", f"expected an object with 'pools' and 'templates', got {data!r}")
        for key in data:
            if key not in ("pools", "templates"):
                _fail("catalog", f"unknown key {key!r} (allowed: pools, templates)")
        if "pools" not in data:
            _fail("pools", "missing required key")
        pools = _load_pools(data["pools"])
        raw = data.get("templates")
        if not isinstance(raw, list | tuple) or not raw:
            _fail("templates", f"expected a non-empty list of templates, got {raw!r}")
        compiler = _Compiler(pools)
        seen: dict[str, int] = {}
        templates = [_load_template(i, t, compiler, seen) for i, t in enumerate(raw)]
        return cls(templates, pools)

    @property
    def event_types(self) -> frozenset[str]:
        """The event types some template makes; complete() fills others with plain defaults."""
        return frozenset(self._by_type)


@functools.cache
def _builtin() -> Catalog:
    text = resources.files("auditgen").joinpath("templates.json").read_text(encoding="utf-8")
    return Catalog.from_data(json.loads(text))


def seeded_rng(seed: str | None, stream: str) -> random.Random:
    """The random source of one stream of events (generator, API, sessions, scenarios).

    Without a seed, from the OS. With one, each stream gets its own generator derived from the seed and
    the stream's name, so a run's generated events do not depend on how many API calls came in between.
    """
    return random.Random() if seed is None else random.Random(f"{seed}/{stream}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EventFactory:
    """Makes events from a catalog; a seeded rng and a fixed now make its output reproducible."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._catalog = catalog
        self._rng = rng if rng is not None else random.Random()
        self._now = now if now is not None else _utc_now

    def generate(self) -> dict[str, Any]:
        """A full random event: template chosen by weight; source_service SOURCE_GENERATED."""
        rng = self._rng
        t = self._catalog._all.pick(rng)
        host, user = t.host(rng), t.user(rng)
        details = self._details(t, host, user, t.severity, t.action_result, None)
        return self._event(SOURCE_GENERATED, host, t.event_type, t.severity, user, t.action_result, details)

    def complete(self, fields: Mapping[str, Any], source: str = SOURCE_API) -> dict[str, Any]:
        """A full event from a caller's fields (already type-checked by the HTTP layer: event_type is a
        non-empty str; server_hostname/user_id/action_result/severity are str if present; details a dict if
        present; SERVICE_FIELDS absent), with `source` as its source_service.

        Fields the caller left out are filled from a template of that event_type (one with the caller's
        action_result if there is one, else any of the type's templates, by weight); with no template for
        that event_type: severity INFO, action_result SUCCESS, details {}. server_hostname and user_id are
        filled from the pools when missing. The caller's details are merged over the template's (caller
        keys win, and format details are built from the caller's values, so they stay consistent). Extra
        top-level fields are kept as given; any SERVICE_FIELDS given are replaced by the service's own.
        """
        rng, catalog = self._rng, self._catalog
        event_type: str = fields["event_type"]
        given_result = fields.get("action_result")
        t: _Template | None = None
        group = catalog._by_type.get(event_type)
        if group is not None:
            preferred = None if given_result is None else catalog._by_result.get((event_type, given_result))
            t = (preferred or group).pick(rng)

        host = fields.get("server_hostname")
        if host is None:
            host = (t.host if t else catalog._default_host)(rng)
        user = fields.get("user_id")
        if user is None:
            user = (t.user if t else catalog._default_user)(rng)
        severity = fields.get("severity")
        if severity is None:
            severity = t.severity if t else "INFO"
        result = given_result if given_result is not None else (t.action_result if t else "SUCCESS")
        given_details: Mapping[str, Any] | None = fields.get("details")
        if t is not None:
            details = self._details(t, host, user, severity, result, given_details)
        else:
            details = dict(given_details) if given_details else {}

        event = self._event(source, host, event_type, severity, user, result, details)
        for key, value in fields.items():
            if key not in _KNOWN_FIELDS:
                event[key] = value
        return event

    def _details(
        self,
        t: _Template,
        host: Any,
        user: Any,
        severity: Any,
        result: Any,
        given: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        rng = self._rng
        values = {key: gen(rng) for key, gen in t.plain}
        if not t.formats and not given:
            return values  # the common case: already in declared order
        if given:
            values.update(given)
        if t.formats:
            top = {
                "server_hostname": host,
                "user_id": user,
                "event_type": t.event_type,
                "severity": severity,
                "action_result": result,
            }
            for key, fmt in t.formats:
                if not given or key not in given:
                    values[key] = fmt(top, values)
        details = {key: values[key] for key in t.order}
        if given:
            details.update(given)  # the caller's own keys, after the template's
        return details

    def _event(
        self,
        source: str,
        host: Any,
        event_type: str,
        severity: Any,
        user: Any,
        result: Any,
        details: dict[str, Any],
    ) -> dict[str, Any]:
        rng = self._rng
        now = self._now()
        # A naive datetime is taken as UTC; an aware one is converted.
        now = now.replace(tzinfo=None) if now.tzinfo is None else now.astimezone(UTC).replace(tzinfo=None)
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": now.isoformat(timespec="microseconds") + "Z",
            "source_service": source,
            "server_hostname": host,
            "event_type": event_type,
            "severity": severity,
            "user_id": user,
            "action_result": result,
            "details": details,
        }


def encode(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as the legacy service sent it; orjson, because every event passes here and it
    is several times faster than the standard library's encoder."""
    # orjson's bytes keep its 4 KiB working buffer; the outbox holds thousands of bodies, so keep an
    # exact-size copy (measured: 4.1 KB -> 0.5 KB per waiting event; 104 -> 67 MB RSS at full load).
    return memoryview(orjson.dumps(event)).tobytes()
