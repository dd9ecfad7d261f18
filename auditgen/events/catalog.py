"""The catalog: the built-in templates and the user's files merged, checked and compiled once.

Immutable, so one catalog serves every factory; it says which templates exist and picks one by weight.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate
from types import MappingProxyType
from typing import Any

from auditgen.events.templates import (
    REQUIRED_POOLS,
    UNTEMPLATED,
    Compiler,
    Template,
    TemplateError,
    compile_template,
    read_sections,
    weighted_index,
    within,
)


@dataclass(frozen=True, eq=False)
class _Group:
    """Templates to choose among by weight."""

    templates: tuple[Template, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, templates: Sequence[Template]) -> _Group:
        return cls(tuple(templates), tuple(accumulate(t.weight for t in templates)))

    def pick(self, rng: random.Random) -> Template:
        if len(self.templates) == 1:
            return self.templates[0]
        return self.templates[weighted_index(rng, self.cum_weights)]


class Catalog:
    """A validated, compiled set of templates and pools; immutable, so one can serve every factory."""

    def __init__(self, templates: Sequence[Template], pools: Mapping[str, tuple[Any, ...]]) -> None:
        """Use from_data(), from_sources() or builtin(); this trusts its arguments."""
        self._all = _Group.of(templates)
        by_type: dict[str, list[Template]] = {}
        by_result: dict[tuple[str, str], list[Template]] = {}
        for t in templates:
            by_type.setdefault(t.event_type, []).append(t)
            by_result.setdefault((t.event_type, t.action_result), []).append(t)
        self._by_type = {k: _Group.of(v) for k, v in by_type.items()}
        self._by_result = {k: _Group.of(v) for k, v in by_result.items()}
        self._untemplated = compile_template(UNTEMPLATED["name"], UNTEMPLATED, Compiler(pools))
        self.pools: Mapping[str, tuple[Any, ...]] = MappingProxyType(dict(pools))
        """The shared value pools, for code that builds events of its own (scenarios)."""

    @classmethod
    def builtin(cls) -> Catalog:
        """The templates shipped with the package, loaded and checked once per process."""
        return _builtin()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Catalog:
        """Check and compile template data (the parsed file); raises TemplateError naming what is wrong."""
        return cls.from_sources([(None, data)])

    @classmethod
    def from_sources(cls, sources: Sequence[tuple[str | None, Any]]) -> Catalog:
        """Check, merge and compile the data of several files, applied in order; a TemplateError names
        the file (each source is (file or None, parsed data)), the template and the field.

        A file's pools and templates replace earlier ones of the same name (a replaced template keeps its
        place) and add the rest. The merged set must have the pools hosts and users and a template. Only
        the templates left after merging are compiled, against the merged pools.
        """
        pools: dict[str, tuple[Any, ...]] = {}
        origins: dict[str, str] = {}
        raw: dict[str, tuple[str | None, Mapping[Any, Any]]] = {}
        for origin, data in sources:
            with within(origin):
                found, named = read_sections(data)
            pools.update(found)
            if origin is not None:
                origins.update(dict.fromkeys(found, origin))
            raw.update({name: (origin, template) for name, template in named.items()})
        with within(", ".join(origin for origin, _ in sources if origin is not None) or None):
            for name in REQUIRED_POOLS:
                if name not in pools:
                    raise TemplateError(f"pools: missing required pool {name!r}")
            if not raw:
                raise TemplateError("templates: expected at least one template")
        compiler = Compiler(pools, origins)
        templates = []
        for name, (origin, template) in raw.items():
            with within(origin):
                templates.append(compile_template(name, template, compiler))
        return cls(templates, pools)

    def pick(self, rng: random.Random) -> Template:
        """Any template, by weight: what a plain generated event is made from."""
        return self._all.pick(rng)

    def pick_for(self, event_type: str, action_result: str | None, rng: random.Random) -> Template:
        """A template of event_type, by weight: one with action_result if there is one, else any of the
        type's; with no template of that type, the untemplated one (plain severity and result, no details)."""
        group = self._by_type.get(event_type)
        if group is None:
            return self._untemplated
        preferred = None if action_result is None else self._by_result.get((event_type, action_result))
        return (preferred or group).pick(rng)

    @property
    def event_types(self) -> frozenset[str]:
        """The event types some template makes; complete() fills others with plain defaults."""
        return frozenset(self._by_type)

    def template_values(self, event_type: str) -> dict[str, frozenset[str]]:
        """The severities and action_results event_type's templates give ({"severity": ..., "action_result":
        ...}); empty when no template makes event_type. The API warns about a caller's value none has."""
        group = self._by_type.get(event_type)
        if group is None:
            return {}
        return {
            "severity": frozenset(t.severity for t in group.templates),
            "action_result": frozenset(t.action_result for t in group.templates),
        }


def builtin_data() -> Any:
    """The parsed built-in templates file, a fresh copy per call."""
    return json.loads(resources.files("auditgen").joinpath("templates.json").read_text(encoding="utf-8"))


@functools.cache
def _builtin() -> Catalog:
    return Catalog.from_data(builtin_data())
