"""The console's resources under /console/: the static page, its state snapshot and its event tail.

The page is static files shipped in the package (no build step); every answer carries a
Content-Security-Policy that allows only this origin's own scripts, styles and connections, so no inline
script could run even if something were injected into the page.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from twisted.web import pages
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from auditgen.console.state import ConsoleState
from auditgen.console.tail import EventTail

STATIC = Path(str(resources.files("auditgen.console").joinpath("static")))
POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _secure(request: IRequest) -> None:
    request.setHeader(b"content-security-policy", POLICY)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")


TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".md": b"text/plain; charset=utf-8",
    ".LICENSE": b"text/plain; charset=utf-8",
}


class _Directory(Resource):
    """A folder of the page's files: its index.html, its files of the types above, its subfolders;
    nothing else (no listings, no other types, nothing outside it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._path = path

    def getChild(self, name: bytes, request: IRequest) -> IResource:
        if name == b"":
            return self
        child = self._path / name.decode("utf-8", "replace")
        if name.startswith(b".") or b"/" in name:
            return pages.notFound()
        if child.is_dir():
            return _Directory(child)
        if child.is_file() and child.suffix in TYPES:
            return _File(child)
        return pages.notFound()

    def render_GET(self, request: IRequest) -> bytes:
        index = self._path / "index.html"
        if not index.is_file():
            return pages.notFound().render(request)  # type: ignore[no-any-return]
        return _File(index).render_GET(request)


class _File(Resource):
    isLeaf = True

    def __init__(self, path: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._path = path

    def render_GET(self, request: IRequest) -> bytes:
        _secure(request)
        request.setHeader(b"content-type", TYPES[self._path.suffix])
        request.setHeader(b"cache-control", b"no-cache")
        return self._path.read_bytes()


class _State(Resource):
    isLeaf = True

    def __init__(self, state: ConsoleState) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._state = state

    def render_GET(self, request: IRequest) -> bytes:
        _secure(request)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self._state.snapshot()).encode()


def console_resource(state: ConsoleState, tail: EventTail) -> Resource:
    """/console/ (index.html and its files), /console/state and /console/tail."""
    root = _Directory(STATIC)
    root.putChild(b"state", _State(state))
    root.putChild(b"tail", tail)
    return root
