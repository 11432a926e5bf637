"""What every connection of a server shares: limits, settings, default headers, the registry of open
connections and the counters, built once at start-up by ``zonda.server`` and read by ``zonda.connection``."""

from __future__ import annotations

import logging
import ssl
from email.utils import formatdate
from typing import TYPE_CHECKING, Protocol

from zonda.accesslog import uses_request_id
from zonda.asgi.session import SessionContext
from zonda.config import Config
from zonda.protocols.http1 import DefaultHeaders, H1Limits
from zonda.protocols.http2 import H2Settings
from zonda.proxy import ProxySettings, TrustList
from zonda.tls import server_cert_pem

if TYPE_CHECKING:
    from zonda.metrics import Tally

connection_log = logging.getLogger("zonda.connection")


class ServedConnection(Protocol):
    """An open connection as the server and the metrics see it: over TCP a ``connection.base.Connection``,
    over QUIC a ``connection.http3.HTTP3Connection``."""

    protocol_label: str  # zonda_connections_open{protocol}

    @property
    def session(self) -> object: ...

    def shutdown(self) -> None:
        """Graceful shutdown: finish what was received (GOAWAY, Going Away), then close."""
        ...

    def stop_streaming(self) -> int: ...
    def abort(self) -> None: ...
    def byte_counts(self) -> tuple[int, int]:
        """The bytes read and written on this connection so far (``zonda_bytes_total``)."""
        ...


class ServerShared:
    """What every connection of a server shares, built once at start-up."""

    def __init__(
        self,
        config: Config,
        context: SessionContext,
        ssl_context: ssl.SSLContext | None = None,
        alt_svc: bytes | None = None,
    ) -> None:
        """``alt_svc``: the value of the alt-svc header every response carries (HTTP/3 on offer)."""
        self.context = context
        # TLS (zonda.tls): None serves plain HTTP; the driver reads these on TLS connections only
        self.ssl_context = ssl_context
        self.server_cert = (
            server_cert_pem(config.ssl_certfile) if ssl_context and config.ssl_certfile else None
        )
        self.limits = H1Limits(
            max_request_line=config.limit_request_line,
            max_header_count=config.limit_request_headers,
            max_header_bytes=config.limit_request_header_size,
            max_body=config.limit_request_body,
            header_timeout=config.timeout_request_header,
            body_timeout=config.timeout_request_body,
            keep_alive_timeout=config.timeout_keep_alive,
            min_body_rate=config.limit_request_body_rate,
            body_rate_grace=config.limit_request_body_rate_grace,
            http2_prior_knowledge=config.http != "1",
        )
        # --http 2: every connection is HTTP/2 from its first byte (prior knowledge on plaintext, whatever ALPN
        # said on TLS); anything else is a connection error. --http auto reads plaintext as HTTP/1.1 first.
        self.http2_only = config.http == "2"
        self.h2_settings: H2Settings | None = None
        if config.http != "1":
            self.h2_settings = H2Settings(
                max_concurrent_streams=config.h2_max_concurrent_streams,
                initial_window_size=config.h2_initial_window_size,
                connection_window_size=config.h2_connection_window_size,
                max_frame_size=config.h2_max_frame_size,
                max_header_list_size=config.h2_max_header_list_size,
                max_resets=config.h2_max_resets,
                max_control_frames=config.h2_max_control_frames,
                idle_timeout=config.timeout_h2_idle,
                header_timeout=config.timeout_request_header,
                stall_timeout=config.timeout_request_body,
                send_stall_timeout=config.timeout_write or None,
                min_body_rate=config.limit_request_body_rate,
                body_rate_grace=config.limit_request_body_rate_grace,
                enable_connect_protocol=context.ws is not None,
            )
            context.h2c = True
        self.h2_counters: dict[str, int] = {}  # HTTP/2 attack and error counters, summed over connections
        extra = []
        for header in config.headers:
            name, _, value = header.partition(":")
            extra.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
        if alt_svc is not None:
            extra.append((b"alt-svc", alt_svc))
        self.defaults = DefaultHeaders(b"zonda" if config.server_header else None, extra)
        self.date_header = config.date_header
        self.limit_connections = config.limit_connections
        self.connections: set[ServedConnection] = set()
        # --log-level debug: a line per connection opened and closed, decided once here (zonda.connection)
        self.log_connections = connection_log.isEnabledFor(logging.DEBUG)
        self.stats_refused = 0
        self.rejections: dict[str, int] = {}  # ProtocolError class name -> count (metrics)
        self.rejection_log = context.rejection_log  # their log lines, at most one per cause per second
        self.timeout_write = config.timeout_write  # 0: a client that reads nothing is never cut
        self.tally: Tally | None = None  # the metrics' per-response counts, when metrics are on
        # Metrics on: the cores count bytes (set before the first connection). The bytes of connections no longer
        # in ``connections`` (closed, or passed to another object) are added up here; an open connection holds
        # its own counts (``byte_counts``).
        self.count_bytes = False
        self.bytes_in = 0
        self.bytes_out = 0
        request_id = uses_request_id(config)
        self.proxy: ProxySettings | None = None  # None: no per-connection proxy or request-id work at all
        if config.proxy_headers or request_id or config.proxy_protocol != "off":
            trust = TrustList(config.forwarded_allow_ips)
            self.proxy = ProxySettings(trust, config.proxy_headers, config.proxy_protocol, request_id)

    def byte_counts(self) -> tuple[int, int]:
        """Every byte read and written on this server's connections so far: closed ones and open ones."""
        received, sent = self.bytes_in, self.bytes_out
        for connection in self.connections:
            connection_in, connection_out = connection.byte_counts()
            received += connection_in
            sent += connection_out
        return received, sent

    def refresh_date(self) -> None:
        self.defaults.set_date(formatdate(usegmt=True).encode() if self.date_header else None)
