"""Audit events: the wire format, and a catalog of templates that says how to make realistic ones.

``templates`` compiles the template language, ``catalog`` merges and holds the compiled templates,
``factory`` makes events from them, ``wire`` is the event's format and encoding, and ``grounding`` fits an
event to the world (auditgen.world) when the service has one (AUDITGEN_WORLD, on by default).
"""

from auditgen.events.catalog import Catalog, builtin_data
from auditgen.events.factory import EventFactory, seeded_rng
from auditgen.events.templates import Network, TemplateError
from auditgen.events.wire import SERVICE_FIELDS, SOURCE_API, SOURCE_GENERATED, encode

__all__ = [
    "SERVICE_FIELDS",
    "SOURCE_API",
    "SOURCE_GENERATED",
    "Catalog",
    "EventFactory",
    "Network",
    "TemplateError",
    "builtin_data",
    "encode",
    "seeded_rng",
]
