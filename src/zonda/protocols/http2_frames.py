"""HTTP/2's wire vocabulary (RFC 9113 §4, §6, §7): the connection preface, frame types, flags, settings
identifiers, error codes and the frame header. Shared by the core (``zonda.protocols.http2``) and its stream
state table (``zonda.protocols.http2_streams``); no state lives here."""

from __future__ import annotations

import enum
import struct

from zonda.errors import ProtocolError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ErrorCode(enum.IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Error(ProtocolError):
    """A connection error: GOAWAY with ``code`` has been queued."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail, status=400)
        self.code = code


class StreamError(Exception):
    """A stream error (RFC 9113 §5.4.2) found while checking a frame: the core answers with RST_STREAM."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# Frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings identifiers
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535

_frame_header = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_pack_header = _frame_header.pack
unpack_header = _frame_header.unpack_from
U32 = struct.Struct(">L")  # WINDOW_UPDATE, RST_STREAM, a stream dependency
SETTINGS_ENTRY = struct.Struct(">HL")
GOAWAY_HEAD = struct.Struct(">LL")  # last stream id, error code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    length = len(payload)
    return _pack_header(length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


def code_name(code: int) -> str:
    """An error code's name as RFC 9113 §7 spells it; an unknown code in hex."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"
