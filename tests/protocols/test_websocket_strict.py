"""The WebSocket core's strict behaviours (Autobahn "OK", not "NON-STRICT"), with no sockets and a fake clock.

A bad frame after good messages: the messages come out, the failure is held (nothing more read, no close frame)
until the caller says the app has had them, so the app's answers go out before the close frame (RFC 6455
§7.1.7 still holds: nothing after the bad frame is processed). Invalid UTF-8 fails at the first bad sequence of
a text frame still arriving, not once the frame or message is complete (RFC 6455 §8.1).
"""

from __future__ import annotations

import pytest

from helpers import Clock
from wsframes import BINARY, CLOSE, CONT, PING, RSV2, TEXT, close, frame, text
from wsframes import parse_frames as parse
from zonda.protocols.events import ConnectionTerminated
from zonda.protocols.websocket import Message, PeerClosed, Ping, WSConnection, WSSettings


def connection(
    clock: Clock | None = None,
    busy: list[bool] | None = None,
    offer_deflate: bool = False,
    **settings: object,
) -> WSConnection:
    """A core; ``busy[0]`` is what it is told of the app (has messages to take, or is handling one)."""
    settings.setdefault("ping_interval", None)
    state = busy if busy is not None else [False]
    return WSConnection(WSSettings(**settings), [], clock or Clock(0.0), lambda: state[0])  # type: ignore[arg-type]


def messages(events: list[object]) -> list[object]:
    return [e.data for e in events if isinstance(e, Message)]


def assert_failed(events: list[object], code: int) -> None:
    assert isinstance(events[-2], PeerClosed) and events[-2].failure and events[-2].code == code, events
    assert isinstance(events[-1], ConnectionTerminated), events


BAD_AFTER_GOOD = {
    "rsv-3.2": frame(TEXT, b"hello", rsv=RSV2),
    "reserved-opcode-4.1.3": frame(5, b""),
    "reserved-opcode-payload-4.1.4": frame(6, b"payload"),
    "reserved-control-opcode-4.2.3": frame(13, b""),
    "reserved-control-opcode-payload-4.2.4": frame(14, b"payload"),
    "unmasked": frame(TEXT, b"x", mask=False),
    "lone-continuation": frame(CONT, b"x"),
    "invalid-utf8": text(b"\xff"),
}


@pytest.mark.parametrize("bad", BAD_AFTER_GOOD.values(), ids=BAD_AFTER_GOOD.keys())
def test_messages_before_a_bad_frame_come_out_and_the_failure_waits(bad: bytes) -> None:
    ws = connection()
    events = ws.receive_data(text("hello") + frame(BINARY, b"\x01") + bad + frame(PING, b"ping"))
    assert events == [Message("hello"), Message(b"\x01")]
    assert ws.failure_held and ws.open and not ws.closing
    assert ws.data_to_send() == b""  # no close frame yet, and the ping after the bad frame is not answered
    assert ws.receive_data(text("later") + frame(PING, b"p")) == []  # nothing more is read
    ws.send_message("hello")  # the app's echo
    ws.send_message(b"\x01")
    assert [(f.opcode, f.payload) for f in parse(ws.data_to_send())] == [(TEXT, b"hello"), (BINARY, b"\x01")]
    events = ws.release_failure()
    code = 1007 if bad == BAD_AFTER_GOOD["invalid-utf8"] else 1002
    assert_failed(events, code)
    assert [(f.opcode, f.close_code) for f in parse(ws.data_to_send())] == [(CLOSE, code)]
    assert ws.closing and not ws.failure_held
    assert ws.release_failure() == []


def test_fragmented_message_then_a_stray_continuation() -> None:
    """Autobahn 5.15: the whole first message comes out; the continuation with nothing to continue fails."""
    ws = connection()
    data = frame(TEXT, b"fragment1", fin=False) + frame(CONT, b"fragment2")
    data += frame(CONT, b"fragment3", fin=False) + frame(TEXT, b"fragment4")
    assert ws.receive_data(data) == [Message("fragment1fragment2")]
    assert ws.failure_held
    assert_failed(ws.release_failure(), 1002)


def test_pong_for_a_ping_before_the_bad_frame_goes_at_once() -> None:
    ws = connection()
    assert ws.receive_data(text("a") + frame(PING, b"p1") + frame(3)) == [Message("a"), Ping(b"p1")]
    assert [(f.opcode, f.payload) for f in parse(ws.data_to_send())] == [(0xA, b"p1")]
    assert ws.failure_held


@pytest.mark.parametrize("split", [1, 7, 8])
def test_the_bad_frame_in_a_later_read_waits_for_a_busy_app(split: int) -> None:
    """Autobahn 3.3: the frames in reads of their own; the app has not had (or not answered) the message."""
    busy = [False]
    ws = connection(busy=busy)
    good = text("hello")
    assert messages(ws.receive_data(good)) == ["hello"]
    busy[0] = True  # the message waits in the app's queue, or the app is handling it
    bad = frame(TEXT, b"x", rsv=RSV2)
    assert ws.receive_data(bad[:split]) == []
    assert ws.receive_data(bad[split:]) == []
    assert ws.failure_held and ws.data_to_send() == b""
    assert_failed(ws.release_failure(), 1002)


def test_the_bad_frame_alone_fails_at_once_when_the_app_is_idle() -> None:
    ws = connection(busy=[False])
    assert messages(ws.receive_data(text("hello"))) == ["hello"]
    events = ws.receive_data(frame(TEXT, b"x", rsv=RSV2))
    assert_failed(events, 1002)
    assert not ws.failure_held and ws.closing
    assert parse(ws.data_to_send())[0].close_code == 1002


def test_a_held_failure_goes_by_itself_after_the_closing_handshake_time() -> None:
    clock = Clock(100.0)
    ws = connection(clock, ping_timeout=4.0)
    ws.receive_data(text("a") + frame(3))
    assert ws.failure_held and ws.deadline == 104.0
    assert ws.handle_timer(103.9) == []
    assert_failed(ws.handle_timer(104.0), 1002)
    assert parse(ws.data_to_send())[0].close_code == 1002
    assert ws.closing and ws.deadline is None


def test_no_keepalive_while_a_failure_is_held() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=1.0, ping_timeout=10.0)
    ws.receive_data(text("a") + frame(3))
    assert ws.deadline == 10.0  # the release, not the next ping
    assert ws.handle_timer(5.0) == [] and ws.data_to_send() == b""


def test_send_close_sends_the_held_failure_instead() -> None:
    ws = connection()
    ws.receive_data(text("a") + frame(3))
    ws.send_close(1000)  # the app ends, or shuts down: the peer's failure was found first
    assert [(f.opcode, f.close_code) for f in parse(ws.data_to_send())] == [(CLOSE, 1002)]
    assert ws.closing and not ws.failure_held


def test_eof_releases_a_held_failure() -> None:
    ws = connection()
    ws.receive_data(text("a") + frame(3))
    assert_failed(ws.receive_eof(), 1002)
    assert ws.closing


def test_a_peer_close_after_messages_is_not_held() -> None:
    ws = connection()
    events = ws.receive_data(text("a") + close(1000))
    assert events == [Message("a"), PeerClosed(1000)]
    assert not ws.failure_held


def test_held_failure_with_permessage_deflate() -> None:
    """Without the fast path (an extension negotiated), websockets parses everything: the same holding."""
    ws = connection()
    ws._fast = False  # as with permessage-deflate: websockets' parser sees every byte
    assert ws.receive_data(text("hello") + frame(TEXT, b"x", rsv=RSV2)) == [Message("hello")]
    assert ws.failure_held
    ws.send_message("hello")
    assert parse(ws.data_to_send())[0].payload == b"hello"
    assert_failed(ws.release_failure(), 1002)


# ---------------------------------------------------------------- UTF-8, checked as it arrives


PAYLOAD1 = "κόσμε".encode()  # Autobahn 6.4: valid, then f4 90 80 80 (past U+10FFFF), then "edited"


@pytest.mark.parametrize(
    "pieces",
    [
        [PAYLOAD1, b"\xf4\x90\x80\x80"],  # 6.4.3: the frame in chops
        [PAYLOAD1 + b"\xf4", b"\x90"],  # 6.4.4: the bad sequence split
        [PAYLOAD1 + b"\xed", b"\xa0"],  # a surrogate's first two bytes, which CPython's decoder holds
        [b"\x80"],
    ],
    ids=["6.4.3", "6.4.4", "surrogate", "lone-continuation-byte"],
)
@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "in-a-continuation"])
def test_invalid_utf8_fails_before_the_frame_is_complete(pieces: list[bytes], fragmented: bool) -> None:
    payload = b"".join(pieces) + b"edited"
    if fragmented:  # the bad bytes in a continuation frame, after a whole first fragment
        ws = connection()
        assert ws.receive_data(frame(TEXT, b"start", fin=False)) == []
        whole = frame(CONT, payload)
    else:
        ws = connection()
        whole = text(payload)
    header = len(whole) - len(payload) - 4
    sent = whole[: header + 4]  # header and masking key
    assert ws.receive_data(sent) == []
    for piece in pieces[:-1]:
        assert ws.receive_data(whole[len(sent) : len(sent) + len(piece)]) == []
        sent = whole[: len(sent) + len(piece)]
    events = ws.receive_data(whole[len(sent) : len(sent) + len(pieces[-1])])  # "edited" never comes
    assert_failed(events, 1007)
    assert [(f.opcode, f.close_code) for f in parse(ws.data_to_send())] == [(CLOSE, 1007)]


def test_a_truncated_character_waits_for_the_rest() -> None:
    ws = connection()
    whole = text("€uro".encode())
    assert ws.receive_data(whole[:-5]) == []  # header, mask and the euro sign's first byte
    assert ws.receive_data(whole[-5:-4]) == []
    assert messages(ws.receive_data(whole[-4:])) == ["€uro"]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64])
def test_text_in_pieces_is_whole_and_decoded_once(step: int) -> None:
    value = "Hello-µ@ßöäüàá-UTF-8!! κόσμε \U0010ffff " * 20
    data = text(value) + frame(TEXT, value.encode(), fin=False) + frame(PING, b"p") + frame(CONT, b"!")
    ws = connection()
    events = [e for i in range(0, len(data), step) for e in ws.receive_data(data[i : i + step])]
    assert messages(events) == [value, value + "!"]
    assert not ws.failure_held and ws.open


@pytest.mark.parametrize("cut", [7, 8, 9, 10, 20, 30])
def test_reason_names_the_same_position_however_the_frame_came(cut: int) -> None:
    data = text(b"ab\xc3\xa9cd" * 4 + b"\xff")
    whole = connection().receive_data(data)
    ws = connection()
    assert ws.receive_data(data[:cut]) == []
    split = ws.receive_data(data[cut:])
    assert whole[-2] == split[-2]
    assert isinstance(split[-2], PeerClosed) and split[-2].reason == "invalid start byte at position 24"
