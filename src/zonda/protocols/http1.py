"""The HTTP/1.1 server core: httptools underneath, bytes in, events out, bytes to send out.

Invariants:
- Requests are numbered 1, 2, 3 ... (``stream_id``); responses go out strictly in that order, so a caller
  sends for the oldest unanswered request only (pipelining, RFC 9112 §9.3.2).
- Every limit is enforced while parsing, before the offending bytes are buffered whole.
- Time is an input: the core reads ``clock()`` at state changes and exposes one ``deadline``; the driver arms
  one timer per connection and calls ``handle_timer(now)``.
- On a protocol error the core queues its error response (or defers it behind responses still owed), moves to
  ERROR and emits ``ConnectionTerminated(error=...)``; the caller logs, flushes ``data_to_send()`` and closes
  once ``closing`` is set. ``receive_data`` itself never raises for the peer's mistakes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import httptools

from zonda.errors import (
    AppProtocolError,
    BadRequest,
    BodyTooLarge,
    HeadersTooLarge,
    ProtocolError,
    RequestBodyTooSlow,
    RequestLineTooLong,
    RequestTimeout,
    UnsupportedTransferCoding,
    caused_by,
)
from zonda.protocols._output import OutputBuffer
from zonda.protocols.events import (
    ConnectionTerminated,
    Data,
    Event,
    Headers,
    HTTP2Preface,
    Request,
    StreamReset,
)
from zonda.protocols.fields import check_file_length, header_name, header_value, trailer_fields


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Per-connection limits and timeouts (seconds). A body limit of 0 means no limit."""

    max_request_line: int = 8190
    max_header_count: int = 100
    max_header_bytes: int = 65536
    max_body: int = 100 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    min_body_rate: int = 256  # bytes/s a body must average from its first byte (0: no minimum) ...
    body_rate_grace: float = 5.0  # ... checked from this many seconds on
    http2_prior_knowledge: bool = False  # a connection opening with the HTTP/2 preface switches to HTTP/2


class DefaultHeaders:
    """Header lines added to every response; ``date_line`` is refreshed once a second by the server."""

    __slots__ = ("date", "date_line", "extra", "extra_lines", "server", "server_line", "tails")

    def __init__(self, server: bytes | None = b"zonda", extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        # Field values (HTTP/2 and HTTP/3 encode these) and the ready-made HTTP/1.1 lines.
        self.server = server
        self.date: bytes | None = None
        self.extra = [(name.lower(), value) for name, value in extra]
        self.server_line = b"server: " + server + b"\r\n" if server else b""
        self.date_line = b""
        self.extra_lines = b"".join(name + b": " + value + b"\r\n" for name, value in self.extra)
        self.tails: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")
        self._join_tails()

    def set_date(self, http_date: bytes | None) -> None:
        self.date = http_date
        self.date_line = b"date: " + http_date + b"\r\n" if http_date else b""
        self._join_tails()

    def _join_tails(self) -> None:
        """The lines that follow an app's headers, by what the app already sent: ``tails[has_server + 2 *
        has_date]`` (once a second, so that a response joins one piece, not three)."""
        extra, server, date = self.extra_lines, self.server_line, self.date_line
        self.tails = (extra + server + date, extra + date, extra + server, extra)


_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # llhttp consumes it whole, then pauses


def _is_h2_preface(exc: Exception, data: bytes) -> bool:
    return "PRI" in str(exc)


class _StopParsing(Exception):
    """Raised from a callback to make httptools stop without an error."""


class ReadState(enum.Enum):
    IDLE = "idle"  # between requests
    HEADERS = "headers"  # request line and headers arriving
    BODY = "body"  # request body arriving
    ERROR = "error"  # a protocol error happened; nothing more is parsed
    STOPPED = "stopped"  # the last request said Connection: close; later bytes are ignored


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


_STATUS_LINES: Final = {status.value: _status_line(status.value) for status in HTTPStatus}
_NO_BODY_STATUSES: Final = frozenset({204, 304}) | frozenset(range(100, 200))
_SPECIAL_RESPONSE_HEADERS: Final = frozenset(
    (b"content-length", b"connection", b"transfer-encoding", b"date", b"server")
)


def _check_header_block(block: bytes, line_count: int) -> None:
    """Each line ends in the one CRLF we added: a CR, LF or NUL inside a value would split the response."""
    if block.count(b"\n") != line_count or block.count(b"\r") != line_count or b"\x00" in block:
        raise AppProtocolError("response header values must not contain CR, LF or NUL")


def error_response(exc: ProtocolError, defaults: DefaultHeaders, extra_lines: bytes = b"") -> bytes:
    """A complete response for a protocol error, ending the connection (``extra_lines``: more header lines)."""
    body = f"{HTTPStatus(exc.status).phrase}: {exc.detail}\n".encode("utf-8", "replace")
    return b"".join(
        (
            _STATUS_LINES[exc.status],
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n"
            % len(body),
            extra_lines,
            defaults.server_line,
            defaults.date_line,
            b"\r\n",
            body,
        )
    )


_RATE_STEP: Final = 0.25  # seconds at least between two checks of one body's rate
_IDLE: Final = ReadState.IDLE
_HEADERS: Final = ReadState.HEADERS
_BODY: Final = ReadState.BODY
_ERROR: Final = ReadState.ERROR
_STOPPED: Final = ReadState.STOPPED
_NO_TOKENS: Final[frozenset[bytes]] = frozenset()
_SPECIAL_REQUEST_HEADERS: Final = frozenset(
    (b"host", b"connection", b"content-length", b"transfer-encoding", b"expect", b"upgrade")
)


# ``_events`` once a feed returned its list: the caller owns those events, and an idle keep-alive connection must
# not hold its last request (head, headers and all) until its next one. Nothing is appended to it: the parser's
# callbacks run only inside a feed (or a timer's ``_fail``), which first gives ``_events`` a list of its own.
_BETWEEN_FEEDS: Final[list[Event]] = []
# ``_headers`` once the head is handed out (the request holds that list): nothing is appended to it, as
# ``on_header`` drops chunked trailers (no ASGI message carries them; their size is bounded by the body's
# framing check in ``receive_data``). Plain lists, not subclasses that drop what is appended: compiled code
# appends to a list without calling a subclass's ``append``.
_NO_HEADERS: Final[list[tuple[bytes, bytes]]] = []


# Validated response heads by (status, *headers): apps mostly send the same few header lists, and checking and
# joining them costs more than hashing them. Entries: (status line + header lines, content-length, the app
# asked to close, which of DefaultHeaders.tails follows: has server + 2 * has date).
_HEADS: Final[dict[tuple[Any, ...], tuple[bytes, int | None, bool, int]]] = {}
_HEADS_MAX: Final = 512


def _encode_head(status: Any, headers: Iterable[Any]) -> tuple[bytes, int | None, bool, int]:
    """The response head's lines, its content-length, whether it says close, and which default headers it
    lacks. ``status`` and ``headers`` are as the app sent them (``Any``: checked here, not on entry; see
    zonda._compiled)."""
    status_line = _STATUS_LINES.get(status)
    if status_line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise AppProtocolError(f"http.response.start: invalid status {status!r}")
        status_line = _status_line(status)
    lines = [status_line]
    length = None
    close = has_date = has_server = False
    try:
        for raw_name, raw_value in headers:
            name = header_name(raw_name)
            value = header_value(raw_value)
            if name in _SPECIAL_RESPONSE_HEADERS:
                if name == b"content-length":
                    if (
                        not value.isdigit()
                        or len(value) > 18
                        or (length is not None and int(value) != length)
                    ):
                        raise AppProtocolError(f"http.response.start: invalid content-length {value!r}")
                    length = int(value)
                elif name == b"connection":
                    close = close or value.lower() == b"close"
                    continue
                elif name == b"transfer-encoding":
                    continue  # the server frames the body itself (ASGI www spec)
                elif name == b"date":
                    has_date = True
                else:
                    has_server = True
            lines.append(name + b": " + value + b"\r\n")
    except (TypeError, ValueError) as exc:
        raise caused_by(
            AppProtocolError("http.response.start: 'headers' must be an iterable of [bytes, bytes] pairs"),
            exc,
        )
    block = b"".join(lines)
    _check_header_block(block, len(lines))
    return block, length, close, has_server + 2 * has_date


class H1Connection(OutputBuffer):
    """One HTTP/1.1 server connection. The ``on_*`` methods are httptools callbacks, not API."""

    __slots__ = (
        "_body_bytes",
        "_connection_tokens",
        "_deadline_state",
        "_deferred_error",
        "_error",
        "_events",
        "_exchanges",
        "_expect_continue",
        "_feed_size",
        "_head_fed",
        "_headers",
        "_held",
        "_hosts",
        "_max_body",
        "_max_header_bytes",
        "_max_header_count",
        "_max_url",
        "_next_stream_id",
        "_parser",
        "_rate_at",
        "_rate_mark",
        "_rate_since",
        "_reading_paused",
        "_request",
        "_resp_chunked",
        "_resp_close",
        "_resp_head",
        "_resp_length",
        "_resp_lines",
        "_resp_no_body",
        "_resp_sent",
        "_resp_started",
        "_stall_at",
        "_stop_after_message",
        "_upgrade",
        "_upgrade_pending",
        "_url",
        "bytes_received",
        "clock",
        "closing",
        "deadline",
        "defaults",
        "limits",
        "read_state",
    )

    def __init__(
        self,
        limits: H1Limits,
        defaults: DefaultHeaders,
        clock: Callable[[], float],
        count_bytes: bool = False,
    ) -> None:
        """``count_bytes``: keep ``bytes_received`` and ``bytes_sent`` (the metrics' byte counts)."""
        self.limits = limits
        self.defaults = defaults
        self.clock = clock
        self.read_state = _IDLE
        self.closing = False  # set once the last byte to send is queued: flush, then close
        self.deadline: float | None = clock() + limits.keep_alive_timeout
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = _BETWEEN_FEEDS  # the events of the feed (or timer) under way
        self._out: list[bytes] = []
        # every byte fed and handed out, less what an upgrade passes on to the next protocol's core
        self.count_bytes = count_bytes
        self.bytes_received = 0
        self.bytes_sent = 0
        self._next_stream_id = 1
        # requests still owed a response, oldest first: a list, not a deque (624 bytes each on an idle connection);
        # more than one only while a client pipelines
        self._exchanges: list[Request] = []
        self._reading_paused = False
        self._max_url = limits.max_request_line
        self._max_header_count = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        self._max_body = limits.max_body
        self._deadline_state: ReadState | None = _IDLE  # the state ``deadline`` was computed for
        self._error: ProtocolError | None = None  # raised from inside a callback
        self._deferred_error: bytes | None = None  # error response owed after earlier responses
        self._held: bytes = b""  # bytes after an Upgrade request, parsed once its answer is known
        self._upgrade_pending = False
        self._stop_after_message = False  # graceful shutdown waits for the body in flight
        # the request being parsed
        self._url = b""
        self._headers: Headers = []
        self._hosts = 0  # Host header lines in the head
        self._feed_size = 0  # bytes in the current feed: a head that fits in it cannot be larger
        self._head_fed = 0  # size of a head that spans reads: what the first read held, plus later reads
        self._body_bytes = 0
        # the body's rate (--limit-request-body-rate): checked only when the timer fires, never per read
        self._stall_at = 0.0  # when the body stalls (no byte for body_timeout), while reading is on
        self._rate_at: float | None = None  # when the rate is checked next; None: not checked
        self._rate_since = 0.0  # the rate is averaged from here (the body's first read, or a resume) ...
        self._rate_mark = 0  # ... over the body bytes that came after this many
        self._request: Request | None = None
        self._connection_tokens: frozenset[bytes] = _NO_TOKENS
        self._expect_continue = False
        self._upgrade: bytes | None = None
        # the response being sent
        self._resp_head: bytes | None = None  # the framed head not yet queued (the app gave Content-Length)
        self._resp_lines: list[bytes] | None = None  # the head without its framing (no Content-Length given)
        self._resp_length: int | None = None  # declared content-length
        self._resp_sent = 0
        self._resp_chunked = False
        self._resp_no_body = False
        self._resp_close = False
        self._resp_started = False

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; return the events they complete (errors end in ConnectionTerminated)."""
        if self.count_bytes:
            self.bytes_received += len(data)
        state = self.read_state
        if state is _ERROR or state is _STOPPED:
            return []
        if self._held or self._upgrade_pending:
            self._held += data
            if self._upgrade_pending:
                return []  # hold everything until the upgrade request is answered
            data, self._held = self._held, b""
        started_in_headers = state is _HEADERS
        next_stream_id = self._next_stream_id
        events = self._events = []
        self._feed_size = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._held = data[exc.args[0] :]
            self._upgrade_pending = True
        except httptools.HttpParserCallbackError:
            if self._error is not None:  # else a callback stopped parsing on purpose
                self._fail(self._error)
                self._error = None
        except httptools.HttpParserError as exc:
            if self._next_stream_id == 1 and self.limits.http2_prior_knowledge and _is_h2_preface(exc, data):
                return self._switch_to_http2(data)
            if self.read_state is not _STOPPED:  # bytes after a `Connection: close` request are ignored
                kind = "invalid method: " if isinstance(exc, httptools.HttpParserInvalidMethodError) else ""
                self._fail(BadRequest(f"{kind}{exc}"))
        state = self.read_state
        if state is _IDLE:
            if self._exchanges:
                self.deadline = None  # the server owes a response; no client deadline meanwhile
        elif state is _HEADERS:
            if started_in_headers and self._next_stream_id == next_stream_id:
                # Every byte of this feed belongs to the head, including a header httptools still holds
                # (unless that head completed and this one began within the feed, after a body perhaps).
                self._head_fed += len(data)
            else:  # the head began in this feed: count what of it is parsed (once per head, not per header)
                self._head_fed = self._head_size()
            if self._head_fed > self._max_header_bytes:
                self._fail(HeadersTooLarge("request headers are too large"))
            elif self._deadline_state is not _HEADERS and not self._reading_paused:
                self.deadline = self.clock() + self.limits.header_timeout  # counted from the first bytes
        elif state is _BODY:
            if self._reading_paused:
                self.deadline = None
            else:
                now = self.clock()
                if self._deadline_state is not _BODY:  # the first read of this body that does not end it
                    self._start_rate(now, 0)
                self._body_deadline(now)
            if events:
                self._head_fed = 0
            else:  # no body byte in this feed: chunk framing or trailers, which httptools buffers
                self._head_fed += len(data)
                if self._head_fed > self._max_header_bytes:
                    self._fail(HeadersTooLarge("request trailers are too large"))
        self._deadline_state = self.read_state
        self._events = _BETWEEN_FEEDS
        return events

    def _switch_to_http2(self, data: bytes) -> list[Event]:
        """The client spoke HTTP/2 first (RFC 9113 §3.3): hand everything it sent to the HTTP/2 core."""
        # llhttp stops right after the 24-byte preface, which may have come over several reads; ``data`` is
        # the tail of it plus whatever followed.
        head = _H2_PREFACE
        start = next(j for j in range(len(head) + 1) if data.startswith(head[j:]))
        self.read_state = _STOPPED
        self.deadline = None
        handed_over = head + data[len(head) - start :]
        if self.count_bytes:
            self.bytes_received -= len(handed_over)  # counted again by the HTTP/2 core that is fed them
        return [HTTP2Preface(handed_over), ConnectionTerminated("HTTP/2 prior knowledge")]

    def on_message_begin(self) -> None:
        if self.read_state is _STOPPED:
            raise _StopParsing  # the previous request was the connection's last
        self.read_state = _HEADERS
        self._deadline_state = None
        self._url = b""
        self._headers = []
        self._hosts = 0
        self._head_fed = 0
        self._body_bytes = 0
        self._connection_tokens = _NO_TOKENS
        self._expect_continue = False
        self._upgrade = None

    def on_url(self, url: bytes) -> None:
        url = self._url = self._url + url
        if len(url) > self._max_url:
            self._raise(RequestLineTooLong(f"request target longer than {self._max_url} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        # The head's size is checked once it is complete (or at the end of a read), not here: a head within
        # one read is no larger than the read. The count is checked per header: it bounds the work a flood of
        # tiny headers in one read can cause.
        if self.read_state is _BODY:
            return  # a chunked trailer: dropped
        headers = self._headers
        if len(headers) >= self._max_header_count:
            self._raise(HeadersTooLarge(f"more than {self._max_header_count} request headers"))
        name = name.lower()
        headers.append((name, value))
        if name in _SPECIAL_REQUEST_HEADERS:
            if name == b"host":
                self._hosts += 1
            else:
                self._special_header(name, value)

    def _head_size(self) -> int:
        """The request head's size as parsed so far: the target and each header line's name, value and four
        bytes of ": " and CRLF."""
        size = len(self._url)
        for name, value in self._headers:
            size += len(name) + len(value) + 4
        return size

    def _special_header(self, name: bytes, value: bytes) -> None:
        if name == b"connection":
            # RFC 9110 §7.6.1: a comma-separated list of tokens, possibly over several header lines
            self._connection_tokens = self._connection_tokens.union(
                token.strip() for token in value.lower().split(b",")
            )
        elif name == b"content-length":
            max_body = self._max_body
            if max_body and value.isdigit() and int(value) > max_body:
                self._raise(BodyTooLarge(f"content-length {int(value)} exceeds the {max_body}-byte limit"))
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                self._raise(UnsupportedTransferCoding(f"transfer-encoding {value!r} is not supported"))
        elif name == b"expect":
            if value.lower() == b"100-continue":
                self._expect_continue = True
        elif name == b"upgrade":
            self._upgrade = value.strip().lower()

    def on_headers_complete(self) -> None:
        parser = self._parser
        tokens = self._connection_tokens
        if tokens is _NO_TOKENS and parser.should_keep_alive():
            # llhttp accepts only versions 0.9, 1.0, 1.1 and 2.0, and without a Connection header it says
            # keep-alive for 1.1 alone: so this is HTTP/1.1, known without get_http_version(), which formats
            # the text with str.format and costs seven times as much.
            http_version = "1.1"
            keep_alive = True
        else:
            http_version = parser.get_http_version()
            if http_version == "1.1":
                keep_alive = b"close" not in tokens
            elif http_version == "1.0":
                keep_alive = b"keep-alive" in tokens and b"close" not in tokens
            else:
                self._raise(ProtocolError(f"HTTP/{http_version} is not supported", status=505))
        if self._hosts != 1 and (self._hosts or http_version == "1.1"):
            # RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one, is a 400
            # (an HTTP/1.0 client may leave Host out).
            self._raise(BadRequest("more than one Host header" if self._hosts else "no Host header"))
        # A head that came in several reads, or in one larger than the limit, is measured; others cannot exceed it.
        if (
            self._head_fed or self._feed_size > self._max_header_bytes
        ) and self._head_size() > self._max_header_bytes:
            self._raise(HeadersTooLarge(f"request headers exceed {self._max_header_bytes} bytes"))
        url = self._url
        if url[:1] == b"/" and 35 not in url:  # no "#"; an int is found by memchr, a bytes needle costs 6x
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = url, b""
        else:
            try:
                # Any, not httptools' URL: its stub says bytes where the parser gives None (userinfo, path,
                # query), and compiled code would check the stub's types (zonda._compiled)
                parsed: Any = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._raise(BadRequest(f"invalid request target {url[:64]!r}"))
            path, query = parsed.path or b"/", parsed.query or b""
            if parsed.host:
                self._take_target_authority(url, parsed.userinfo)
        stream_id = self._next_stream_id
        self._next_stream_id = stream_id + 1
        request = self._request = Request(
            stream_id,
            parser.get_method(),
            path,
            query,
            self._headers,
            http_version,
            False,
            keep_alive,
            self._expect_continue and http_version == "1.1",  # HTTP/1.0: ignored (RFC 9110 §10.1.1)
            self._upgrade,
        )
        self._exchanges.append(request)
        self._events.append(request)
        self._headers = _NO_HEADERS
        self.read_state = _BODY

    def _take_target_authority(self, url: bytes, userinfo: bytes | None) -> None:
        """An absolute-form target (RFC 9112 §3.2.2): its authority replaces the Host header the app sees, as
        the server MUST ignore the Host it received; an HTTP/1.0 request without Host gets one."""
        if userinfo is not None:
            # RFC 9110 §4.2.4: userinfo in an http(s) URI received from an untrusted source should be an error
            # (it hides the real authority from a reader, for phishing).
            self._raise(BadRequest("userinfo in the request target"))
        rest = url.partition(b"://")[2]
        end = len(rest)
        for delimiter in (b"/", b"?"):
            found = rest.find(delimiter)
            if 0 <= found < end:
                end = found
        authority = rest[:end]
        headers = self._headers
        for i, (name, _) in enumerate(headers):
            if name == b"host":
                headers[i] = (b"host", authority)
                return
        headers.append((b"host", authority))

    def on_body(self, body: bytes) -> None:
        received = self._body_bytes = self._body_bytes + len(body)
        if received > self._max_body and self._max_body:
            self._raise(BodyTooLarge(f"request body exceeds {self._max_body} bytes"))
        self._events.append(Data(self._request.stream_id, body))  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        events = self._events
        last = events[-1] if events else None
        if last is request or (type(last) is Data and last.stream_id == request.stream_id):
            last.end_stream = True
        else:
            events.append(Data(request.stream_id, b"", True))
        self._request = None
        if request.keep_alive and not self._stop_after_message:
            self.read_state = _IDLE
        else:
            self.read_state = _STOPPED
            self.deadline = None

    def _raise(self, error: ProtocolError) -> None:
        self._error = error
        raise error

    def _fail(self, error: ProtocolError) -> None:
        """Stop parsing; queue (or defer) the error response; tell the caller the connection ends."""
        self.read_state = _ERROR
        self.deadline = None
        self._held = b""
        events = self._events
        request = self._request
        self._request = None
        if request is not None:
            # The failing request was already handed out: its app gets a disconnect, never a response slot.
            events.append(StreamReset(request.stream_id, error.detail))
            exchanges = self._exchanges
            if not exchanges or exchanges[-1] is not request:
                self.closing = True  # the app already answered it in full: nothing more to send
            elif exchanges[0] is request and self._resp_started:
                self.closing = True  # the app is mid-response: no error response can follow it
            else:
                self._exchanges.pop()
        if self.closing:
            pass
        elif self._exchanges:
            self._deferred_error = error_response(error, self.defaults)
        else:
            self._out.append(error_response(error, self.defaults))
            self.closing = True
        events.append(ConnectionTerminated(error.detail, error))

    # ----------------------------------------------------------------- output

    def push(
        self,
        stream_id: int,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        scheme: bytes,
        authority: bytes,
    ) -> None:
        return None  # HTTP/1.1 has no server push (the extension is never offered on it)

    def accept_upgrade(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """Answer the upgrade request ``stream_id`` with 101 and ``headers``; the connection leaves HTTP/1.1.

        Returns the bytes that followed the request: the first bytes of the new protocol.
        """
        request = self._exchanges[0]
        if request.stream_id != stream_id or not self._upgrade_pending:
            raise AppProtocolError(f"stream {stream_id} is not an upgrade request awaiting its answer")
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        pairs: Iterable[Any] = headers  # as the app sent them (websocket.accept): checked below, not on entry
        try:
            for name, value in pairs:
                lines.append(header_name(name) + b": " + header_value(value) + b"\r\n")
        except (TypeError, ValueError) as exc:
            raise caused_by(AppProtocolError("upgrade response headers must be [bytes, bytes] pairs"), exc)
        _check_header_block(b"".join(lines), len(lines))
        lines.append(self.defaults.server_line)
        lines.append(self.defaults.date_line)
        lines.append(b"\r\n")
        self._out.append(b"".join(lines))
        self._exchanges.pop(0)
        self.read_state = _STOPPED
        self.deadline = None
        self._upgrade_pending = False
        held, self._held = self._held, b""
        if self.count_bytes:
            self.bytes_received -= len(held)  # counted again by the next protocol's core, which is fed them
        return held

    def send_continue(self, stream_id: int = 0) -> None:
        """Queue ``100 Continue`` for the request being answered (RFC 9110 §10.1.1)."""
        if not self._resp_started:
            self._out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._expect_continue = False  # from now on a body stall is the client's
            if self.read_state is _BODY and not self._reading_paused:
                # ... counted from now: a deadline set while the client rightly waited must not fire first
                now = self.clock()
                self._start_rate(now, self._body_bytes)
                self._body_deadline(now)

    def send_early_hint(self, stream_id: int, links: Iterable[bytes]) -> None:
        """Queue a 103 Early Hints (RFC 8297) with ``link`` fields for the request being answered while its
        final head has not gone out (a 1xx cannot follow it); never to an HTTP/1.0 client (RFC 9110 §15.2)."""
        exchanges = self._exchanges
        if not exchanges or exchanges[0].stream_id != stream_id or exchanges[0].http_version == "1.0":
            return
        if self._resp_started and self._resp_head is None and self._resp_lines is None:
            return
        lines = [
            b"HTTP/1.1 103 Early Hints\r\n",
            *(b"link: " + header_value(link) + b"\r\n" for link in links),
        ]
        block = b"".join(lines)
        _check_header_block(block, len(lines))
        self._out.append(block + b"\r\n")

    def send_trailers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the response with trailer fields after the last chunk (RFC 9112 §7.1.2). A body that is not
        chunked (a declared Content-Length, HTTP/1.0's close-delimited body, no body at all) cannot carry them:
        it just ends, as when the client did not say ``te: trailers``."""
        if self._resp_head is not None or self._resp_lines is not None:
            self.send_body(stream_id, b"", False)  # the head, framed: chunked unless a length was declared
        if not self._resp_chunked:
            self.send_body(stream_id, b"", True)
            return
        fields = trailer_fields(headers)
        lines = [b"0\r\n", *(name + b": " + value + b"\r\n" for name, value in fields)]
        block = b"".join(lines)
        _check_header_block(block, len(lines))
        self._out.append(block + b"\r\n")
        self._finish_response()

    def send_response(self, stream_id: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Start the response to ``stream_id``, the oldest unanswered request. Framing waits for the body."""
        request = self._exchanges[0]
        if request.stream_id != stream_id:
            raise AppProtocolError(f"response for stream {stream_id} sent before stream {request.stream_id}")
        try:
            key = (status, *headers)  # once: a generator of headers can be iterated only once
        except TypeError:
            raise caused_by(
                AppProtocolError(
                    "http.response.start: 'headers' must be an iterable of [bytes, bytes] pairs"
                ),
                None,
            )
        try:
            head = _HEADS.get(key)
            hashable = True
        except TypeError:  # headers as lists (fine by ASGI, not hashable): no cache
            head = None
            hashable = False
        if head is None:
            head = _encode_head(status, key[1:])
            if hashable:
                if len(_HEADS) >= _HEADS_MAX:
                    _HEADS.clear()
                _HEADS[key] = head
        block, length, close_header, tail = head
        close = close_header or not request.keep_alive
        if length is None:  # framing waits for the body: one final piece gets a Content-Length
            self._resp_lines = [block, self.defaults.tails[tail]]
        else:  # the app framed it: the head is complete now
            if close:
                end = b"connection: close\r\n\r\n"
            elif request.http_version == "1.0":
                end = b"connection: keep-alive\r\n\r\n"
            else:
                end = b"\r\n"
            self._resp_head = b"".join((block, self.defaults.tails[tail], end))
        self._resp_length = length
        self._resp_sent = 0
        self._resp_close = close
        self._resp_no_body = status in _NO_BODY_STATUSES or request.method == b"HEAD"
        self._resp_chunked = False
        self._resp_started = True

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes for the response in progress; ``end_stream`` completes it."""
        head = self._resp_head
        if head is not None:
            self._resp_head = None
            if end_stream and len(data) == self._resp_length and not self._resp_no_body:
                self._out.append(head + data)  # the usual response: the head and all of its body in one piece
                self._resp_sent = len(data)
                self._finish_response()
                return
            self._out.append(head)
        lines = self._resp_lines
        if lines is not None:
            self._resp_lines = None
            self._frame_head(lines, len(data), end_stream)
            out = lines  # the head and the first body piece go out as one write
        else:
            out = self._out
        if data and not self._resp_no_body:
            length = self._resp_length
            if length is not None:
                sent = self._resp_sent = self._resp_sent + len(data)
                if sent > length:
                    self._abort_response(lines)
                    raise AppProtocolError(
                        f"http.response.body: more body than the declared content-length ({length})"
                    )
                out.append(data)
            elif self._resp_chunked:
                out.append(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                out.append(data)
        if end_stream:
            if self._resp_chunked:
                out.append(b"0\r\n\r\n")
            elif (
                self._resp_length is not None
                and self._resp_sent != self._resp_length
                and not self._resp_no_body
            ):
                self._abort_response(lines)
                raise AppProtocolError(
                    f"http.response.body: response ended after {self._resp_sent} of "
                    f"{self._resp_length} declared content-length bytes"
                )
        if lines is not None:
            self._out.append(b"".join(lines))
        if end_stream:
            self._finish_response()

    def send_file(self, stream_id: int, count: int, end_stream: bool) -> int:
        """Frame ``count`` body bytes that the driver sends itself from a file (zero copy): this core never sees
        them. Queues what must go before them (the head, if unsent; a chunk-size line); the caller drains
        ``data_to_send()``, writes the file bytes, then calls ``file_sent()``. Returns how many file bytes go
        on the wire: ``count``, or 0 for a response without a body (HEAD, 204, 304).

        Content-Length is counted as for ``send_body``: more than declared raises ``AppProtocolError`` after
        queuing the head and marking the connection to close.
        """
        head = self._resp_head
        if head is not None:
            self._resp_head = None
            self._out.append(head)
        lines = self._resp_lines
        if lines is not None:
            self._resp_lines = None
            self._frame_head(lines, count, end_stream)  # a single final file gets a Content-Length
            self._out.append(b"".join(lines))
        if self._resp_no_body or not count:
            return 0
        length = self._resp_length
        if length is not None:
            try:
                check_file_length(count, self._resp_sent, length)
            except AppProtocolError:
                self._abort_response(None)
                raise
            self._resp_sent += count
        elif self._resp_chunked:
            self._out.append(b"%x\r\n" % count)  # RFC 9112 §7.1: the file bytes are this chunk's data
        return count

    def file_sent(self, stream_id: int, count: int, end_stream: bool) -> None:
        """The driver wrote the ``count`` file bytes ``send_file`` returned; ``end_stream`` completes the
        response (with the same Content-Length check as ``send_body``)."""
        if count and self._resp_chunked:
            self._out.append(b"\r\n")  # the end of the file's chunk
        if end_stream:
            self.send_body(stream_id, b"", True)

    def _frame_head(self, lines: list[bytes], first_length: int, end_stream: bool) -> None:
        """Choose the body framing (RFC 9112 §6) and close the header block."""
        http10 = self._exchanges[0].http_version == "1.0"
        if self._resp_no_body or self._resp_length is not None:
            pass
        elif end_stream:
            self._resp_length = first_length
            lines.append(b"content-length: %d\r\n" % first_length)
        elif http10:
            self._resp_close = True  # close-delimited body (RFC 9112 §6.3)
        else:
            self._resp_chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if self._resp_close:
            lines.append(b"connection: close\r\n\r\n")
        elif http10:
            lines.append(b"connection: keep-alive\r\n\r\n")
        else:
            lines.append(b"\r\n")

    def _abort_response(self, head: list[bytes] | None) -> None:
        """The app broke its own framing: send what is honest (the head, if unsent), then close."""
        if head is not None:
            self._out.append(b"".join(head))
        self._resp_close = True
        self._finish_response()

    def _finish_response(self) -> None:
        self._exchanges.pop(0)
        self._resp_started = False
        self._resp_head = self._resp_lines = None
        if self._resp_close:
            self.closing = True
            if self.read_state is not _ERROR:
                self.read_state = _STOPPED
            self.deadline = None
        elif not self._exchanges:
            state = self.read_state
            if self._deferred_error is not None:
                self._out.append(self._deferred_error)
                self._deferred_error = None
                self.closing = True
            elif state is _IDLE:
                self.deadline = self.clock() + self.limits.keep_alive_timeout
            elif state is _STOPPED:
                self.closing = True
        # The upgrade request is the last one parsed: only its own response, with no earlier one left, declines it.
        if self._upgrade_pending and not self._exchanges and not self.closing:
            self._upgrade_pending = False  # declined: what followed the upgrade request is HTTP/1.1 again
            self._parser = httptools.HttpRequestParser(self)

    @property
    def response_started(self) -> bool:
        return self._resp_started

    @property
    def has_held_data(self) -> bool:
        """Bytes were held back behind an upgrade request: feed ``receive_data(b"")`` once it is answered."""
        return bool(self._held) and not self._upgrade_pending

    # ----------------------------------------------------------------- flow and time

    def set_reading_paused(self, paused: bool) -> None:
        """The driver stopped (or resumed) reading for the server's sake: client deadlines wait meanwhile."""
        self._reading_paused = paused
        state = self.read_state
        if state is _BODY:
            if paused:
                self.deadline = None
            else:  # the client may have been held back for long: its rate counts from now, with a new grace
                now = self.clock()
                self._start_rate(now, self._body_bytes)
                self._body_deadline(now)
        elif state is _HEADERS:
            self.deadline = None if paused else self.clock() + self.limits.header_timeout

    def _start_rate(self, now: float, mark: int) -> None:
        """Average the body's rate from ``now`` over the bytes after ``mark``, checked first after the grace."""
        if self.limits.min_body_rate:
            self._rate_since = now
            self._rate_mark = mark
            self._rate_at = now + self.limits.body_rate_grace

    def _body_deadline(self, last_read: float) -> None:
        """The body's deadline: a stall ``body_timeout`` after ``last_read``, or the rate check if sooner."""
        stall = self._stall_at = last_read + self.limits.body_timeout
        rate_at = self._rate_at
        self.deadline = stall if rate_at is None or stall <= rate_at else rate_at

    def _check_rate(self, now: float) -> ProtocolError | None:
        """The rate check is due: the error if the body has averaged under the minimum, else None and the
        next check set for when the average would fall under it if no more bytes came (a fast body is checked
        rarely, a body near the minimum often)."""
        rate = self.limits.min_body_rate
        elapsed = now - self._rate_since
        received = self._body_bytes - self._rate_mark
        if received < rate * elapsed:
            return RequestBodyTooSlow(
                f"request body too slow: {received} bytes in {elapsed:.1f}s, under the minimum of "
                f"{rate} bytes/s"
            )
        self._rate_at = max(self._rate_since + received / rate, now + _RATE_STEP)
        return None

    def finish_and_close(self) -> None:
        """Graceful shutdown: finish the requests already received (and the body in flight), then close."""
        if self._exchanges:
            self._exchanges[-1].keep_alive = False  # the last request owed a response closes the connection
        state = self.read_state
        if state is _BODY:
            self._stop_after_message = True
        elif state is _IDLE and self._exchanges:
            self.read_state = _STOPPED
        elif state is not _STOPPED or not self._exchanges:
            self.read_state = _STOPPED
            self.deadline = None
            self.closing = not self._resp_started

    def handle_timer(self, now: float) -> list[Event]:
        """Act on an expired deadline: close an idle connection, or answer 408 to a stalled request."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        self.deadline = None
        state = self.read_state
        if state is _IDLE:
            self.closing = True
            self.read_state = _STOPPED
            return [ConnectionTerminated("keep-alive timeout")]
        if state is _HEADERS:
            error: ProtocolError = RequestTimeout(
                f"request headers not received within {self.limits.header_timeout:g}s"
            )
        elif self._expect_continue and not self._body_bytes and self._request in self._exchanges:
            # The client waits for the 100 Continue the app has not asked for yet: not a client stall.
            self._start_rate(now, 0)
            self._body_deadline(now)
            return []
        elif now >= self._stall_at:
            error = RequestTimeout(f"request body stalled for {self.limits.body_timeout:g}s")
        else:
            slow = self._check_rate(now)
            if slow is None:
                self._body_deadline(self._stall_at - self.limits.body_timeout)
                return []
            error = slow
        events = self._events = []
        self._fail(error)
        return events
