"""HTTP/2 streams, server side: the per-stream record the core keeps while a stream is open."""

from __future__ import annotations


class H2Stream:
    """Per-stream state. ``recv_open``/``send_open``: the client's and our half of the stream."""

    __slots__ = (
        "blocked_since",
        "content_length",
        "end_pending",
        "head_only",
        "pending",
        "pending_size",
        "progress_at",
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
        self.tunnel = False  # extended CONNECT (RFC 8441): a long-lived two-way stream, idle at will
