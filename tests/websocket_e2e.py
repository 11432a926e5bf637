"""What the WebSocket end-to-end tests share: the app they talk to, and one raw-frame client over both HTTP
versions, so that a behaviour is written once and checked over HTTP/1.1 (the Upgrade handshake, ``WSClient``)
and over HTTP/2 (RFC 8441's extended CONNECT on a stream of its own, ``h2ws``).

``WebSocketClient.connect()`` gives an ``HTTP1WebSocket`` or an ``HTTP2WebSocket``, with the same methods:
frames out and in exactly as the test builds them (``wsframes``), the closing handshake, and the few things
that differ in kind but not in meaning: the client's end of the byte stream is TCP's FIN or END_STREAM, an
abrupt loss TCP's RST or RST_STREAM, the server's end TCP's close or END_STREAM, back-pressure fills socket
buffers or a stream's window.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from h2ws import H2Client, H2WebSocket, raw_frames
from helpers import (
    Record,
    assert_still_serving,
    count_when_told,
    dechunk,
    echo_messages,
    rst_close,
    send_denial,
    until_disconnect,
)
from wire import recv_within
from wsframes import WSClient

Scope = dict[str, Any]
HTTP_VERSIONS = ("http1", "http2")
_keys = itertools.count()


def unique(name: str) -> str:
    """A Record key no other test (or driver, or HTTP version) uses."""
    return f"{name}-{next(_keys)}"


def make_app(record: Record) -> Any:
    """Routes by path; ``?key=`` names what it records (the path otherwise)."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, query = scope["path"], {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        key = query.get("key", path)
        if scope["type"] == "http":
            body = f"http {scope['method']} {path} {scope['http_version']}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        assert await receive() == {"type": "websocket.connect"}
        await route(path, key, query, scope, receive, send)

    async def route(
        path: str, key: str, query: dict[str, str], scope: Scope, receive: Any, send: Any
    ) -> None:
        accept = {"type": "websocket.accept"}
        if path == "/echo":
            offered = scope["subprotocols"]
            await send(
                {**accept, "subprotocol": offered[-1] if offered else None, "headers": [(b"x-extra", b"yes")]}
            )
            record.add(key, await echo_messages(receive, send))
        elif path.endswith("/scope"):
            record.add(key, dict(scope))
            await send(accept)
            await until_disconnect(receive, record, key + "-end")
        elif path in ("/app-close", "/app-close-later"):
            await send(accept)
            if path == "/app-close-later":
                await receive()  # closes from a later task step, not the one that accepted
            await send({"type": "websocket.close", "code": 4001, "reason": "bye from app"})
            await until_disconnect(receive, record, key)
        elif path == "/deny":
            await send({"type": "websocket.close"})
        elif path == "/denial":
            await send_denial(send)
        elif path == "/raise-before":
            raise RuntimeError("boom before accept")
        elif path == "/bad-accept-headers":  # refused by the server's checks: still connecting, so a 500
            await send({**accept, "headers": [(b"x-bad", None)]})
        elif path == "/denial-bytearray":  # bytes-like bodies, as in http.response.body
            await send(
                {"type": "websocket.http.response.start", "status": 418, "headers": [(b"x-denied", b"yes")]}
            )
            await send(
                {"type": "websocket.http.response.body", "body": bytearray(b"no web"), "more_body": True}
            )
            await send({"type": "websocket.http.response.body", "body": memoryview(b"sockets here")})
        elif path == "/raise-after":
            await send(accept)
            await receive()
            raise RuntimeError("boom after accept")
        elif path == "/wait":
            await send(accept)
            await until_disconnect(receive, record, key)
        elif path == "/slow-reader":
            await send(accept)
            await count_when_told(receive, record, key)
        elif path == "/flood":  # sends ?count= messages of ?size= bytes, noting each send that returned
            await send(accept)
            size = int(query["size"])
            for i in range(int(query["count"])):
                await send({"type": "websocket.send", "bytes": b"%03d" % i + b"z" * (size - 3)})
                record.add(key, i)
            await until_disconnect(receive, record, key + "-end")

    return app


class HTTP1WebSocket(WSClient):
    """A WebSocket after an Upgrade (or its refusal); ``HTTP2WebSocket`` does the same over HTTP/2."""

    def __init__(
        self, port: int, path: str, extensions: str | None, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(
            port, path, extensions, [f"{name.decode()}: {value.decode()}" for name, value in headers]
        )
        self.port = port
        self.client_port = self.sock.getsockname()[1]
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # back-pressure shows sooner
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)

    def response_header(self, name: str) -> str | None:
        return self.header(name)

    def refusal_body(self) -> bytes:
        """The whole body of a response that refused the handshake."""
        while (chunk := recv_within(self.sock, self.timeout, self.timeout)) not in (None, b""):
            self.buffer += chunk  # the refusal says "connection: close": the body ends with the connection
        if self.header("transfer-encoding") != "chunked":
            return self.buffer
        body, complete = dechunk(self.buffer)
        assert complete, self.buffer
        return body

    def drop(self) -> None:
        """The client's end of the byte stream without a close frame (TCP FIN; END_STREAM)."""
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """An abrupt loss (TCP RST; RST_STREAM)."""
        rst_close(self.sock)

    def send_until_stalled(self, message: bytes, stall: float = 0.5) -> tuple[int, bytes]:
        """Write ``message`` over and over until the server takes nothing for ``stall`` seconds (socket
        buffers full; the stream's window closed): how many were begun, and the unsent rest of the last."""
        sent, pending = 0, b""
        deadline = time.monotonic() + 10
        self.sock.settimeout(stall)  # a send waits this long for room, then fails
        try:
            while time.monotonic() < deadline:
                if not pending:
                    pending, sent = message, sent + 1
                pending = pending[self.sock.send(pending) :]
        except TimeoutError:
            return (sent, pending) if pending is not message else (sent - 1, b"")
        finally:
            self.sock.settimeout(self.timeout)
        raise AssertionError("the server kept reading a peer whose app does not receive")

    def assert_still_serving(self) -> None:
        """HTTP/2: this connection still answers requests (only a stream ended); HTTP/1.1: the server does."""
        assert_still_serving(self.port)


class HTTP2WebSocket(H2WebSocket):
    """An ``h2ws`` WebSocket on a connection of its own (closed with it)."""

    def __init__(self, client: H2Client, stream_id: int) -> None:
        super().__init__(client, stream_id)
        self.client_port = client.sock.getsockname()[1]

    def __enter__(self) -> HTTP2WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.sock.close()

    def response_header(self, name: str) -> str | None:
        value = self.header(name.encode())
        return None if value is None else value.decode()

    def refusal_body(self) -> bytes:
        self.client.wait_for(lambda: self.state.ended, "the end of the refusal")
        return bytes(self.state.data)

    def send(self, *frames: bytes, end_stream: bool = False) -> None:
        if self.client.goaway:  # h2 sends nothing after a GOAWAY, yet the streams it covers carry on
            self.send_raw(b"".join(frames))
        else:
            super().send(*frames, end_stream=end_stream)

    def wait_ended(self, timeout: float | None = None) -> None:
        if self.client.goaway:  # nor does it read on: the rest, raw, up to the server's close
            assert (0x0, 0x1, self.stream_id, b"") in raw_frames(self.client.read_until_closed())
            self.state.ended = True
        else:
            super().wait_ended(timeout)

    def closed_by_server(self, timeout: float | None = None) -> bool:
        """Whether the server ends the stream (``WSClient``'s: TCP's close), sending nothing more, in time."""
        if not self.client.goaway:
            try:
                self.client.wait_for(lambda: self.state.ended, "END_STREAM", timeout)
            except AssertionError:  # not in time, or the connection closed without it
                return False
        self.wait_ended()
        return True

    def drop(self) -> None:
        self.end()

    def send_until_stalled(self, message: bytes, stall: float = 0.5) -> tuple[int, bytes]:
        """Whole messages while the stream's window has room for them; stalled once none came for ``stall``"""

        def window_closed() -> bool:
            return self.client.conn.local_flow_control_window(self.stream_id) < len(message)

        sent = 0
        while True:
            while not window_closed():
                self.send(message)
                sent += 1
            assert sent < 10_000, "the server kept reading a peer whose app does not receive"
            deadline = time.monotonic() + stall
            while window_closed() and (remaining := deadline - time.monotonic()) > 0:
                self.client.pump(remaining)
            if window_closed():
                return sent, b""

    def assert_still_serving(self) -> None:
        assert self.client.request("GET", "/after").data == b"http GET /after 2"


class WebSocketClient:
    """Opens WebSockets over ``http`` ("http1" or "http2") to the server on ``port``, unless told another."""

    def __init__(self, http: str, port: int) -> None:
        assert http in HTTP_VERSIONS
        self.http = http
        self.port = port
        self.http_version = "1.1" if http == "http1" else "2"  # as the scope has it
        self.accepted_status = 101 if http == "http1" else 200

    def connect(
        self,
        path: str,
        *,
        port: int | None = None,
        subprotocols: Iterable[str] = (),
        headers: Iterable[tuple[bytes, bytes]] = (),
        extensions: str | None = None,
    ) -> HTTP1WebSocket | HTTP2WebSocket:
        """The handshake, answered (accepted or not); the WebSocket is a context manager."""
        port = self.port if port is None else port
        offered = ", ".join(subprotocols)
        fields = [*headers, *([(b"sec-websocket-protocol", offered.encode())] if offered else [])]
        if self.http == "http1":
            return HTTP1WebSocket(port, path, extensions, fields)
        client = H2Client(port)
        opened = client.open_websocket(path, extensions=extensions, headers=fields)
        return HTTP2WebSocket(client, opened.stream_id)
