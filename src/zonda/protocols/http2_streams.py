"""HTTP/2 stream states (RFC 9113 §5.1), server side: the per-stream record, the memory of recently closed
streams, and what a frame from the client gets in each state, as one table.

A stream the core tracks is live (``H2Stream`` in ``H2Connection.streams``) and its state follows from which
halves are still open; once both are closed it is forgotten and only how it closed is remembered, in a bounded
``ClosedStreams``. ``RULES`` says, for each place a stream can be in and each stream-level frame the client can
send there, whether the frame is handled, ignored, a stream error or a connection error. The core consults it
only off its fast paths (DATA on an open stream, HEADERS opening a new one), so the table costs nothing per
request.

Where the RFC leaves a choice, the table takes these:
- DATA on a closed stream is a stream error STREAM_CLOSED (§6.1), never a connection error: the stream is
  then remembered as reset by us, so the client's later frames on it are ignored (one RST_STREAM per stream,
  however many frames it sends).
- After our RST_STREAM everything the client sends on the stream is ignored for as long as it is remembered
  (§5.1 "closed": frames already in flight cannot be withdrawn); its DATA still counts against the connection
  window (§6.9).
- After the client's RST_STREAM anything but PRIORITY (and another RST_STREAM, which must never be answered
  with one, §5.4.2) is a stream error STREAM_CLOSED.
- After both END_STREAMs, WINDOW_UPDATE and RST_STREAM are ignored (the client may have sent them before it
  saw our END_STREAM), HEADERS is a connection error STREAM_CLOSED (§5.1 "closed").
- A stream closed too long ago to be remembered, or skipped over by a higher stream id (§5.1.1): DATA is a
  stream error STREAM_CLOSED, HEADERS a connection error PROTOCOL_ERROR (§5.1.1), the rest is ignored.
PRIORITY is allowed in every state (§5.1, §6.3) and CONTINUATION belongs to the header block in progress, so
neither is in the table.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

from zonda.protocols.http2_frames import DATA, HEADERS, RST_STREAM, WINDOW_UPDATE, ErrorCode


class StreamState(enum.Enum):
    """The states of RFC 9113 §5.1 a stream can be in while the core tracks it (or before it opens)."""

    IDLE = "idle"
    RESERVED_LOCAL = "reserved (local)"  # we promised it (PUSH_PROMISE); its response head has not gone out
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"  # our response is complete; the request is still coming
    HALF_CLOSED_REMOTE = "half-closed (remote)"  # the request is complete; our response is not


class Closed(enum.Enum):
    """How a stream that is no longer tracked closed (RFC 9113 §5.1 "closed" depends on it)."""

    ENDED = "closed"  # both sides sent END_STREAM
    RESET_SENT = "closed by our RST_STREAM"  # also a stream refused or ignored after GOAWAY
    RESET_RECEIVED = "closed by the client's RST_STREAM"
    LONG_AGO = "closed long ago"  # no longer remembered, or never opened and skipped over (§5.1.1)


class Verdict(enum.Enum):
    """What a frame gets (the error code goes beside it in a ``Rule``)."""

    HANDLE = "handled as its type says"
    IGNORE = "ignored"
    STREAM_ERROR = "RST_STREAM"
    CONNECTION_ERROR = "GOAWAY"


Where = StreamState | Closed
Rule = tuple[Verdict, ErrorCode]

_HANDLE: Rule = (Verdict.HANDLE, ErrorCode.NO_ERROR)
_IGNORE: Rule = (Verdict.IGNORE, ErrorCode.NO_ERROR)
_STREAM_CLOSED: Rule = (Verdict.STREAM_ERROR, ErrorCode.STREAM_CLOSED)
_CONNECTION_PROTOCOL: Rule = (Verdict.CONNECTION_ERROR, ErrorCode.PROTOCOL_ERROR)

# Where the stream is -> the frame the client sends on it -> what it gets (RFC 9113 §5.1, §6.1, §5.1.1)
RULES: dict[Where, dict[int, Rule]] = {
    # idle: only HEADERS (or PRIORITY) may come; anything else is a connection error PROTOCOL_ERROR
    StreamState.IDLE: {
        DATA: _CONNECTION_PROTOCOL,
        HEADERS: _HANDLE,
        WINDOW_UPDATE: _CONNECTION_PROTOCOL,
        RST_STREAM: _CONNECTION_PROTOCOL,
    },
    # reserved (local): the client may send RST_STREAM, PRIORITY or WINDOW_UPDATE; else PROTOCOL_ERROR
    StreamState.RESERVED_LOCAL: {
        DATA: _CONNECTION_PROTOCOL,
        HEADERS: _CONNECTION_PROTOCOL,
        WINDOW_UPDATE: _HANDLE,
        RST_STREAM: _HANDLE,
    },
    StreamState.OPEN: {DATA: _HANDLE, HEADERS: _HANDLE, WINDOW_UPDATE: _HANDLE, RST_STREAM: _HANDLE},
    # half-closed (local): "an endpoint can receive any type of frame in this state"
    StreamState.HALF_CLOSED_LOCAL: {
        DATA: _HANDLE,
        HEADERS: _HANDLE,
        WINDOW_UPDATE: _HANDLE,
        RST_STREAM: _HANDLE,
    },
    # half-closed (remote): frames other than WINDOW_UPDATE, PRIORITY or RST_STREAM are STREAM_CLOSED
    StreamState.HALF_CLOSED_REMOTE: {
        DATA: _STREAM_CLOSED,
        HEADERS: _STREAM_CLOSED,
        WINDOW_UPDATE: _HANDLE,
        RST_STREAM: _HANDLE,
    },
    Closed.ENDED: {
        DATA: _STREAM_CLOSED,
        HEADERS: (Verdict.CONNECTION_ERROR, ErrorCode.STREAM_CLOSED),
        WINDOW_UPDATE: _IGNORE,
        RST_STREAM: _IGNORE,
    },
    Closed.RESET_SENT: {DATA: _IGNORE, HEADERS: _IGNORE, WINDOW_UPDATE: _IGNORE, RST_STREAM: _IGNORE},
    Closed.RESET_RECEIVED: {
        DATA: _STREAM_CLOSED,
        HEADERS: _STREAM_CLOSED,
        WINDOW_UPDATE: _STREAM_CLOSED,
        RST_STREAM: _IGNORE,
    },
    Closed.LONG_AGO: {
        DATA: _STREAM_CLOSED,
        HEADERS: _CONNECTION_PROTOCOL,
        WINDOW_UPDATE: _IGNORE,
        RST_STREAM: _IGNORE,
    },
}

FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", WINDOW_UPDATE: "WINDOW_UPDATE", RST_STREAM: "RST_STREAM"}


class ClosedStreams:
    """How the most recently closed streams closed, oldest dropped first (RFC 9113 §5.1 lets an endpoint limit
    how long it treats frames on a closed stream by how the stream closed)."""

    __slots__ = ("_closed", "limit")

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._closed: OrderedDict[int, Closed] = OrderedDict()

    def add(self, stream_id: int, how: Closed) -> None:
        closed = self._closed
        closed[stream_id] = how
        if len(closed) > self.limit:
            closed.popitem(last=False)

    def get(self, stream_id: int) -> Closed:
        return self._closed.get(stream_id, Closed.LONG_AGO)


class H2Stream:
    """Per-stream state. ``recv_open``/``send_open``: the client's and our half of the stream."""

    __slots__ = (
        "answered",
        "blocked_since",
        "content_length",
        "end_pending",
        "head_only",
        "pending",
        "pending_size",
        "progress_at",
        "rate_mark",
        "rate_since",
        "received",
        "recv_open",
        "recv_paused",
        "recv_unacked",
        "resp_head",
        "resp_length",
        "resp_sent",
        "send_open",
        "send_window",
        "started",
        "stream_id",
        "trailers_pending",
        "tunnel",
    )

    def __init__(self, stream_id: int, send_window: int, recv_open: bool) -> None:
        self.stream_id = stream_id
        self.recv_open = recv_open
        self.send_open = True
        self.send_window = send_window
        self.recv_unacked = 0  # bytes received whose window we have not yet returned
        self.recv_paused = False  # the app is behind: keep the window closed
        self.received = 0
        self.content_length: int | None = None
        self.pending: list[bytes] = []  # body bytes waiting for window
        self.pending_size = 0
        self.end_pending = False  # END_STREAM (or trailers) follows the pending bytes
        self.trailers_pending: bytes | None = None  # an encoded trailer block waiting behind pending data
        self.resp_head: bytes | None = None  # encoded response head, sent with the first body piece
        self.resp_length: int | None = None
        self.resp_sent = 0
        self.head_only = False  # HEAD request or a status without a body
        self.started = False
        self.blocked_since = 0.0
        self.progress_at = 0.0
        self.rate_since = 0.0  # the body's rate is averaged from here (its start, or a resume) ...
        self.rate_mark = 0  # ... over the bytes received after this many
        self.tunnel = False  # extended CONNECT (RFC 8441): a long-lived two-way stream, idle at will
        self.answered = False  # answered by the core itself (431): no app, so no events for it

    @property
    def state(self) -> StreamState:
        """Where this live stream is in RFC 9113 §5.1 (a stream with both halves closed is not live)."""
        if self.recv_open:
            return StreamState.OPEN if self.send_open else StreamState.HALF_CLOSED_LOCAL
        if self.stream_id % 2 == 0 and (not self.started or self.resp_head is not None):
            return StreamState.RESERVED_LOCAL  # promised; the HEADERS of its response are still to go
        return StreamState.HALF_CLOSED_REMOTE
