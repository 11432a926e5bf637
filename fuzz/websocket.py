"""The WebSocket core: ``WSConnection`` as the bridge builds it once it accepts a handshake, with or without
permessage-deflate (negotiated by ``Handshake.accept_headers`` from a drawn offer), fed masked client frames in
drawn chunks with clock advances: whole and fragmented messages, compressed or not, control frames between
fragments, invalid UTF-8, bad opcodes, RSV bits, masks and lengths, junk deflate streams, raw bytes. The app
echoes the messages it takes (``send_message``), sometimes sends its own or closes, and releases a held failure
once it has taken every message before it, as the bridge's ``receive()`` does.

Invariants: ``receive_data``/``receive_eof``/``handle_timer``/``release_failure`` raise nothing; ``send_message``
raises only InvalidState once the connection is not open, ``send_close`` only ValueError for a code or reason
that may not be sent. Events are Message (text as str), Ping, PeerClosed (once) and ConnectionTerminated (last,
once), no Message after PeerClosed, nothing once closing. The messages delivered are those the client sent, in
order, up to its first frame that is not a well-formed message or control frame. The output parses with
websockets' client-side ``Protocol`` (unmasked frames, RSV bits only as negotiated, valid control frames and
close codes, deflate streams that inflate); its text messages are UTF-8 and its messages are the app's, in
order; a close frame is the last frame, and its code may go on the wire (not 1005, 1006 or 1015).

Input layout: byte 0 = flags (bit 0 offer permessage-deflate, bit 1 server_no_context_takeover, bit 2
client_no_context_takeover, bit 3 window bits in the offer, bit 4 a small max_size, bit 5 keep-alive pings,
bit 6 the app closes at the end, bit 7 the app takes messages only on its turns), byte 1 = seed of the app's
choices and the chunk cuts, byte 2 = the offer's window bits (and bit 3: pings without a timeout), then ops: a
byte picks the op, the bytes after it are its arguments (``_Client.op``, ``one_input``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from websockets.exceptions import InvalidState
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import EXTERNAL_CLOSE_CODES, Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import OPEN, Protocol, Side

from fuzz._harness import Reader, main, pieces
from helpers import Clock
from wsframes import BINARY, CLOSE, CONT, PING, PONG, RSV1, TEXT, close_payload, frame, parse_frames
from zonda.protocols.events import ConnectionTerminated, Request
from zonda.protocols.websocket import (
    Message,
    PeerClosed,
    Ping,
    WSConnection,
    WSSettings,
    check_handshake,
)

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
_CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 3000, 4999, 999, 1004, 1005, 1006, 1015, 5000)
_APP_CLOSE_CODES = (1000, 1001, 1011, 3000, 4999, 1005, 1006, 2999)  # the last three may not be sent
_SIZES = (1, 2, 40, 130, 600, 1400)  # payload length multipliers: 7-bit, 16-bit and 64-bit length fields
_DELTAS = (0.5, 2.0, 6.0, 21.0, 41.0)
# ops 0-9 build client bytes (_Client.op); the rest are the driver's (one_input)
_DELIVER, _TICK, _APP, _APP_SENDS, _PAUSE, _EOF, _OPS = 10, 11, 12, 13, 14, 15, 16


def _text(raw: bytes) -> str:
    """Drawn bytes as text with one-, two-, three- and four-byte UTF-8 characters."""
    return "".join(chr(b) if b < 0x80 else "\U0001f600" if b == 0xFF else chr(0x100 + b * 67) for b in raw)


class _Client:
    """The fuzz client: turns ops into masked frames (valid or not); tracks the messages the server must deliver
    while everything it sent was well-formed."""

    def __init__(self, draw: Reader, extension: Extension | None, max_size: int) -> None:
        self.draw = draw
        self.extension = extension
        self.max_size = max_size
        self.expected: list[bytes | str] = []
        self.tracking = True  # every frame so far was well-formed: the messages are known

    def op(self, code: int) -> bytes:
        draw = self.draw
        if code in (0, 1, 2):  # a text message, a binary one, one of raw bytes (UTF-8 or not) as text
            raw = draw.chunk(47) * _SIZES[draw.below(len(_SIZES))]
            if code == 0:
                return self._message(TEXT, _text(raw).encode())
            return self._message(BINARY if code == 1 else TEXT, raw)
        if code in (3, 4):  # PING, PONG (the answer to a keep-alive ping, or not); over 125 bytes is an error
            mode = draw.byte()
            payload = b"%08x" % (mode & 1) if mode & 0x80 else bytes(draw.byte() for _ in range(mode % 130))
            self.tracking &= len(payload) <= 125
            return frame(PING if code == 3 else PONG, payload)
        self.tracking = False  # nothing after these is known to be delivered
        if code == 5:  # a close frame: any code, any reason, or one byte
            pick = draw.below(len(_CLOSE_CODES) + 2)
            reason = draw.chunk(23)
            if pick == len(_CLOSE_CODES):
                return frame(CLOSE, b"\x03")
            return frame(
                CLOSE, close_payload(None if pick > len(_CLOSE_CODES) else _CLOSE_CODES[pick], reason)
            )
        if code == 6:  # any frame: FIN, RSV bits, opcode, mask, a length that lies
            first, second = draw.byte(), draw.byte()
            payload = draw.chunk(39)
            length = (None, len(payload) + 1, 2**63, 126)[second & 3]
            fin, rsv, mask = bool(first & 0x80), first >> 4 & 7, not second & 4
            return frame(first & 0xF, payload, fin=fin, rsv=rsv, mask=mask, length=length)
        if code == 7:  # RSV1 on junk: a deflate stream that does not inflate (or RSV1 not negotiated)
            return frame(TEXT if bool(draw.byte() & 1) else BINARY, draw.chunk(31), rsv=RSV1)
        if code == 8:  # a continuation with no message begun
            return frame(CONT, draw.chunk(15), fin=bool(draw.byte() & 1))
        return draw.chunk(31)

    def _message(self, opcode: int, payload: bytes) -> bytes:
        """Whole or in fragments, compressed or not, with control frames between the fragments."""
        draw = self.draw
        flags = draw.byte()
        cuts = sorted({draw.byte() * len(payload) // 255 for _ in range(flags >> 1 & 3)})
        fragments = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        extension = self.extension if flags & 1 else None
        out = b""
        for index, piece in enumerate(fragments):
            sent = Frame(Opcode(opcode if index == 0 else CONT), piece, fin=index == len(fragments) - 1)
            if extension is not None:
                sent = extension.encode(sent)
            out += frame(sent.opcode, bytes(sent.data), fin=sent.fin, rsv=RSV1 if sent.rsv1 else 0)
            if flags & 0x20 and index < len(fragments) - 1:
                out += frame(PING if flags & 0x40 else PONG, b"between")
        if self.tracking:
            try:
                value: bytes | str = payload.decode() if opcode == TEXT else payload
            except UnicodeDecodeError:
                self.tracking = False
            else:
                self.tracking = len(payload) <= self.max_size
                if self.tracking:
                    self.expected.append(value)
        return out


@dataclass
class _Run:
    """The server core, the app around it, and websockets' client reading the output."""

    flags: int
    rng: random.Random
    core: WSConnection
    reader: Protocol
    clock: Clock
    inbox: deque[bytes | str] = field(default_factory=deque)
    delivered: list[bytes | str] = field(default_factory=list)
    app_sent: list[bytes | str] = field(default_factory=list)
    client_got: list[bytes | str] = field(default_factory=list)
    fragments: list[bytes] = field(default_factory=list)
    fragment_text: bool = False
    peer_closed: bool = False
    terminated: bool = False
    closing_seen: bool = False
    close_frame_seen: bool = False
    failed: bool = False

    def events(self, events: list[object]) -> None:
        assert not (self.closing_seen and events), ("events once closing", events)
        for index, event in enumerate(events):
            if isinstance(event, Message):
                assert not self.peer_closed and isinstance(event.data, bytes | str), event
                self.delivered.append(event.data)
                self.inbox.append(event.data)
            elif isinstance(event, PeerClosed):
                assert not self.peer_closed and 1000 <= event.code < 5000, event
                self.peer_closed = True
                self.failed |= event.failure
            elif isinstance(event, ConnectionTerminated):
                assert not self.terminated and index == len(events) - 1, events
                self.terminated = True
            else:
                assert isinstance(event, Ping), event
        if not self.flags & 128:
            self.app(take_all=True)
        self.output()

    def app(self, take_all: bool = False) -> None:
        """The app takes messages and echoes them; once it has taken every one, a held failure goes."""
        core, rng = self.core, self.rng
        while self.inbox and (take_all or rng.random() < 0.7):
            self.send(self.inbox.popleft())
        if not self.inbox and core.failure_held:
            self.events(list(core.release_failure()))
        self.output()

    def send(self, data: bytes | str) -> None:
        if self.core.open:
            self.core.send_message(data)
            self.app_sent.append(data)
        elif self.rng.random() < 0.3:  # the bridge does not call it then: it would raise
            try:
                self.core.send_message(data)
            except InvalidState:
                pass
            else:
                raise AssertionError("send_message after the connection stopped being open")

    def close(self) -> None:
        code = self.rng.choice(_APP_CLOSE_CODES)
        reason = "bye" * self.rng.choice((0, 1, 42))  # 126 bytes: too long
        try:
            self.core.send_close(code, reason)
        except ValueError:
            assert code in (1005, 1006, 2999) or len(reason) > 123, (code, reason)
        self.output()

    def output(self) -> None:
        data = self.core.data_to_send()
        if not data:
            return
        assert not self.closing_seen, ("output once closing", data)
        for f in parse_frames(data):  # (raises on a frame cut short)
            # No data frame after a close frame (RFC 6455 §5.5.1); websockets still answers pings while it
            # waits for the peer's close, which the RFC allows.
            assert not self.close_frame_seen or f.opcode == PONG, ("a frame after the close frame", f)
            if f.opcode == CLOSE:
                self.close_frame_seen = True
                code = f.close_code
                assert len(f.payload) != 1 and (
                    code is None or code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000
                )
        self.reader.receive_data(data)
        assert self.reader.parser_exc is None, ("websockets refused zonda's output", self.reader.parser_exc)
        for received in self.reader.events_received():
            assert isinstance(received, Frame), received  # (no handshake: frames only)
            if received.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if received.opcode is not Opcode.CONT:
                    self.fragment_text = received.opcode is Opcode.TEXT
                self.fragments.append(bytes(received.data))
                if received.fin:
                    whole = b"".join(self.fragments)
                    self.fragments = []
                    self.client_got.append(
                        whole.decode() if self.fragment_text else whole
                    )  # UTF-8 or it raises
        assert self.client_got == self.app_sent, (
            "the client did not read the app's messages",
            len(self.app_sent),
        )
        self.closing_seen = self.core.closing


def _negotiate(flags: int, bits: int, settings: WSSettings) -> tuple[list[Extension], Extension | None]:
    """The server's extensions as the bridge builds them from the client's offer, and the client's side."""
    if not flags & 1:
        return [], None
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=bool(flags & 2),
        client_no_context_takeover=bool(flags & 4),
        server_max_window_bits=(None, 8, 9, 12, 15)[bits % 5] if flags & 8 else None,  # 8: declined
        client_max_window_bits=(None, True, 9, 12, 15)[(bits >> 4) % 5] if flags & 8 else None,
    )
    offer = build_extension([(factory.name, factory.get_request_params())]).encode()
    headers = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    headers += [
        (b"sec-websocket-key", _KEY),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-extensions", offer),
    ]
    handshake = check_handshake(Request(1, b"GET", b"/", b"", headers, "1.1", upgrade=b"websocket"))
    response, extensions = handshake.accept_headers(settings, None)
    answers = [value for name, value in response if name == b"sec-websocket-extensions"]
    if not answers:
        return extensions, None  # declined
    params = parse_extension(answers[0].decode())[0][1]
    return extensions, factory.process_response_params(params, [])


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    flags, rng = data[0], random.Random(data[1])
    settings = WSSettings(
        max_size=64 if flags & 16 else 16 * 1024 * 1024,
        ping_interval=5.0 if flags & 32 else None,
        ping_timeout=3.0
        if flags & 32 and not data[2] & 8
        else None,  # pings without a timeout: keep NAT warm
    )
    extensions, client_extension = _negotiate(flags, data[2], settings)
    clock = Clock()
    inbox: deque[bytes | str] = deque()
    core = WSConnection(settings, extensions, clock, lambda: bool(inbox))
    reader = Protocol(Side.CLIENT, state=OPEN, max_size=None)
    reader.extensions = [client_extension] if client_extension is not None else []
    run = _Run(flags, rng, core, reader, clock, inbox)
    draw = Reader(data[3:])
    client = _Client(draw, client_extension, settings.max_size)
    pending, paused, ended = b"", False, False

    def deliver() -> None:
        nonlocal pending
        if paused:
            return  # the driver reads nothing while the app holds reading back
        for piece in pieces(rng, pending):
            if ended or core.closing:
                break
            run.events(list(core.receive_data(piece)))
            delivered, expected = run.delivered, client.expected
            assert delivered[: len(expected)] == expected[: len(delivered)], (
                "not the messages the client sent"
            )
            assert not client.tracking or len(delivered) <= len(expected), "a message the client did not send"
        pending = b""

    while not draw.exhausted and not core.closing and not ended:
        code = draw.below(_OPS)
        if code < _DELIVER:
            pending += client.op(code)
        elif code == _DELIVER:
            deliver()
        elif code == _TICK:
            run.events(list(core.handle_timer(clock.advance(_DELTAS[draw.below(len(_DELTAS))]))))
        elif code == _APP:
            run.app()
        elif code == _APP_SENDS:  # a message of its own, a close, or the server shutting down (1001)
            mode = draw.below(3)
            if mode == 1:
                run.send(_text(draw.chunk(15)) if bool(draw.byte() & 1) else draw.chunk(299))
                run.output()
            elif mode == 0:
                run.close()
            else:
                core.finish_and_close()
                run.output()
        elif code == _PAUSE:
            paused = not paused
            core.set_reading_paused(paused)
        else:
            run.events(list(core.receive_eof()))
            ended = True
    paused = False
    core.set_reading_paused(False)
    deliver()
    run.app(take_all=True)
    if client.tracking and not (ended or run.peer_closed or run.close_frame_seen):
        assert run.delivered == client.expected, "messages the client sent were not delivered"
    if flags & 64:
        run.close()
    for seconds in (6.0, 31.0):
        run.events(list(core.handle_timer(clock.advance(seconds))))
        run.app(take_all=True)


# ---------------------------------------------------------------------- seeds: op sequences, byte by byte


def _seeds() -> list[bytes]:
    hello = bytes((0, 5)) + b"hello" + bytes((0, 0))  # a text message, whole, uncompressed
    deliver, app = bytes((_DELIVER,)), bytes((_APP,))
    streams = [
        hello + deliver,
        hello
        + bytes((1, 3))
        + b"\x00\xff\x01"
        + bytes((4, 1))
        + deliver,  # binary, 600 times over, compressed
        bytes((0, 12))
        + b"fragmented!!"
        + bytes((1, 0x27, 5, 9, 17))
        + deliver
        + app,  # pieces, pings between
        bytes((2, 4))
        + b"\xce\xbb\xff\xfe"
        + bytes((0, 0))
        + hello
        + deliver,  # invalid UTF-8, then a message
        hello + bytes((3, 4)) + b"ping" + bytes((4, 0)) + deliver + bytes((5, 0, 3)) + b"bye" + deliver,
        hello + bytes((6, 0x89, 0x04, 3)) + b"abc" + deliver,  # an unmasked frame
        bytes((7, 1, 5)) + b"junk!" + deliver + bytes((8, 3)) + b"abc" + bytes((1,)) + deliver,
        hello + deliver + bytes((_TICK, 2, _TICK, 2, _TICK, 4)),  # keep-alive ping, then its timeout
        hello + deliver + bytes((_TICK, 2, 4, 0x80)) + deliver + bytes((_TICK, 2, _APP_SENDS, 2)),  # its pong
        hello + bytes((_PAUSE,)) + deliver + bytes((_PAUSE,)) + hello + deliver + bytes((_EOF,)),
        hello + deliver + bytes((_APP_SENDS, 1, 1, 4)) + b"mine" + bytes((_APP_SENDS, 0)) + hello + deliver,
        bytes((1, 47, 5)) + bytes(range(47)) + bytes((1,)) + deliver,  # 65800 bytes: a 64-bit length
    ]
    seeds: list[bytes] = []
    for flags, bits in (
        (0, 0),
        (1, 0),
        (1 | 2 | 4, 0),
        (1 | 8, 0x12),
        (1 | 8, 0x21),
        (16, 0),
        (96, 0),
        (129, 3),
    ):
        for stream in streams:
            seeds.append(bytes((flags, len(seeds) % 256, bits)) + stream)
    return seeds


SEEDS = _seeds()

if __name__ == "__main__":
    main("websocket", one_input, SEEDS)
