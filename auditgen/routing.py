"""The routing key of each event (the exchange, queue and binding it goes through: auditgen.amqp.topology).

The routing key is a template over an event's top-level string fields (`audit.{event_type}.{severity}`),
checked when settings load so that a typo stops start-up instead of misrouting every event. A template
without placeholders (the default: the queue name) is a constant, so the default costs nothing per event.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

FIELDS = ("event_type", "action_result", "severity", "server_hostname", "user_id", "source_service")


class RoutingKey:
    """A compiled routing key template; `fixed` is the key itself when it has no placeholders."""

    def __init__(self, template: str) -> None:
        self.template = template
        names = _placeholders(template)
        self.fixed: str | None = None if names else template.replace("{{", "{").replace("}}", "}")

    @classmethod
    def literal(cls, key: str) -> RoutingKey:
        """A constant key taken as is (a queue name may contain braces)."""
        return cls(key.replace("{", "{{").replace("}", "}}"))

    def render(self, event: Mapping[str, Any]) -> str:
        """The key of one event; a field the event lacks renders empty."""
        if self.fixed is not None:
            return self.fixed
        try:
            return self.template.format_map(event)
        except KeyError:
            return self.template.format_map(_Blank(event))


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def _placeholders(template: str) -> list[str]:
    """The field names of a template; ValueError, naming the allowed fields, for anything else."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"malformed template ({e}); write a literal brace as {{{{ or }}}}") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"unknown placeholder {shown}; expected placeholders among {{{'}, {'.join(FIELDS)}}}"
            )
        names.append(name)
    return names


def parse_template(text: str) -> str:
    """A routing key template as given, once it is known to render (the settings' parser)."""
    fixed = RoutingKey(text).fixed
    if fixed is not None and len(fixed.encode()) > 255:
        raise ValueError("expected at most 255 bytes (an AMQP routing key)")
    return text
