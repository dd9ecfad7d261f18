"""The hand-marshaled publish frames are byte for byte what pika would send."""

from __future__ import annotations

import pika
import pytest
from pika import frame, spec

from auditgen.amqp import frames as frames_module
from auditgen.amqp.frames import PublishFrames


def pika_frames(
    channel: int,
    queue: str,
    body: bytes,
    message_id: str,
    type_: str,
    ts: int,
    frame_max: int,
    exchange: str = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    """What pika's Connection._send_message writes for the same publish."""
    method = frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=queue, mandatory=True))
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id,
        timestamp=ts,
        type=type_,
        app_id="audit-event-generator",
        headers=headers,
    )
    out = [method.marshal(), frame.Header(channel, len(body), properties).marshal()]
    step = frame_max - 8
    out += [frame.Body(channel, body[i : i + step]).marshal() for i in range(0, len(body), step)]
    return b"".join(out)


@pytest.mark.parametrize(
    ("body", "type_", "frame_max"),
    [
        (b'{"event_id":"x"}', "user_login", 131072),
        (b"{" + b"x" * 5000 + b"}", "file_modified", 4096),  # split over two body frames
        (b"{" + b"y" * 8184 + b"}", "t", 4096),  # exactly at frame boundaries
        ('{"é":"ü"}'.encode(), "événement", 131072),
    ],
)
def test_frames_match_pika(body: bytes, type_: str, frame_max: int) -> None:
    """Method, header (every property) and body frames, split at frame_max, equal pika's bytes."""
    frames = PublishFrames(3, "", "audit_events", "audit-event-generator", frame_max)
    mine = frames.encode(body, "5f0c3a7e-0000-4000-8000-000000000001", type_, 1_795_806_443)
    assert mine == pika_frames(
        3, "audit_events", body, "5f0c3a7e-0000-4000-8000-000000000001", type_, 1_795_806_443, frame_max
    )


def test_an_overlong_type_is_cut_on_a_character_boundary() -> None:
    """AMQP short strings hold 255 bytes; a longer type is cut without splitting a character."""
    frames = PublishFrames(1, "", "q", "a", 131072)
    data = frames.encode(b"{}", "id", "é" * 200, 0)
    # The type field: 254 bytes (127 whole characters, not 255 with half of one), then the app id "a".
    assert bytes((254,)) + "é".encode() * 127 + b"\x01a" in data


@pytest.mark.parametrize("exchange", ["", "audit", "amq.topic", "échange"])
def test_frames_per_routing_key_match_pika(exchange: str) -> None:
    """Each message's own routing key (or the default, None) is marshaled as pika would, on any exchange,
    also when keys alternate and repeat (the method frame of each key is cached)."""
    frames = PublishFrames(2, exchange, "audit_events", "audit-event-generator", 131072)
    keys = [
        None,
        "audit.user_login.FAILURE",
        "",
        "audit.sudo.SUCCESS",
        "audit.user_login.FAILURE",
        None,
        "ü.x",
    ]
    for n, key in enumerate(keys):
        body = b'{"n":%d}' % n
        mine = frames.encode(body, f"id-{n}", "user_login", 1_795_806_443 + n, key)
        expected_key = "audit_events" if key is None else key
        assert mine == pika_frames(
            2, expected_key, body, f"id-{n}", "user_login", 1_795_806_443 + n, 131072, exchange=exchange
        ), key


def test_the_key_cache_is_bounded() -> None:
    """Keys made from caller-chosen fields are unbounded: past the cap, frames are made but not kept."""
    frames = PublishFrames(1, "x", "q", "audit-event-generator", 131072)
    for n in range(frames_module._MAX_CACHED_KEYS + 50):
        frames.encode(b"{}", "id", "t", 0, f"k.{n}")
    assert len(frames._methods) == frames_module._MAX_CACHED_KEYS
    late = f"k.{frames_module._MAX_CACHED_KEYS + 10}"
    assert frames.encode(b"{}", "i", "t", 5, late) == pika_frames(1, late, b"{}", "i", "t", 5, 131072, "x")


def test_frames_with_the_instance_header_match_pika() -> None:
    """The instance's header (a field table between content type and delivery mode) is marshaled as pika
    would, and the other properties stay where they were."""
    headers = {"x-auditgen-instance": "auditgen-2"}
    frames = PublishFrames(1, "", "audit_events", "audit-event-generator", 4096, headers=headers)
    for n, body in enumerate([b'{"n":1}', b"{" + b"z" * 5000 + b"}"]):
        mine = frames.encode(body, f"id-{n}", "user_login", 1_795_806_443, None)
        assert mine == pika_frames(
            1, "audit_events", body, f"id-{n}", "user_login", 1_795_806_443, 4096, headers=headers
        )
