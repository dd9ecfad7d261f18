"""The API token, in memory: every route that is not GET/HEAD needs it; reads stay open."""

from __future__ import annotations

import re
from typing import Any

import pytest

from auditgen.web import AuditAPI
from tests.support.web import JSON, Harness

TOKEN = "t0ken-for-tests"
CHALLENGE = 'Bearer realm="auditgen"'


def _guarded_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that changes something, now and as routes are added."""
    found = []
    for rule in AuditAPI.app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        found += [(m, path) for m in sorted(rule.methods or ()) if m not in ("GET", "HEAD", "OPTIONS")]
    assert ("POST", "/generate_event") in found
    return found


def _call(h: Harness, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    d = h.request(method, path, b'{"event_type": "user_login"}', {**JSON, **headers})
    h.clock.advance(h.api._confirm_wait + 1)  # a route that waits for a confirm answers "queued"
    return h.answer(d)


@pytest.mark.parametrize(("method", "path"), _guarded_routes())
@pytest.mark.parametrize("api_site", [False, True])
def test_every_changing_route_needs_the_token(method: str, path: str, api_site: bool) -> None:
    """No Authorization, another scheme or an empty bearer: 401 with the challenge, nothing accepted."""
    h = Harness(token=TOKEN, api_site=api_site)
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}):
        code, body, response_headers = _call(h, method, path, headers)
        assert code == 401
        assert "API token" in body["error"]
        assert response_headers.getRawHeaders("www-authenticate") == [CHALLENGE]
        assert response_headers.getRawHeaders("content-type") == ["application/json"]
    assert len(h.outbox) == 0


@pytest.mark.parametrize(("method", "path"), _guarded_routes())
def test_a_wrong_token_is_invalid_token_and_never_echoed(method: str, path: str) -> None:
    """A wrong token (also one that only starts like the right one) gets error="invalid_token"."""
    h = Harness(token=TOKEN)
    for wrong in ("wrong-guess-1234", TOKEN[:-1], TOKEN + "x"):
        code, body, headers = _call(h, method, path, {"Authorization": f"Bearer {wrong}"})
        assert code == 401
        assert headers.getRawHeaders("www-authenticate") == [f'{CHALLENGE}, error="invalid_token"']
        assert wrong not in str(body) and TOKEN not in str(body)
    assert len(h.outbox) == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_right_token_is_accepted(scheme: str) -> None:
    """With `Authorization: Bearer <token>` (scheme in any case) the event is accepted: 202."""
    h = Harness(token=TOKEN)
    d = h.request(
        "POST",
        "/generate_event",
        b'{"event_type": "user_login"}',
        {**JSON, "Authorization": f"{scheme} {TOKEN}"},
    )
    ids = h.confirm_all()
    code, body, _ = h.answer(d)
    assert (code, body) == (202, {"status": "success", "event_id": ids[0]})


@pytest.mark.parametrize("api_site", [False, True])
def test_reads_stay_open(api_site: bool) -> None:
    """/healthz and /metrics answer without a token, so probes and scrapers need no secret."""
    h = Harness(token=TOKEN, api_site=api_site)
    code, body, _ = h.answer(h.request("GET", "/healthz"))
    assert (code, body["status"]) == (200, "healthy")
    d = h.request("GET", "/metrics")
    h.stub.flush()
    result: list[Any] = []
    d.addCallback(result.append)
    assert result[0].code == 200


def test_without_a_token_setting_nothing_is_asked() -> None:
    """With no AUDITGEN_API_TOKEN the API is open, as the legacy service was."""
    h = Harness()
    d = h.request("POST", "/generate_event", b'{"event_type": "user_login"}', JSON)
    h.confirm_all()
    assert h.answer(d)[0] == 202
