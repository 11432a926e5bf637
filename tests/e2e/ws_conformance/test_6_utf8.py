"""Autobahn section 6: text must be UTF-8 (1007 otherwise), checked fast: an invalid byte in the first fragment
fails the connection before the message ends. Binary payloads are never checked."""

from __future__ import annotations

import pytest

from wsframes import BINARY, CONT, TEXT, WSClient, assert_still_echoing, frame, text

VALID = [
    "Hello-µ@ßöäüàá-UTF-8!!",
    "κόσμε",
    "\x00",
    "\u0080\u07ff\u0800\uffff",
    "\U00010000\U0010ffff",
    "\ud7ff\ue000\ufffd",
    "\ufffe\uffff\U0001fffe",  # noncharacters are still valid UTF-8 (6.23)
]
INVALID = [
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",  # 6.3.1
    b"\x80",  # a lone continuation byte
    b"\xbf\x80\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # five-byte form
    b"\xfe",
    b"\xff",
    b"\xed\xa0\x80",  # a surrogate
    b"\xed\xbf\xbf",
    b"\xc2",  # truncated at the end
    b"\xe2\x82",
    b"ok\xce\xba\xe1",
]


@pytest.mark.parametrize("value", VALID)
def test_valid_text_echoed(ws: WSClient, value: str) -> None:
    """6.2, 6.5-6.7, 6.22-6.23"""
    ws.send(text(value))
    expected = frame(TEXT, value.encode(), mask=False)
    assert ws.recv_raw(len(expected)) == expected
    ws.close_handshake()


def test_valid_text_split_at_every_byte(ws: WSClient) -> None:
    """6.2.3, 6.2.4: fragments end in the middle of characters."""
    data = "Hello-µ@ßöäüàá-UTF-8!! κόσμε \U0010ffff".encode()
    frames = [
        frame(TEXT if i == 0 else CONT, data[i : i + 1], fin=i == len(data) - 1) for i in range(len(data))
    ]
    ws.send(*frames)
    assert ws.recv_frame().payload == data
    ws.close_handshake()


@pytest.mark.parametrize("value", INVALID)
def test_invalid_text(ws: WSClient, value: bytes) -> None:
    """6.3-6.21: whole messages"""
    ws.send(text(value))
    ws.expect_close(1007)


@pytest.mark.parametrize("value", INVALID)
def test_invalid_text_fails_fast(ws: WSClient, value: bytes) -> None:
    """6.4.1-6.4.4: the close comes after the bad fragment, though the message never ends. (A truncated
    sequence is only wrong once something follows it, hence the "x".)"""
    ws.send(frame(TEXT, b"valid start ", fin=False), frame(CONT, value + b"x", fin=False))
    ws.expect_close(1007)


PART1 = "κόσμε".encode()  # Autobahn 6.4: valid; then f4 90 80 80 (past U+10FFFF); then "edited"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (PART1, b"\xf4\x90\x80\x80"),  # 6.4.3
        (PART1 + b"\xf4", b"\x90"),  # 6.4.4: the bad sequence itself split
        (PART1 + b"\xed", b"\xa0"),  # a surrogate's first two bytes
    ],
    ids=["6.4.3", "6.4.4", "surrogate"],
)
@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "in-a-continuation"])
def test_invalid_text_fails_before_the_frame_is_complete(
    echo_port: int, first: bytes, second: bytes, fragmented: bool
) -> None:
    """6.4.3, 6.4.4: one text frame sent in chops (or a continuation frame of a text message): the valid first
    chop is taken without complaint, the close 1007 comes right after the chop with the bad sequence, though
    the frame's last chop is never sent."""
    payload = first + second + b"edited"
    whole = frame(CONT if fragmented else TEXT, payload, fin=not fragmented)
    start = len(whole) - len(payload)  # the header and the masking key
    with WSClient(echo_port) as ws:
        if fragmented:
            ws.send(frame(TEXT, b"a whole first fragment ", fin=False))
        ws.send(whole[: start + len(first)])
        assert not ws.closed_by_server(0.3), "the server failed a valid first chop"
        ws.send(whole[start + len(first) : start + len(first) + len(second)])
        ws.expect_close(1007)
    assert_still_echoing(echo_port)


def test_invalid_text_fails_at_the_bad_byte_when_sent_a_byte_at_a_time(echo_port: int) -> None:
    """6.4.4's kind: the frame trickles in byte by byte; it fails at the first byte that cannot be UTF-8 (the
    a0 after ed, a surrogate), and nothing after it is needed."""
    payload = INVALID[0]  # 6.3.1: "κόσμε", ed a0 80, "edited"
    whole = text(payload)
    end = len(whole) - len(payload) + payload.index(b"\xed\xa0") + 2
    with WSClient(echo_port) as ws:
        ws.send_in_chops(whole[:end], 1)
        ws.expect_close(1007)
    assert_still_echoing(echo_port)


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_valid_text_in_chops_is_echoed_whole(ws: WSClient, size: int) -> None:
    """Text checked as it arrives is still one message, whatever the chops cut (characters, the masking key)."""
    value = "Hello-µ@ßöäüàá-UTF-8!! κόσμε \U0010ffff " * 40
    ws.send_in_chops(text(value), size)
    assert ws.recv_frame().payload == value.encode()
    ws.send_in_chops(frame(TEXT, value.encode(), fin=False) + frame(CONT, b"!"), size)
    assert ws.recv_frame().payload == value.encode() + b"!"
    ws.close_handshake()


def test_binary_is_not_checked(ws: WSClient) -> None:
    ws.send(*(frame(BINARY, value) for value in INVALID))
    assert [ws.recv_frame().payload for _ in INVALID] == INVALID
    ws.close_handshake()
