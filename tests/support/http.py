"""Raw HTTP to the API port's site, in memory: an HTTPChannel over a StringTransport, so every byte the
client sends and the server answers is visible, and a small parser for the answers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from auditgen.site import ApiSite
from tests.support.web import Harness


@dataclass
class Answer:
    """One HTTP response as the client received it."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> Answer:
    """The first response in raw, with a Content-Length or chunked body."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, rest = body + rest[:n], rest[n + 2 :]
    else:
        body = rest[: int(headers["content-length"])]
    return Answer(int(status.split(" ")[1]), headers, body)


class Connection:
    """One client connection to the site, in memory."""

    def __init__(self, site: ApiSite) -> None:
        self.channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def answer(self) -> Answer:
        return parse_answer(self.transport.value())

    @property
    def closed(self) -> bool:
        """Whether the server has closed (or is closing) the connection."""
        return bool(self.transport.disconnecting)

    @property
    def buffered(self) -> int:
        """Bytes of request body the server is holding for the request in progress."""
        content = self.channel.requests[0].content  # BytesIO or, for larger bodies, a temporary file
        return int(content.seek(0, io.SEEK_END))


class SiteHarness(Harness):
    """The API behind its ApiSite, on a Clock, with the broker played by the test; raw HTTP in and out."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(max_body_bytes=max_body_bytes)
        self.site = self.api.site(reactor=self.clock)

    def connect(self) -> Connection:
        return Connection(self.site)

    def healthy(self) -> bool:
        """A fresh connection still gets its answer."""
        c = self.connect()
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = c.answer()
        return answer.code == 200 and answer.json()["status"] == "healthy"


def head(length: int | None = None, *extra: str) -> bytes:
    lines = ["POST /generate_event HTTP/1.1", "Host: auditgen", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
