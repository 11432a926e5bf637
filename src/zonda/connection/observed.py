"""``HTTP1Connection`` with the fleet feature that costs per read: a PROXY protocol header first.

The server uses this subclass only when ``--proxy-protocol`` is not ``off``, so the plain driver pays nothing
for it. Protocol logic stays out of here: the PROXY header is parsed by ``zonda.proxy.parse_proxy_header``; this
class only buffers the first bytes, calls it, and installs a new ``ConnectionInfo`` built from the addresses
the header carried before the HTTP/1.1 core sees a byte. The header's bytes count as the connection's own
(``direct_in``): no core is fed them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zonda.connection.http1 import Address, HTTP1Connection
from zonda.errors import ProxyProtocolError
from zonda.io.base import ByteStream, Loop
from zonda.logging import describe_peer
from zonda.proxy import ProxyHeader, parse_proxy_header

if TYPE_CHECKING:
    import ssl

    from zonda.connection.shared import ServerShared

error_log = logging.getLogger("zonda.error")


class ObservedHTTP1Connection(HTTP1Connection):
    def __init__(self, shared: ServerShared, loop: Loop) -> None:
        super().__init__(shared, loop)
        self._proxy_buffer: bytes | None = None  # bytes while a PROXY header is expected

    def open(
        self,
        stream: ByteStream,
        client: Address | None,
        server: tuple[str, int | None] | None,
        ssl_object: ssl.SSLObject | None,
    ) -> None:
        super().open(stream, client, server, ssl_object)
        if self._closed:
            return
        proxy = self.shared.proxy
        client = self.session.info.client
        if proxy is not None and proxy.expects_proxy_header(client[0] if client else None):
            self._proxy_buffer = b""

    def _http2_from_the_first_byte(self, client: Address | None) -> bool:
        proxy = self.shared.proxy
        # a PROXY header comes first; HTTP/2 takes the bytes after it (data_received)
        return proxy is None or not proxy.expects_proxy_header(client[0] if client else None)

    def data_received(self, data: bytes) -> None:
        if self._proxy_buffer is None:
            HTTP1Connection.data_received(self, data)
            return
        self.direct_in += len(data)  # less what follows the header, below: a core counts that
        data = self._proxy_buffer + data
        proxy = self.shared.proxy
        assert proxy is not None  # a header is awaited only where the proxy settings asked for one (open)
        try:
            header = parse_proxy_header(data, proxy.proxy_protocol)
        except ProxyProtocolError as exc:
            client = self.session.info.client
            shared = self.shared
            shared.rejections["ProxyProtocolError"] = shared.rejections.get("ProxyProtocolError", 0) + 1
            shared.rejection_log.log(
                self.loop.time(),
                "PROXY header refused",
                error_log,
                logging.WARNING,
                "Closing connection from %s: %s",
                describe_peer(client),
                exc,
            )
            self._proxy_buffer = None
            self._close()
            return
        if header is None:
            self._proxy_buffer = data  # bounded: the parser fails past a header's largest size
            return
        self._proxy_buffer = None
        self._use_proxy_header(header)
        rest = data[header.length :]
        self.direct_in -= len(rest)
        if self.shared.http2_only:
            self._start_http2(rest, self.session.info)
        elif rest:
            HTTP1Connection.data_received(self, rest)

    def _use_proxy_header(self, header: ProxyHeader) -> None:
        info = self.session.info
        if header.client is None and header.server is None:
            if header.ssl and info.scheme == "http":
                info.scheme = "https"
            return  # LOCAL (a health check) or unknown addresses: the connection's own stand
        scheme = "https" if header.ssl else info.scheme
        new_info = self.make_info(header.client, header.server, scheme)
        new_info.extensions.update(info.extensions)  # they describe this connection: TLS, file sending
        self.session.info = new_info
