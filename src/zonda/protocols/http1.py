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
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

from zonda.errors import (
    AppProtocolError,
    BadRequest,
    BodyTooLarge,
    HeadersTooLarge,
    ProtocolError,
    RequestLineTooLong,
    RequestTimeout,
    UnsupportedTransferCoding,
)
from zonda.protocols.events import ConnectionTerminated, Data, Event, Headers, Request, StreamReset


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


class DefaultHeaders:
    """Header lines added to every response; ``date_line`` is refreshed once a second by the server."""

    __slots__ = ("date_line", "extra_lines", "server_line")

    def __init__(self, server: bytes | None = b"zonda", extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.server_line = b"server: " + server + b"\r\n" if server else b""
        self.date_line = b""
        self.extra_lines = b"".join(name.lower() + b": " + value + b"\r\n" for name, value in extra)

    def set_date(self, http_date: bytes | None) -> None:
        self.date_line = b"date: " + http_date + b"\r\n" if http_date else b""


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


_STATUS_LINES = {status.value: _status_line(status.value) for status in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_valid_names: set[bytes] = set()  # response header names already checked, shared by all connections


def _check_header_name(name: bytes) -> None:
    if not name or not all(c in _TOKEN_CHARS for c in name):
        raise AppProtocolError(
            f"http.response.start: header name {name!r} must be a lowercase token (RFC 9110 §5.1)"
        )
    if len(_valid_names) < 4096:
        _valid_names.add(name)


def _parse_content_length(value: bytes) -> int:
    if not value.isdigit():
        raise AppProtocolError(f"http.response.start: invalid content-length {value!r}")
    return int(value)


def error_response(exc: ProtocolError, defaults: DefaultHeaders) -> bytes:
    """A complete response for a protocol error, ending the connection."""
    body = f"{HTTPStatus(exc.status).phrase}: {exc.detail}\n".encode("utf-8", "replace")
    return b"".join(
        (
            _STATUS_LINES[exc.status],
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n"
            % len(body),
            defaults.server_line,
            defaults.date_line,
            b"\r\n",
            body,
        )
    )


class _Exchange:
    """What a response needs to know about the request it answers."""

    __slots__ = ("head", "http10", "keep_alive", "stream_id")

    def __init__(self, stream_id: int, head: bool, keep_alive: bool, http10: bool) -> None:
        self.stream_id = stream_id
        self.head = head
        self.keep_alive = keep_alive
        self.http10 = http10


class H1Connection:
    """One HTTP/1.1 server connection. The ``on_*`` methods are httptools callbacks, not API."""

    def __init__(
        self,
        limits: H1Limits,
        defaults: DefaultHeaders,
        clock: Callable[[], float],
    ) -> None:
        self.limits = limits
        self.defaults = defaults
        self.clock = clock
        self.read_state = ReadState.IDLE
        self.closing = False  # set once the last byte to send is queued: flush, then close
        self.deadline: float | None = clock() + limits.keep_alive_timeout
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._next_stream_id = 1
        self._exchanges: deque[_Exchange] = deque()
        self._reading_paused = False
        self._error: ProtocolError | None = None  # raised from inside a callback
        self._deferred_error: bytes | None = None  # error response owed after earlier responses
        self._held: bytes = b""  # bytes after an Upgrade request, parsed once its answer is known
        self._upgrade_pending = False
        self._stop_after_message = False  # graceful shutdown waits for the body in flight
        # the request being parsed
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._request: Request | None = None
        self._connection_tokens = b""
        self._expect_continue = False
        self._upgrade: bytes | None = None
        # the response being sent
        self._resp_lines: list[bytes] | None = None
        self._resp_length: int | None = None  # declared content-length
        self._resp_sent = 0
        self._resp_chunked = False
        self._resp_no_body = False
        self._resp_close = False
        self._resp_started = False

    # ----------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; return the events they complete. Raises ProtocolError."""
        state = self.read_state
        if state is ReadState.ERROR or state is ReadState.STOPPED:
            return []
        if self._held or self._upgrade_pending:
            self._held += data
            if self._upgrade_pending:
                return []  # hold everything until the upgrade request is answered
            data, self._held = self._held, b""
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._held = data[exc.args[0] :]
            self._upgrade_pending = True
        except httptools.HttpParserCallbackError:
            assert self._error is not None
            self._fail(self._error)
            self._error = None
        except httptools.HttpParserInvalidMethodError as exc:
            self._fail(BadRequest(f"invalid method: {exc}"))
        except httptools.HttpParserError as exc:
            self._fail(BadRequest(str(exc)))
        if self.read_state is ReadState.HEADERS and self._header_bytes + len(self._url) > (
            self.limits.max_header_bytes
        ):
            self._fail(HeadersTooLarge("request headers are too large"))  # a header still arriving
        return events

    def on_message_begin(self) -> None:
        self.read_state = ReadState.HEADERS
        self.deadline = self.clock() + self.limits.header_timeout
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._connection_tokens = b""
        self._expect_continue = False
        self._upgrade = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            self._raise(RequestLineTooLong(f"request target longer than {self.limits.max_request_line} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.read_state is ReadState.BODY:
            return  # a chunked trailer: dropped, as no ASGI message carries request trailers
        headers = self._headers
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            self._raise(HeadersTooLarge(f"request headers exceed {self.limits.max_header_bytes} bytes"))
        if len(headers) >= self.limits.max_header_count:
            self._raise(HeadersTooLarge(f"more than {self.limits.max_header_count} request headers"))
        name = name.lower()
        headers.append((name, value))
        if name == b"connection":
            self._connection_tokens += value.lower()
        elif name == b"content-length":
            max_body = self.limits.max_body
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
        http_version = parser.get_http_version()
        tokens = self._connection_tokens
        if http_version == "1.1":
            keep_alive = b"close" not in tokens
        elif http_version == "1.0":
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        else:
            self._raise(ProtocolError(f"HTTP/{http_version} is not supported", status=505))
        url = self._url
        if url[:1] == b"/" and b"#" not in url:
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = url, b""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._raise(BadRequest(f"invalid request target {url[:64]!r}"))
            path, query = parsed.path or b"/", parsed.query or b""
        method = parser.get_method()
        stream_id = self._next_stream_id
        self._next_stream_id = stream_id + 1
        self._exchanges.append(_Exchange(stream_id, method == b"HEAD", keep_alive, http_version == "1.0"))
        request = self._request = Request(
            stream_id,
            method,
            path,
            query,
            self._headers,
            http_version,
            False,
            self._expect_continue,
            self._upgrade,
        )
        self._events.append(request)
        self.read_state = ReadState.BODY
        self.deadline = None if self._reading_paused else self.clock() + self.limits.body_timeout

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        max_body = self.limits.max_body
        if max_body and self._body_bytes > max_body:
            self._raise(BodyTooLarge(f"request body exceeds {max_body} bytes"))
        assert self._request is not None
        self._events.append(Data(self._request.stream_id, body))
        if not self._reading_paused:
            self.deadline = self.clock() + self.limits.body_timeout

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        events = self._events
        last = events[-1] if events else None
        if last is request or (type(last) is Data and last.stream_id == request.stream_id):
            last.end_stream = True  # type: ignore[union-attr]
        else:
            events.append(Data(request.stream_id, b"", True))
        self._request = None
        if self._exchanges[-1].keep_alive and not self._stop_after_message:
            self.read_state = ReadState.IDLE
            self.deadline = None  # the server owes a response; no client deadline meanwhile
        else:
            self.read_state = ReadState.STOPPED
            self.deadline = None

    def _raise(self, error: ProtocolError) -> None:
        self._error = error
        raise error

    def _fail(self, error: ProtocolError) -> None:
        """Stop parsing; queue (or defer) the error response; tell the caller the connection ends."""
        self.read_state = ReadState.ERROR
        self.deadline = None
        self._held = b""
        events = self._events
        request = self._request
        self._request = None
        if request is not None:
            # The failing request was already handed out: its app gets a disconnect, never a response slot.
            events.append(StreamReset(request.stream_id, error.detail))
            if self._exchanges[0].stream_id == request.stream_id and self._resp_started:
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

    def send_continue(self) -> None:
        """Queue ``100 Continue`` for the request being answered (RFC 9110 §10.1.1)."""
        if not self._resp_started:
            self._out.append(b"HTTP/1.1 100 Continue\r\n\r\n")

    def send_response(self, stream_id: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Start the response to ``stream_id``, the oldest unanswered request. Framing waits for the body."""
        exchange = self._exchanges[0]
        if exchange.stream_id != stream_id:
            raise AppProtocolError(f"response for stream {stream_id} sent before stream {exchange.stream_id}")
        status_line = _STATUS_LINES.get(status)
        if status_line is None:
            if not 100 <= status <= 999:
                raise AppProtocolError(f"http.response.start: invalid status {status!r}")
            status_line = _status_line(status)
        lines = [status_line]
        length = None
        close = not exchange.keep_alive
        has_date = has_server = False
        try:
            for name, value in headers:
                if name not in _valid_names:
                    _check_header_name(name)
                if name == b"content-length":
                    length = _parse_content_length(value)
                elif name == b"connection":
                    if value.lower() == b"close":
                        close = True
                    continue
                elif name == b"transfer-encoding":
                    continue  # the server frames the body itself (ASGI www spec)
                elif name == b"date":
                    has_date = True
                elif name == b"server":
                    has_server = True
                lines.append(name + b": " + value + b"\r\n")
        except (TypeError, ValueError) as exc:
            raise AppProtocolError(
                "http.response.start: 'headers' must be an iterable of [bytes, bytes] pairs"
            ) from exc
        block = b"".join(lines)
        if block.count(b"\n") != len(lines) or block.count(b"\r") != len(lines) or b"\x00" in block:
            raise AppProtocolError("http.response.start: header values must not contain CR, LF or NUL")
        defaults = self.defaults
        lines = [block, defaults.extra_lines]
        if not has_server:
            lines.append(defaults.server_line)
        if not has_date:
            lines.append(defaults.date_line)
        self._resp_lines = lines
        self._resp_length = length
        self._resp_sent = 0
        self._resp_close = close
        self._resp_no_body = exchange.head or status in _NO_BODY_STATUSES
        self._resp_chunked = False
        self._resp_started = True

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes for the response in progress; ``end_stream`` completes it."""
        lines = self._resp_lines
        if lines is not None:
            self._resp_lines = None
            self._write_head(lines, data, end_stream)
        if data and not self._resp_no_body:
            length = self._resp_length
            if length is not None:
                sent = self._resp_sent = self._resp_sent + len(data)
                if sent > length:
                    self._resp_close = True
                    self._finish_response()
                    raise AppProtocolError(
                        f"http.response.body: more body than the declared content-length ({length})"
                    )
                self._out.append(data)
            elif self._resp_chunked:
                self._out.append(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self._out.append(data)
        if end_stream:
            if self._resp_chunked:
                self._out.append(b"0\r\n\r\n")
            elif (
                self._resp_length is not None
                and self._resp_sent != self._resp_length
                and not self._resp_no_body
            ):
                self._resp_close = True
                self._finish_response()
                raise AppProtocolError(
                    f"http.response.body: response ended after {self._resp_sent} of "
                    f"{self._resp_length} declared content-length bytes"
                )
            self._finish_response()

    def _write_head(self, lines: list[bytes], first_body: bytes, end_stream: bool) -> None:
        exchange = self._exchanges[0]
        if self._resp_no_body or self._resp_length is not None:
            pass
        elif end_stream:
            self._resp_length = len(first_body)
            lines.append(b"content-length: %d\r\n" % self._resp_length)
        elif exchange.http10:
            self._resp_close = True  # close-delimited body (RFC 9112 §6.3)
        else:
            self._resp_chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if self._resp_close:
            lines.append(b"connection: close\r\n\r\n")
        elif exchange.http10:
            lines.append(b"connection: keep-alive\r\n\r\n")
        else:
            lines.append(b"\r\n")
        self._out.append(b"".join(lines))

    def _finish_response(self) -> None:
        self._exchanges.popleft()
        self._resp_started = False
        self._resp_lines = None
        if self._resp_close:
            self.closing = True
            self.read_state = ReadState.STOPPED if self.read_state is not ReadState.ERROR else ReadState.ERROR
            self.deadline = None
        elif not self._exchanges:
            if self._deferred_error is not None:
                self._out.append(self._deferred_error)
                self._deferred_error = None
                self.closing = True
            elif self.read_state is ReadState.IDLE:
                self.deadline = self.clock() + self.limits.keep_alive_timeout
            elif self.read_state is ReadState.STOPPED:
                self.closing = True
        if self._upgrade_pending and not self.closing:
            self._upgrade_pending = False  # declined: what followed the upgrade request is HTTP/1.1 again
            self._parser = httptools.HttpRequestParser(self)

    def data_to_send(self) -> bytes:
        """Drain the queued output."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

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
        if state is ReadState.BODY:
            self.deadline = None if paused else self.clock() + self.limits.body_timeout
        elif state is ReadState.HEADERS:
            self.deadline = None if paused else self.clock() + self.limits.header_timeout

    def finish_and_close(self) -> None:
        """Graceful shutdown: finish the requests already received (and the body in flight), then close."""
        for exchange in self._exchanges:
            exchange.keep_alive = False
        state = self.read_state
        if state is ReadState.BODY:
            self._stop_after_message = True
        elif state is ReadState.IDLE and self._exchanges:
            self.read_state = ReadState.STOPPED
        elif state is not ReadState.STOPPED or not self._exchanges:
            self.read_state = ReadState.STOPPED
            self.deadline = None
            self.closing = not self._resp_started

    def handle_timer(self, now: float) -> list[Event]:
        """Act on an expired deadline: close an idle connection, or answer 408 to a stalled request."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        self.deadline = None
        state = self.read_state
        if state is ReadState.IDLE:
            self.closing = True
            self.read_state = ReadState.STOPPED
            return [ConnectionTerminated("keep-alive timeout")]
        if state is ReadState.HEADERS:
            error = RequestTimeout(f"request headers not received within {self.limits.header_timeout:g}s")
        else:
            error = RequestTimeout(f"request body stalled for {self.limits.body_timeout:g}s")
        events = self._events = []
        self._fail(error)
        return events
