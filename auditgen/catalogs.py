"""User template files (AUDITGEN_TEMPLATES): read as JSON or YAML and merged with the built-in set.

They are read once, when the options are parsed, so a bad file stops start-up with a usage error that
names the file (and the line, for a syntax error; the template and the field, for bad content) before
any port opens. The format is the built-in templates.json's (see docs/templates.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from auditgen.events import Catalog, TemplateError, builtin_data

BUILTIN_ORIGIN = "auditgen/templates.json (built-in)"


def load_catalog(paths: Sequence[str], replace: bool = False) -> Catalog:
    """The built-in templates with the files applied over them in order, or, with replace, the files alone.

    Raises TemplateError naming the file, the template and the field, and what was expected.
    """
    if not paths:
        if replace:
            raise TemplateError("templates-replace is true, but no templates file is named")
        return Catalog.builtin()
    sources: list[tuple[str | None, Any]] = [] if replace else [(BUILTIN_ORIGIN, builtin_data())]
    sources += [(path, read_file(path)) for path in paths]
    return Catalog.from_sources(sources)


def read_file(path: str) -> Any:
    """The parsed file, JSON or YAML by its extension."""
    suffix = Path(path).suffix.lower()
    parse = _PARSERS.get(suffix)
    if parse is None:
        found = repr(suffix) if suffix else "none"
        raise TemplateError(f"{path}: unknown extension ({found}): expected .json, .yaml or .yml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(f"{path}: cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise TemplateError(f"{path}: expected UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse(path, text)


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise TemplateError(
            f"{path}: line {e.lineno}, column {e.colno}: JSON syntax error: {e.msg}"
        ) from None
    except _DuplicateKey as e:
        raise TemplateError(f"{path}: duplicate key {e.args[0]!r} in an object") from None


def _parse_yaml(path: str, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_SafeUniqueLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise TemplateError(f"{path}: {where}YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise TemplateError(f"{path}: YAML syntax error: {e}") from None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key would silently drop a template's field, so it is an error."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


class _SafeUniqueLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key repeated in one mapping (merge keys `<<` still work)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable; the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    ".json": _parse_json,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
}
