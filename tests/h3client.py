"""An HTTP/3 client for the tests, on aioquic's client API (its own QUIC and HTTP/3, independent of zonda's use of
them as a server): requests over one QUIC connection, each on its own stream, answered as ``H3Response``.

    async with h3_connect(port, ca_pem) as client:
        response = await client.request("GET", "/")
        responses = await asyncio.gather(*(client.request("GET", f"/{i}") for i in range(100)))

It runs on asyncio (aioquic's client is asyncio code): the test drives it with ``asyncio.run`` whatever loop the
server runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


@dataclass
class H3Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[list[tuple[bytes, bytes]]] = field(default_factory=list)  # 1xx heads, in order
    reset: int | None = None  # the error code, when the server reset the stream

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class _ClientH3(H3Connection):
    """aioquic's HTTP/3 client side, which checks a response's content-length against its DATA even when the
    request was HEAD (aioquic 1.7.2), though that response has no content (RFC 9110 §9.3.2): not on the streams
    of HEAD requests here."""

    def __init__(self, quic: Any) -> None:
        super().__init__(quic)
        self.head_streams: set[int] = set()

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id not in self.head_streams:
            super()._check_content_length(stream)


class H3Client(QuicConnectionProtocol):
    """One QUIC connection; ``request`` sends one request on a new stream and waits for its whole answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = _ClientH3(self._quic)
        self._responses: dict[int, H3Response] = {}
        self._done: dict[int, asyncio.Future[H3Response]] = {}
        self._tunnels: dict[int, H3Tunnel] = {}
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._done:
            self._responses[event.stream_id].reset = event.error_code
            self._finish(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            for stream_id in list(self._done):
                self._finish(stream_id)
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        tunnel = self._tunnels.get(getattr(event, "stream_id", -1))
        if tunnel is not None:
            tunnel.event(event)
            return
        if isinstance(event, HeadersReceived):
            response = self._responses.get(event.stream_id)
            if response is None:
                return
            status = dict(event.headers).get(b":status")
            if response.status == 0 and status is not None and status.startswith(b"1"):
                response.interim.append(event.headers)
            elif response.status == 0 and status is not None:
                response.status = int(status)
                response.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
            else:
                response.trailers = event.headers
            if event.stream_ended:
                self._finish(event.stream_id)
        elif isinstance(event, DataReceived):
            response = self._responses.get(event.stream_id)
            if response is not None:
                response.body += event.data
                if event.stream_ended:
                    self._finish(event.stream_id)

    def _finish(self, stream_id: int) -> None:
        done = self._done.pop(stream_id, None)
        if done is not None and not done.done():
            done.set_result(self._responses.pop(stream_id))

    def start(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        end: bool = True,
        transmit: bool = True,
    ) -> tuple[int, asyncio.Future[H3Response]]:
        """Send a request's head (and ``body``); ``end=False`` leaves the stream open for ``send_body``;
        ``transmit=False`` leaves it queued for the next request's (or a ``transmit()``) packets."""
        stream_id = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            (b":path", path.encode()),
            *headers,
        ]
        self._responses[stream_id] = H3Response()
        if method == "HEAD":
            self.h3.head_streams.add(stream_id)
        done = self._done[stream_id] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(stream_id, fields, end_stream=end and not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=end)
        if transmit:
            self.transmit()
        return stream_id, done

    def send_body(self, stream_id: int, data: bytes, end: bool) -> None:
        self.h3.send_data(stream_id, data, end_stream=end)
        self.transmit()

    def reset(self, stream_id: int, code: int = 0x10C) -> None:
        """Cancel a request (H3_REQUEST_CANCELLED): both directions of its stream."""
        self._quic.reset_stream(stream_id, code)
        self._quic.stop_stream(stream_id, code)
        self.transmit()

    async def open_tunnel(
        self, path: str, protocol: bytes = b"websocket", headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> H3Tunnel:
        """An extended CONNECT (RFC 9220 for ``websocket``); returns once the response head came."""
        stream_id = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            (b":path", path.encode()),
            (b"sec-websocket-version", b"13"),
            *headers,
        ]
        tunnel = self._tunnels[stream_id] = H3Tunnel(self, stream_id)
        self.h3.send_headers(stream_id, fields, end_stream=False)
        self.transmit()
        await asyncio.wait_for(tunnel.head_seen.wait(), 20)
        return tunnel

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        timeout: float = 20.0,
    ) -> H3Response:
        _, done = self.start(method, path, headers, body)
        return await asyncio.wait_for(done, timeout)


class H3Tunnel:
    """One extended CONNECT stream: the response head, then bytes both ways (a WebSocket's frames)."""

    def __init__(self, client: H3Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.received = bytearray()
        self.ended = False  # the server ended its side (END of the stream, as TCP's FIN)
        self.head_seen = asyncio.Event()
        self._arrived = asyncio.Event()

    def event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and not self.head_seen.is_set():
            self.status = int(dict(event.headers)[b":status"])
            self.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
            self.head_seen.set()
        elif isinstance(event, DataReceived):
            self.received += event.data
        if getattr(event, "stream_ended", False):
            self.ended = True
            self.head_seen.set()
        self._arrived.set()

    def send(self, data: bytes, end: bool = False) -> None:
        self.client.send_body(self.stream_id, data, end)

    async def receive(self, parse: Any, timeout: float = 10.0) -> Any:
        """``parse(buffer)`` -> (item, rest) or None: waits until it finds an item, or raises at the end."""
        while True:
            parsed = parse(bytes(self.received))
            if parsed is not None:
                item, rest = parsed
                self.received = bytearray(rest)
                return item
            if self.ended:
                raise ConnectionError(f"stream ended; buffered {bytes(self.received[:100])!r}")
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)

    async def wait_ended(self, timeout: float = 10.0) -> None:
        while not self.ended:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)


def client_configuration(ca_pem: Path | None = None) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN), server_name="localhost")
    if ca_pem is not None:
        configuration.load_verify_locations(str(ca_pem))
    return configuration


@contextlib.asynccontextmanager
async def h3_connect(
    port: int,
    ca_pem: Path | None = None,
    host: str = "127.0.0.1",
    protocol: type[H3Client] = H3Client,
    **options: Any,
) -> AsyncIterator[H3Client]:
    """An HTTP/3 connection to ``host:port`` trusting ``ca_pem``; ``protocol``: a subclass of H3Client."""
    configuration = client_configuration(ca_pem)
    ticket_handler = options.pop("session_ticket_handler", None)
    for name, value in options.items():
        setattr(configuration, name, value)
    async with connect(
        host,
        port,
        configuration=configuration,
        create_protocol=protocol,
        session_ticket_handler=ticket_handler,
    ) as client:
        assert isinstance(client, H3Client)
        yield client
