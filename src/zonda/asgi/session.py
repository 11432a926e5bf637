"""One connection's requests: ``HTTPSession`` turns a core's stream events into cycles and runs the app for each.

A request becomes an ``HTTPCycle`` (``zonda.asgi.http``), a ``WebSocketCycle`` (``zonda.asgi.websocket``) or an
``H2CUpgrade``; their apps run one at a time in request order when the core is sequential (HTTP/1.1: pipelined
requests wait their turn with reading paused), or concurrently (HTTP/2 and HTTP/3 streams). ``SessionContext``
is what every session of a server reads, built once at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from zonda.accesslog import log_default
from zonda.asgi.exchange import HTTPExchange, build_scope
from zonda.asgi.http import HTTPCycle, plain_response_app, service_unavailable
from zonda.asgi.seams import ConnectionInfo, Cycle, StreamChannels, Transport, UpgradableConnection
from zonda.asgi.types import ASGIApp, Scope
from zonda.errors import AppProtocolError, ProtocolError
from zonda.logging import describe_peer
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.rejection_log import RejectionLog

if TYPE_CHECKING:
    from zonda.asgi.websocket import WebSocketCycle
    from zonda.otel.spans import Tracing
    from zonda.protocols.websocket import WSSettings

error_log: Final = logging.getLogger("zonda.error")


class SessionContext:
    """Server-wide, per-app settings every session reads: built once at start-up."""

    __slots__ = (
        "access_log",
        "app",
        "h2c",
        "http_cycle",
        "limit_concurrency",
        "on_response",
        "rejection_log",
        "root_path",
        "state",
        "stats",
        "tracing",
        "websocket_cycle",
        "ws",
    )

    def __init__(
        self,
        app: ASGIApp,
        state: dict[str, Any],
        root_path: str = "",
        access_log: bool = True,
        limit_concurrency: int | None = None,
        ws: WSSettings | None = None,
        on_response: Callable[[Any], None] | None = None,
    ) -> None:
        self.app = app
        self.ws = ws  # None: WebSocket is off, upgrade requests are plain HTTP
        self.state = state
        self.root_path = root_path
        self.access_log = access_log  # the per-response hook runs (access log and/or metrics)
        self.on_response = on_response or log_default
        self.limit_concurrency = limit_concurrency
        self.stats = ServerStats()
        self.h2c = False  # answer `Upgrade: h2c` requests by switching to HTTP/2 (the server sets it)
        self.rejection_log = RejectionLog()  # lines about rejected clients, rate-limited per cause
        # The classes a request becomes, chosen once: --otel (zonda.otel.install) swaps in traced subclasses,
        # so a server without it has no tracing branch per request.
        self.http_cycle: type[HTTPCycle] = HTTPCycle
        self.websocket_cycle: type[WebSocketCycle] | None = None  # None: zonda.asgi.websocket's own
        self.tracing: Tracing | None = None  # --otel: the tracer and its settings, for the traced cycles


class ServerStats:
    __slots__ = (
        "active_requests",
        "rejected_concurrency",
        "total_requests",
        "ws_messages_in",
        "ws_messages_out",
    )

    def __init__(self) -> None:
        self.active_requests = 0
        self.total_requests = 0
        self.rejected_concurrency = 0
        self.ws_messages_in = 0
        self.ws_messages_out = 0


class HTTPSession:
    """All the cycles of one connection, fed by its core's events."""

    __slots__ = (
        "_queue",
        "_start_again",
        "_starting",
        "channels",
        "context",
        "current",
        "cycles",
        "info",
        "sequential",
        "transport",
        "upgrades",
    )

    def __init__(
        self,
        transport: Transport,
        info: ConnectionInfo,
        context: SessionContext,
        upgrades: UpgradableConnection | None = None,
        channels: StreamChannels | None = None,
    ) -> None:
        """``upgrades``: the HTTP/1.1 connection (WebSocket and h2c upgrades go through it); ``channels``: the
        multiplexed connection whose streams each get their own transport (flow control, resets)."""
        self.transport = transport
        self.info = info
        self.context = context
        self.upgrades = upgrades
        self.channels = channels
        self.sequential = channels is None
        self.cycles: dict[int, Cycle] = {}
        self.current: Cycle | None = None  # the cycle whose app runs (sequential mode)
        self._queue: list[Cycle] = []  # pipelined cycles waiting their turn (a list: a deque is 624 bytes)
        self._starting = False  # _start_queued() is looping: a nested response_complete() leaves it to it
        self._start_again = False

    def handle_events(self, events: list[Event]) -> bool:
        """Dispatch core events; return True if the connection is terminating.

        Apps start after the whole batch is dispatched, so body bytes that came with the head are already
        buffered when the app first calls ``receive()``.
        """
        terminated = False
        for event in events:
            if type(event) is Request:  # exact types: events are never subclassed, and this is the hot path
                self._on_request(event)
            elif type(event) is Data:
                cycle = self.cycles.get(event.stream_id)
                if cycle is not None:
                    cycle.on_data(event.data, event.end_stream)
            elif type(event) is StreamReset:
                cycle = self.cycles.get(event.stream_id)
                if cycle is not None:
                    self._drop(cycle)
            elif type(event) is ConnectionTerminated:
                terminated = True
        queue = self._queue
        if queue:
            if self.current is None:
                self._start(queue.pop(0))
            if queue:
                if self.sequential:
                    self.transport.pause_reading()  # pipelined: read no further until their turn
                else:
                    while queue:
                        self._start(queue.pop(0))
        return terminated

    def push(self, request: Request) -> None:
        """A pushed request (HTTP/2 server push): a new app instance answers it, as if the client had asked."""
        self._on_request(request)
        queue = self._queue
        while queue:
            self._start(queue.pop(0))

    def _on_request(self, request: Request) -> None:
        context = self.context
        scope = build_scope(request, self.info, context.state)
        rewrite = self.info.rewrite
        if rewrite is not None:
            rewrite(scope)
        stats = context.stats
        app = context.app
        cycle: Cycle
        if context.limit_concurrency is not None and stats.active_requests >= context.limit_concurrency:
            stats.rejected_concurrency += 1
            cycle = context.http_cycle(self, request, scope, service_unavailable)
        elif request.upgrade is not None:
            cycle = self._upgrade_cycle(request, scope)
        else:
            cycle = context.http_cycle(self, request, scope, app)
        self.cycles[request.stream_id] = cycle
        stats.active_requests += 1
        self._queue.append(cycle)

    def _upgrade_cycle(self, request: Request, scope: Scope) -> Cycle:
        context = self.context
        upgrade = request.upgrade
        if upgrade == b"websocket" and context.ws is not None:
            return self._websocket_cycle(request, scope, context.ws)
        upgrades = self.upgrades
        if (
            upgrade == b"h2c"
            and context.h2c
            and upgrades is not None
            and request.http_version == "1.1"
            and scope["scheme"] == "http"
        ):
            return H2CUpgrade(self, request, scope, upgrades)
        return context.http_cycle(self, request, scope, context.app)

    def _websocket_cycle(self, request: Request, scope: Scope, settings: WSSettings) -> Cycle:
        # Imported here: WebSocket support is optional (the websockets package comes with zonda[standard]).
        from zonda.asgi.websocket import WebSocketCycle
        from zonda.protocols.websocket import check_handshake

        try:
            handshake = check_handshake(request)
        except ProtocolError as exc:
            client = self.info.client
            self.context.rejection_log.log(
                self.transport.time(),
                f"{exc.status} response to a WebSocket handshake",
                error_log,
                logging.WARNING,
                "%d response to WebSocket handshake from %s: %s",
                exc.status,
                describe_peer(client),
                exc.detail,
            )
            extra = [(b"sec-websocket-version", b"13")] if exc.status == 426 else []
            return self.context.http_cycle(
                self, request, scope, plain_response_app(exc.status, exc.detail, extra)
            )
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"  # as a trusted proxy may have set it
        del scope["method"]
        scope["subprotocols"] = handshake.subprotocols
        # the http.response.* offers are for HTTP responses: a WebSocket scope keeps tls and gets its own
        extensions = {
            name: offer for name, offer in scope["extensions"].items() if not name.startswith("http.")
        }
        extensions["websocket.http.response"] = {}
        scope["extensions"] = extensions
        return (self.context.websocket_cycle or WebSocketCycle)(self, request, scope, handshake, settings)

    def _start(self, cycle: Cycle) -> None:
        self.current = cycle
        if self.context.access_log:
            cycle.started_at = perf_counter()
        self.transport.spawn(cycle.run())

    def _drop(self, cycle: Cycle) -> None:
        cycle.on_disconnect()
        if cycle in self._queue:
            self._queue.remove(cycle)
            self.cycle_finished(cycle)

    def response_complete(self, cycle: Cycle) -> None:
        """The core sent the last byte of ``cycle``'s response: the next pipelined request may start."""
        context = self.context
        if context.access_log:
            context.on_response(cycle)
        if self.current is cycle:
            self.current = None
        self.transport.response_complete()
        if self._queue and self.current is None and self.sequential:
            if self._starting:
                self._start_again = True  # the loop in _start_queued() starts it: the stack stays flat
            else:
                self._start_queued()

    def _start_queued(self) -> None:
        """Start pipelined cycles in turn: a loop, not recursion, while their apps answer without suspending."""
        queue = self._queue
        self._starting = self._start_again = True
        try:
            while self._start_again and queue and self.current is None:
                self._start_again = False
                self._start(queue.pop(0))
        finally:
            self._starting = False
        if not queue:
            self.transport.resume_reading()

    def cycle_finished(self, cycle: Cycle) -> None:
        """The app for ``cycle`` returned (or never ran)."""
        if self.cycles.pop(cycle.stream_id, None) is None:
            return
        stats = self.context.stats
        stats.active_requests -= 1
        stats.total_requests += 1
        if self.current is cycle:
            self.current = None  # it returned without a complete response; the connection is closing
        if isinstance(cycle, HTTPExchange) and cycle.reading_paused:
            cycle.reading_paused = False
            cycle.transport.resume_reading()  # nobody reads this body now: read on, discarding the rest

    def stop_streaming(self) -> int:
        """Shutdown's notice to every response of this connection streaming with its request read whole
        (``HTTPCycle.stop_streaming``); returns how many got it now."""
        count = 0
        for cycle in list(self.cycles.values()):
            if type(cycle) is HTTPCycle and cycle.stop_streaming():
                count += 1
        return count

    def connection_lost(self) -> None:
        for cycle in list(self.cycles.values()):
            cycle.on_disconnect()
        while self._queue:
            self.cycle_finished(self._queue.pop(0))

    @property
    def idle(self) -> bool:
        return not self.cycles


class H2CUpgrade:
    """An ``Upgrade: h2c`` request (RFC 7540 §3.2): the driver switches the connection to HTTP/2 and the request
    is answered there, as stream 1. Runs in its turn, like any request, after earlier pipelined responses."""

    __slots__ = ("connection", "request", "scope", "session", "started_at", "stream_id")

    def __init__(
        self, session: HTTPSession, request: Request, scope: Scope, connection: UpgradableConnection
    ) -> None:
        self.session = session
        self.connection = connection
        self.request = request
        self.scope = scope
        self.stream_id = request.stream_id
        self.started_at = 0.0

    def on_data(self, data: bytes, end_stream: bool) -> None:
        """Never called: the HTTP/1.1 core holds an upgrade request's bytes until it is answered, and hands them
        to the upgrade (``accept_upgrade``) instead of as Data events."""

    async def run(self) -> None:
        session = self.session
        session.cycles.pop(self.stream_id, None)
        session.context.stats.active_requests -= 1
        if session.current is self:
            session.current = None
        try:
            self.connection.upgrade_h2c(self.request)
        except (
            ProtocolError,
            AppProtocolError,
        ) as exc:  # the HTTP/1.1 core could not take it: end the connection
            error_log.warning("h2c upgrade failed: %s", exc)
            self.connection.abort()

    def on_disconnect(self) -> None:
        pass
