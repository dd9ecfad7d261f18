"""The API token: every call that changes something needs `Authorization: Bearer <token>`.

The check wraps the whole Klein resource, so a route added later is covered without anyone
remembering to; reads (GET, HEAD: /healthz for probes, /metrics for scrapers) stay open.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

OPEN_METHODS = frozenset({b"GET", b"HEAD"})
REALM = 'Bearer realm="auditgen"'


class RequireToken(Resource):
    """Answers 401 to a non-GET/HEAD request without the token; hands every other one to `wrapped`."""

    isLeaf = True

    def __init__(self, wrapped: IResource, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._wrapped = wrapped
        self._token = token.encode()

    def render(self, request: IRequest) -> Any:
        if request.method in OPEN_METHODS:
            return self._wrapped.render(request)
        scheme, _, given = (request.getHeader(b"authorization") or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return _unauthorized(
                request, REALM, "this call needs an API token: Authorization: Bearer <token>"
            )
        if not hmac.compare_digest(given.strip(), self._token):
            return _unauthorized(request, f'{REALM}, error="invalid_token"', "the API token is not valid")
        return self._wrapped.render(request)


def _unauthorized(request: IRequest, challenge: str, error: str) -> bytes:
    """401 with the challenge; the answer never repeats what the caller sent."""
    request.setResponseCode(401)
    request.setHeader(b"www-authenticate", challenge.encode())
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": error}).encode()
