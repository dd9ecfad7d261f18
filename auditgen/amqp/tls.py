"""TLS to the broker: the trust root, the client certificate, and whether the broker's name is checked.

pika's Twisted adapter ignores `ssl_options`, so TLS lives on the Twisted endpoint (see
auditgen.amqp.connection). The files are read once, at start-up, where a bad one is a configuration error
naming the setting rather than a failure on every reconnect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from service_identity import VerificationError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from zope.interface import implementer

MAX_PEM_BYTES = 1_048_576  # a CA bundle is a few hundred KiB; anything larger is not what was meant


def _read(path: str) -> bytes:
    try:
        with open(Path(path).expanduser(), "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read the file ({e.strerror or e})") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"the file is larger than {MAX_PEM_BYTES} bytes; expected PEM certificates")
    return data


def load_certificates(path: str) -> list[X509]:
    """Every certificate in a PEM file (a CA bundle, or a certificate followed by its chain)."""
    try:
        certificates = x509.load_pem_x509_certificates(_read(path))
    except ValueError as e:
        raise ValueError(f"expected PEM certificates ({e})") from None
    return [X509.from_cryptography(c) for c in certificates]


def load_client_certificate(cert_file: str, key_file: str) -> tuple[PrivateCertificate, list[X509]]:
    """The client certificate with its key (unencrypted PEM), and the chain that follows it in its file."""
    try:
        leaf, *chain = load_certificates(cert_file)
    except ValueError as e:
        raise ValueError(f"{cert_file}: {e}") from None
    try:
        key = load_pem_private_key(_read(key_file), password=None)
    except TypeError:
        raise ValueError(f"{key_file}: the key is encrypted; give an unencrypted PEM key") from None
    except ValueError as e:
        raise ValueError(f"{key_file}: expected a PEM private key ({e})") from None
    if _public(key.public_key()) != _public(leaf.to_cryptography().public_key()):
        raise ValueError(f"the key in {key_file} does not belong to the certificate in {cert_file}")
    try:
        pkey = PKey.from_cryptography_key(key)  # type: ignore[arg-type]
    except TypeError as e:
        raise ValueError(f"{key_file}: unsupported key type ({e})") from None
    return PrivateCertificate.fromCertificateAndKeyPair(Certificate(leaf), KeyPair(pkey)), chain


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


def _chain_ok(_connection: Any, _certificate: Any, _error: int, _depth: int, ok: int) -> bool:
    return bool(ok)


@implementer(IOpenSSLClientConnectionCreator)
class _ChainOnly:
    """optionsForClientTLS's connection (SNI, protocols, trust root), minus the check of the broker's name."""

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self._creator = creator

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _chain_ok)
        return connection


class ClientTLS:
    """How to open a TLS connection to a broker: verify its chain (and by default its name)."""

    def __init__(
        self,
        trust_root: Any = None,
        client_certificate: PrivateCertificate | None = None,
        chain: list[X509] | None = None,
        verify_hostname: bool = True,
    ) -> None:
        self._trust_root = trust_root  # None: the system's trust store
        self._client_certificate = client_certificate
        self._chain = chain or []
        self.verify_hostname = verify_hostname

    @classmethod
    def load(
        cls,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify_hostname: bool = True,
    ) -> ClientTLS:
        """From PEM files; ValueError says what is wrong with which file."""
        trust_root = None
        if ca_file is not None:
            trust_root = trustRootFromCertificates([Certificate(c) for c in load_certificates(ca_file)])
        client, chain = None, None
        if cert_file is not None and key_file is not None:
            client, chain = load_client_certificate(cert_file, key_file)
        return cls(trust_root, client, chain, verify_hostname)

    def creator(self, host: str) -> IOpenSSLClientConnectionCreator:
        """The connection creator for one broker host (its name is what the certificate must show)."""
        extra: dict[str, Any] = {"extraCertChain": self._chain} if self._client_certificate else {}
        creator = optionsForClientTLS(
            host,
            trustRoot=self._trust_root,
            clientCertificate=self._client_certificate,
            extraCertificateOptions=extra,
        )
        return creator if self.verify_hostname else _ChainOnly(creator)


def describe_tls_error(reason: BaseException) -> str | None:
    """What went wrong in a TLS handshake, in words an operator can act on; None if it was not TLS."""
    if isinstance(reason, VerificationError):
        names = ", ".join(_identity(getattr(e, "mismatched_id", e)) for e in reason.errors)
        return (
            f"TLS: the broker's certificate does not name the host we connected to ({names}); "
            "connect by a name it shows, or set RABBITMQ_TLS_VERIFY_HOSTNAME=false"
        )
    if isinstance(reason, SSL.Error):
        details = "; ".join(str(a[-1]) for a in reason.args[0] if isinstance(a, tuple)) if reason.args else ""
        return f"TLS handshake failed: {details or reason}"
    return None


def _identity(pattern: Any) -> str:
    name = getattr(pattern, "hostname", None) or getattr(pattern, "ip", pattern)
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
