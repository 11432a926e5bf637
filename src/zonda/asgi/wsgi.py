"""WSGI (PEP 3333) apps served natively: an ASGI 3 app that runs a WSGI callable in a bounded thread pool.

``WSGIAdapter.__call__`` runs on the event loop. Per request it queues one job for the process's ``JobPool``
of ``--wsgi-threads`` threads (requests beyond them wait in its queue, and the loop never blocks) and then
pumps a ``Channel``, a small mailbox shared with the app thread:

- thread -> loop: ``http.response.start``, body chunks, ``http.response.zerocopysend``, "more request body
  please", the end of the body and the end of the job (with the app's exception, if any); or, for the usual
  ``[body]`` result, the whole response and the end of the job as one ``(start, body)`` item;
- loop -> thread: one ``http.request`` message each time the thread asked for one.

Invariants:

- The loop only awaits futures that app threads resolve with ``loop.call_soon_threadsafe`` (one call per
  burst, through ``Waker``); app threads block on plain locks. Neither side holds a lock while it waits.
- At most ``HIGH_WATER`` bytes of response body (plus the one chunk being handed over) sit in the channel.
  Above that the app thread blocks until the loop has passed the bytes to ``send()``, which itself waits while
  the transport's writes are paused: a slow client slows the app thread, and memory stays bounded.
- ``wsgi.input`` asks the loop for the next body message only when the app reads past what it holds, so the
  request body streams through one message at a time (never whole), ``Expect: 100-continue`` is answered
  only when the app reads, and the server's body size limit and stall timeout apply as for an ASGI app.
- Headers go out with the first non-empty body chunk (or the end of the iterable), per PEP 3333: an exception
  before that becomes a 500 (the bridge logs it once and closes the connection); after it, the connection is
  aborted. The iterable's ``close()`` is always called, in the app thread, also when the client went away.
- Once the client is gone (or the pump stops), the channel is closed: the app thread's next ``write()``,
  yielded chunk or ``wsgi.input`` read raises ``ClientDisconnected`` (an ``OSError``), so the app unwinds.

The loop is the server's ``io.base.Loop`` (``current_loop``), so the adapter runs on any driver.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from zonda.asgi._wsgi_threads import (
    BODY_END,
    NO_BODY,
    ZEROCOPY,
    Channel,
    ContextJobPool,
    JobPool,
    Waker,
    WSGIInput,
)
from zonda.asgi.types import Message, Receive, Scope, Send
from zonda.errors import AppProtocolError
from zonda.io import running
from zonda.io.base import current_loop

error_log = logging.getLogger("zonda.error")

WSGIApp = Callable[[dict[str, Any], Callable[..., Callable[[bytes], None]]], Iterable[bytes]]

DEFAULT_THREADS = 16
"""Default ``--wsgi-threads``: WSGI apps mostly wait on databases and other services, so a pool wider than the
CPU count keeps the process busy; 16 matches what common WSGI servers use (mod_wsgi 15, uvicorn 10) while
bounding the memory and GIL contention of idle threads. Raise it for apps that wait a lot."""

FILE_BLOCK = 256 * 1024  # read size for wsgi.file_wrapper when the server cannot send the file itself

# RFC 9110 §7.6.1 / PEP 3333: hop-by-hop headers belong to the server, never to the app
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CACHE_LIMIT = 4096
_PAIR_VALUE_LIMIT = 256  # longer header values (cookies, say) are rarely repeated: not worth caching
_CONTENT_LENGTH = b"content-length"  # the one object _header_name gives for it: checked with ``is``
_status_codes: dict[str, int] = {}  # status line -> checked code
_header_names: dict[str, bytes] = {}  # response header name -> checked, lowercased bytes
_header_pairs: dict[tuple[str, str], tuple[bytes, bytes]] = {}  # (name, value) -> checked and encoded
_environ_keys: dict[bytes, str] = {}  # request header name -> environ key ("" to drop it)


class ErrorStream:
    """``wsgi.errors``: each write is logged as one record on ``zonda.error`` (a trailing newline dropped)."""

    def write(self, text: str) -> int:
        message = text.rstrip("\r\n")
        if message:
            error_log.error("%s", message)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


ERRORS = ErrorStream()


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file-like object from its current position.

    When zonda sees this object come back from the app, it sends the file itself: with the
    ``http.response.zerocopysend`` extension (``os.sendfile``) when the server offers it and the object is a
    regular file, else in ``FILE_BLOCK`` reads in the app thread. ``close()`` closes the file-like object.
    """

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            chunk = read(self.block_size)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _file_span(filelike: Any) -> tuple[int, int] | None:
    """(offset, bytes left) for a regular file that ``os.sendfile`` can send; None otherwise."""
    try:
        info = os.fstat(filelike.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        offset = filelike.tell()
    except (AttributeError, OSError, ValueError):
        return None
    return offset, max(0, info.st_size - offset)


# ---------------------------------------------------------------------------------------------- responses


def _check_status(status: Any) -> int:
    code = _status_codes.get(status)
    if code is not None:
        return code
    if type(status) is not str or len(status) < 3 or not status[:3].isdigit() or status[3:4] not in ("", " "):
        raise AppProtocolError(f"start_response: status must be a str like '200 OK', got {status!r}")
    try:
        status.encode("latin-1")
    except UnicodeEncodeError:
        raise AppProtocolError(f"start_response: status {status!r} is not latin-1") from None
    code = int(status[:3])
    if code < 100:
        raise AppProtocolError(f"start_response: invalid status {status!r}")
    if len(_status_codes) < _CACHE_LIMIT:
        _status_codes[status] = code
    return code


def _header_name(name: Any) -> bytes:
    if type(name) is not str or not name or not all(c in _TOKEN for c in name):
        raise AppProtocolError(f"start_response: header name {name!r} is not a token (RFC 9110 §5.1)")
    lowered = name.lower()
    if lowered in HOP_BY_HOP:
        raise AppProtocolError(f"start_response: hop-by-hop header {name!r} is not allowed (PEP 3333)")
    encoded = _CONTENT_LENGTH if lowered == "content-length" else lowered.encode("ascii")
    if len(_header_names) < _CACHE_LIMIT:
        _header_names[name] = encoded
    return encoded


def _encode_headers(headers: Any) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """Check and encode start_response headers; return them and the Content-Length, if any.

    A (name, value) pair checked once is remembered (up to ``_CACHE_LIMIT`` pairs with short values): apps send
    the same few headers over and over, and the per-character checks cost more than the lookup.
    """
    encoded = []
    length = None
    pairs = _header_pairs
    try:
        for pair in headers:
            try:
                encoded_pair = pairs.get(pair)
            except TypeError:  # a list, say: not a key, but still a pair
                encoded_pair = None
            if encoded_pair is None:
                encoded_pair = _encode_header(pair)
            if encoded_pair[0] is _CONTENT_LENGTH:
                length = int(encoded_pair[1])
            encoded.append(encoded_pair)
    except UnicodeEncodeError as exc:
        raise AppProtocolError(f"start_response: a header value is not latin-1 ({exc})") from None
    except (TypeError, ValueError) as exc:
        raise AppProtocolError(
            f"start_response: headers must be a list of (str, str) tuples ({exc})"
        ) from None
    return encoded, length


def _encode_header(pair: Any) -> tuple[bytes, bytes]:
    name, value = pair
    key = _header_names.get(name) or _header_name(name)
    if type(value) is not str:
        raise AppProtocolError(f"start_response: header {name!r} value must be a str, got {value!r}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise AppProtocolError(f"start_response: header {name!r} value contains CR, LF or NUL")
    raw = value.encode("latin-1")
    if key is _CONTENT_LENGTH:
        raw = raw.strip()
        if not raw.isdigit():
            raise AppProtocolError(f"start_response: invalid Content-Length {value!r}")
    encoded = (key, raw)
    if len(value) <= _PAIR_VALUE_LIMIT and len(_header_pairs) < _CACHE_LIMIT and type(pair) is tuple:
        _header_pairs[pair] = encoded
    return encoded


def _as_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a WSGI app must yield bytes, not {type(chunk).__name__} (PEP 3333)")


class _Responder:
    """The app thread's side of one response: ``start_response``, ``write`` and iterating the result.

    Items wait in ``outbox`` and go to the channel in one ``put`` before anything that may block: after each
    chunk of a lazy iterable, but only once for a list (already in memory: nothing to wait for).
    """

    __slots__ = ("channel", "content_length", "done", "head", "headers_sent", "outbox", "outbox_size", "sent",
                 "start", "zerocopy", "zerocopy_sent")  # fmt: skip

    def __init__(self, channel: Channel, head: bool, zerocopy: bool) -> None:
        self.channel = channel
        self.head = head
        self.zerocopy = zerocopy
        self.zerocopy_sent = False
        self.start: Message | None = None
        self.headers_sent = False
        self.content_length: int | None = None
        self.sent = 0
        self.done = False  # no more body goes out (HEAD, or Content-Length reached)
        self.outbox: list[Any] = []
        self.outbox_size = 0

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change them
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.start is not None:
            raise AppProtocolError("start_response() was called a second time without exc_info (PEP 3333)")
        code = _check_status(status)
        encoded, self.content_length = _encode_headers(headers)
        self.start = {"type": "http.response.start", "status": code, "headers": encoded}
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: queued for sending before it returns."""
        if self.start is None:
            raise AppProtocolError("write() was called before start_response()")
        if type(data) is not bytes:
            data = _as_bytes(data)
        length = self.content_length
        if length is not None and self.sent + len(data) > length:
            raise AppProtocolError(f"write() past the declared Content-Length ({length})")
        if data:
            self._add(data)
            self.flush()

    def _add_headers(self) -> None:
        if self.start is None:
            raise AppProtocolError("the WSGI app returned without calling start_response()")
        self.headers_sent = True
        self.outbox.append(self.start)
        if self.head:
            self.done = True

    def _add(self, data: bytes) -> None:
        """Queue a non-empty chunk (after the headers, if they are not out yet)."""
        if not self.headers_sent:
            self._add_headers()
        if self.done:
            return
        length = self.content_length
        if length is not None and self.sent + len(data) >= length:
            self.done = True  # PEP 3333: stop iterating once Content-Length bytes are out
            if self.sent + len(data) > length:
                error_log.warning(
                    "WSGI app gave more than its Content-Length (%d); the rest is dropped", length
                )
                data = data[: length - self.sent]
        self.sent += len(data)
        self.outbox.append(data)
        self.outbox_size += len(data)

    def flush(self) -> None:
        if self.outbox:
            items, size = self.outbox, self.outbox_size
            self.outbox = []
            self.outbox_size = 0
            self.channel.put(items, size)

    def whole(self, body: Any) -> tuple[Message, bytes] | None:
        """``[body]``, with nothing written before: ``(start message, body)`` for a response with a body to
        send, handed over as one item; else (HEAD, empty, cut to nothing by Content-Length) queue the head."""
        start = self.start
        if start is None:
            raise AppProtocolError("the WSGI app returned without calling start_response()")
        if type(body) is not bytes:
            body = _as_bytes(body)
        self.headers_sent = True
        if body and not self.head:
            length = self.content_length
            if length is not None and len(body) > length:
                error_log.warning(
                    "WSGI app gave more than its Content-Length (%d); the rest is dropped", length
                )
                body = body[:length]
            if body:
                return start, body
        self.outbox += (start, BODY_END)
        return None

    def stream(self, result: Iterable[bytes]) -> None:
        """Send the response body from the app's iterable; the caller closes it."""
        kind = type(result)
        if kind is list or kind is tuple:
            for chunk in result:
                if chunk:
                    self._add(chunk if type(chunk) is bytes else _as_bytes(chunk))
                    if self.done:
                        break
                elif type(chunk) is not bytes:
                    _as_bytes(chunk)
        elif kind is FileWrapper:
            self._send_file(result)  # type: ignore[arg-type]
        elif isinstance(result, bytes | str):
            raise TypeError("a WSGI app must return an iterable of bytes, not a bare bytes or str (PEP 3333)")
        else:
            for chunk in result:
                if chunk:
                    self._add(chunk if type(chunk) is bytes else _as_bytes(chunk))
                    self.flush()
                    if self.done:
                        break
                elif type(chunk) is not bytes:
                    _as_bytes(chunk)
        if not self.headers_sent:
            self._add_headers()
        self.outbox.append(BODY_END)  # the caller flushes it, alone or with the end of the job

    def _send_file(self, wrapper: FileWrapper) -> None:
        filelike = wrapper.filelike
        span = _file_span(filelike) if self.zerocopy and not self.head and self.start is not None else None
        if span is not None:
            offset, count = span
            if self.content_length is not None:
                count = min(count, self.content_length - self.sent)
            if not self.headers_sent:
                self._add_headers()
            if count > 0:
                self.sent += count
                self.zerocopy_sent = True
                self.outbox.append(
                    {"type": ZEROCOPY, "file": filelike, "offset": offset, "count": count, "more_body": True}
                )
            self.done = True
            return
        read = filelike.read
        block = max(wrapper.block_size, FILE_BLOCK)
        while not self.done:
            chunk = read(block)
            if not chunk:
                break
            self._add(chunk if type(chunk) is bytes else _as_bytes(chunk))
            self.flush()


# ---------------------------------------------------------------------------------------------- environ


def _environ_key(name: bytes) -> str:
    text = name.decode("latin-1")
    if "_" in text:
        key = ""  # dropped: HTTP_X_FOO must not be spoofable by sending X_Foo next to a proxy's X-Foo
    elif text == "content-type":
        key = "CONTENT_TYPE"
    elif text == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + text.upper().replace("-", "_")
    if len(_environ_keys) < _CACHE_LIMIT:
        _environ_keys[name] = key
    return key


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    default = "443" if scheme == "https" else "80"
    if host.startswith("["):  # an IPv6 literal
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else default
    name, _, port = host.partition(":")
    return name, port or default


_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2", "3": "HTTP/3"}


def build_environ(scope: Scope, wsgi_input: Any, multithread: bool, multiprocess: bool) -> dict[str, Any]:
    """The PEP 3333 environ for an ASGI ``http`` scope. Native strings are latin-1 decoded bytes."""
    root_path: str = scope.get("root_path", "")
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path is None:
        raw_path = scope["path"].encode("utf-8")
    script_name = ""
    if root_path:
        root = root_path.encode("utf-8")
        if raw_path.startswith(root):
            raw_path = raw_path[len(root) :]
        script_name = root.decode("latin-1")
    scheme = scope.get("scheme", "http")
    version = scope.get("http_version", "1.1")
    # One dict display (not a copy and a dozen stores): this runs for every request.
    environ = {
        "wsgi.version": (1, 0),
        "wsgi.errors": ERRORS,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_PROTOCOL": _PROTOCOLS.get(version) or "HTTP/" + version,
        "wsgi.url_scheme": scheme,
        "wsgi.input": wsgi_input,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
    }
    keys = _environ_keys
    for name, value in scope["headers"]:
        key = keys.get(name)
        if key is None:
            key = _environ_key(name)
        if key:
            if key in environ:  # RFC 9110 §5.3; cookies are joined with "; " (RFC 6265 §5.4)
                separator = "; " if key == "HTTP_COOKIE" else ", "
                environ[key] = environ[key] + separator + value.decode("latin-1")
            else:
                environ[key] = value.decode("latin-1")
    server = scope.get("server")
    if server and server[1] is not None:
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])
    else:  # a unix socket: the Host header is all there is
        environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(
            environ.get("HTTP_HOST", "localhost"), scheme
        )
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    return environ


# ---------------------------------------------------------------------------------------------- the adapter


class WSGIAdapter:
    """Serves a PEP 3333 callable as an ASGI 3 app, in a thread pool of ``threads`` workers per process.

    It also answers the ASGI lifespan protocol: startup creates the pool, shutdown stops it.
    """

    def __init__(self, app: WSGIApp, threads: int = DEFAULT_THREADS, *, multiprocess: bool = False) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.app = app
        self.threads = threads
        self.multiprocess = multiprocess
        self.pool = JobPool(threads, self._run)
        self._waker: Waker | None = None

    def shutdown(self, wait: bool = False) -> None:
        """Stop the pool's threads once the requests already queued are done."""
        self.pool.shutdown(wait)

    def carry_context(self) -> None:
        """Run each request in its task's context (``contextvars``), as ``--otel`` needs for the span to be
        current in the app's thread; chosen at start-up, so that without it nothing is copied per request."""
        if not isinstance(self.pool, ContextJobPool):
            self.pool.shutdown()
            self.pool = ContextJobPool(self.threads, self._run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            await self._not_http(kind, receive, send)
            return
        has_body = expect = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                has_body = bool(value.strip().lstrip(b"0"))
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"expect":
                expect = True
        first = None
        if has_body and not expect:  # the first body bytes usually came with the head: no thread hop for them
            first = await receive()
            if first["type"] != "http.request":
                return
        try:
            loop = current_loop.get()
        except LookupError:  # called outside a zonda server: whatever loop runs this
            loop = running().loop
            current_loop.set(loop)
        waker = self._waker
        if waker is None or waker.loop is not loop:
            waker = self._waker = Waker(loop)
        channel = Channel(waker)
        self.pool.submit(loop, scope, channel, has_body, first)
        await channel.pump(receive, send)

    def _run(self, scope: Scope, channel: Channel, has_body: bool, first: Message | None) -> None:
        """The app thread's whole job for one request. Never raises: the outcome goes to the channel."""
        if channel.closed:  # the client left while the request waited for a thread
            channel.finish(None)
            return
        try:
            wsgi_input = WSGIInput(channel, first) if has_body else NO_BODY
            extensions = scope.get("extensions")
            responder = _Responder(
                channel, scope["method"] == "HEAD", extensions is not None and ZEROCOPY in extensions
            )
            environ = build_environ(scope, wsgi_input, self.threads > 1, self.multiprocess)
            result = self.app(environ, responder.start_response)
            if type(result) is list and len(result) == 1 and not responder.headers_sent:
                whole = responder.whole(result[0])  # the usual result: one chunk, nothing written, no close()
                if whole is not None:
                    channel.finish_whole(whole)
                    return
            else:
                close = getattr(result, "close", None)
                try:
                    responder.stream(result)
                    if close is not None or responder.zerocopy_sent:
                        responder.flush()  # the response is complete before close() runs
                        if responder.zerocopy_sent:
                            channel.drain()  # the file must stay open until the server has sent it
                finally:
                    if close is not None:
                        close()
        except BaseException as exc:
            channel.finish(exc)
        else:
            channel.finish(None, responder.outbox, responder.outbox_size)  # one hand-over for a list

    async def _not_http(self, kind: str, receive: Receive, send: Send) -> None:
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    error_log.info("Serving a WSGI app in up to %d threads per process.", self.threads)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})  # refused: WSGI has no WebSocket
        else:
            raise AppProtocolError(f"a WSGI app cannot serve {kind!r} scopes")
