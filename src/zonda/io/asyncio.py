"""The asyncio driver (also uvloop's): ``asyncio.Protocol`` callbacks feeding a sans-io core and the bridge.

``data_received`` -> core -> bridge -> ``transport.write`` runs synchronously. Every app call is a real Task
from its first line; on Python 3.12+ its first step runs inside the callback (``eager_start``), so a request
whose app never waits is answered in the same read.
One timer per connection follows the core's ``deadline``, re-armed only when the deadline moves earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from zonda.asgi.http import ConnectionInfo, HTTPSession
from zonda.errors import ProtocolError, RequestTimeout
from zonda.io._sendfile import FileSending
from zonda.protocols.events import ConnectionTerminated, Event, HTTP2Preface, Request
from zonda.protocols.http1 import H1Connection, error_response
from zonda.tls import tls_extension

if TYPE_CHECKING:
    import ssl

    from zonda.server import ServerShared

error_log = logging.getLogger("zonda.error")


if sys.version_info >= (3, 12):

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[Any]]
    ) -> None:
        """Run ``coro`` as a Task whose first step runs now (``eager_start``); track it in ``tasks`` while it
        lives. The app sees a real task from its first line (``current_task()``, TaskGroup, ``asyncio.timeout``,
        anyio cancel scopes) in its own copy of the context, and a request whose app never waits is answered
        within the read that brought it."""
        task = asyncio.Task(coro, loop=loop, eager_start=True)
        if not task.done():
            tasks.add(task)
            task.add_done_callback(tasks.discard)

else:

    def start_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[Any]]
    ) -> None:
        """Run ``coro`` as a Task (its first step on the loop's next turn: no eager start before 3.12); track
        it in ``tasks`` while it lives."""
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class H1Protocol(FileSending, asyncio.Protocol):
    """One HTTP/1.1 connection: the transport side the bridge writes through."""

    protocol_label = "http1"  # zonda_connections_open{protocol}

    def __init__(self, shared: ServerShared, loop: asyncio.AbstractEventLoop) -> None:
        self.shared = shared
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        # HTTP/1.1 first; after a WebSocket upgrade, the frame core and the WebSocket cycle
        self.core: H1Connection | Any = None
        self.session: HTTPSession | Any = None
        self.write_paused = False
        self.reading_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        shared = self.shared
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        if shared.limit_connections and len(shared.connections) >= shared.limit_connections:
            error_log.warning("Connection refused: --limit-connections %d reached", shared.limit_connections)
            shared.stats_refused += 1
            refusal = ProtocolError("too many connections", status=503)
            self.transport.write(error_response(refusal, shared.defaults, b"retry-after: 1\r\n"))
            self.transport.close()
            self._closed = True
            return
        shared.connections.add(self)
        ssl_object = self._tls_info() if shared.ssl_context is not None else None
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            shared.connections.discard(self)
            self._switch_to_http2(b"", self._connection_info(self.transport, ssl_object))
            return
        self.core = H1Connection(shared.limits, shared.defaults, self.loop.time)
        self.session = HTTPSession(self, self._connection_info(self.transport, ssl_object), shared.context)
        self._offer_files(self.session.info)
        self._arm_if_earlier()

    def _tls_info(self) -> ssl.SSLObject | None:
        """This connection's TLS session, its handshake done (asyncio and uvloop call connection_made after it):
        the one place the driver reads it, for the scope's ``tls`` extension and the ALPN result."""
        ssl_object: ssl.SSLObject | None = self.transport.get_extra_info("ssl_object")
        return ssl_object

    def _connection_info(
        self, transport: asyncio.Transport, ssl_object: ssl.SSLObject | None = None
    ) -> ConnectionInfo:
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        if isinstance(sock, tuple):
            server: tuple[str, int | None] | None = (sock[0], sock[1])
        elif sock:
            server = (sock if isinstance(sock, str) else sock.decode(), None)
        else:
            server = None
        if ssl_object is None:
            return self._make_info(client, server, "http")
        info = self._make_info(client, server, "https")  # WebSocket scopes turn it into "wss"
        info.extensions["tls"] = tls_extension(ssl_object, self.shared.server_cert)  # never on plain HTTP
        return info

    def _make_info(
        self, client: tuple[str, int] | None, server: tuple[str, int | None] | None, scheme: str
    ) -> ConnectionInfo:
        info = ConnectionInfo(client, server, scheme, self.shared.context.root_path)
        proxy = self.shared.proxy
        if proxy is not None:  # the peer is judged once, here: trusted or not (zonda.proxy)
            info.rewrite = proxy.rewriter(client[0] if client else None)
        return info

    def data_received(self, data: bytes) -> None:
        events = self.core.receive_data(data)
        if events and self.session.handle_events(events):
            self._terminated(events)
        self._arm_if_earlier()

    def eof_received(self) -> bool | None:
        # A peer's EOF is taken as a disconnect (as uvicorn does): a half-closed client cannot be told apart
        # from a gone one, and apps waiting on receive() need their http.disconnect promptly.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_file_send()
        self.shared.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.session is not None:
            self.session.connection_lost()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------ the bridge's transport

    def flush(self) -> None:
        core = self.core
        data = core.data_to_send()
        if data and not self._closed:
            self.transport.write(data)
            if self.transport.is_closing() and not core.closing:
                # The write failed (peer gone): make send() wait for connection_lost, then raise.
                self.write_paused = True
        if core.closing:
            self._close()

    def drain(self) -> asyncio.Future[None]:
        waiter = self.loop.create_future()
        if self._closed or not self.write_paused:
            waiter.set_result(None)
        else:
            self._drain_waiters.append(waiter)
        return waiter

    def create_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    def time(self) -> float:
        return self.loop.time()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        start_task(self.loop, coro, self.shared.tasks)

    def pause_reading(self) -> None:
        if not self.reading_paused and not self._closed:
            self.reading_paused = True
            self.transport.pause_reading()
            self.core.set_reading_paused(True)

    def resume_reading(self) -> None:
        if self.reading_paused and not self._closed:
            self.reading_paused = False
            self.transport.resume_reading()
            self.core.set_reading_paused(False)
            self._arm_if_earlier()

    def response_complete(self) -> None:
        core = self.core
        if core.closing or self._closed:
            return
        if core.has_held_data:
            self.data_received(b"")
            return
        deadline = core.deadline
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._arm_if_earlier()

    def abort(self) -> None:
        self._closed = True
        self.transport.abort()

    def _switch_to_http2(self, data: bytes, info: ConnectionInfo | None = None) -> None:
        """ALPN chose h2, or the client opened with the HTTP/2 preface: an ``H2Protocol`` takes the transport."""
        from zonda.io.asyncio_http2 import H2Protocol

        self._hand_over()
        h2 = H2Protocol(self.shared, self.loop, self.transport, info or self.session.info)
        h2.start(data)

    def upgrade_h2c(self, request: Request) -> None:
        """Answer an ``Upgrade: h2c`` request with 101 and serve it, and the connection, over HTTP/2."""
        from zonda.io.asyncio_http2 import H2Protocol
        from zonda.protocols.http2 import h2c_upgrade

        try:
            body_length, settings = h2c_upgrade(request)
        except ProtocolError as refusal:
            self.transport.write(error_response(refusal, self.shared.defaults))
            self._close()
            return
        held = self.core.accept_upgrade(
            request.stream_id, [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]
        )
        self.flush()
        self._hand_over()
        h2 = H2Protocol(self.shared, self.loop, self.transport, self.session.info)
        with contextlib.suppress(ProtocolError):  # bad settings: the client's SETTINGS frame follows anyway
            h2.core.apply_http2_settings(settings)
        h2.flush()  # our SETTINGS, the first HTTP/2 frame after 101 (RFC 7540 §3.2)
        h2.start_upgraded(request, body_length, held)

    def _hand_over(self) -> None:
        """This protocol object leaves the connection to another: unregister it and stop its timer."""
        self.shared.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True  # nothing more goes through this object

    def upgrade(self, stream_id: int, headers: Any, core: Any, handler: Any) -> None:
        """Answer the upgrade request with 101; from now on ``core`` parses and ``handler`` gets its events."""
        held = self.core.accept_upgrade(stream_id, headers)
        self.flush()
        self.core = core
        self.session = handler
        if self.reading_paused:  # paused for pipelining, which is over: the new protocol reads from here
            self.reading_paused = False
            self.transport.resume_reading()
        if held:
            self.data_received(held)
        else:
            self._arm_if_earlier()

    # ------------------------------------------------------------ shutdown and time

    def shutdown(self) -> None:
        """Graceful shutdown: finish what was received, then close."""
        if not self._closed:
            self.core.finish_and_close()
            self.flush()
            self._arm_if_earlier()  # e.g. the deadline for a WebSocket peer's answer to Going Away

    def stop_streaming(self) -> int:
        """Later in a graceful shutdown (``--shutdown-stream-notice``): ``http.disconnect`` to the responses
        still streaming with their request read whole, so their apps end them cleanly; returns how many."""
        session = self.session
        if self._closed or not isinstance(session, HTTPSession):  # e.g. a WebSocket: it had Going Away
            return 0
        return session.stop_streaming()

    def rearm(self) -> None:
        """The core's deadline moved earlier outside a read or a timer (a close frame sent): arm for it."""
        self._arm_if_earlier()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def _terminated(self, events: list[Event]) -> None:
        if type(events[0]) is HTTP2Preface:
            self._switch_to_http2(events[0].data)
            return
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated)
        error = terminated.error
        if error is not None:
            rejections = self.shared.rejections
            name = type(error).__name__
            rejections[name] = rejections.get(name, 0) + 1
            level = logging.INFO if isinstance(error, RequestTimeout) else logging.WARNING
            client = self.session.info.client
            error_log.log(
                level,
                "%d response to %s: %s",
                error.status,
                f"{client[0]}:{client[1]}" if client else "client",
                error.detail,
            )
        self.flush()

    def _arm_if_earlier(self) -> None:
        deadline = self.core.deadline
        if (
            deadline is not None
            and (self._timer_at is None or deadline < self._timer_at)
            and not self._closed
        ):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        events = self.core.handle_timer(self.loop.time())
        if events and self.session.handle_events(events):
            self._terminated(events)
        self._arm_if_earlier()
