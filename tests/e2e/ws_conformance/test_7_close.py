"""Autobahn section 7: the closing handshake; close codes and reasons are checked (1002, 1007)."""

from __future__ import annotations

import pytest

from wsframes import CLOSE, CONT, PING, TEXT, WSClient, close, frame, text


def test_close_after_a_message(ws: WSClient) -> None:
    """7.1.1: echo, then the close is echoed with the same code and the server closes TCP."""
    ws.send(text("Hello World!"))
    assert ws.recv_frame().payload == b"Hello World!"
    ws.send(close(1000))
    assert ws.recv_raw(4) == b"\x88\x02\x03\xe8"
    assert ws.closed_by_server()


@pytest.mark.parametrize(
    "after",
    [close(1000), frame(PING, b"ping"), text("text"), frame(CONT, b"more")],
    ids=["second-close", "ping", "text", "continuation"],
)
def test_nothing_after_the_close(ws: WSClient, after: bytes) -> None:
    """7.1.2-7.1.5: whatever follows a close frame is ignored."""
    ws.send(frame(TEXT, b"fragment", fin=False), close(1000), after)
    ws.expect_close(1000)


def test_close_after_a_large_message(ws: WSClient) -> None:
    """7.1.6: the echo is not cut short by the close that follows it."""
    payload = b"BAsd7&jh23" * 26214
    ws.send(text(payload), close(1000))
    frames = ws.frames_before_close(1000)
    assert [f.payload for f in frames] in ([payload], [])


def test_empty_close(ws: WSClient) -> None:
    """7.3.1: an empty close is answered with an empty close; the app sees 1005."""
    ws.send(frame(CLOSE))
    assert ws.recv_raw(2) == b"\x88\x00"
    assert ws.closed_by_server()


def test_close_payload_of_one_byte(ws: WSClient) -> None:
    """7.3.2"""
    ws.send(frame(CLOSE, b"\x03"))
    ws.expect_close(1002)


@pytest.mark.parametrize("reason", [b"", b"Hello World!", b"*" * 123])
def test_close_reason_echoed(ws: WSClient, reason: bytes) -> None:
    """7.3.3, 7.3.4"""
    ws.send(close(1000, reason))
    assert ws.expect_close(1000).payload == b"\x03\xe8" + reason


def test_close_reason_too_long(ws: WSClient) -> None:
    """7.3.6: 124 bytes of reason make a 126-byte control frame."""
    ws.send(close(1000, b"*" * 124))
    ws.expect_close(1002)


def test_close_reason_not_utf8(ws: WSClient) -> None:
    """7.5.1"""
    ws.send(close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"))
    ws.expect_close(1007)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
)
def test_valid_close_codes_echoed(ws: WSClient, code: int) -> None:
    """7.7.x"""
    ws.send(close(code))
    ws.expect_close(code)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(ws: WSClient, code: int) -> None:
    """7.9.1-7.9.9, 7.13.1-7.13.2: codes that may not be sent, or are out of range."""
    ws.send(close(code))
    ws.expect_close(1002)
