"""HTTP/3 (RFC 9114): one QUIC connection's requests as zonda's stream events, over aioquic.

aioquic does QUIC (RFC 9000: packets, TLS 1.3, loss recovery, congestion control) and HTTP/3 framing with QPACK;
this core holds one ``QuicConnection`` and its ``H3Connection`` and speaks ``zonda.protocols.events`` to the
bridge, with the same response methods as the HTTP/2 core, so the same stream channels and the same bridge serve
both. Datagrams and time are inputs (``receive_datagram``, ``handle_timer``) and datagrams the output
(``datagrams_to_send``): no socket, no loop.

What this adds to aioquic:
- Request fields are checked by the HTTP/2 rules (RFC 9114 §4.2-4.3 repeat RFC 9113 §8.2-8.3), so a request
  an app sees is the same whichever version carried it; a malformed one is a stream error H3_MESSAGE_ERROR.
- Back-pressure on sending: aioquic buffers any amount of stream data until it is acknowledged. A stream whose
  unacknowledged bytes pass ``H3Settings.send_buffer`` is blocked (``is_blocked``): the app's ``send()`` waits
  until acknowledgements bring it under, as an HTTP/2 stream waits for its window.
- Graceful shutdown: GOAWAY on the control stream with the first stream id that will not be served
  (aioquic has no call for it), then CONNECTION_CLOSE H3_NO_ERROR once the streams in flight are done.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3 import connection as h3_connection
from aioquic.h3.connection import FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.stream import StreamFinishedError

from zonda.errors import AppProtocolError, ProtocolError
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.protocols.fields import check_file_length, trailer_fields
from zonda.protocols.http2_fields import (
    NO_BODY_STATUSES,
    bad_trailer_name,
    check_request_fields,
    response_fields,
)
from zonda.protocols.http2_frames import ErrorCode as H2ErrorCode
from zonda.protocols.http2_frames import StreamError

if TYPE_CHECKING:
    from zonda.protocols.http1 import DefaultHeaders


# aioquic sends 1xx heads before the final one from 1.4 on; before, a second head is taken for trailers, so
# 100 Continue and 103 Early Hints are not sent (and early hints not offered) with an older aioquic.
INTERIM_RESPONSES = hasattr(h3_connection, "is_interim_response")


class H3ErrorCode(enum.IntEnum):
    """HTTP/3 error codes (RFC 9114 §8.1)."""

    H3_NO_ERROR = 0x100
    H3_GENERAL_PROTOCOL_ERROR = 0x101
    H3_INTERNAL_ERROR = 0x102
    H3_STREAM_CREATION_ERROR = 0x103
    H3_CLOSED_CRITICAL_STREAM = 0x104
    H3_FRAME_UNEXPECTED = 0x105
    H3_FRAME_ERROR = 0x106
    H3_EXCESSIVE_LOAD = 0x107
    H3_ID_ERROR = 0x108
    H3_SETTINGS_ERROR = 0x109
    H3_MISSING_SETTINGS = 0x10A
    H3_REQUEST_REJECTED = 0x10B
    H3_REQUEST_CANCELLED = 0x10C
    H3_REQUEST_INCOMPLETE = 0x10D
    H3_MESSAGE_ERROR = 0x10E
    H3_CONNECT_ERROR = 0x10F
    H3_VERSION_FALLBACK = 0x110


# The stream channels and the bridge reset streams with HTTP/2 codes; RFC 9114 §A.4.1 maps them.
FROM_HTTP2 = {
    H2ErrorCode.NO_ERROR: H3ErrorCode.H3_NO_ERROR,
    H2ErrorCode.PROTOCOL_ERROR: H3ErrorCode.H3_GENERAL_PROTOCOL_ERROR,
    H2ErrorCode.INTERNAL_ERROR: H3ErrorCode.H3_INTERNAL_ERROR,
    H2ErrorCode.REFUSED_STREAM: H3ErrorCode.H3_REQUEST_REJECTED,
    H2ErrorCode.CANCEL: H3ErrorCode.H3_REQUEST_CANCELLED,
    H2ErrorCode.ENHANCE_YOUR_CALM: H3ErrorCode.H3_EXCESSIVE_LOAD,
    H2ErrorCode.CONNECT_ERROR: H3ErrorCode.H3_CONNECT_ERROR,
}


class H3ConnectionError(ProtocolError):
    """The QUIC connection ended with an error (ours or the peer's): ``code`` is its QUIC or HTTP/3 code."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail, status=400)
        self.code = code


@dataclass
class H3Settings:
    """What the server enforces on each HTTP/3 connection (QUIC's own limits are set by the endpoint)."""

    max_header_list_size: int = 65536
    enable_connect_protocol: bool = False  # RFC 9220 (WebSocket over HTTP/3): extended CONNECT taken
    send_buffer: int = 256 * 1024  # a stream's unacknowledged bytes above this block its app's send()


class ServerQuicConnection(QuicConnection):
    """aioquic's QUIC connection with receive-side back-pressure: aioquic doubles a stream's window whenever the
    client has sent past half of it, read or not; here a stream whose app is not reading (``hold``) gets no
    more window until it reads again (``release``), so a client cannot make the server buffer more than one
    window per stream. A window update already owed (one that was lost) still goes out.

    aioquic asks about every open stream for every packet it builds, so the check is installed on the instance
    only while some stream is held: a connection whose apps keep up pays nothing for it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[int] = set()  # streams whose app is not reading

    def hold(self, stream_id: int) -> None:
        if not self.held:
            self._write_stream_limits = self._write_held_stream_limits  # type: ignore[method-assign]
        self.held.add(stream_id)

    def release(self, stream_id: int) -> None:
        held = self.held
        if stream_id in held:
            held.discard(stream_id)
            if not held:
                del self._write_stream_limits  # the class's own again

    def _write_held_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if (
            stream.stream_id in self.held
            and stream.max_stream_data_local_sent == stream.max_stream_data_local
        ):
            return
        QuicConnection._write_stream_limits(self, builder, space, stream)


class _ServerH3(H3Connection):
    """aioquic's HTTP/3 connection, announcing SETTINGS_ENABLE_CONNECT_PROTOCOL only when extended CONNECT is
    served (aioquic always announces it, and would invite WebSocket handshakes the server then refuses)."""

    def __init__(self, quic: QuicConnection, enable_connect_protocol: bool) -> None:
        self._enable_connect = enable_connect_protocol  # read by _get_local_settings, from the base __init__
        super().__init__(quic)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        if not self._enable_connect:
            settings.pop(h3_connection.Setting.ENABLE_CONNECT_PROTOCOL, None)
        return settings


class _Stream:
    """One request stream's state on our side."""

    __slots__ = ("fields", "head_only", "length", "recv_open", "send_open", "sent", "started", "tunnel")

    def __init__(self, recv_open: bool, head_only: bool) -> None:
        self.recv_open = recv_open  # the request (headers, body, trailers) is still coming
        self.send_open = True  # our response is not complete
        self.started = False  # http.response.start came (its fields wait for the first body bytes)
        self.head_only = head_only  # HEAD, 204, 304: no body goes out
        self.fields: list[tuple[bytes, bytes]] | None = None  # the response head, not sent yet
        self.length: int | None = None  # the declared content-length
        self.sent = 0
        self.tunnel = False  # an extended CONNECT (RFC 9220): DATA both ways is the WebSocket's byte stream


class H3Core:
    """The server side of one HTTP/3 connection (see the module docstring)."""

    def __init__(
        self,
        quic: QuicConnection,
        settings: H3Settings,
        defaults: DefaultHeaders,
        clock: Callable[[], float],
        count_bytes: bool = False,
    ) -> None:
        """``count_bytes``: keep ``bytes_received`` and ``bytes_sent`` (the metrics' byte counts)."""
        self.quic = quic
        self.h3 = _ServerH3(quic, settings.enable_connect_protocol)
        self.settings = settings
        self.defaults = defaults
        self.clock = clock
        self.streams: dict[int, _Stream] = {}
        self.blocked: set[int] = set()  # streams whose app waits for acknowledgements (is_blocked)
        self.unblocked: list[int] = []  # streams that were blocked and are no longer: their senders may go on
        self.closing = False  # CONNECTION_CLOSE is queued or the connection ended: nothing more to serve
        self.terminated = False  # QUIC says the connection is gone: the endpoint forgets it
        self.deadline: float | None = None
        self._goaway_at: int | None = None  # the first stream id GOAWAY said will not be served
        self._last_stream_id = -4  # the highest request stream id seen (GOAWAY's starting point)
        # Request streams seen, so that headers coming after we finished or reset one are not a new request;
        # pruned of the streams aioquic has dropped (it ignores their frames from then on).
        self._seen: set[int] = set()
        self._events: list[Event] = []
        # connection IDs this connection issued to the client or retired: the endpoint routes by them
        self.issued_ids: list[bytes] = []
        self.retired_ids: list[bytes] = []
        self.cipher_suite: int | None = None  # the TLS 1.3 cipher suite, once the handshake completed
        # the UDP payloads fed and handed out (QUIC packets as sent, encrypted): the connection's byte counts
        self.count_bytes = count_bytes
        self.bytes_received = 0
        self.bytes_sent = 0

    # ------------------------------------------------------------------ input

    def receive_datagram(self, data: bytes, addr: NetworkAddress) -> list[Event]:
        if self.count_bytes:
            self.bytes_received += len(data)
        self.quic.receive_datagram(data, addr, self.clock())
        return self._process()

    def handle_timer(self, now: float) -> list[Event]:
        deadline = self.quic.get_timer()
        if deadline is not None and now >= deadline:
            self.quic.handle_timer(now)
        return self._process()

    def _process(self) -> list[Event]:
        events = self._events = []
        quic = self.quic
        h3 = self.h3
        while (event := quic.next_event()) is not None:
            if isinstance(event, quic_events.StreamReset | quic_events.StopSendingReceived):
                self._peer_reset(event.stream_id)
            elif isinstance(event, quic_events.ConnectionTerminated):
                self._terminated(event)
                continue
            elif isinstance(event, quic_events.HandshakeCompleted):
                key_schedule = quic.tls.key_schedule
                self.cipher_suite = int(key_schedule.cipher_suite) if key_schedule is not None else None
                continue
            elif isinstance(event, quic_events.ConnectionIdIssued):
                self.issued_ids.append(event.connection_id)
                continue
            elif isinstance(event, quic_events.ConnectionIdRetired):
                self.retired_ids.append(event.connection_id)
                continue
            for h3_event in h3.handle_event(event):
                self._on_h3_event(h3_event)
        self._check_blocked()
        if self._goaway_at is not None and not self.streams and not self.closing:
            self._close(H3ErrorCode.H3_NO_ERROR, "graceful shutdown")
        self.deadline = quic.get_timer()
        return events

    def _on_h3_event(self, event: H3Event) -> None:
        if type(event) is HeadersReceived:
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self._request(event)
            elif stream.recv_open:
                self._trailers(event, stream)
        elif type(event) is DataReceived:
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.recv_open:
                if event.stream_ended:
                    self._end_request(event.stream_id, stream)
                if event.data or event.stream_ended:
                    self._events.append(Data(event.stream_id, event.data, event.stream_ended))

    def _request(self, event: HeadersReceived) -> None:
        stream_id = event.stream_id
        if stream_id in self._seen:
            return  # a stream we reset or finished: its headers come too late
        self._seen.add(stream_id)
        if len(self._seen) > 2 * len(self.streams) + 256:
            alive = self.quic._streams  # aioquic has no public view of its open streams
            self._seen = {sid for sid in self._seen if sid in alive or sid in self.streams}
        if stream_id > self._last_stream_id:
            self._last_stream_id = stream_id
        if self._goaway_at is not None and stream_id >= self._goaway_at:
            self._reset(stream_id, H3ErrorCode.H3_REQUEST_REJECTED)  # after GOAWAY: retry elsewhere (§5.2)
            return
        try:
            method, _, path, _, protocol, headers, content_length, oversized = check_request_fields(
                event.headers, self.settings
            )
        except StreamError:
            self._reset(stream_id, H3ErrorCode.H3_MESSAGE_ERROR)
            return
        if method == b"CONNECT" and protocol is None:
            self._reset(stream_id, H3ErrorCode.H3_REQUEST_REJECTED)  # no plain CONNECT tunnels
            return
        end_stream = event.stream_ended
        if end_stream and content_length:
            self._reset(stream_id, H3ErrorCode.H3_MESSAGE_ERROR)  # RFC 9114 §4.1.2: body != content-length
            return
        stream = self.streams[stream_id] = _Stream(not end_stream, method == b"HEAD")
        stream.tunnel = protocol is not None
        if oversized:
            self._respond_error(stream_id, stream, 431)
            return
        path_part, _, query = path.partition(b"?")
        self._events.append(
            Request(
                stream_id, method, path_part, query, list(headers), "3", end_stream, True, False, protocol
            )
        )

    def _trailers(self, event: HeadersReceived, stream: _Stream) -> None:
        stream_id = event.stream_id
        if not event.stream_ended or bad_trailer_name(event.headers) is not None:
            self._reset(stream_id, H3ErrorCode.H3_MESSAGE_ERROR)
            self._events.append(StreamReset(stream_id, "malformed request trailers"))
            return
        self._end_request(stream_id, stream)
        self._events.append(Data(stream_id, b"", True))

    def _end_request(self, stream_id: int, stream: _Stream) -> None:
        stream.recv_open = False
        if not stream.send_open:
            self._forget(stream_id)

    def _peer_reset(self, stream_id: int) -> None:
        """The client reset its request or asked us to stop sending: the stream is over for its app."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.send_open:
            self._abandon(stream_id, H3ErrorCode.H3_REQUEST_CANCELLED)
        self._forget(stream_id)
        self._events.append(StreamReset(stream_id, "client reset the stream"))

    def _terminated(self, event: quic_events.ConnectionTerminated) -> None:
        self.closing = self.terminated = True
        self.streams.clear()
        self.blocked.clear()
        error = None
        if event.error_code not in (0, H3ErrorCode.H3_NO_ERROR):
            error = H3ConnectionError(event.error_code, event.reason_phrase or "connection closed")
        self._events.append(ConnectionTerminated(event.reason_phrase or "connection closed", error))

    # ------------------------------------------------------------------ output

    def datagrams_to_send(self) -> list[tuple[bytes, NetworkAddress]]:
        datagrams = self.quic.datagrams_to_send(self.clock())
        self.deadline = self.quic.get_timer()
        if self.count_bytes:
            for data, _ in datagrams:
                self.bytes_sent += len(data)
        return datagrams

    def send_continue(self, stream_id: int = 0) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.started and INTERIM_RESPONSES:
            self.h3.send_headers(stream_id, [(b":status", b"100")])

    def send_early_hint(self, stream_id: int, links: Iterable[bytes]) -> None:
        """A 103 (RFC 8297) with ``link`` fields, while the final response head has not gone out."""
        stream = self.streams.get(stream_id)
        if stream is None or (stream.started and stream.fields is None) or not INTERIM_RESPONSES:
            return
        self.h3.send_headers(stream_id, [(b":status", b"103")] + [(b"link", link) for link in links])

    def send_response(self, stream_id: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return  # reset meanwhile: the app learns it at its next send()
        stream.fields, stream.length = response_fields(status, headers, self.defaults)
        if status in NO_BODY_STATUSES:
            stream.head_only = True
        stream.started = True

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return
        if stream.head_only:
            data = b""
        elif stream.length is not None:
            sent = stream.sent = stream.sent + len(data)
            if sent > stream.length or (end_stream and sent != stream.length):
                self.reset_stream(stream_id, H2ErrorCode.INTERNAL_ERROR)
                if sent > stream.length:
                    raise AppProtocolError(
                        f"http.response.body: more body than the declared content-length ({stream.length})"
                    )
                raise AppProtocolError(
                    f"http.response.body: response ended after {sent} of {stream.length} declared "
                    "content-length bytes"
                )
        fields = stream.fields
        if fields is not None:
            stream.fields = None
            self.h3.send_headers(stream_id, fields, end_stream and not data)
            if end_stream and not data:
                self._end_response(stream_id, stream)
                return
        if data or end_stream:
            self.h3.send_data(stream_id, data, end_stream)
        if end_stream:
            self._end_response(stream_id, stream)
        elif self._unacked(stream_id) > self.settings.send_buffer:
            self.blocked.add(stream_id)

    def send_trailers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the stream with a trailer block (after the body's last piece, sent without end_stream)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return
        fields = trailer_fields(headers)
        if stream.fields is not None:
            self.h3.send_headers(stream_id, stream.fields)
            stream.fields = None
        self.h3.send_headers(stream_id, fields, True)
        self._end_response(stream_id, stream)

    def push(
        self,
        stream_id: int,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        scheme: bytes,
        authority: bytes,
    ) -> None:
        return None  # server push is not offered over HTTP/3 (browsers never enabled it)

    def send_file(self, stream_id: int, count: int, end_stream: bool) -> int:
        """As the HTTP/2 core's: how many of ``count`` file bytes go as body (0: HEAD, 204, 304, a stream
        gone); more than the declared content-length resets the stream and raises before any goes."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open or stream.head_only:
            return 0
        try:
            check_file_length(count, stream.sent, stream.length)
        except AppProtocolError:
            self.reset_stream(stream_id, H2ErrorCode.INTERNAL_ERROR)
            raise
        return count

    def file_sent(self, stream_id: int, count: int, end_stream: bool) -> None:
        """The file's bytes are queued; ``end_stream`` ends the response (its content-length checked)."""
        if end_stream:
            self.send_body(stream_id, b"", True)

    def accept_upgrade(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        raise AppProtocolError("HTTP/3 streams are not upgraded")

    def _respond_error(self, stream_id: int, stream: _Stream, status: int) -> None:
        """A response from the server itself (the app never sees the request)."""
        stream.recv_open = False
        self.h3.send_headers(stream_id, [(b":status", b"%d" % status), (b"content-length", b"0")], True)
        self._abandon_receiving(stream_id)
        self._forget(stream_id)

    def _end_response(self, stream_id: int, stream: _Stream) -> None:
        stream.send_open = False
        self.blocked.discard(stream_id)
        if not stream.recv_open:
            self._forget(stream_id)
        elif stream.tunnel or self._goaway_at is not None:
            self._abandon_receiving(stream_id)  # going away: the rest of the request would only delay it
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self.blocked.discard(stream_id)
        if isinstance(self.quic, ServerQuicConnection):
            self.quic.release(stream_id)

    # ------------------------------------------------------------------ flow and resets

    def _unacked(self, stream_id: int) -> int:
        # aioquic keeps a stream's bytes from the first unacknowledged one on; it has no public count of them
        quic_stream = self.quic._streams.get(stream_id)
        return 0 if quic_stream is None else len(quic_stream.sender._buffer)

    def _check_blocked(self) -> None:
        if self.blocked:
            limit = self.settings.send_buffer
            for stream_id in [sid for sid in self.blocked if self._unacked(sid) <= limit]:
                self.blocked.discard(stream_id)
                self.unblocked.append(stream_id)

    def is_blocked(self, stream_id: int) -> bool:
        return stream_id in self.blocked

    def is_open(self, stream_id: int) -> bool:
        stream = self.streams.get(stream_id)
        return stream is not None and stream.send_open

    def pause_stream(self, stream_id: int) -> None:
        """The app is not reading: the stream's window stays where it is (``ServerQuicConnection``)."""
        quic = self.quic
        if isinstance(quic, ServerQuicConnection):
            quic.hold(stream_id)

    def resume_stream(self, stream_id: int) -> None:
        quic = self.quic
        if isinstance(quic, ServerQuicConnection):
            quic.release(stream_id)

    def reset_stream(self, stream_id: int, code: int = H2ErrorCode.CANCEL) -> None:
        """The server gives up on a stream; ``code`` may be an HTTP/2 one (the shared stream channels')."""
        if stream_id in self.streams:
            h3_code = FROM_HTTP2.get(code, code) if code < 0x100 else code  # type: ignore[call-overload]
            self._reset(stream_id, int(h3_code))
            self._forget(stream_id)

    def _reset(self, stream_id: int, code: int) -> None:
        self._abandon(stream_id, code)
        self._abandon_receiving(stream_id, code)

    def _abandon(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(StreamFinishedError):  # its state is already discarded: nothing to reset
            self.quic.reset_stream(stream_id, code)

    def _abandon_receiving(self, stream_id: int, code: int = H3ErrorCode.H3_NO_ERROR) -> None:
        with contextlib.suppress(ValueError):  # aioquic has dropped the stream: nothing is coming any more
            self.quic.stop_stream(stream_id, code)

    # ------------------------------------------------------------------ shutdown

    def finish_and_close(self) -> None:
        """Graceful shutdown: GOAWAY (RFC 9114 §5.2) with the first request stream id not served; close once
        the streams in flight are done."""
        if self._goaway_at is None and not self.closing:
            self._goaway_at = self._last_stream_id + 4
            control = self.h3._local_control_stream_id  # aioquic has no GOAWAY call; its control stream
            if control is not None:
                goaway = encode_frame(FrameType.GOAWAY, encode_uint_var(self._goaway_at))
                self.quic.send_stream_data(control, goaway)
            for stream_id, stream in list(self.streams.items()):
                if stream.recv_open and not stream.send_open:
                    self._abandon_receiving(stream_id)
                    self._forget(stream_id)
            if not self.streams:
                self._close(H3ErrorCode.H3_NO_ERROR, "graceful shutdown")

    def _close(self, code: int, reason: str) -> None:
        self.closing = True
        self.quic.close(error_code=code, reason_phrase=reason)


__all__ = ["H3ConnectionError", "H3Core", "H3ErrorCode", "H3Settings"]
