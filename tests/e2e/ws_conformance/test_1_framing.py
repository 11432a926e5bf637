"""Autobahn section 1: text and binary frames of every length encoding, echoed byte for byte."""

from __future__ import annotations

import pytest

from wsframes import BINARY, TEXT, WSClient, frame, text

SIZES = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_echo_exact_bytes(ws: WSClient, opcode: int, size: int) -> None:
    """1.1.1-1.1.6, 1.2.1-1.2.6: 7-bit, 16-bit and 64-bit lengths; the server's frame is unmasked."""
    payload = b"*" * size if opcode == TEXT else bytes(range(256)) * (size // 256) + b"\xfe" * (size % 256)
    ws.send(frame(opcode, payload))
    expected = frame(opcode, payload, mask=False)
    assert ws.recv_raw(len(expected)) == expected
    ws.close_handshake()


@pytest.mark.parametrize("chop", [1, 997])
def test_frame_sent_in_chops(ws: WSClient, chop: int) -> None:
    """1.1.7/1.1.8: one frame written in small pieces."""
    payload = b"*" * (125 if chop == 1 else 65536)
    ws.send_in_chops(frame(TEXT, payload), chop)
    assert ws.recv_frame().payload == payload
    ws.close_handshake()


def test_many_frames_in_one_write(ws: WSClient) -> None:
    ws.send(*(text(f"message {i}") for i in range(500)))
    for i in range(500):
        got = ws.recv_frame()
        assert (got.opcode, got.payload) == (TEXT, f"message {i}".encode())
    ws.close_handshake()
