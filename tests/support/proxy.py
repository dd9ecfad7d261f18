"""A TCP proxy on loopback that a test controls: listen, refuse, and cut every connection."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import connectionDone
from twisted.protocols import portforward
from twisted.python.failure import Failure

from tests.support.waiting import poll


class _Server(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.proxy.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.proxy.connections.discard(self)
        super().connectionLost(reason)


class Proxy:
    """Forwards 127.0.0.1:<port> to the target until told to refuse or cut."""

    def __init__(self, reactor: Any, target_host: str, target_port: int) -> None:
        self._reactor = reactor
        self._factory = portforward.ProxyFactory(target_host, target_port)
        self._factory.protocol = _Server
        self._factory.proxy = self
        self._listening: IListeningPort | None = None
        self.connections: set[_Server] = set()
        self.port = 0

    def listen(self) -> int:
        """Start accepting (again, on the same port after the first time)."""
        self._listening = self._reactor.listenTCP(self.port, self._factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    async def refuse(self) -> None:
        """Stop accepting new connections; the port refuses them until listen() again."""
        if self._listening is not None:
            listening, self._listening = self._listening, None
            stopped = listening.stopListening()
            if stopped is not None:
                await stopped

    def cut(self) -> None:
        """Drop every proxied connection at once, as a network cut would (no AMQP close)."""
        for server in list(self.connections):
            server.transport.abortConnection()
            if server.peer is not None and server.peer.transport is not None:
                server.peer.transport.abortConnection()

    async def close(self) -> None:
        """Refuse and cut, and wait until every proxied socket is gone."""
        await self.refuse()
        self.cut()
        gone = "the proxied sockets to close"
        await poll(self._reactor, lambda: not self.connections, 10, gone, every=0.01)
