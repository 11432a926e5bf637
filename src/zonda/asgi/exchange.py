"""The synchronous half of an HTTP request's run: its scope, the core's events, the app's messages checked and framed.

``HTTPExchange`` holds one request and its response and does everything about them that does not wait: it
buffers the body the core delivers, turns it into ``http.request`` messages, checks each message the app sends
and has the core frame it. ``HTTPCycle`` (``zonda.asgi.http``) derives from it and adds the coroutines the app
sees (``receive``, ``send``, the ``run`` that calls the app), which await only when this half says so: no body
yet, a transport that wants draining, a file to send.

The split is for the compiled build (``zonda._compiled``): this module is compiled, ``zonda.asgi.http`` is not,
because mypyc's ``await`` passes an exception thrown into a coroutine on with the three-argument ``throw()``
that CPython 3.12 deprecates (an app cancelled in ``receive()`` would see a DeprecationWarning). So nothing here
awaits, and the app's await chain stays CPython's own. Functions that take what the app sent take ``Any`` and
check it themselves, as compiled code checks annotations on entry and would refuse what the source accepts.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote_to_bytes

from zonda._compiled import mypyc_attr
from zonda.asgi._files import PATHSEND, ZEROCOPYSEND
from zonda.asgi.types import ASGIApp, Message, Scope
from zonda.errors import AppProtocolError, ClientDisconnected, caused_by
from zonda.protocols.events import Request
from zonda.protocols.fields import checked_value, header_name, trailer_fields

if TYPE_CHECKING:
    from zonda.asgi.seams import ConnectionInfo, Transport
    from zonda.asgi.session import HTTPSession

error_log: Final = logging.getLogger("zonda.error")

ASGI_VERSION: Final = {"version": "3.0", "spec_version": "2.5"}
HIGH_WATER: Final = 65536  # unread request body per stream above which reading pauses
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}

# What ``respond()`` leaves to the coroutine that called it (``HTTPCycle.send``).
SENT: Final = 0  # nothing: the message is framed and flushed
DRAIN: Final = 1  # the transport's buffer is full: wait until it drains
SEND_FILE: Final = 2  # an offered file-sending extension (zerocopysend, pathsend): the driver sends the file


class CycleState(enum.Enum):
    START = "expecting http.response.start"
    BODY = "expecting http.response.body"
    TRAILERS = "expecting http.response.trailers"
    DONE = "response complete"


_START: Final = CycleState.START
_BODY: Final = CycleState.BODY
_DONE: Final = CycleState.DONE
_TRAILERS: Final = CycleState.TRAILERS
TRAILERS: Final = "http.response.trailers"
PUSH: Final = "http.response.push"
EARLY_HINT: Final = "http.response.early_hint"
_METHODS: Final = {
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


@mypyc_attr(allow_interpreted_subclasses=True)  # HTTPCycle and zonda.otel's TracedHTTPCycle
class HTTPExchange:
    """One request and its response, without the waiting: ``HTTPCycle`` is what runs."""

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
        self.transport: Transport = (
            session.transport if channels is None else channels.channel(request.stream_id)
        )
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
        self._waiter: Any = None  # what receive() awaits while no body is buffered

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
        self._wake()

    def on_disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def stop_streaming(self) -> bool:
        """Shutdown's notice to a response that is streaming with its request read whole: ``receive()`` says
        ``http.disconnect`` (at once if the app waits in it; after any body not yet read), while ``send()`` still
        works, so the app can end its body cleanly before the hard close. A request body still arriving, a
        response not started or already sent: no notice. Returns whether this call gave it."""
        if self.state is not _BODY or self._more_body or self.disconnected or self.stopping:
            return False
        self.stopping = True
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------ the app's side, the part that does not wait

    def next_message(self) -> Message | None:
        """What ``receive()`` returns now, or None if it has to wait for the client."""
        if self._continue_pending:
            self._continue_pending = False
            if not self.disconnected and self.state is _START:
                self.transport.core.send_continue(self.stream_id)
                self.transport.flush()
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
        return None

    def respond(self, message: Any) -> int:
        """Check one message the app sent and have the core frame it: ``SENT``, or what the caller must wait
        for (``DRAIN``, ``SEND_FILE``)."""
        if self.disconnected:
            raise ClientDisconnected(f"client disconnected before {message.get('type')!r} could be sent")
        try:
            message_type = message["type"]
        except (KeyError, TypeError):
            raise caused_by(
                AppProtocolError(f"ASGI message must be a dict with a 'type' key, got {message!r}"), None
            )
        state = self.state
        if state is _BODY:
            if message_type != "http.response.body":
                return self._respond_extension(message_type, message)
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
                    return DRAIN
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
                    return SENT
                if message_type == PUSH and PUSH in self.session.info.extensions:
                    # Before the head too: Starlette's send_push_promise() comes first, and RFC 9113 §8.4 wants
                    # the promise ahead of the response that refers to the pushed resource.
                    self._push(message)
                    return SENT
                raise AppProtocolError(f"Expected 'http.response.start', got {message_type!r}")
            status = message.get("status")
            if type(status) is not int:
                raise AppProtocolError(f"http.response.start 'status' must be an int, got {status!r}")
            headers = message.get("headers", ())
            self.transport.core.send_response(self.stream_id, status, headers)
            self.response_headers: Any = headers  # for the access log; unset (not read) when no app response
            self.status = status
            self.state = _BODY
            if "trailers" in message and message["trailers"] and TRAILERS in self.session.info.extensions:
                self.trailers = True
                self._trailer_fields: list[tuple[bytes, bytes]] = []
        elif state is _TRAILERS and message_type == TRAILERS:
            self.send_trailers(message)
        else:
            raise AppProtocolError(
                f"Unexpected {message_type!r}: the response is already complete "
                "(http.response.body with more_body=False ends it)"
            )
        return SENT

    def _respond_extension(self, message_type: Any, message: Any) -> int:
        """A response message other than ``http.response.body``: the extensions, if offered."""
        offered = self.session.info.extensions
        if message_type == ZEROCOPYSEND and ZEROCOPYSEND in offered:
            return SEND_FILE
        if message_type == PUSH and PUSH in offered:
            self._push(message)
        elif message_type == EARLY_HINT and EARLY_HINT in offered:
            self._send_early_hint(message)
        elif message_type == PATHSEND and PATHSEND in offered:
            if self.bytes_sent:
                raise AppProtocolError(
                    f"Expected no body before {PATHSEND}, got {self.bytes_sent} bytes of http.response.body"
                )
            return SEND_FILE
        else:
            hint = " (not offered on this connection)" if message_type in (ZEROCOPYSEND, PATHSEND) else ""
            raise AppProtocolError(f"Expected 'http.response.body', got {message_type!r}{hint}")
        return SENT

    def _send_early_hint(self, message: Any) -> None:
        """A 103 Early Hints (RFC 8297) before the final head; the core drops it once that head has gone out
        (a 1xx cannot follow it), or for an HTTP/1.0 client (RFC 9110 §15.2)."""
        links = message.get("links", ())
        try:
            links = [checked_value(bytes(link)) for link in links]
        except TypeError:
            raise caused_by(
                AppProtocolError("http.response.early_hint 'links' must be an iterable of bytes"), None
            )
        except AppProtocolError as exc:
            raise caused_by(AppProtocolError(f"{EARLY_HINT}: {exc}"), None)
        self.transport.core.send_early_hint(self.stream_id, links)
        self.transport.flush()

    def _push(self, message: Any) -> None:
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

    def send_trailers(self, message: Any) -> None:
        """``http.response.trailers``: checked whole here, before the response counts as complete (a field the
        core refused then would leave the response neither ended nor cut)."""
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

    # ------------------------------------------------------ how the app's call ended

    def run(self) -> Coroutine[Any, Any, None]:
        """Call the app: ``HTTPCycle.run``, a coroutine, so not this half's."""
        raise NotImplementedError

    def app_returned(self) -> bool:
        """The app returned: answer for what it left undone. True if the caller is to end the body for it (it
        returned after the shutdown notice with the body open: ``HTTPCycle.run``)."""
        if self.disconnected or self.state is _DONE:
            return False
        if self.state is _START:
            error_log.error("ASGI app returned without sending a response (%s)", self._describe())
            self._respond_500()
            return False
        if self.stopping:
            return True
        error_log.error("ASGI app returned without completing the response (%s)", self._describe())
        self.transport.abort()
        return False

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

    def abort_unfinished(self) -> None:
        """The app was cancelled: a response it began and did not end is cut (the connection closes)."""
        if self.state is not _DONE and not self.disconnected:
            self.transport.abort()

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
        raise caused_by(
            AppProtocolError(f"{message_type} 'headers' must be an iterable of [bytes, bytes] pairs"), None
        )
    except AppProtocolError as exc:
        raise caused_by(AppProtocolError(f"{message_type}: {exc}"), None)
