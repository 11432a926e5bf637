"""WebSocket frames by hand (RFC 6455 §5.2, RFC 7692 §7.2) and a raw-socket client for wire-level tests.

``frame()`` builds any frame, valid or not (masking, fragments, reserved bits, opcodes); ``parse_frames()``
reads server frames back; ``deflate()``/``inflate()`` do permessage-deflate's raw DEFLATE with the
``00 00 ff ff`` tail removed and restored. ``WSClient`` does the HTTP/1.1 handshake and then speaks frames.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from wire import parse_head, recv_within

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # the ``rsv`` argument's bits
MASK_KEY = b"\x37\xfa\x21\x3d"
TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: removed by the sender, appended by the receiver
SMALL = 1000  # ws_max_size of the servers that limit cases run against


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame; ``length`` overrides the payload length written in the header (for lying headers)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    return head + MASK_KEY + apply_mask(payload, MASK_KEY)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR with the repeated 4-byte key (RFC 6455 §5.3), fast enough for megabytes."""
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def text(data: str | bytes, fin: bool = True) -> bytes:
    """A masked text frame (``bytes`` are sent as they are, valid UTF-8 or not)."""
    return frame(TEXT, data.encode() if isinstance(data, str) else data, fin=fin)


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def close(code: int | None = 1000, reason: bytes = b"") -> bytes:
    return frame(CLOSE, close_payload(code, reason))


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


def parse_frame(data: bytes) -> tuple[Frame, bytes] | None:
    """The first whole frame in ``data`` and the rest, or None if it is incomplete."""
    if len(data) < 2:
        return None
    b0, b1 = data[0], data[1]
    size, offset = b1 & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, offset = struct.unpack("!H", data[2:4])[0], 4
    elif size == 127:
        if len(data) < 10:
            return None
        size, offset = struct.unpack("!Q", data[2:10])[0], 10
    mask = b1 & 0x80
    key = data[offset : offset + 4] if mask else b""
    offset += len(key)
    if len(data) < offset + size:
        return None
    payload = data[offset : offset + size]
    if mask:
        payload = apply_mask(payload, key)
    return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload), data[offset + size :]


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while (parsed := parse_frame(data)) is not None:
        found, data = parsed
        frames.append(found)
    assert not data, f"trailing bytes {data[:50]!r}"
    return frames


def deflate(data: bytes, compressor: zlib._Compress | None = None, wbits: int = 15) -> bytes:
    """permessage-deflate a message: raw DEFLATE, sync flush, tail removed (RFC 7692 §7.2.1)."""
    compressor = compressor or zlib.compressobj(wbits=-wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(
    data: bytes, decompressor: zlib._Decompress | None = None, wbits: int = 15, step: int | None = None
) -> bytes:
    """Undo ``deflate``. With ``step``, inflate that many bytes at a time: zlib only notices a reference
    further back than its window (RFC 7692 §7.1.2) when the output is not all in one buffer."""
    decompressor = decompressor or zlib.decompressobj(wbits=-wbits)
    if step is None:
        return decompressor.decompress(data + TAIL)
    out, data = b"", data + TAIL
    while data:
        out += decompressor.decompress(data, step)
        data = decompressor.unconsumed_tail
    return out


def handshake_request(
    path: str = "/", extensions: str | None = None, headers: Iterable[str] = (), key: str | None = None
) -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class WSClient:
    """A WebSocket client on a raw socket: the handshake, then frames exactly as the test writes them."""

    def __init__(
        self,
        port: int,
        path: str = "/",
        extensions: str | None = None,
        headers: Iterable[str] = (),
        timeout: float = 5.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.sock.sendall(handshake_request(path, extensions, headers))
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status, self.headers = parse_head(head)

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None

    def __enter__(self) -> WSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"server closed the connection; buffered {self.buffer[:100]!r}")
        self.buffer += chunk

    def send(self, *frames: bytes) -> None:
        """Write ``frames`` in one write."""
        self.sock.sendall(b"".join(frames))

    def send_in_chops(self, data: bytes, size: int, pause: float = 0.0) -> None:
        """Write ``data`` ``size`` bytes at a time. A server that fails the connection part-way (a bad frame
        read before the rest was written) closes with bytes of ours unread, which its kernel answers with a
        reset: the writing stops there, as Autobahn's does, and what the server sent before stays readable."""
        for start in range(0, len(data), size):
            try:
                self.sock.sendall(data[start : start + size])
            except (ConnectionResetError, BrokenPipeError):
                return
            if pause:
                time.sleep(pause)

    def send_as(self, how: str, *frames: bytes) -> None:
        """Write ``frames`` as Autobahn's cases do: in one write ("one-write"), a write each with a pause, so
        each is a read of its own ("frame-wise"), or a byte at a time ("octet-wise")."""
        if how == "one-write":
            self.send(*frames)
        elif how == "frame-wise":
            for one in frames:
                self.send(one)
                time.sleep(0.05)
        else:
            assert how == "octet-wise", how
            self.send_in_chops(b"".join(frames), 1)

    def recv_frame(self) -> Frame:
        while (parsed := parse_frame(self.buffer)) is None:
            self._fill()
        found, self.buffer = parsed
        assert found.rsv == 0 or found.opcode in (TEXT, BINARY), f"server set reserved bits: {found}"
        return found

    def recv_raw(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def expect_close(self, code: int | None) -> Frame:
        """The next frame is a close with ``code`` (None: an empty close), then the server closes TCP."""
        got = self.recv_frame()
        assert got.opcode == CLOSE, f"expected a close frame ({code}), got {got}"
        assert got.close_code == code, f"expected close {code}, got {got.close_code} {got.payload[2:]!r}"
        assert self.closed_by_server(), "the server did not close the TCP connection after its close frame"
        return got

    def frames_before_close(self, code: int | None) -> list[Frame]:
        """Frames up to a close with ``code`` (then the TCP close): for cases where an echo may or may not
        make it out before the server fails the connection (Autobahn's NON-STRICT)."""
        frames = []
        while (got := self.recv_frame()).opcode != CLOSE:
            frames.append(got)
        assert got.close_code == code, f"expected close {code}, got {got.close_code} {got.payload[2:]!r}"
        assert self.closed_by_server(), "the server did not close the TCP connection after its close frame"
        return frames

    def closed_by_server(self, timeout: float | None = None) -> bool:
        """True once the server closes TCP (sending nothing more); False if it stays open past ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            chunk = recv_within(self.sock, remaining, self.timeout)
            if chunk is None:
                return False
            if not chunk:
                assert not self.buffer, f"unread bytes before the close: {self.buffer[:100]!r}"
                return True
            self.buffer += chunk
            assert parse_frame(self.buffer) is None, f"unexpected frame after close: {self.buffer[:100]!r}"

    def close_handshake(self, code: int = 1000) -> None:
        """Close cleanly: send a close, expect the same code back and the TCP close."""
        self.send(close(code))
        self.expect_close(code)


def assert_still_echoing(port: int) -> None:
    """A new WebSocket to the echo server on ``port`` echoes, whatever the test did to the one before."""
    with WSClient(port) as client:
        assert client.status == 101
        client.send(text("still here"))
        assert client.recv_frame().payload == b"still here"
        client.close_handshake()
