"""TLS test material: a trustme CA, a server certificate for 127.0.0.1 and localhost, and a client certificate
with a distinctive subject, written as PEM files; plus client-side ``SSLContext``s.

    files = make_tls_files(tmp_path)
    with run_server(app, **files.server_options()) as server:            # TLS on
        httpx.get(server.url, verify=files.client_context())              # HTTP/1.1, trusting the CA
    files.server_options(ssl_cert_reqs="required", ssl_ca_certs=...)     # or mtls_options(): mutual TLS
    files.client_context(client_cert=True, alpn=["h2"])                  # present the client certificate

The keys and certificates are made once per test process (trustme's ECDSA keys are quick, but there is no
need to make them per test); every ``make_tls_files`` call writes its own copies into its directory.
"""

from __future__ import annotations

import functools
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

CLIENT_COMMON_NAME = "zonda test client"
CLIENT_ORGANIZATION = "Zonda QA, Inc."  # a comma: client_cert_name must escape it (RFC 4514)
KEY_PASSWORD = "s3cret"


@dataclass(frozen=True)
class TLSFiles:
    ca: trustme.CA
    ca_pem: Path  # the CA certificate: clients trust it; ssl_ca_certs verifies client certificates with it
    cert: Path  # the server's certificate (leaf only), for 127.0.0.1 and localhost
    key: Path  # the server's private key
    encrypted_key: Path  # the same key, encrypted with KEY_PASSWORD
    client_cert: Path  # the client's certificate (leaf only)
    client_key: Path
    client_name: str  # the client certificate's subject as RFC 4514, as client_cert_name must say it

    def server_options(self, **extra: Any) -> dict[str, Any]:
        """Config options that turn TLS on with the server certificate."""
        return {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key), **extra}

    def mtls_options(self, cert_reqs: str = "required", **extra: Any) -> dict[str, Any]:
        """Config options for mutual TLS: client certificates checked against the test CA."""
        return self.server_options(ssl_ca_certs=str(self.ca_pem), ssl_cert_reqs=cert_reqs, **extra)

    def client_chain_sent(self) -> list[str]:
        """``client_cert_chain`` for a client that presents ``client_context(client_cert=True)``: the client
        certificate, then the CA, which OpenSSL adds when it completes a lone certificate's chain from the
        client's trust store. Python shows a server the whole chain it was sent from 3.13 on; before, only
        the client's own certificate."""
        chain = [self.client_cert.read_text()]
        if sys.version_info >= (3, 13):
            chain.append(self.ca_pem.read_text())
        return chain

    def client_context(
        self,
        *,
        client_cert: bool = False,
        alpn: Sequence[str] | None = ("http/1.1",),
        maximum_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client context that trusts the test CA; ALPN offers only HTTP/1.1 unless told otherwise
        (``alpn=None``: no ALPN extension at all)."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if alpn is not None:
            context.set_alpn_protocols(list(alpn))
        if client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        if maximum_version is not None:
            context.maximum_version = maximum_version
        return context

    def threaded_client_context(self) -> ssl.SSLContext:
        """For websockets' sync client, which reads its socket in one thread while it writes in another: capped
        at TLS 1.2. Under TLS 1.3 the server's session tickets arrive just after the handshake, and an
        ``SSLSocket`` reading them in one thread while another writes sometimes loses the write (the request
        never reaches the server, which closes at its keep-alive timeout). Seen with a plain asyncio TLS server
        too, without zonda: 13 lost of 1,500 under load with TLS 1.3, none of 1,500 with TLS 1.2."""
        return self.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)


@functools.lru_cache(maxsize=1)
def _material() -> tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert, bytes]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client = ca.issue_cert(
        "client@example.org", common_name=CLIENT_COMMON_NAME, organization_name=CLIENT_ORGANIZATION
    )
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
    )
    return ca, server, client, encrypted


def make_tls_files(directory: Path) -> TLSFiles:
    """Write the CA, server and client PEM files into ``directory`` (e.g. ``tmp_path``)."""
    ca, server, client, encrypted = _material()
    files = TLSFiles(
        ca=ca,
        ca_pem=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        encrypted_key=directory / "server-encrypted.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_name=x509.load_pem_x509_certificate(
            client.cert_chain_pems[0].bytes()
        ).subject.rfc4514_string(),
    )
    ca.cert_pem.write_to_path(str(files.ca_pem))
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    files.encrypted_key.write_bytes(encrypted)
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files
