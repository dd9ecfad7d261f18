"""TLS to the broker, against a private RabbitMQ node with a TLS listener and certificates made here.

The node requires a client certificate (verify_peer, fail_if_no_peer_cert); its own certificate names
`localhost` only, so connecting to 127.0.0.1 is a host-name mismatch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
import trustme
from twisted.internet.threads import deferToThread

from auditgen.amqp.connection import Backoff
from auditgen.amqp.publisher import Publisher
from auditgen.amqp.tls import ClientTLS
from auditgen.config import Broker
from auditgen.events import Catalog, EventFactory
from auditgen.metrics import Metrics
from auditgen.outbox import Outbox
from tests.support import broker as broker_module
from tests.support.broker import PrivateBroker
from tests.support.net import free_port
from tests.support.waiting import reactor, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not broker_module.available(), reason="needs the RabbitMQ server scripts"),
]

FACTORY = EventFactory(Catalog.builtin())


class TLSNode:
    """The private node, its TLS port, and the PEM files: our CA's, a client's, and a stranger CA's."""

    def __init__(self, node: PrivateBroker, tls_port: int, files: dict[str, str]) -> None:
        self.node = node
        self.tls_port = tls_port
        self.files = files


@pytest_twisted.async_yield_fixture(scope="module")
async def tls_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TLSNode]:
    """One private node with a TLS listener that wants a client certificate from our CA."""
    pems = tmp_path_factory.mktemp("pems")
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("auditgen-client")
    blobs = {
        "ca": ca.cert_pem,
        "stranger_ca": stranger.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    files = {}
    for name, blob in blobs.items():
        files[name] = str(pems / f"{name}.pem")
        blob.write_to_path(files[name])
    tls_port = free_port()
    node = PrivateBroker(
        reactor,
        base_dir=tmp_path_factory.mktemp("broker"),
        extra_config=[
            f"listeners.ssl.local = 127.0.0.1:{tls_port}",
            f"ssl_options.cacertfile = {files['ca']}",
            f"ssl_options.certfile = {files['server_cert']}",
            f"ssl_options.keyfile = {files['server_key']}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
        ],
    )
    await node.start()
    try:
        yield TLSNode(node, tls_port, files)
    finally:
        await node.stop()


def _publisher(node: TLSNode, host: str, queue: str, tls: ClientTLS) -> Publisher:
    metrics = Metrics()
    return Publisher(
        reactor,
        Broker(host, node.tls_port, "guest", "guest", "/", tls=True),
        queue,
        Outbox(1000, metrics, reactor),
        metrics,
        connect_timeout=5.0,
        backoff=Backoff(base=0.1, cap=0.5),
        tls=tls,
    )


async def _refused(node: TLSNode, host: str, tls: ClientTLS) -> str:
    """Start a publisher that cannot connect; its last_error (what /healthz shows) once it failed."""
    publisher = _publisher(node, host, f"auditgen-tls-{uuid.uuid4().hex[:8]}", tls)
    publisher.startService()
    try:
        await wait_for(lambda: publisher.last_error is not None, timeout=15, what="a failed connect")
        assert not publisher.connected
        return publisher.last_error or ""
    finally:
        await publisher.stopService()


@pytest_twisted.ensureDeferred
async def test_events_are_published_over_tls_with_a_client_certificate(tls_node: TLSNode) -> None:
    """amqps with our CA and a client certificate: the broker sees a TLS connection with that certificate,
    and every event arrives."""
    files = tls_node.files
    queue = f"auditgen-tls-{uuid.uuid4().hex[:8]}"
    tls = ClientTLS.load(files["ca"], files["client_cert"], files["client_key"])
    publisher = _publisher(tls_node, "localhost", queue, tls)
    entries = [publisher._outbox.add(FACTORY.generate()) for _ in range(20)]
    publisher.startService()
    try:
        await wait_for(lambda: len(publisher._outbox) == 0, timeout=30, what="20 events confirmed over TLS")
        assert publisher.address.startswith("amqps://")
        connections = await tls_node.node.ctl("list_connections", "ssl", "peer_cert_subject")
        assert "true\tOU=Testing cert" in connections, connections  # TLS, with our client certificate
    finally:
        await publisher.stopService()
    assert all(e.called for e in entries)
    bodies = await deferToThread(tls_node.node.consume_all, queue)
    await deferToThread(tls_node.node.delete_queue, queue)
    assert len(bodies) == 20
    assert all(json.loads(b)["event_id"] for b in bodies)


@pytest_twisted.ensureDeferred
async def test_a_broker_certificate_from_another_ca_is_refused(tls_node: TLSNode) -> None:
    """A CA file that did not sign the broker's certificate: no connection, and last_error says why."""
    files = tls_node.files
    error = await _refused(
        tls_node, "localhost", ClientTLS.load(files["stranger_ca"], files["client_cert"], files["client_key"])
    )
    assert "certificate verify failed" in error, error


@pytest_twisted.ensureDeferred
async def test_a_host_name_the_certificate_does_not_show_is_refused(tls_node: TLSNode) -> None:
    """The certificate names localhost; connecting to 127.0.0.1 fails while the host-name check is on."""
    files = tls_node.files
    error = await _refused(
        tls_node, "127.0.0.1", ClientTLS.load(files["ca"], files["client_cert"], files["client_key"])
    )
    assert "does not name the host we connected to" in error and "127.0.0.1" in error, error


@pytest_twisted.ensureDeferred
async def test_without_the_host_name_check_only_the_chain_is_verified(tls_node: TLSNode) -> None:
    """RABBITMQ_TLS_VERIFY_HOSTNAME=false: 127.0.0.1 connects (our CA signed it), a stranger CA still not."""
    files = tls_node.files
    queue = f"auditgen-tls-{uuid.uuid4().hex[:8]}"
    tls = ClientTLS.load(files["ca"], files["client_cert"], files["client_key"], verify_hostname=False)
    publisher = _publisher(tls_node, "127.0.0.1", queue, tls)
    publisher.startService()
    try:
        await wait_for(lambda: publisher.connected, timeout=30, what="a TLS connection to 127.0.0.1")
    finally:
        await publisher.stopService()
    await deferToThread(tls_node.node.delete_queue, queue)
    stranger = ClientTLS.load(files["stranger_ca"], files["client_cert"], files["client_key"], False)
    assert "certificate verify failed" in await _refused(tls_node, "127.0.0.1", stranger)


@pytest_twisted.ensureDeferred
async def test_without_a_client_certificate_a_broker_that_wants_one_refuses(tls_node: TLSNode) -> None:
    """The node requires a client certificate: without one the handshake fails and last_error is set."""
    error = await _refused(tls_node, "localhost", ClientTLS.load(tls_node.files["ca"]))
    assert "TLS handshake failed: tlsv13 alert certificate required" in error, error
