"""The API port's HTTP server: request bodies bounded without buffering, JSON for protocol errors.

twisted.web stores a whole body before a resource sees it, with no limit, and answers a header flood or a
malformed request with a bare "400 Bad Request"; every answer of this API is JSON instead.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.server import Request, Site

from auditgen.validation import DEFAULT_MAX_BODY_BYTES

# After a 413, how much more of the refused body is read (and dropped) so that the client, still sending,
# reads the answer instead of a connection reset; a longer body gets the connection closed at once.
MAX_DISCARD_BYTES = 16 * 1_048_576
IDLE_TIMEOUT_SECONDS = 75  # an idle keep-alive connection is closed after this (Twisted: 12 hours)


def too_large(max_body_bytes: int) -> str:
    """The 413 message, the same whether the site or the route noticed."""
    return f"request body is larger than {max_body_bytes} bytes"


class ApiChannel(HTTPChannel):
    """An HTTPChannel whose own refusals are JSON like every other answer of the API.

    twisted.web answers a header flood, an over-long line or a malformed request with a bare
    "400 Bad Request" (or just drops the connection), before any route sees the request.
    """

    _refused = False
    _closing = False

    def refuse(self, code: int, error: str, linger: bool = False) -> None:
        """Answer once, with a JSON error and `Connection: close`, written straight to the transport.

        Without linger the connection closes now; with it, the caller keeps reading (and dropping) what
        the client is still sending and closes later, so the client reads this answer, not a reset.
        """
        if not self._refused:
            self._refused = True
            body = json.dumps({"error": error}).encode()
            head = (
                f"HTTP/1.1 {code} {RESPONSES.get(code, b'Error').decode()}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            assert self.transport is not None
            self.transport.write(head.encode() + body)
        if not linger:
            self.close()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return  # refused and closing: whatever the client still sends is not parsed
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the connection once, however many ways of refusing the request ask for it."""
        if not self._closing:
            self._closing = True
            self.loseConnection()  # type: ignore[no-untyped-call]

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's one exit for protocol-level bad requests (see HTTPChannel); the limits it enforces are
        # maxHeaders and totalHeadersSize. tests/test_hostile.py pins this against Twisted upgrades.
        if self._receivedHeaderCount > self.maxHeaders:
            error = f"too many header fields; at most {self.maxHeaders}"
        elif self._receivedHeaderSize > self.totalHeadersSize:
            error = f"request line and header fields are larger than {self.totalHeadersSize} bytes"
        else:
            error = "malformed HTTP request"
        self.refuse(400, f"bad request: {error}")

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line over MAX_LENGTH, which LineReceiver would answer by dropping the connection."""
        self.refuse(
            400, f"bad request: a request line or header field is longer than {self.MAX_LENGTH} bytes"
        )


class ApiRequest(Request):
    """A request that never buffers more of a body than the site's max_body_bytes.

    twisted.web stores the whole body before a resource sees it, with no limit. Here a body declared
    larger (Content-Length) or growing larger (chunked) is answered 413 at once, its bytes are dropped
    as they arrive, and the request never reaches the resource.
    """

    def __init__(self, channel: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)  # type: ignore[no-untyped-call]
        self.max_body_bytes: int = channel.site.max_body_bytes
        self._received = 0
        self._discarded = 0
        self._too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_bytes:
            # This 413 is final: no "100 Continue" may follow it, and a client waiting for one sends
            # nothing more, so there is nothing to wait for.
            waiting_for_continue = self.requestHeaders.hasHeader(b"expect")
            self.requestHeaders.removeHeader(b"expect")
            self.content = BytesIO()
            self._refuse(linger=not waiting_for_continue and length <= MAX_DISCARD_BYTES)
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            self._discard(len(data))
            return
        self._received += len(data)
        if self._received > self.max_body_bytes:
            assert self.content is not None
            self.content.close()  # what was kept of this body, freed now
            self.content = BytesIO()
            self._refuse(linger=True)
            self._discard(len(data))
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large:
            # The rest of the refused body has arrived and was dropped; the 413 is out. Done.
            if isinstance(self.channel, ApiChannel):
                self.channel.close()
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _refuse(self, linger: bool) -> None:
        self._too_large = True
        assert isinstance(self.channel, ApiChannel)
        self.channel.refuse(413, too_large(self.max_body_bytes), linger=linger)

    def _discard(self, count: int) -> None:
        self._discarded += count
        if self._discarded > MAX_DISCARD_BYTES and isinstance(self.channel, ApiChannel):
            self.channel.close()


class ApiSite(Site):
    """The API port's site: bodies bounded without buffering, JSON refusals, no access log.

    Form parsing is off: the API reads JSON only, and a hostile multipart body must cost nothing.
    """

    protocol = ApiChannel  # type: ignore[assignment]  # a plain HTTPChannel: no HTTP/2 negotiation here
    requestFactory = ApiRequest

    def __init__(
        self,
        resource: Any,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        *,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource, parsePOSTFormSubmission=False, reactor=reactor
        )
        self.max_body_bytes = max_body_bytes
        # Twisted's default keeps an idle connection 12 hours; a slow or silent client gets 75 s.
        self.timeOut = IDLE_TIMEOUT_SECONDS

    def log(self, request: Any) -> None:
        """No access-log line per request (thousands a second under load)."""
