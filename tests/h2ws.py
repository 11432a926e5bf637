"""A WebSocket-over-HTTP/2 client (RFC 8441) for tests: the ``h2`` package on a plain socket, prior knowledge.

The ``websockets`` client speaks only HTTP/1.1, so this one opens streams with extended CONNECT
(``:method CONNECT``, ``:protocol websocket``) and writes WebSocket frames built with ``wsframes`` (masked, as a
client must) into DATA frames. One ``H2Client`` is one connection; it can carry several ``H2WebSocket`` streams
and plain requests at once. Everything is synchronous: reads pump the connection until what is asked for came.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from wsframes import CLOSE, Frame, close, parse_frame


@dataclass
class StreamState:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False  # the server's END_STREAM
    reset: int | None = None  # the error code of a RST_STREAM from the server


class H2Client:
    """One HTTP/2 connection to a zonda on 127.0.0.1:``port``."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.authority = f"127.0.0.1:{port}".encode()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, StreamState] = {}
        self.server_settings: dict[int, int] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.goaway = False  # the server's GOAWAY came: h2 neither sends nor reads on after it
        self.window_updates = 0
        self._send()
        self.wait_for(lambda: bool(self.server_settings), "the server's SETTINGS")

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    # ------------------------------------------------------------ the connection

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout: float | None = None) -> bool:
        """Read once (up to ``timeout``) and handle what came; False if nothing came in time or it closed."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            if self.terminated is None:
                self.terminated = h2.events.ConnectionTerminated()
            return False
        for event in self.conn.receive_data(data):
            self._on_event(event)
        self._send()
        return True

    def _on_event(self, event: Any) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.server_settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ResponseReceived):
            state = self.streams[event.stream_id]
            state.headers = list(event.headers)
            state.status = int(dict(state.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].data += event.data
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = int(event.error_code)
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_updates += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
            self.goaway = True

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection (raw: for after GOAWAY)."""
        chunks = []
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def wait_for(self, condition: Any, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not condition():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {what}"
            if not self.pump(remaining) and self.terminated is not None and not condition():
                raise AssertionError(f"connection ended while waiting for {what}: {self.terminated}")

    # ------------------------------------------------------------ streams

    def open_websocket(
        self,
        path: str,
        subprotocols: Iterable[str] = (),
        extensions: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        version: bytes | None = b"13",
        wait: bool = True,
    ) -> H2WebSocket:
        """Send an extended CONNECT for ``path``; with ``wait``, read until the response head came."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", self.authority),
        ]
        if version is not None:
            fields.append((b"sec-websocket-version", version))
        offered = list(subprotocols)
        if offered:
            fields.append((b"sec-websocket-protocol", ", ".join(offered).encode()))
        if extensions is not None:
            fields.append((b"sec-websocket-extensions", extensions.encode()))
        fields.extend(headers)
        self.streams[stream_id] = StreamState()
        self.conn.send_headers(stream_id, fields)
        self._send()
        ws = H2WebSocket(self, stream_id)
        if wait:
            ws.wait_response()
        return ws

    def request(self, method: str, path: str) -> StreamState:
        """A plain request without a body; returns once its response has ended."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", self.authority),
        ]
        state = self.streams[stream_id] = StreamState()
        self.conn.send_headers(stream_id, fields, end_stream=True)
        self._send()
        self.wait_for(lambda: state.ended or state.reset is not None, f"the response to {path}")
        return state


class H2WebSocket:
    """One WebSocket on one stream: frames in and out as ``wsframes`` builds and parses them."""

    def __init__(self, client: H2Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.state = client.streams[stream_id]

    @property
    def status(self) -> int | None:
        return self.state.status

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.state.headers if n == name]
        return values[0] if values else None

    def wait_response(self) -> None:
        self.client.wait_for(
            lambda: self.state.status is not None or self.state.reset is not None, "the response head"
        )

    def send(self, *frames: bytes, end_stream: bool = False) -> None:
        """Write ``frames`` in DATA frames (split to the peer's frame size), waiting for window as needed."""
        conn = self.client.conn
        data = b"".join(frames)
        while data:
            window = conn.local_flow_control_window(self.stream_id)
            if window <= 0:
                self.client._send()
                self.client.wait_for(
                    lambda: conn.local_flow_control_window(self.stream_id) > 0, "window from the server"
                )
                continue
            size = min(window, conn.max_outbound_frame_size, len(data))
            conn.send_data(self.stream_id, data[:size])
            data = data[size:]
        if end_stream:
            conn.end_stream(self.stream_id)
        self.client._send()

    def send_raw(self, data: bytes) -> None:
        """One DATA frame built by hand: for after GOAWAY, when ``h2`` no longer sends (RFC 9113 §6.8 lets
        streams the GOAWAY covers carry on)."""
        header = struct.pack(">BHBBL", len(data) >> 16, len(data) & 0xFFFF, 0x0, 0x0, self.stream_id)
        self.client.sock.sendall(header + data)

    def end(self) -> None:
        """END_STREAM from the client: its end of the byte stream (TCP's FIN, RFC 8441 §5)."""
        self.client.conn.end_stream(self.stream_id)
        self.client._send()

    def reset(self, code: int = 0x8) -> None:
        """RST_STREAM (CANCEL by default: TCP's RST, RFC 8441 §5)."""
        self.client.conn.reset_stream(self.stream_id, code)
        self.client._send()

    def recv_frame(self, timeout: float | None = None) -> Frame:
        state = self.state

        def parsed() -> bool:
            return parse_frame(bytes(state.data)) is not None

        self.client.wait_for(parsed, f"a frame on stream {self.stream_id}", timeout)
        result = parse_frame(bytes(state.data))
        assert result is not None
        found, rest = result
        state.data = bytearray(rest)
        return found

    def expect_close(self, code: int | None) -> Frame:
        """The next frame is a close with ``code``, and then the server ends the stream."""
        got = self.recv_frame()
        assert got.opcode == CLOSE, f"expected a close frame ({code}), got {got}"
        assert got.close_code == code, f"expected close {code}, got {got.close_code} {got.payload[2:]!r}"
        self.wait_ended()
        return got

    def wait_ended(self, timeout: float | None = None) -> None:
        """The server ends the stream (END_STREAM, possibly followed by RST_STREAM NO_ERROR)."""
        self.client.wait_for(lambda: self.state.ended, f"END_STREAM on stream {self.stream_id}", timeout)
        assert not self.state.data, f"unread bytes before END_STREAM: {bytes(self.state.data[:100])!r}"
        assert self.state.reset in (None, 0), f"stream reset with {self.state.reset}"

    def close_handshake(self, code: int = 1000) -> None:
        self.send(close(code))
        self.expect_close(code)


def raw_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """HTTP/2 frames as (type, flags, stream id, payload), read by hand."""
    frames = []
    while len(data) >= 9:
        high, low, kind, flags, stream_id = struct.unpack(">BHBBL", data[:9])
        length = high << 16 | low
        frames.append((kind, flags, stream_id & 0x7FFFFFFF, data[9 : 9 + length]))
        data = data[9 + length :]
    assert not data, f"a partial frame: {data!r}"
    return frames


def server_settings(port: int) -> dict[int, int]:
    with H2Client(port) as client:
        return dict(client.server_settings)


ENABLE_CONNECT_PROTOCOL = int(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
