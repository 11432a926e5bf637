"""Autobahn sections 12 and 13: permessage-deflate (RFC 7692), negotiated with its parameters; compressed
messages of every size are echoed compressed, with the context taken over or not as agreed."""

from __future__ import annotations

import os
import zlib

import pytest

from wsframes import BINARY, CONT, PING, RSV1, TEXT, WSClient, deflate, frame, inflate, text

SIZES = [16, 64, 256, 1024, 4096, 65536, 131072]


def payload(size: int) -> bytes:
    """Compressible but not trivial, with repeats further back than a small window (for *_max_window_bits)."""
    block = os.urandom(1500)
    return (block * (size // 1500 + 1))[:size]


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
        ("permessage-deflate; server_max_window_bits=9", "permessage-deflate; server_max_window_bits=9"),
        ("permessage-deflate; client_max_window_bits=9", "permessage-deflate; client_max_window_bits=9"),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate"),
    ],
)
def test_negotiation(echo_port: int, offer: str, answer: str | None) -> None:
    with WSClient(echo_port, extensions=offer) as ws:
        assert ws.status == 101
        assert ws.header("sec-websocket-extensions") == answer
        ws.close_handshake()


@pytest.mark.parametrize("size", SIZES)
def test_echo_with_context_takeover(echo_port: int, size: int) -> None:
    """12.1.x: three messages through one compression context each way."""
    with WSClient(echo_port, extensions="permessage-deflate") as ws:
        compressor, decompressor = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        for opcode in (TEXT, BINARY, BINARY):
            data = payload(size).hex()[:size].encode() if opcode == TEXT else payload(size)
            ws.send(frame(opcode, deflate(data, compressor), rsv=RSV1))
            got = ws.recv_frame()
            assert (got.opcode, got.rsv) == (opcode, RSV1)
            assert inflate(got.payload, decompressor) == data
        ws.close_handshake()


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ],
)
def test_no_context_takeover(echo_port: int, offer: str) -> None:
    """13.3-13.7: each compressed message stands alone in the direction(s) agreed."""
    with WSClient(echo_port, extensions=offer) as ws:
        server_fresh = "server_no_context_takeover" in offer
        client_fresh = "client_no_context_takeover" in offer
        compressor, decompressor = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        data = payload(4096)
        for _ in range(3):
            ws.send(frame(BINARY, deflate(data, None if client_fresh else compressor), rsv=RSV1))
            got = ws.recv_frame()
            assert inflate(got.payload, None if server_fresh else decompressor) == data
        ws.close_handshake()


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_server_max_window_bits(echo_port: int, bits: int) -> None:
    """13.x: the server's output inflates with a window of 2**bits (repeats are 1500 bytes back)."""
    with WSClient(echo_port, extensions=f"permessage-deflate; server_max_window_bits={bits}") as ws:
        decompressor = zlib.decompressobj(wbits=-bits)
        for _ in range(2):
            data = payload(16384)
            ws.send(frame(BINARY, deflate(data), rsv=RSV1))
            assert inflate(ws.recv_frame().payload, decompressor, step=64) == data
        ws.close_handshake()


@pytest.mark.parametrize("bits", [9, 15])
def test_client_max_window_bits(echo_port: int, bits: int) -> None:
    with WSClient(echo_port, extensions=f"permessage-deflate; client_max_window_bits={bits}") as ws:
        compressor, decompressor = zlib.compressobj(wbits=-bits), zlib.decompressobj(wbits=-15)
        for _ in range(2):
            data = payload(16384)
            ws.send(frame(BINARY, deflate(data, compressor, wbits=bits), rsv=RSV1))
            assert inflate(ws.recv_frame().payload, decompressor) == data
        ws.close_handshake()


def test_uncompressed_and_fragmented_messages(echo_port: int) -> None:
    """RSV1 clear: a plain message; RSV1 on the first fragment only: one compressed message."""
    with WSClient(echo_port, extensions="permessage-deflate") as ws:
        decompressor = zlib.decompressobj(wbits=-15)
        body = deflate(payload(10000))
        ws.send(text("plain"), frame(BINARY, body[:100], fin=False, rsv=RSV1), frame(CONT, body[100:]))
        assert inflate(ws.recv_frame().payload, decompressor) == b"plain"
        assert inflate(ws.recv_frame().payload, decompressor) == inflate(body)
        ws.close_handshake()


@pytest.mark.parametrize(
    "frames",
    [
        [frame(BINARY, deflate(b"a"), fin=False, rsv=RSV1), frame(CONT, deflate(b"b"), rsv=RSV1)],
        [frame(PING, b"", rsv=RSV1)],
        [frame(TEXT, b"\xff\xff\xff not deflate", rsv=RSV1)],
    ],
    ids=["rsv1-on-continuation", "rsv1-on-control", "corrupt"],
)
def test_compression_errors(echo_port: int, frames: list[bytes]) -> None:
    with WSClient(echo_port, extensions="permessage-deflate") as ws:
        ws.send(*frames)
        ws.expect_close(1002)


def test_compression_off(no_deflate_port: int) -> None:
    """--ws-per-message-deflate off: the offer is declined, and RSV1 is then a protocol error."""
    with WSClient(no_deflate_port, extensions="permessage-deflate") as ws:
        assert ws.status == 101 and ws.header("sec-websocket-extensions") is None
        ws.send(text("plain"))
        assert ws.recv_raw(7) == b"\x81\x05plain"
        ws.send(frame(TEXT, deflate(b"x"), rsv=RSV1))
        ws.expect_close(1002)
