"""The QUIC endpoint: one UDP socket's datagrams routed to their connections by connection ID.

A datagram's header (read by aioquic, not parsed here) names the connection it is for: the destination
connection ID, which is ours once the handshake has begun (every ID a connection issues is registered, and
dropped when retired). A long-header packet of a QUIC version we do not speak gets a Version Negotiation
packet (never in answer to one: two servers could bounce them forever). An Initial packet for an unknown ID
opens a connection, only from a datagram of at least 1,200 bytes (RFC 9000 §14.1: a client pads its first
flight, so an attacker's small datagram cannot make the server answer with more than three times its size);
while ``retry_after`` handshakes are in progress (a flood of Initials, each costing the server a TLS key
exchange), or always with ``retry``, only once the client has echoed a Retry token, which proves it can receive
at its address (RFC 9000 §8.1.2). Anything else for an unknown ID is dropped unanswered.

Datagrams out go through the driver's ``io.base.DatagramSender``. Nothing here knows the event loop.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import TYPE_CHECKING, Any

from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.tls import SessionTicket
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from zonda.asgi.seams import ConnectionInfo
from zonda.connection.http3 import HTTP3Connection
from zonda.errors import ConfigError
from zonda.protocols.http3 import H3Core, H3Settings, ServerQuicConnection

if TYPE_CHECKING:
    import socket

    from zonda.config import Config
    from zonda.connection.shared import ServerShared
    from zonda.io.base import DatagramSender, Loop, Runtime

quic_log = logging.getLogger("zonda.quic")
SMALLEST_INITIAL = 1200  # bytes: a client's first datagram is padded to at least this (RFC 9000 §14.1)
TOKEN_LIFETIME = 10.0  # seconds a Retry token stays good: a client echoes it within a round trip
_TOKEN_HEAD = struct.Struct("!dB")  # issued at, length of the original destination ID


class RetryTokens:
    """Retry tokens (RFC 9000 §8.1.2-8.1.3): the time issued, the client's original destination connection ID and
    the Retry's source ID, sealed with AES-GCM under a key of this process, with the client's address as
    associated data. Ours, not aioquic's: before aioquic 1.7 its tokens never expire and cost an RSA operation
    each, which is what an address check under attack must not cost."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=128))

    def issue(self, addr: Any, original_id: bytes, retry_id: bytes, now: float) -> bytes:
        nonce = os.urandom(12)
        sealed = _TOKEN_HEAD.pack(now, len(original_id)) + original_id + retry_id
        return nonce + self._aead.encrypt(nonce, sealed, _address(addr))

    def check(self, addr: Any, token: bytes, retry_id: bytes, now: float) -> bytes | None:
        """The original destination ID the token carries, or None: forged, from another address, for another
        Retry, or expired."""
        try:
            sealed = self._aead.decrypt(token[:12], token[12:], _address(addr))
        except (InvalidTag, ValueError):
            return None
        if len(sealed) < _TOKEN_HEAD.size:
            return None
        issued, length = _TOKEN_HEAD.unpack_from(sealed)
        original_id = sealed[_TOKEN_HEAD.size : _TOKEN_HEAD.size + length]
        if sealed[_TOKEN_HEAD.size + length :] != retry_id or not 0 <= now - issued <= TOKEN_LIFETIME:
            return None
        return original_id


def _address(addr: Any) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class SessionTickets:
    """``--quic-0rtt``: the TLS session tickets this process issued, each good for one resumption. 0-RTT data
    can be replayed by anyone who captured it; a ticket that is taken out of the store when used (RFC 8446 §8.1,
    single-use tickets) makes a replay find nothing, so it gets a full handshake and no early data. Held in
    memory, at most ``limit`` (the oldest go first); another worker or a restart knows none of them."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._tickets: dict[bytes, SessionTicket] = {}

    def add(self, ticket: SessionTicket) -> None:
        tickets = self._tickets
        if len(tickets) >= self.limit:
            del tickets[next(iter(tickets))]
        tickets[ticket.ticket] = ticket

    def take(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


class QuicSettings:
    """The QUIC side of ``--http3``: TLS, limits and address validation for every connection of an endpoint."""

    def __init__(
        self,
        certfile: str,
        keyfile: str | None,
        password: str | None,
        *,
        max_streams: int = 100,
        stream_window: int = 1024 * 1024,
        connection_window: int = 4 * 1024 * 1024,
        idle_timeout: float = 60.0,
        retry: bool = False,
        retry_after: int = 64,
        zero_rtt: bool = False,
        h3: H3Settings | None = None,
    ) -> None:
        configuration = QuicConfiguration(
            is_client=False,
            alpn_protocols=list(H3_ALPN),
            idle_timeout=idle_timeout,
            max_data=connection_window,
            max_stream_data=stream_window,
        )
        configuration.load_cert_chain(certfile, keyfile, password)  # raises on a bad file, before serving
        self.configuration = configuration
        self.max_streams = max_streams
        self.retry = retry
        self.retry_after = retry_after
        self.tickets = SessionTickets() if zero_rtt else None  # None: no resumption, so no 0-RTT
        self.h3 = h3 or H3Settings()


class QuicEndpoint:
    """A UDP socket's QUIC connections (``io.base.DatagramReceiver``); see the module docstring."""

    def __init__(
        self,
        shared: ServerShared,
        loop: Loop,
        settings: QuicSettings,
        sender: DatagramSender,
        server: tuple[str, int | None] | None,
    ) -> None:
        self.shared = shared
        self.loop = loop
        self.settings = settings
        self.sender = sender
        self.server = server
        self.accepting = True
        self.dropped = 0  # datagrams no connection took (bad headers, unknown IDs, too small to open one)
        self._by_id: dict[bytes, HTTP3Connection] = {}
        self._ids: dict[HTTP3Connection, set[bytes]] = {}
        self._tokens = RetryTokens()
        self.handshaking: set[HTTP3Connection] = set()  # connections whose handshake is in progress
        self.retries_sent = 0
        self._cid_length = settings.configuration.connection_id_length
        self._versions = settings.configuration.supported_versions

    @property
    def connections(self) -> list[HTTP3Connection]:
        return list(self._ids)

    def datagram_received(self, data: bytes, addr: Any, /) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            self.dropped += 1
            return
        connection = self._by_id.get(header.destination_cid)
        if connection is not None:
            connection.datagram_received(data, addr)
            return
        version = header.version
        if version is not None and version not in self._versions:
            if header.packet_type != QuicPacketType.VERSION_NEGOTIATION:
                self.sender.sendto(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=self._versions,
                    ),
                    addr,
                )
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL or not self.accepting:
            self.dropped += 1
            return
        original_id = header.destination_cid
        retry_id = None
        if header.token:
            retry_id = header.destination_cid
            checked = self._tokens.check(addr, header.token, retry_id, self.loop.time())
            if checked is None:
                self.dropped += 1  # a forged or stale token: no connection, no answer
                return
            original_id = checked
        elif self.settings.retry or len(self.handshaking) >= self.settings.retry_after:
            self._send_retry(header.version, header.source_cid, header.destination_cid, addr)
            return
        connection = self._open(original_id, retry_id, addr)
        self._register(connection, header.destination_cid)
        connection.datagram_received(data, addr)

    def _send_retry(self, version: int | None, client_id: bytes, original_id: bytes, addr: Any) -> None:
        assert version is not None
        new_id = os.urandom(self._cid_length)
        token = self._tokens.issue(addr, original_id, new_id, self.loop.time())
        self.retries_sent += 1
        packet = encode_quic_retry(
            version=version,
            source_cid=new_id,
            destination_cid=client_id,
            original_destination_cid=original_id,
            retry_token=token,
        )
        self.sender.sendto(packet, addr)

    def _open(self, original_id: bytes, retry_id: bytes | None, addr: Any) -> HTTP3Connection:
        settings = self.settings
        tickets = settings.tickets
        quic = ServerQuicConnection(
            configuration=settings.configuration,
            original_destination_connection_id=original_id,
            retry_source_connection_id=retry_id,
            session_ticket_fetcher=tickets.take if tickets is not None else None,
            session_ticket_handler=tickets.add if tickets is not None else None,
        )
        # aioquic takes no option for the client's concurrent request streams; its transport parameters are
        # read from this limit when the handshake begins
        limit = quic._local_max_streams_bidi
        limit.value = limit.sent = settings.max_streams
        core = H3Core(quic, settings.h3, self.shared.defaults, self.loop.time, self.shared.count_bytes)
        client = (addr[0], addr[1]) if isinstance(addr, tuple) else None
        info = ConnectionInfo(client, self.server, "https", self.shared.context.root_path)
        proxy = self.shared.proxy
        if proxy is not None:
            info.rewrite = proxy.rewriter(client[0] if client else None)
        connection = HTTP3Connection(self.shared, self.loop, self, core, info)
        self.handshaking.add(connection)
        self._ids[connection] = set()
        self._register(connection, quic.host_cid)
        return connection

    def _register(self, connection: HTTP3Connection, cid: bytes) -> None:
        self._by_id[cid] = connection
        self._ids[connection].add(cid)

    def update_ids(self, connection: HTTP3Connection) -> None:
        """The connection's core issued or retired connection IDs: route by its current ones."""
        core = connection.core
        if core.issued_ids or core.retired_ids:
            ids = self._ids.get(connection)
            if ids is not None:
                for cid in core.issued_ids:
                    self._by_id[cid] = connection
                    ids.add(cid)
                for cid in core.retired_ids:
                    if self._by_id.get(cid) is connection:
                        del self._by_id[cid]
                    ids.discard(cid)
            core.issued_ids.clear()
            core.retired_ids.clear()

    def handshake_done(self, connection: HTTP3Connection) -> None:
        self.handshaking.discard(connection)

    def forget(self, connection: HTTP3Connection) -> None:
        """The connection is gone (closed, timed out, or aborted)."""
        self.handshaking.discard(connection)
        for cid in self._ids.pop(connection, ()):
            if self._by_id.get(cid) is connection:
                del self._by_id[cid]

    def close(self) -> None:
        """Stop taking new connections (graceful shutdown); the open ones go on until they close."""
        self.accepting = False


def quic_settings(config: Config) -> QuicSettings:
    """``--http3``'s settings; raises ConfigError for a certificate or key aioquic cannot load."""
    assert config.ssl_certfile is not None  # Config refuses --http3 without it
    try:
        return QuicSettings(
            config.ssl_certfile,
            config.ssl_keyfile,
            config.ssl_keyfile_password,
            max_streams=config.h3_max_concurrent_streams,
            stream_window=config.h3_stream_window,
            connection_window=config.h3_connection_window,
            idle_timeout=config.timeout_quic_idle,
            retry=config.quic_retry,
            retry_after=config.quic_retry_after,
            zero_rtt=config.quic_0rtt,
            h3=H3Settings(max_header_list_size=config.h2_max_header_list_size),
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"http3: cannot load the certificate or key for QUIC: {exc}") from None


async def serve_quic(
    runtime: Runtime, shared: ServerShared, settings: QuicSettings, sock: socket.socket
) -> QuicEndpoint:
    """Serve HTTP/3 on bound UDP ``sock``; the endpoint's connections join ``shared.connections``."""
    sockname = sock.getsockname()
    server = (sockname[0], sockname[1])
    settings.h3.enable_connect_protocol = shared.context.ws is not None  # WebSocket served (RFC 9220)
    endpoints: list[QuicEndpoint] = []

    def receiver(sender: DatagramSender) -> QuicEndpoint:
        endpoint = QuicEndpoint(shared, runtime.loop, settings, sender, server)
        endpoints.append(endpoint)
        return endpoint

    await runtime.listen_datagrams(sock, receiver)
    return endpoints[0]
