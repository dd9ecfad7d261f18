"""Only JSON changes anything: every request that may change something must say its body is JSON.

A web page can make a visitor's browser send a cross-site POST without a CORS preflight only with no
Content-Type or a form or text/plain one (a `fetch` with a Blob body, a form). Answering 415 to those
means no page the user visits can trigger events or scenarios on a service on localhost or the LAN:
`application/json` (and any `+json` type) makes the browser ask first, and this service never allows
another origin. Like the API token (auditgen/auth.py), the check wraps the whole resource, so a route
added later is covered without anyone remembering to.

A request without a body needs the header too: a body-less POST is just as easy to send cross-site, and
`POST /scenarios/{name}` without a body runs the scenario.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

READ_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
MISSING = "Content-Type: application/json is required, also for a request without a body"


def is_json(content_type: str) -> bool:
    """Whether a Content-Type value names JSON: application/json or application/<anything>+json, with
    any parameters (charset)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def content_type_error(content_type: str | None) -> str | None:
    """Why a request that may change something is refused for its Content-Type; None if it is JSON."""
    if content_type is None:
        return MISSING
    if not is_json(content_type):
        return f"Content-Type must be application/json, not {content_type!r}"
    return None


class RequireJson(Resource):
    """Answers 415 to a request other than GET, HEAD and OPTIONS whose Content-Type is not JSON, when a
    route takes it; hands every other request to `wrapped`.

    `routed(request)` says whether a route takes the request's path and method: one that none takes gets
    its 404 or 405 from `wrapped`, whatever its Content-Type (an unknown method is a 405 first).
    """

    isLeaf = True

    def __init__(self, wrapped: IResource, routed: Callable[[IRequest], bool]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._wrapped = wrapped
        self._routed = routed

    def render(self, request: IRequest) -> Any:
        if request.method not in READ_METHODS:
            error = content_type_error(request.getHeader("content-type"))
            # Routes are matched only for a refusal: a JSON request, the usual one, costs no second match.
            if error is not None and self._routed(request):
                request.setResponseCode(415)
                request.setHeader(b"content-type", b"application/json")
                return json.dumps({"error": error}).encode()
        return self._wrapped.render(request)
