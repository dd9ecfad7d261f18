"""The parsers of setting values: text in, a checked value out, or ValueError("expected ...").

The message says what was expected; the caller adds the setting's name, where it came from and the value.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from auditgen import shapes
from auditgen.config.settings import Broker

MAX_SECRET_FILE_BYTES = 65_536


def port(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def int_from(low: int, high: int) -> Callable[[str], int]:
    """A parser of a whole number from low to high, both included."""

    def parse(text: str) -> int:
        value = positive_int(text) if low == 1 else integer(text)
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def number(text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected {what}, a number") from None


def seconds(text: str) -> float:
    value = number(text, "a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number of seconds, 0 or more")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def number_from(what: str, low: float, high: float) -> Callable[[str], float]:
    """A parser of a number from low to high, both included (NaN and infinity are outside)."""

    def parse(text: str) -> float:
        value = number(text, what)
        if not low <= value <= high:
            raise ValueError(f"expected {what} from {low} to {high}")
        return value

    return parse


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty value")
    return value


def any_text(value: str) -> str:
    return value


def directory(value: str) -> str:
    """A directory we can write, or one we could create; checked without creating anything."""
    path = Path(text(value)).expanduser().absolute()
    if path.exists():
        if not path.is_dir():
            raise ValueError("exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError("is not writable by this user")
        return str(path)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"does not exist and cannot be created ({parent} is not writable)")
    return str(path)


def shape_name(value: str) -> str:
    return shapes.shape_name(value.strip())


def shape_parameter(name: str, what: str) -> Callable[[str], float]:
    """A shape parameter's parser: a number, then the same check PUT /generator applies."""
    check = shapes.PARAMETERS[name]
    return lambda value: check(number(value, what))


def paths(value: str) -> tuple[str, ...]:
    """Comma-separated file paths; the files are read (and checked) when the templates load."""
    items = tuple(path.strip() for path in value.split(","))
    if not all(items):
        raise ValueError("expected comma-separated paths of .json, .yaml or .yml files, none empty")
    return items


_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,252}")


def instance_name(text: str) -> str:
    """A name safe in a label value, an AMQP header, a log line and a seed: letters, digits, . _ @ : -."""
    value = text.strip()
    if not _INSTANCE.fullmatch(value):
        raise ValueError(
            "expected a name of 1 to 253 letters, digits, '.', '_', '@', ':' or '-', starting with a letter "
            "or digit (such as auditgen-0)"
        )
    return value


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return chosen

    return parse


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in ("true", "yes", "1", "on"):
        return True
    if word in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false")


def exchange(value: str) -> str:
    if len(value.encode()) > 255:
        raise ValueError("expected an exchange name of at most 255 bytes")
    if value and not value.strip():
        raise ValueError("expected a name, or nothing for the default exchange")
    return value


_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host(value: str) -> str:
    """An address to listen on: an IPv4 or IPv6 address, or a hostname (resolved to IPv4 on start)."""
    stripped = value.strip()
    try:
        return str(ipaddress.ip_address(stripped))
    except ValueError:
        pass
    labels = stripped.rstrip(".").split(".")
    # An all-digit last label is a mistyped IP address (256.1.1.1), not a hostname (RFC 3696).
    valid = all(_HOSTNAME_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
    if len(stripped) > 253 or not valid:
        raise ValueError("expected an IP address (such as 0.0.0.0, 127.0.0.1 or ::) or a hostname")
    return stripped


def readable_file(value: str) -> str:
    path = Path(text(value)).expanduser().absolute()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError("expected a readable file")
    return str(path)


def ca_file(value: str) -> str:
    from auditgen.amqp.tls import load_certificates

    path = readable_file(value)
    load_certificates(path)
    return path


def secret_file(value: str) -> str:
    """The secret in a file (a Docker or Kubernetes secret), without its trailing newline."""
    path = readable_file(value)
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"the file is larger than {MAX_SECRET_FILE_BYTES} bytes; expected one secret")
    try:
        secret = data.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None
    if not secret:
        raise ValueError("the file is empty")
    return secret


def token(value: str) -> str:
    if not value or not all("!" <= c <= "~" for c in value):
        raise ValueError("expected a non-empty token of printable ASCII characters without spaces")
    return value


def token_file(value: str) -> str:
    return token(secret_file(value))


def amqp_url(url: str) -> Broker:
    """Read an amqp(s):// URL the way RabbitMQ documents it: vhost is the percent-decoded path."""
    try:
        parts = urlsplit(url.strip())
        url_port = parts.port
    except ValueError as e:
        raise ValueError(f"malformed URL ({e})") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError("expected a URL starting with amqp:// or amqps://")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.query or parts.fragment:
        raise ValueError("query parameters and fragments are not supported in the URL")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    tls = parts.scheme == "amqps"
    return Broker(
        host=parts.hostname,
        port=url_port or (5671 if tls else 5672),
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
        tls=tls,
    )


def amqp_urls(value: str) -> tuple[Broker, ...]:
    """A comma-separated list of URLs, the nodes of one cluster; an error says which one is wrong."""
    items = value.split(",")
    brokers = []
    for n, item in enumerate(items, 1):
        which = f"URL {n} of {len(items)}: " if len(items) > 1 else ""
        if not item.strip():
            raise ValueError(f"{which}empty; expected a comma-separated list of amqp:// or amqps:// URLs")
        try:
            brokers.append(amqp_url(item))
        except ValueError as e:
            raise ValueError(f"{which}{e}") from None
    return tuple(brokers)
