"""WebSocket frames below ``WSConnection``: cutting and framing them by hand for the fast path (RFC 6455 §5.2),
checking text as it arrives, and websockets' parser turned into one that assembles whole messages and holds a
failure it finds for ``WSConnection`` to send when the messages before it have reached the app."""

from __future__ import annotations

import codecs
import logging
import struct
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "BINARY_FIN",
    "TEXT_FIN",
    "Message",
    "ServerProtocol",
    "TextCheck",
    "apply_mask",
    "frame_bounds",
    "frame_header",
]

# websockets logs "connection closed" at INFO for every connection; zonda logs what matters itself.
_protocol_log = logging.getLogger("zonda.websocket")
_protocol_log.setLevel(logging.WARNING)


@dataclass(slots=True)
class Message:
    """A whole data message from the peer."""

    data: bytes | str


# A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
_MAX_CONTROL = 125
TEXT_FIN, BINARY_FIN = 0x81, 0x82  # the first header byte of a whole message: FIN, no RSV bits (§5.2)
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from
_pack_header16 = struct.Struct("!BBH").pack
_pack_header64 = struct.Struct("!BBQ").pack


def frame_bounds(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """Where the masking key of the frame at ``pos`` starts and where the frame ends; (-1, -1) if the header is
    incomplete (RFC 6455 §5.2). The frame is taken to be masked; the caller checks."""
    end = len(data)
    if end - pos < 2:
        return -1, -1
    length = data[pos + 1] & 0x7F
    key = pos + 2
    if length == 126:
        if end - key < 2:
            return -1, -1
        length = _unpack_u16(data, key)[0]
        key += 2
    elif length == 127:
        if end - key < 8:
            return -1, -1
        length = _unpack_u64(data, key)[0]
        key += 8
    return key, key + 4 + length


def frame_header(first: int, length: int) -> bytes:
    """An unmasked server frame's header (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _pack_header16(first, 126, length)
    return _pack_header64(first, 127, length)


_new_decoder = codecs.getincrementaldecoder("utf-8")


class _SurrogateHalf(UnicodeDecodeError):
    """ED A0-BF ends a piece: the start of a UTF-16 surrogate, never valid UTF-8 (RFC 3629 §3)."""

    def __init__(self, pending: bytes) -> None:
        super().__init__("utf-8", pending, 0, 2, "invalid continuation byte")


def _decode_more(
    decoder: codecs.IncrementalDecoder, data: bytes | bytearray | memoryview, final: bool
) -> str:
    """The next piece of a text message as text. Raises UnicodeDecodeError at the first invalid sequence, also
    for a surrogate's first two bytes, which CPython's decoder holds until a third byte comes."""
    text = decoder.decode(data, final)
    if not final:
        pending = decoder.getstate()[0]
        if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise _SurrogateHalf(pending)
    return text


_utf8_decode = codecs.utf_8_decode


class TextCheck:
    """Checks a masked text frame's payload as its bytes arrive, so invalid UTF-8 fails the connection at the
    first bad sequence, not once the frame is complete (Autobahn 6.4.3, 6.4.4). It takes the frame's bytes after
    the header: the masking key, then the payload. ``parts`` keeps the text decoded so far when the frame becomes
    a message here (the fast path), so no byte is decoded twice.

    It decodes with ``codecs.utf_8_decode`` and keeps the bytes of a character begun itself: an incremental
    decoder object would copy each piece onto its buffer first.
    """

    __slots__ = ("checked", "mask", "parts", "pending")

    def __init__(self, pending: bytes, keep: bool) -> None:
        self.mask = b""
        self.pending = pending  # the bytes of a character begun and not finished (in an earlier frame too)
        self.checked = 0  # payload bytes decoded so far
        self.parts: list[str] | None = [] if keep else None

    @property
    def taken(self) -> int:
        """Bytes after the frame's header taken so far."""
        return len(self.mask) + self.checked

    def feed(self, masked: bytes | bytearray | memoryview, final: bool = False) -> str | None:
        """Take the next bytes (``final``: the last of the frame); the reason for a 1007 if the payload is not
        UTF-8, else None."""
        if len(self.mask) < 4:
            need = 4 - len(self.mask)
            self.mask += bytes(masked[:need])
            masked = masked[need:]
            if len(self.mask) < 4:
                return None
        turn = self.checked % 4  # the mask key continues where the last piece stopped (RFC 6455 §5.3)
        data = apply_mask(masked, self.mask[turn:] + self.mask[:turn] if turn else self.mask)
        pending = self.pending
        if pending:
            data = pending + data
        try:
            text, used = _utf8_decode(data, "strict", final)
        except UnicodeDecodeError as exc:  # exc.start counts from the pending bytes on
            return f"{exc.reason} at position {self.checked - len(pending) + exc.start}"
        rest = data[used:]
        if len(rest) > 1 and rest[0] == 0xED and rest[1] >= 0xA0:  # see _decode_more
            return f"invalid continuation byte at position {self.checked + len(masked) - len(rest)}"
        self.pending = rest
        self.checked += len(masked)
        if self.parts is not None:
            self.parts.append(text)
        return None


class _MessageTooBig(PayloadTooBig):
    """A whole message over the limit: websockets' parser fails the connection with 1009."""

    def __init__(self, limit: int) -> None:
        Exception.__init__(self)
        self.limit = limit

    def set_current_size(self, current_size: int | None) -> None:
        pass  # the size in the message is the message's, not the frame's

    def __str__(self) -> str:
        return f"message over {self.limit} bytes"


class ServerProtocol(Protocol):
    """websockets' server ``Protocol`` that assembles whole messages while it parses.

    A data frame is checked (UTF-8, size) as soon as it is parsed, so an invalid or oversized message fails the
    connection (1007, 1009) at once, before any later frame in the same read is looked at. Complete messages
    replace data frames in ``events_received()``.

    A failure the parser finds is decided but not sent: ``failure`` holds its code and reason, parsing stops
    (RFC 6455 §7.1.7: nothing after the bad frame is processed), and ``WSConnection`` sends the close frame
    once the messages before the bad frame have reached the app (``fail_now``).
    """

    def __init__(self, max_size: int) -> None:
        # websockets checks every frame against the message budget left, control frames included, so a ping
        # between the fragments of a message near the limit would fail with 1009: give it a control frame's
        # worth of slack and enforce the exact limit here. Inflating stays capped (websockets bounds it).
        super().__init__(Side.SERVER, state=OPEN, max_size=max_size + _MAX_CONTROL, logger=_protocol_log)
        self.limit = max_size
        self._fragments: list[Any] = []  # str pieces of a fragmented text message, or bytes pieces
        self._size = 0  # bytes of the fragmented message so far
        # the incremental UTF-8 decoder of the fragmented text message under way
        self.text_decoder: codecs.IncrementalDecoder | None = None
        self.failure: tuple[int, str] | None = None  # found while parsing, not sent yet

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        """The parser found the peer at fault: stop parsing, and hold the failure for ``WSConnection``. An
        abrupt end (1006), or a failure while the closing handshake is under way, goes at once as ever."""
        if self.state is not OPEN or code == CloseCode.ABNORMAL_CLOSURE:
            super().fail(code, reason)
            return
        if self.failure is None:
            self.failure = (int(code), reason)
        self.parser = self._ignore()
        next(self.parser)

    def fail_now(self, code: int, reason: str) -> None:
        """Fail the connection on the wire: the close frame (unless closing already), then the end of TCP."""
        self.failure = None
        super().fail(code, reason)

    def _ignore(self) -> Generator[None, None, None]:
        while True:
            self.reader.discard()
            yield

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            # RFC 6455 §5.4: control frames may come between the fragments of a message, a close frame too;
            # the unfinished message is dropped, not a protocol error. (websockets < 16: cur_size.)
            self._fragments = []
            self.text_decoder = None
            for name in ("current_size", "cur_size"):
                if getattr(self, name, None) is not None:
                    setattr(self, name, None)
        super().recv_frame(frame)  # checks the order of fragments, answers pings and closes
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self.events.pop()
            message = self._assemble(frame)
            if message is not None:
                self.events.append(Message(message))  # type: ignore[arg-type]

    def _assemble(self, frame: Frame) -> bytes | str | None:
        """The whole message once ``frame`` ends it. Raises UnicodeDecodeError (1007), _MessageTooBig (1009)."""
        payload = frame.data
        if frame.opcode is not Opcode.CONT:  # the first frame of a message
            if len(payload) > self.limit:
                raise _MessageTooBig(self.limit)
            if frame.fin:
                return str(payload, "utf-8") if frame.opcode is Opcode.TEXT else bytes(payload)
            self.text_decoder = _new_decoder() if frame.opcode is Opcode.TEXT else None
            self._fragments = []
            self._size = 0
        self._size += len(payload)
        if self._size > self.limit:
            raise _MessageTooBig(self.limit)
        decoder = self.text_decoder
        if decoder is not None:  # fail fast on invalid UTF-8 inside a fragmented message (Autobahn 6.4)
            self._fragments.append(_decode_more(decoder, payload, frame.fin))
        else:
            self._fragments.append(bytes(payload))
        if not frame.fin:
            return None
        fragments, self._fragments = self._fragments, []
        if decoder is None:
            return b"".join(fragments)
        self.text_decoder = None
        return "".join(fragments)
