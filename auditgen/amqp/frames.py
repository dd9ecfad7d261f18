"""AMQP 0-9-1 frames for Basic.Publish, marshaled directly.

pika builds a Method, a Header and a Body object per message and writes each frame separately; at tens
of thousands of events a second that costs more than everything else auditgen does per event. The three
frames of a publish are mostly constant here (same channel, exchange, content type, delivery mode and
app id), so they are prepared once and each message only fills in its body size, message_id, type and
timestamp; the method frame of each routing key is made once and then looked up. Headers, if any, are the
same for every message (the instance's name), so they are marshaled once too. The publisher sends
a whole batch of messages in one write. A test checks the bytes against pika's own marshaling.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from pika import data

_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = 1, 2, 3
_FRAME_END = b"\xce"
_FRAME_OVERHEAD = 8  # type (1), channel (2), size (4), and the end octet (1)
_BASIC_CLASS = 60
_BASIC_PUBLISH = 40
# Basic property flags, in the order the properties are encoded (AMQP 0-9-1, section 4.2.6.1).
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
_TYPE = 1 << 5
_APP_ID = 1 << 3
_FLAGS = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP | _TYPE | _APP_ID
_PERSISTENT = 2
_MANDATORY = b"\x01"  # a message no queue takes comes back as Basic.Return (see auditgen.amqp.publisher)
_MAX_CACHED_KEYS = 10_000  # keys from caller-chosen fields are unbounded: past this, frames are not kept


def _shortstr(text: str) -> bytes:
    """An AMQP short string: at most 255 bytes of UTF-8, cut on a character boundary if longer."""
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raw = raw[:255].decode("utf-8", errors="ignore").encode("utf-8")
    return bytes((len(raw),)) + raw


def _table(headers: Mapping[str, str] | None) -> bytes:
    """The headers as an AMQP field table, marshaled by pika; nothing when there are none."""
    if not headers:
        return b""
    pieces: list[bytes] = []
    data.encode_table(pieces, dict(headers))
    return b"".join(pieces)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


class PublishFrames:
    """Marshals persistent, mandatory JSON messages for one channel and exchange; `routing_key` is the
    default key."""

    def __init__(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        app_id: str,
        frame_max: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if frame_max <= _FRAME_OVERHEAD:
            raise ValueError(f"frame_max {frame_max} leaves no room for a body")
        self._channel = channel
        self._body_max = frame_max - _FRAME_OVERHEAD
        self._publish = struct.pack(">HHH", _BASIC_CLASS, _BASIC_PUBLISH, 0) + _shortstr(exchange)
        self._methods: dict[str | None, bytes] = {}
        self._methods[None] = self._method(routing_key)
        self._flags = _FLAGS | (_HEADERS if headers else 0)
        self._content_type = _shortstr("application/json") + _table(headers) + bytes((_PERSISTENT,))
        self._app_id = _shortstr(app_id)
        self._header_start = struct.pack(">BH", _FRAME_HEADER, channel)
        self._body_start = struct.pack(">BH", _FRAME_BODY, channel)

    def _method(self, routing_key: str) -> bytes:
        method = _frame(_FRAME_METHOD, self._channel, self._publish + _shortstr(routing_key) + _MANDATORY)
        if len(self._methods) < _MAX_CACHED_KEYS:
            self._methods[routing_key] = method
        return method

    def encode(
        self, body: bytes, message_id: str, type_: str, timestamp: int, routing_key: str | None = None
    ) -> bytes:
        """The method, header and body frames of one publish, as one bytes object (None: default key)."""
        method = self._methods.get(routing_key) or self._method(routing_key or "")
        properties = (
            self._content_type
            + _shortstr(message_id)
            + struct.pack(">Q", timestamp)
            + _shortstr(type_)
            + self._app_id
        )
        header = struct.pack(">HHQH", _BASIC_CLASS, 0, len(body), self._flags) + properties
        parts = [method, self._header_start, struct.pack(">I", len(header)), header, _FRAME_END]
        for start in range(0, len(body), self._body_max):
            chunk = body[start : start + self._body_max]
            parts += [self._body_start, struct.pack(">I", len(chunk)), chunk, _FRAME_END]
        return b"".join(parts)
