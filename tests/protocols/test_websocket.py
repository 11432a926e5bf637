"""The WebSocket core without sockets: handshake checks, the 101 headers, and WSConnection fed raw frames with
a fake clock (RFC 6455, RFC 7692)."""

from __future__ import annotations

import zlib

import pytest

from helpers import Clock
from wsframes import BINARY, CLOSE, CONT, PING, PONG, RSV1, RSV2, RSV3, TEXT, close, deflate, frame, text
from wsframes import parse_frames as parse
from zonda.errors import BadRequest
from zonda.protocols.events import ConnectionTerminated, Request
from zonda.protocols.websocket import (
    Handshake,
    Message,
    PeerClosed,
    Ping,
    UpgradeRequired,
    WSConnection,
    WSSettings,
    check_handshake,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
GOOD = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


def request(
    headers: list[tuple[bytes, bytes]] = GOOD, method: bytes = b"GET", version: str = "1.1"
) -> Request:
    return Request(1, method, b"/chat", b"", headers, version, upgrade=b"websocket")


def replace(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    """GOOD with header ``name`` set to ``value`` (or removed)."""
    headers = [(n, v) for n, v in GOOD if n != name]
    return headers if value is None else [*headers, (name, value)]


# ---------------------------------------------------------------------------- handshake


def test_good_handshake() -> None:
    headers = [
        *replace(b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-protocol", b"v2"),
    ]
    handshake = check_handshake(request(headers))
    assert handshake.key == KEY
    assert handshake.subprotocols == ["chat", "superchat", "v2"]
    assert handshake.extension_offers == []


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (request(method=b"POST"), BadRequest),
        (request(version="1.0"), BadRequest),
        (request(replace(b"upgrade", None)), BadRequest),
        (request(replace(b"upgrade", b"h2c")), BadRequest),
        (request(replace(b"connection", b"keep-alive")), BadRequest),
        (request(replace(b"connection", None)), BadRequest),
        (request(replace(b"sec-websocket-key", None)), BadRequest),
        (request([*GOOD, (b"sec-websocket-key", KEY)]), BadRequest),
        (request(replace(b"sec-websocket-key", b"not base64!")), BadRequest),
        (request(replace(b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAA")), BadRequest),  # 15 bytes
        (request(replace(b"sec-websocket-version", b"8")), UpgradeRequired),
        (request(replace(b"sec-websocket-version", None)), UpgradeRequired),
        (request([*GOOD, (b"sec-websocket-version", b"8")]), UpgradeRequired),
    ],
)
def test_bad_handshake(req: Request, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_handshake(req)
    assert UpgradeRequired.status == 426 and BadRequest.status == 400


def test_case_insensitive_tokens() -> None:
    headers = replace(b"upgrade", b"WebSocket")
    headers = [(n, b"UPGRADE" if n == b"connection" else v) for n, v in headers]
    assert check_handshake(request(headers)).key == KEY


def test_accept_key_rfc_example() -> None:
    headers, extensions = check_handshake(request()).accept_headers(WSSettings(), None)
    assert headers == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    assert extensions == []


def test_accept_subprotocol() -> None:
    headers, _ = Handshake(KEY, ["a", "b"]).accept_headers(WSSettings(), "b")
    assert (b"sec-websocket-protocol", b"b") in headers


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
        ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
        ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover"),
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
        ("permessage-deflate; client_max_window_bits=10", "permessage-deflate; client_max_window_bits=10"),
        ('permessage-deflate; client_max_window_bits="12"', "permessage-deflate; client_max_window_bits=12"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=9",
        ),
        # zlib cannot do a window of 8 for raw DEFLATE; 16 is out of range; unknown parameters: declined
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; foo=1", None),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate;;", None),
        # RFC 7692 §5: a declined offer falls back to the next one
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
    ],
)
def test_deflate_negotiation(offer: str, answer: str | None) -> None:
    handshake = check_handshake(request([*GOOD, (b"sec-websocket-extensions", offer.encode())]))
    headers, extensions = handshake.accept_headers(WSSettings(), None)
    values = [v.decode() for n, v in headers if n == b"sec-websocket-extensions"]
    assert values == ([answer] if answer else [])
    assert len(extensions) == (1 if answer else 0)


def test_deflate_off() -> None:
    handshake = check_handshake(request([*GOOD, (b"sec-websocket-extensions", b"permessage-deflate")]))
    headers, extensions = handshake.accept_headers(WSSettings(per_message_deflate=False), None)
    assert extensions == [] and all(n != b"sec-websocket-extensions" for n, _ in headers)


# ---------------------------------------------------------------------------- the frame core


def connection(clock: Clock | None = None, offer: str | None = None, **settings: object) -> WSConnection:
    settings.setdefault("ping_interval", None)
    ws = WSSettings(**settings)  # type: ignore[arg-type]
    extensions = []
    if offer:
        handshake = check_handshake(request([*GOOD, (b"sec-websocket-extensions", offer.encode())]))
        extensions = handshake.accept_headers(ws, None)[1]
    return WSConnection(ws, extensions, clock or Clock(0.0))


def messages(events: list[object]) -> list[object]:
    return [e.data for e in events if isinstance(e, Message)]


def test_messages() -> None:
    ws = connection()
    events = ws.receive_data(text("héllo") + frame(BINARY, b"\x00\xff") + text(""))
    assert messages(events) == ["héllo", b"\x00\xff", ""]
    assert ws.data_to_send() == b""


def test_byte_at_a_time() -> None:
    ws = connection()
    data = text("x" * 300)
    events = [e for i in range(len(data)) for e in ws.receive_data(data[i : i + 1])]
    assert messages(events) == ["x" * 300]


def test_fragments_reassembled() -> None:
    ws = connection()
    euro = "€".encode()  # split the character across fragments
    events = ws.receive_data(
        frame(TEXT, b"a" + euro[:1], fin=False)
        + frame(PING, b"p")  # a control frame between fragments (RFC 6455 §5.4)
        + frame(CONT, euro[1:], fin=False)
        + frame(CONT, b"b")
        + frame(BINARY, b"1", fin=False)
        + frame(CONT, b"2")
    )
    assert messages(events) == ["a€b", b"12"]
    assert parse(ws.data_to_send())[0].opcode == PONG


def test_ping_answered() -> None:
    ws = connection()
    events = ws.receive_data(frame(PING, b"hello"))
    assert events == [Ping(b"hello")]  # an event, so the driver flushes the pong
    assert ws.data_to_send() == b"\x8a\x05hello"


def test_unsolicited_pong_ignored() -> None:
    ws = connection()
    assert ws.receive_data(frame(PONG, b"x")) == []
    assert ws.data_to_send() == b""


def test_peer_closes() -> None:
    ws = connection()
    events = ws.receive_data(close(4000, b"bye"))
    assert events == [PeerClosed(4000, "bye")]
    assert ws.data_to_send() == b"\x88\x05\x0f\xa0bye"  # the code and reason echoed (RFC 6455 §5.5.1)
    assert ws.closing and not ws.open and ws.deadline is None


def test_peer_closes_without_code() -> None:
    ws = connection()
    assert ws.receive_data(frame(CLOSE)) == [PeerClosed(1005)]
    assert ws.data_to_send() == b"\x88\x00"


def test_server_closes_and_peer_answers() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_timeout=3.0)
    ws.send_close(4001, "done")
    assert ws.data_to_send() == b"\x88\x06\x0f\xa1done"
    assert not ws.open and not ws.closing and ws.deadline == 3.0
    ws.send_close(1000)  # already closing: a no-op
    assert ws.data_to_send() == b""
    assert ws.receive_data(close(4001)) == [PeerClosed(4001)]
    assert ws.data_to_send() == b"" and ws.closing


def test_closing_handshake_times_out() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_timeout=3.0)
    ws.send_close()
    assert ws.handle_timer(2.9) == []
    events = ws.handle_timer(3.0)
    assert isinstance(events[-1], ConnectionTerminated) and ws.closing


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000])
def test_send_close_rejects_reserved_codes(code: int) -> None:
    ws = connection()
    with pytest.raises(ValueError):
        ws.send_close(code)
    assert ws.open


def test_send_messages() -> None:
    ws = connection()
    ws.send_message("hi")
    ws.send_message(b"\x01" * 200)
    out = parse(ws.data_to_send())
    assert [(f.opcode, f.payload) for f in out] == [(TEXT, b"hi"), (BINARY, b"\x01" * 200)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"x", rsv=RSV1), 1002),  # no extension negotiated
        (frame(TEXT, b"x", rsv=RSV2), 1002),
        (frame(BINARY, b"x", rsv=RSV3), 1002),
        (frame(3, b"x"), 1002),  # reserved non-control opcode
        (frame(0xB), 1002),  # reserved control opcode
        (frame(TEXT, b"x", mask=False), 1002),  # client frames must be masked (RFC 6455 §5.1)
        (frame(PING, b"x" * 126), 1002),  # control frames carry at most 125 bytes
        (frame(PING, b"x", fin=False), 1002),  # and are never fragmented
        (frame(CONT, b"x"), 1002),  # a continuation with nothing to continue
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
        (frame(CLOSE, b"\x03"), 1002),  # a close payload of one byte
        (close(999), 1002),
        (close(1005), 1002),
        (close(1000, b"\xff"), 1007),  # the reason must be UTF-8
        (text(b"\xce\xba\xed\xa0\x80"), 1007),  # a surrogate is not UTF-8
        (frame(TEXT, b"ok\xc0\xaf", fin=False), 1007),  # fail fast: before the message ends
        (frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b""), 1007),  # truncated at the end
        (frame(BINARY, b"x" * 101), 1009),
        (frame(BINARY, b"x" * 60, fin=False) + frame(CONT, b"x" * 41), 1009),
        (frame(BINARY, length=2**40), 1009),  # refused from the header alone
    ],
    ids=[
        "rsv1-unnegotiated",
        "rsv2",
        "rsv3",
        "opcode-3",
        "opcode-11",
        "unmasked",
        "ping-126",
        "fragmented-ping",
        "lone-continuation",
        "text-inside-fragments",
        "close-1-byte",
        "close-999",
        "close-1005",
        "close-reason-not-utf8",
        "text-not-utf8",
        "fail-fast-utf8",
        "truncated-utf8",
        "too-big",
        "fragments-too-big",
        "huge-header",
    ],
)
def test_errors(data: bytes, code: int) -> None:
    ws = connection(max_size=100)
    events = ws.receive_data(data + text("after"))
    assert messages(events) == []  # nothing after the failure is processed (RFC 6455 §7.1.7)
    assert isinstance(events[-2], PeerClosed) and events[-2].code == code and events[-2].failure
    assert isinstance(events[-1], ConnectionTerminated)
    sent = parse(ws.data_to_send())
    assert [(f.opcode, f.close_code) for f in sent] == [(CLOSE, code)]
    assert ws.closing
    assert ws.receive_data(text("more")) == []


def test_message_at_the_limit() -> None:
    ws = connection(max_size=100)
    events = ws.receive_data(
        frame(BINARY, b"x" * 100) + frame(TEXT, b"y" * 60, fin=False) + frame(CONT, b"y" * 40)
    )
    assert messages(events) == [b"x" * 100, "y" * 100]


def test_control_frame_between_fragments_at_the_limit() -> None:
    ws = connection(max_size=64)
    data = frame(BINARY, b"a" * 60, fin=False) + frame(PING, b"p" * 125) + frame(CONT, b"b" * 4)
    assert messages(ws.receive_data(data)) == [b"a" * 60 + b"b" * 4]
    assert parse(ws.data_to_send())[0].payload == b"p" * 125


def test_close_between_fragments() -> None:
    ws = connection()
    events = ws.receive_data(frame(TEXT, b"part", fin=False) + close(1000))
    assert events == [PeerClosed(1000)]  # RFC 6455 §5.4: the unfinished message is dropped
    assert parse(ws.data_to_send())[0].close_code == 1000


def test_abrupt_eof() -> None:
    ws = connection()
    ws.receive_data(frame(TEXT, b"par", fin=False))
    events = ws.receive_eof()
    assert isinstance(events[0], PeerClosed) and events[0].code == 1006 and events[0].failure
    assert ws.data_to_send() == b"" and ws.closing


# ---------------------------------------------------------------------------- keep-alive


def test_keepalive_ping_and_pong() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=10.0, ping_timeout=5.0)
    assert ws.deadline == 10.0
    assert ws.handle_timer(9.9) == []
    events = ws.handle_timer(10.0)
    assert len(events) == 1 and isinstance(events[0], Ping) and events[0].outgoing
    ping = parse(ws.data_to_send())[0]
    assert ping.opcode == PING and ws.deadline == 15.0
    clock.now = 12.0
    assert ws.receive_data(frame(PONG, b"wrong")) == [] and ws.deadline == 15.0
    ws.receive_data(frame(PONG, ping.payload))
    assert ws.deadline == 22.0  # the next ping, interval after the pong
    assert ws.handle_timer(15.0) == []


def test_keepalive_timeout() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=10.0, ping_timeout=5.0)
    ws.handle_timer(10.0)
    ws.data_to_send()
    events = ws.handle_timer(15.0)
    assert events[0] == PeerClosed(1006, "keep-alive ping timed out", True)
    assert isinstance(events[1], ConnectionTerminated)
    assert parse(ws.data_to_send())[0].close_code == 1011
    assert ws.closing and ws.deadline is None


def test_keepalive_waits_while_reading_is_paused() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=10.0, ping_timeout=5.0)
    ws.handle_timer(10.0)
    ws.set_reading_paused(True)  # the pong may be sitting unread in the socket
    assert ws.deadline is None
    clock.now = 100.0
    ws.set_reading_paused(False)
    assert ws.deadline == 105.0 and ws.handle_timer(104.0) == []


def test_keepalive_without_timeout() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=10.0, ping_timeout=None)
    ws.handle_timer(10.0)
    assert parse(ws.data_to_send())[0].opcode == PING
    assert ws.deadline == 20.0


def test_no_keepalive_while_closing() -> None:
    clock = Clock(0.0)
    ws = connection(clock, ping_interval=1.0, ping_timeout=5.0)
    ws.send_close()
    assert ws.deadline == 5.0


# ---------------------------------------------------------------------------- permessage-deflate


def test_compressed_messages() -> None:
    ws = connection(offer="permessage-deflate")
    compressor = zlib.compressobj(wbits=-15)
    first = frame(TEXT, deflate(b"hello " * 50, compressor), rsv=RSV1)
    second = frame(TEXT, deflate(b"hello " * 50, compressor), rsv=RSV1)  # context taken over
    plain = text("plain")  # RSV1 clear: not compressed
    assert messages(ws.receive_data(first + second + plain)) == ["hello " * 50] * 2 + ["plain"]
    ws.send_message("hello " * 50)
    out = parse(ws.data_to_send())[0]
    assert out.rsv == RSV1 and len(out.payload) < 50


def test_compressed_fragments() -> None:
    ws = connection(offer="permessage-deflate")
    body = deflate(b"abc" * 1000)
    data = frame(BINARY, body[:10], fin=False, rsv=RSV1) + frame(CONT, body[10:])
    assert messages(ws.receive_data(data)) == [b"abc" * 1000]


@pytest.mark.parametrize(
    "data",
    [
        frame(BINARY, deflate(b"a"), fin=False, rsv=RSV1) + frame(CONT, deflate(b"b"), rsv=RSV1),
        frame(PING, b"", rsv=RSV1),
        frame(TEXT, b"\xff\xff\xff not deflate", rsv=RSV1),
    ],
    ids=["rsv1-on-continuation", "rsv1-on-control", "corrupt"],
)
def test_compression_errors(data: bytes) -> None:
    ws = connection(offer="permessage-deflate")
    events = ws.receive_data(data)
    assert isinstance(events[0], PeerClosed) and events[0].code == 1002


def test_zip_bomb_refused() -> None:
    ws = connection(offer="permessage-deflate", max_size=65536)
    bomb = deflate(b"\x00" * (16 * 1024 * 1024))
    assert len(bomb) < 20000
    events = ws.receive_data(frame(BINARY, bomb, rsv=RSV1))
    assert isinstance(events[0], PeerClosed) and events[0].code == 1009
    assert parse(ws.data_to_send())[0].close_code == 1009
