"""Configuration: the spec table (specs), its parsers, the typed `Settings` and the loading from sources."""

from auditgen.config.settings import Broker, Settings
from auditgen.config.sources import ConfigError, load_settings, read_dotenv
from auditgen.config.specs import MAX_RATE, SPECS, TOPICS, Spec

__all__ = [
    "MAX_RATE",
    "SPECS",
    "TOPICS",
    "Broker",
    "ConfigError",
    "Settings",
    "Spec",
    "load_settings",
    "read_dotenv",
]
