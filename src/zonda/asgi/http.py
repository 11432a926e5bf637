"""The one ASGI HTTP bridge: core events in, ``scope``/``receive``/``send`` out, for every HTTP version.

An ``HTTPCycle`` is one request and its response; the connection's ``HTTPSession`` (``zonda.asgi.session``)
makes one per request (``build_scope`` gives it its scope) and runs the app. Event handlers are plain methods;
only the app-facing ``receive()`` and ``send()`` are awaitable, and they await only waiters the connection
hands them (``Transport.create_waiter``, ``Transport.drain``). Both are coroutine functions, as apps and their
libraries expect (``create_task(send(...))``, anyio's ``start_soon``, asgiref's ``async_to_sync``), though
``send()`` nearly never waits.
"""

from __future__ import annotations

import enum
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from zonda.asgi._files import PATHSEND, ZEROCOPYSEND, open_path, zerocopy_span
from zonda.asgi.types import ASGIApp, Message, Scope
from zonda.errors import AppProtocolError, ClientDisconnected, split_cancellation
from zonda.protocols.events import Request
from zonda.protocols.fields import checked_value, header_name, trailer_fields

if TYPE_CHECKING:
    from zonda.asgi.seams import ConnectionInfo
    from zonda.asgi.session import HTTPSession

error_log = logging.getLogger("zonda.error")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}
HIGH_WATER = 65536  # unread request body per stream above which reading pauses
_DISCONNECT: Message = {"type": "http.disconnect"}
_END_OF_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_NO_TRAILERS: Message = {"type": "http.response.trailers", "headers": []}


class CycleState(enum.Enum):
    START = "expecting http.response.start"
    BODY = "expecting http.response.body"
    TRAILERS = "expecting http.response.trailers"
    DONE = "response complete"


# Module-level aliases: an identity check against a global is cheaper than a class attribute lookup.
_START = CycleState.START
_BODY = CycleState.BODY
_DONE = CycleState.DONE
_TRAILERS = CycleState.TRAILERS
TRAILERS = "http.response.trailers"
PUSH = "http.response.push"
EARLY_HINT = "http.response.early_hint"
_METHODS = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}


def build_scope(request: Request, info: ConnectionInfo, state: dict[str, Any]) -> Scope:
    # Costs measured in instructions (valgrind): ``37 in raw_path`` is a memchr where ``b"%" in raw_path`` goes
    # through the buffer protocol (6x); copying the connection's template and setting nine keys costs a
    # quarter less than a fourteen-key dict display; strict UTF-8 decoding is cheaper than "replace".
    raw_path = request.path
    if 37 in raw_path:  # "%"
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    else:
        try:
            path = raw_path.decode()
        except UnicodeDecodeError:
            path = raw_path.decode("utf-8", "replace")
    template = info.scope_template
    if template is None:
        template = info.make_scope_template()
    scope = template.copy()
    root_path = info.root_path
    if root_path:
        path = root_path + path
        raw_path = root_path.encode() + raw_path
    scope["asgi"] = ASGI_VERSION.copy()  # fresh per request: apps may write to scopes
    scope["http_version"] = request.http_version
    method = request.method
    try:
        scope["method"] = _METHODS[method]
    except KeyError:
        scope["method"] = method.decode("ascii")
    scope["path"] = path
    scope["raw_path"] = raw_path
    scope["query_string"] = request.query_string
    scope["headers"] = request.headers
    scope["state"] = state.copy()
    scope["extensions"] = info.extensions.copy()
    return scope


class HTTPCycle:
    """One request and its response: the app's ``receive`` and ``send``."""

    __slots__ = (
        "_body",
        "_body_done",
        "_continue_pending",
        "_more_body",
        "_trailer_fields",
        "_waiter",
        "app",
        "bytes_sent",
        "disconnected",
        "reading_paused",
        "response_headers",
        "scope",
        "session",
        "started_at",
        "state",
        "status",
        "stopping",
        "stream_id",
        "trailers",
        "transport",
    )

    def __init__(self, session: HTTPSession, request: Request, scope: Scope, app: ASGIApp) -> None:
        self.session = session
        channels = session.channels
        self.transport = session.transport if channels is None else channels.channel(request.stream_id)
        self.stream_id = request.stream_id
        self.scope = scope
        self.app = app
        self.state = _START
        self.status = 0
        self.bytes_sent = 0
        self.disconnected = False
        self.stopping = False  # shutdown asked the app to end its streaming response (stop_streaming)
        self.reading_paused = False
        self.started_at = 0.0
        self.trailers = False  # the app announced http.response.trailers after its last body
        self._body: bytes | bytearray = b""
        self._more_body = not request.end_stream
        self._body_done = False  # the final http.request was delivered
        self._continue_pending = request.expect_continue and self._more_body
        self._waiter: Any = None

    # ------------------------------------------------------ events from the core

    def on_data(self, data: bytes, end_stream: bool) -> None:
        if data and self.state is not _DONE:  # once the response is complete, receive() reads no more body
            body = self._body
            if not body:
                self._body = data
            elif type(body) is bytearray:
                body += data
            else:
                self._body = bytearray(body) + data
            if len(self._body) > HIGH_WATER and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
        if end_stream:
            self._more_body = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_disconnect(self) -> None:
        self.disconnected = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop_streaming(self) -> bool:
        """Shutdown's notice to a response that is streaming with its request read whole: ``receive()`` says
        ``http.disconnect`` (at once if the app waits in it; after any body not yet read), while ``send()`` still
        works, so the app can end its body cleanly before the hard close. A request body still arriving, a
        response not started or already sent: no notice. Returns whether this call gave it."""
        if self.state is not _BODY or self._more_body or self.disconnected or self.stopping:
            return False
        self.stopping = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    # ------------------------------------------------------ the app's side

    async def receive(self) -> Message:
        if self._continue_pending:
            self._continue_pending = False
            if not self.disconnected and self.state is _START:
                self.transport.core.send_continue(self.stream_id)
                self.transport.flush()
        while True:
            if self.disconnected or self.state is _DONE:
                return _DISCONNECT
            body = self._body
            if body or (not self._more_body and not self._body_done):
                self._body = b""
                more = self._more_body
                if not more:
                    self._body_done = True
                if self.reading_paused:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return {
                    "type": "http.request",
                    "body": body if type(body) is bytes else bytes(body),
                    "more_body": more,
                }
            if self.stopping:
                return _DISCONNECT
            waiter = self._waiter = self.transport.create_waiter()
            try:
                await waiter
            finally:
                self._waiter = None

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected(f"client disconnected before {message.get('type')!r} could be sent")
        try:
            message_type = message["type"]
        except (KeyError, TypeError):
            raise AppProtocolError(
                f"ASGI message must be a dict with a 'type' key, got {message!r}"
            ) from None
        state = self.state
        if state is _BODY:
            if message_type != "http.response.body":
                await self._send_extension(message_type, message)
                return
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if type(body) is not bytes:
                if not isinstance(body, bytes | bytearray | memoryview):
                    raise AppProtocolError(
                        f"http.response.body 'body' must be bytes, got {type(body).__name__}"
                    )
                body = bytes(body)
            transport = self.transport
            self.bytes_sent += len(body)
            if more_body:
                transport.core.send_body(self.stream_id, body, False)
                transport.flush()
                if transport.write_paused:
                    await self._drain()
            elif self.trailers:
                self.state = _TRAILERS
                transport.core.send_body(self.stream_id, body, False)
                transport.flush()
            else:
                self.state = _DONE
                try:
                    transport.core.send_body(self.stream_id, body, True)
                finally:
                    transport.flush()
                    self.session.response_complete(self)
        elif state is _START:
            if message_type != "http.response.start":
                if message_type == EARLY_HINT and EARLY_HINT in self.session.info.extensions:
                    self._send_early_hint(message)
                    return
                if message_type == PUSH and PUSH in self.session.info.extensions:
                    # Before the head too: Starlette's send_push_promise() comes first, and RFC 9113 §8.4 wants
                    # the promise ahead of the response that refers to the pushed resource.
                    self._push(message)
                    return
                raise AppProtocolError(f"Expected 'http.response.start', got {message_type!r}")
            status = message.get("status")
            if type(status) is not int:
                raise AppProtocolError(f"http.response.start 'status' must be an int, got {status!r}")
            headers = message.get("headers", ())
            self.transport.core.send_response(self.stream_id, status, headers)
            self.response_headers = headers  # for the access log; unset (not read) when no app response
            self.status = status
            self.state = _BODY
            if "trailers" in message and message["trailers"] and TRAILERS in self.session.info.extensions:
                self.trailers = True
                self._trailer_fields: list[tuple[bytes, bytes]] = []
        elif state is _TRAILERS and message_type == TRAILERS:
            self._send_trailers(message)
        else:
            raise AppProtocolError(
                f"Unexpected {message_type!r}: the response is already complete "
                "(http.response.body with more_body=False ends it)"
            )

    async def _drain(self) -> None:
        """Wait until the transport takes more (the rare part of ``send()`` that waits)."""
        await self.transport.drain()
        if self.disconnected:
            raise ClientDisconnected("client disconnected while the response was being sent")

    async def _send_extension(self, message_type: str, message: Message) -> None:
        """A response message other than ``http.response.body``: the file-sending extensions, if offered."""
        offered = self.session.info.extensions
        if message_type == ZEROCOPYSEND and ZEROCOPYSEND in offered:
            file, offset, count, more_body, positioned = zerocopy_span(message)
            sent = await self._send_file(file, offset, count, more_body)
            if positioned and sent:
                file.seek(offset + sent)  # sent from the current position: leave it after, as a read would
        elif message_type == PUSH and PUSH in offered:
            self._push(message)
        elif message_type == EARLY_HINT and EARLY_HINT in offered:
            self._send_early_hint(message)
        elif message_type == PATHSEND and PATHSEND in offered:
            if self.bytes_sent:
                raise AppProtocolError(
                    f"Expected no body before {PATHSEND}, got {self.bytes_sent} bytes of http.response.body"
                )
            file, offset, count = open_path(message)
            try:
                await self._send_file(file, offset, count, False)
            finally:
                file.close()
        else:
            hint = " (not offered on this connection)" if message_type in (ZEROCOPYSEND, PATHSEND) else ""
            raise AppProtocolError(f"Expected 'http.response.body', got {message_type!r}{hint}")

    def _send_early_hint(self, message: Message) -> None:
        """A 103 Early Hints (RFC 8297) before the final head; the core drops it once that head has gone out
        (a 1xx cannot follow it), or for an HTTP/1.0 client (RFC 9110 §15.2)."""
        links = message.get("links", ())
        try:
            links = [checked_value(bytes(link)) for link in links]
        except TypeError:
            raise AppProtocolError("http.response.early_hint 'links' must be an iterable of bytes") from None
        except AppProtocolError as exc:
            raise AppProtocolError(f"{EARLY_HINT}: {exc}") from None
        self.transport.core.send_early_hint(self.stream_id, links)
        self.transport.flush()

    def _push(self, message: Message) -> None:
        """``http.response.push``: promise the resource and answer it with a new app instance."""
        path = message.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise AppProtocolError(f"http.response.push 'path' must be an absolute path str, got {path!r}")
        headers = _header_pairs(message.get("headers", ()), PUSH)
        scope = self.scope
        authority = next((value for name, value in scope["headers"] if name == b"host"), b"")
        request = self.transport.core.push(
            self.stream_id, quote(path).encode("ascii"), headers, scope["scheme"].encode(), authority
        )
        if request is not None:
            self.transport.flush()
            self.session.push(request)

    def _send_trailers(self, message: Message) -> None:
        # checked whole here, before the response counts as complete: a field the core refused then would leave
        # the response neither ended nor cut
        headers = trailer_fields(_header_pairs(message.get("headers", ()), TRAILERS))
        if message.get("more_trailers", False):
            self._trailer_fields = [*self._trailer_fields, *headers]
            return
        headers = [*self._trailer_fields, *headers]
        self.state = _DONE
        core = self.transport.core
        try:
            # Trailers go only to a client that said it takes them (ASGI extensions: TE: trailers).
            if any(name == b"te" and _takes_trailers(value) for name, value in self.scope["headers"]):
                core.send_trailers(self.stream_id, headers)
            else:
                core.send_body(self.stream_id, b"", True)
        finally:
            self.transport.flush()
            self.session.response_complete(self)

    async def _send_file(self, file: Any, offset: int, count: int, more_body: bool) -> int:
        """Frame ``count`` file bytes in the core, have the transport send them, then finish like a body (a
        last one announced trailers: the response waits for them, as after a last ``http.response.body``)."""
        transport = self.transport
        core = transport.core
        end = not more_body
        if end and self.trailers:
            end = False
            self.state = _TRAILERS
        try:
            to_send = core.send_file(self.stream_id, count, end)  # 0 for HEAD, 204, 304
        except AppProtocolError:  # past the declared Content-Length: as for a body, the head, then close
            if end:
                self.state = _DONE
                transport.flush()
                self.session.response_complete(self)
            raise
        if to_send:
            sent = await transport.send_file(file, offset, to_send)  # flushes the head first
            if sent != to_send:  # the file shrank after it was measured: the framing promised more
                raise AppProtocolError(f"the file ended after {sent} of {to_send} bytes")
        self.bytes_sent += count
        if end:
            self.state = _DONE
            try:
                core.file_sent(self.stream_id, to_send, True)
            finally:
                transport.flush()
                self.session.response_complete(self)
        else:
            core.file_sent(self.stream_id, to_send, False)
            transport.flush()
            if transport.write_paused:
                await transport.drain()
                if self.disconnected:
                    raise ClientDisconnected("client disconnected while the response was being sent")
        return to_send

    async def run(self) -> None:
        """Call the app and answer for whatever it leaves undone."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass  # raised by send() on purpose; not an error (ASGI www spec 2.4)
        except Exception as exc:
            self._app_failed(exc)
        except (
            BaseException
        ) as exc:  # cancellation at shutdown, never swallowed; a task group's errors with it
            failure, cancellation = split_cancellation(exc)
            if failure is not None:
                self._app_failed(failure)
            if self.state is not _DONE and not self.disconnected:
                self.transport.abort()
            self.session.cycle_finished(self)
            if cancellation is not None:
                raise cancellation  # noqa: B904  # passed on as it came, not chained to its own group
            return
        else:
            if self.state is _START and not self.disconnected:
                error_log.error("ASGI app returned without sending a response (%s)", self._describe())
                self._respond_500()
            elif self.state is not _DONE and not self.disconnected:
                if self.stopping:
                    await self._end_for_app()
                else:
                    error_log.error(
                        "ASGI app returned without completing the response (%s)", self._describe()
                    )
                    self.transport.abort()
        self.session.cycle_finished(self)

    async def _end_for_app(self) -> None:
        """The app returned after the shutdown notice without ending its body (sse-starlette does so on any
        ``http.disconnect``): everything it sent went out whole, so end the body as its ``more_body=False``
        would have (the chunked terminator, END_STREAM). A declared Content-Length not reached cannot be
        ended honestly: the core cuts the response instead (close, RST_STREAM)."""
        try:
            if self.state is _BODY:
                await self.send(_END_OF_BODY)
            if self.state is _TRAILERS:
                self._send_trailers(_NO_TRAILERS)
        except AppProtocolError as exc:
            error_log.info("Response cut at shutdown (%s): %s", self._describe(), exc)

    def _app_failed(self, exc: Exception) -> None:
        if self.disconnected:
            error_log.debug(
                "ASGI app raised after the client disconnected (%s)", self._describe(), exc_info=exc
            )
            return
        error_log.error("Exception in ASGI app (%s)", self._describe(), exc_info=exc)
        if self.state is _START:
            self._respond_500()
        elif self.state is not _DONE:
            self.transport.abort()  # headers are out: closing is the only honest signal left

    def _respond_500(self) -> None:
        body = b"Internal Server Error\n"
        core = self.transport.core
        self.status = 500
        self.state = _DONE
        self.bytes_sent = len(body)
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        core.send_response(self.stream_id, 500, headers)
        core.send_body(self.stream_id, body, True)
        self.transport.flush()
        self.session.response_complete(self)

    def _describe(self) -> str:
        scope = self.scope
        return f"{scope['method']} {scope['path']}"


def _takes_trailers(te: bytes) -> bool:
    """A TE field value lists the ``trailers`` token (RFC 9110 §10.1.4), not just a word containing it."""
    return any(item.split(b";", 1)[0].strip().lower() == b"trailers" for item in te.split(b","))


def _header_pairs(headers: Any, message_type: str) -> list[tuple[bytes, bytes]]:
    """Trailer and push header fields: names lowercased and checked as tokens (no pseudo-headers), values
    trimmed and checked for CR, LF and NUL, as for the response head."""
    try:
        return [(header_name(bytes(name)), checked_value(bytes(value))) for name, value in headers]
    except (TypeError, ValueError):
        raise AppProtocolError(
            f"{message_type} 'headers' must be an iterable of [bytes, bytes] pairs"
        ) from None
    except AppProtocolError as exc:
        raise AppProtocolError(f"{message_type}: {exc}") from None


def plain_response_app(status: int, text: str, headers: list[tuple[bytes, bytes]]) -> ASGIApp:
    """An app that answers every request with ``status`` and a line of text, then closes the connection."""
    body = f"{HTTPStatus(status).phrase}: {text}\n".encode()
    response_headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *headers,
    ]

    async def respond(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    return respond


# Stands in for the app when --limit-concurrency is reached.
service_unavailable = plain_response_app(
    503, "the server is at its concurrency limit", [(b"retry-after", b"1")]
)
