"""Listeners, the connection registry, lifespan and graceful shutdown, for one process.

Start-up order: import the app, bind the listeners (a busy port or a bad host fails here, before the app's
lifespan runs; connections made during startup wait in the backlog), lifespan startup, serve.

Shutdown order (SIGINT/SIGTERM or ``Server.shutdown()``): stop accepting, close idle keep-alive connections,
let in-flight requests finish within ``timeout_graceful_shutdown`` (``shutdown_stream_notice`` seconds before
its end, responses still streaming get ``http.disconnect`` to end cleanly), cancel what is left, run lifespan
shutdown, return. A second SIGINT skips the waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from zonda import __version__, _compiled
from zonda.accesslog import AccessLogWriter, build_access_log
from zonda.asgi.lifespan import Lifespan
from zonda.asgi.session import SessionContext
from zonda.asgi.trace import traced
from zonda.asgi.types import ASGIApp
from zonda.asgi.wsgi import WSGIAdapter
from zonda.config import Config
from zonda.connection.http1 import HTTP1Connection
from zonda.connection.observed import ObservedHTTP1Connection
from zonda.connection.shared import ServerShared
from zonda.errors import ConfigError, LifespanFailure
from zonda.io import cross_thread_waiter, run, running, serving_runtime
from zonda.io.base import Loop, Runtime, TaskHandle, Timer, Waiter, current_loop
from zonda.listeners import bind_quic_socket, bind_socket, describe_address
from zonda.loading import ASGI2Adapter, load_app
from zonda.logging import access_log_enabled
from zonda.tls import create_ssl_context, describe_tls

if TYPE_CHECKING:
    from zonda.connection.quic import QuicEndpoint, QuicSettings
    from zonda.metrics import Metrics
    from zonda.otel import Tracing
    from zonda.protocols.websocket import WSSettings

logger = logging.getLogger("zonda.error")
LIFESPAN_EXIT_WAIT = 5.0  # seconds the app's lifespan task gets to end once it failed or was cancelled
SPAN_FLUSH_WAIT = 3.0  # seconds a graceful stop waits for --otel's queued spans to be exported


def _resolve(waiter: Waiter) -> None:
    if not waiter.done():
        waiter.set_result(None)


def ws_settings(config: Config) -> WSSettings | None:
    """WebSocket settings, or None when it is off or the websockets package is missing."""
    if config.ws == "none":
        return None
    try:
        from zonda.protocols.websocket import WSSettings
    except ImportError:
        logger.warning("WebSocket is off: install the websockets package (pip install 'zonda[standard]')")
        return None
    return WSSettings(
        max_size=config.ws_max_size,
        max_queue=config.ws_max_queue,
        per_message_deflate=config.ws_per_message_deflate,
        ping_interval=config.ws_ping_interval or None,
        ping_timeout=config.ws_ping_timeout or None,
    )


def _both(first: Callable[[Any], None], second: Callable[[Any], None]) -> Callable[[Any], None]:
    def both(cycle: Any) -> None:
        first(cycle)
        second(cycle)

    return both


class _DateTicker:
    """Refreshes the cached Date header just after each wall-clock second turns, and says how many rejection
    lines were suppressed in the second that ended (``zonda.rejection_log``)."""

    def __init__(self, loop: Loop, shared: ServerShared) -> None:
        self.loop = loop
        self.shared = shared
        self.handle: Timer | None = None
        self.tick()

    def tick(self) -> None:
        self.shared.refresh_date()
        self.shared.rejection_log.flush(self.loop.time())
        self.handle = self.loop.call_at(self.loop.time() + 1.0 - time.time() % 1.0, self.tick)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class Server:
    """A zonda server in this process: ``await serve()``, read ``port`` once ``started``, stop with
    ``shutdown()`` (from any thread)."""

    def __init__(self, config: Config, app: ASGIApp | None = None) -> None:
        self.config = config
        self.app = app
        self.started = threading.Event()  # waitable from another thread, as tests and embedders need
        self.should_exit = False
        self.force_exit = False
        self.sockets: list[socket.socket] = []
        self.quic_socket: socket.socket | None = None  # the UDP socket of --http3
        self.quic_endpoint: QuicEndpoint | None = None  # while HTTP/3 is served
        self.quic_address: tuple[str, int] | None = (
            None  # its address, read when bound (uvloop takes the socket)
        )
        self.shared: ServerShared | None = None
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None  # the bound --metrics-bind port, once listening
        # Seconds between closing the listeners and closing idle connections on a graceful stop. A worker
        # under the supervisor sets it: a connection accepted just before the stop gets to send its first
        # request (another worker serves the shared listener meanwhile), instead of being closed unread.
        self.drain_grace = 0.0
        self._runtime: Runtime | None = None  # the event loop's, while serve() runs
        self._exit_waiter: Waiter | None = None
        # wait_started(): waiters on any loop, woken when serving starts or serve() fails first
        self._start_lock = threading.Lock()
        self._start_waiters: list[tuple[Callable[[Callable[[], object]], object], Waiter]] = []
        self._start_error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound TCP port of the first listener (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def quic_port(self) -> int:
        """The bound UDP port of HTTP/3 (``--http3``)."""
        assert self.quic_address is not None
        return self.quic_address[1]

    async def wait_started(self) -> None:
        """Return once the server serves: listening, lifespan startup complete. Awaitable from any event loop.

        If ``serve()`` fails before that, raise its error (an ``AppLoadError``, ``LifespanFailure``,
        ``ListenError``, ...); if it is cancelled first, a RuntimeError."""
        with self._start_lock:
            if self._start_error is not None:
                raise self._start_error
            if self.started.is_set():
                return
            waiter, wake = cross_thread_waiter()
            self._start_waiters.append((wake, waiter))
        await waiter
        if self._start_error is not None:
            raise self._start_error

    def _settle_start(self, error: BaseException | None) -> None:
        """Serving started (``error`` None), or ``serve()`` failed before it: wake every ``wait_started()``."""
        with self._start_lock:
            if error is None:
                self.started.set()
            elif self.started.is_set() or self._start_error is not None:
                return
            else:
                # cancelled or interrupted: raising that in the waiter would look like its own cancellation
                if not isinstance(error, Exception):
                    stopped = RuntimeError("zonda stopped before it started serving")
                    stopped.__cause__ = error
                    error = stopped
                self._start_error = error
            waiters, self._start_waiters = self._start_waiters, []
        for wake, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                wake(partial(_resolve, waiter))

    def shutdown(self, force: bool = False) -> None:
        """Ask the server to stop; safe from any thread and from signal handlers."""
        self.force_exit = self.force_exit or force
        self.should_exit = True
        runtime, waiter = self._runtime, self._exit_waiter
        if runtime is not None and waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: serve() is over anyway
                runtime.loop.call_soon_threadsafe(partial(_resolve, waiter))

    async def serve(
        self, sockets: list[socket.socket] | None = None, install_signal_handlers: bool = True
    ) -> None:
        """Start, serve until told to stop, shut down. Raises AppLoadError, LifespanFailure or OSError.

        With ``--metrics-bind``, the metrics listener runs from before the app loads until after shutdown,
        so ``/readyz`` says 503 while lifespan startup runs and while draining.
        """
        try:
            async with serving_runtime():
                await self._serve_with_metrics(sockets, install_signal_handlers)
        except BaseException as exc:
            self._settle_start(exc)
            raise

    async def _serve_with_metrics(
        self, sockets: list[socket.socket] | None, install_signal_handlers: bool
    ) -> None:
        if not self.config.metrics_bind:
            await self._serve(sockets, install_signal_handlers)
            return
        from zonda.metrics import Metrics, multiprocess
        from zonda.metrics_listener import MetricsListener

        self.metrics = Metrics()
        listener = MetricsListener(self.metrics, self._not_ready)
        # under the supervisor every worker binds the same address (multiprocess mode: any answers for all)
        await listener.start(running(), self.config.metrics_bind, reuse_port=multiprocess())
        self.metrics_port = listener.port
        try:
            await self._serve(sockets, install_signal_handlers)
        finally:
            listener.close()
            self.metrics.close()

    def _not_ready(self) -> str | None:
        if self.should_exit:
            return "draining"
        return None if self.started.is_set() else "starting"

    async def _serve(self, sockets: list[socket.socket] | None, install_signal_handlers: bool) -> None:
        config = self.config
        runtime = self._runtime = running()
        loop = runtime.loop
        exit_waiter = self._exit_waiter = loop.create_waiter()
        if self.should_exit:
            exit_waiter.set_result(None)
        app = self.app or load_app(
            config.app,
            factory=config.factory,
            interface=config.interface,
            app_dir=config.app_dir,
            wsgi_threads=config.wsgi_threads,
        )
        published = current_loop.set(
            loop
        )  # before anything is accepted: connections and app tasks inherit it
        # before startup, so that a SIGTERM during a slow startup still stops cleanly
        signals = runtime.on_signals((signal.SIGINT, signal.SIGTERM), self._on_signal)
        if not install_signal_handlers:
            signals()
        try:
            await self._serve_app(runtime, app, sockets, exit_waiter)
        finally:
            signals()  # an embedding program's own Ctrl+C works again once zonda is done
            current_loop.reset(published)

    async def _serve_app(
        self, runtime: Runtime, app: ASGIApp, sockets: list[socket.socket] | None, exit_waiter: Waiter
    ) -> None:
        config = self.config
        loop = runtime.loop
        ssl_context = create_ssl_context(config)  # a bad certificate or key fails before startup too
        span_event = self._otel_span_event()  # --otel: a missing OpenTelemetry SDK fails before startup too
        on_response, access_writer = self._response_hook(loop, span_event)  # a bad --access-log-file too
        served_app = traced(app)  # --log-level trace: a line per ASGI message; otherwise the app itself
        quic = self._quic_settings()  # a missing aioquic or a bad key fails before startup too
        try:
            # bound before lifespan startup: a busy port or a bad host never starts (and stops) the app
            self.sockets = sockets if sockets is not None else [bind_socket(config)]
            if quic is not None:
                self.quic_socket = bind_quic_socket(config, self.sockets[0])
                self.quic_address = self.quic_socket.getsockname()[:2]
            lifespan, lifespan_task = await self._start_lifespan(runtime, served_app)
            # after lifespan startup, in this (worker) process: a tracer provider the app set up then is used
            tracing = self._start_tracing() if span_event is not None else None
        except BaseException:
            if access_writer is not None:
                access_writer.close()
            if sockets is None:
                self._close_own_sockets()
            if self.quic_socket is not None:
                self.quic_socket.close()
            raise
        context = SessionContext(
            served_app,
            lifespan.state if lifespan else {},
            root_path=config.root_path,
            access_log=on_response is not None,
            limit_concurrency=config.limit_concurrency,
            ws=ws_settings(config),
            on_response=on_response,
        )
        if tracing is not None:
            from zonda.otel import install

            install(tracing, context, app)  # its requests become traced ones
        shared = self.shared = ServerShared(config, context, ssl_context, self._alt_svc())
        if self.metrics is not None:
            self.metrics.attach(shared, loop)
        # PROXY headers cost per read: only this subclass pays for them
        kind = ObservedHTTP1Connection if config.proxy_protocol != "off" else HTTP1Connection
        date_timer = _DateTicker(loop, shared)
        listening = None
        endpoint = None
        try:
            listening = await runtime.listen(
                self.sockets,
                lambda: kind(shared, loop),
                ssl_context,
                config.timeout_tls_handshake,
                config.backlog,
            )
            if quic is not None and self.quic_socket is not None:
                from zonda.connection.quic import serve_quic

                endpoint = self.quic_endpoint = await serve_quic(runtime, shared, quic, self.quic_socket)
            self._log_started(runtime.name, app)
            self._settle_start(None)
            await exit_waiter
        finally:
            with runtime.shielded(self._stop_bound()):  # also when serve() itself was cancelled
                # one window for all of it: the connections accepted last are opened inside it, not after it
                deadline = loop.time() + self.drain_grace + config.timeout_graceful_shutdown
                if endpoint is not None:
                    endpoint.close()  # no new QUIC connections; the open ones get GOAWAY below
                if listening is not None:
                    await listening.close_gracefully(deadline)
                if self.drain_grace and shared.connections and not self.force_exit:
                    await runtime.sleep(self.drain_grace)
                await self._drain_connections(runtime, shared, deadline)
                if endpoint is not None:
                    endpoint.sender.close()
                date_timer.cancel()
                shared.rejection_log.flush(float("inf"))  # the last second's suppressed lines, counted
                if access_writer is not None:
                    access_writer.close()
                if lifespan is not None:
                    await self._stop_lifespan(runtime, lifespan, lifespan_task)
                if tracing is not None and not self.force_exit:
                    await self._flush_spans(runtime, tracing)
                # unlink only a socket this server bound, never a file that was in the way
                if config.uds and sockets is None and self.sockets:
                    with contextlib.suppress(OSError):
                        os.unlink(config.uds)
                logger.info("Finished server process [%d]", os.getpid())

    def _quic_settings(self) -> QuicSettings | None:
        """``--http3``: the QUIC settings (aioquic imported only then). Raises ConfigError."""
        if not self.config.http3:
            return None
        try:
            from zonda.connection.quic import quic_settings
        except ImportError:
            raise ConfigError("http3: HTTP/3 needs aioquic: pip install 'zonda[http3]'") from None
        return quic_settings(self.config)

    def _otel_span_event(self) -> Callable[[Any], None] | None:
        """``--otel``: the per-response hook's span event (OpenTelemetry imported only then). Raises
        ConfigError."""
        if not self.config.otel:
            return None
        try:
            from zonda.otel import response_sent
        except ImportError:
            raise ConfigError(
                "otel: tracing needs the OpenTelemetry SDK and OTLP exporter: pip install 'zonda[otel]'"
            ) from None
        return response_sent

    def _start_tracing(self) -> Tracing:
        """``--otel``: this process's tracer (the SDK's provider from the OTEL_* variables)."""
        from zonda.otel import start_tracing

        return start_tracing(self.config)

    async def _flush_spans(self, runtime: Runtime, tracing: Tracing) -> None:
        """Export the spans still queued, from a thread of its own (an export blocks on the network), waiting
        ``SPAN_FLUSH_WAIT`` seconds at most: an unreachable collector does not hold up the stop."""
        loop = runtime.loop
        done = loop.create_waiter()

        def flush() -> None:
            try:
                tracing.flush()
            except Exception:
                logger.exception("Exporting the last spans failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(partial(_resolve, done))

        threading.Thread(target=flush, name="zonda-otel-flush", daemon=True).start()
        try:
            await runtime.wait_for(done, SPAN_FLUSH_WAIT)
        except TimeoutError:
            logger.warning(
                "Spans still unexported %gs after the stop: not waiting for them.", SPAN_FLUSH_WAIT
            )

    def _alt_svc(self) -> bytes | None:
        """The alt-svc header value that offers HTTP/3 (RFC 7838, RFC 9114 §3.1.1), when served."""
        if self.quic_address is None or not self.config.alt_svc_max_age:
            return None
        return b'h3=":%d"; ma=%d' % (self.quic_address[1], self.config.alt_svc_max_age)

    def _stop_bound(self) -> float:
        """The longest the shutdown sequence can take by its own timeouts, and a second more."""
        config = self.config
        drain = self.drain_grace + config.timeout_graceful_shutdown + LIFESPAN_EXIT_WAIT
        spans = SPAN_FLUSH_WAIT if config.otel else 0.0
        return drain + config.timeout_lifespan_shutdown + LIFESPAN_EXIT_WAIT + spans + 1.0

    def _close_own_sockets(self) -> None:
        """Start-up failed after binding: close what this server bound, and remove its unix socket."""
        for sock in self.sockets:
            sock.close()
        if self.config.uds and self.sockets:
            with contextlib.suppress(OSError):
                os.unlink(self.config.uds)
        self.sockets = []

    def _response_hook(
        self, loop: Loop, span_event: Callable[[Any], None] | None = None
    ) -> tuple[Callable[[Any], None] | None, AccessLogWriter | None]:
        """The per-response hook: the access log, metrics and/or ``span_event`` (--otel), or None when all are
        off."""
        access, writer = build_access_log(self.config, loop, access_log_enabled())
        record = self.metrics.record if self.metrics is not None else None
        hook = None
        for part in (access, record, span_event):
            if part is not None:
                hook = part if hook is None else _both(hook, part)
        return hook, writer

    async def _start_lifespan(
        self, runtime: Runtime, app: ASGIApp
    ) -> tuple[Lifespan | None, TaskHandle | None]:
        mode = self.config.lifespan
        if mode == "off":
            return None, None
        lifespan = Lifespan(app, mode, runtime.loop.create_waiter)
        task = runtime.start(lifespan.run())
        logger.info("Waiting for application startup.")
        timeout = self.config.timeout_lifespan_startup
        try:
            await runtime.wait_for(lifespan.startup(), timeout)
        except TimeoutError:
            task.cancel()
            raise LifespanFailure(f"lifespan startup did not complete within {timeout:g}s") from None
        except LifespanFailure:
            await runtime.join([task], LIFESPAN_EXIT_WAIT)
            raise
        except BaseException:  # serve() cancelled (or interrupted) during startup: the app's task goes too
            task.cancel()
            raise
        if not lifespan.supported:
            return None, None
        logger.info("Application startup complete.")
        return lifespan, task

    async def _stop_lifespan(self, runtime: Runtime, lifespan: Lifespan, task: TaskHandle | None) -> None:
        if self.force_exit:
            if task is not None:
                task.cancel()
            return
        logger.info("Waiting for application shutdown.")
        timeout = self.config.timeout_lifespan_shutdown
        try:
            await runtime.wait_for(lifespan.shutdown(), timeout)
            logger.info("Application shutdown complete.")
        except TimeoutError:
            logger.error("Lifespan shutdown did not complete within %gs", timeout)
        except LifespanFailure as exc:
            logger.error("Application shutdown failed: %s", exc)
        if task is not None and not task.done():
            task.cancel()
            await runtime.join([task], LIFESPAN_EXIT_WAIT)

    async def _drain_connections(self, runtime: Runtime, shared: ServerShared, deadline: float) -> None:
        connections = shared.connections
        for connection in list(connections):
            connection.shutdown()
        loop = runtime.loop
        timeout = max(0.0, deadline - loop.time())
        # Streams with no end of their own (SSE) are told to stop this long before the hard close; until then
        # every response has the window to finish by itself (README: Shutdown).
        notice = self.config.shutdown_stream_notice
        notice_at = deadline - notice if notice > 0 else None
        told = False
        if connections and not self.force_exit:
            logger.info("Waiting for %d connection(s) to finish (up to %.3gs).", len(connections), timeout)
        while connections and not self.force_exit and loop.time() < deadline:
            if notice_at is not None and loop.time() >= notice_at:
                # Again on every turn: a response may start streaming, or its request body end, after the first.
                count = sum(connection.stop_streaming() for connection in list(connections))
                if count and not told:
                    told = True
                    logger.info(
                        "Asking %d streaming response(s) to end (http.disconnect), %.3gs before the hard close.",
                        count,
                        min(notice, timeout),
                    )
            await runtime.sleep(0.05)
        if connections:
            logger.warning(
                "Closing %d connection(s) still open after the graceful timeout.", len(connections)
            )
        tasks = runtime.app_tasks()
        for task in tasks:
            task.cancel()
        for connection in list(connections):
            connection.abort()
        await runtime.join(tasks, 1.0)

    def _on_signal(self, signum: int) -> None:
        if self.should_exit and signum == signal.SIGINT:
            logger.warning("Second SIGINT: exiting now.")
            self.shutdown(force=True)
        else:
            logger.info("Received %s: shutting down gracefully.", signal.Signals(signum).name)
            self.shutdown()

    def _log_started(self, loop_name: str, app: ASGIApp) -> None:
        config = self.config
        interface = (
            "ASGI 2"
            if isinstance(app, ASGI2Adapter)
            else "WSGI"
            if isinstance(app, WSGIAdapter)
            else "ASGI 3"
        )
        app_name = config.app if isinstance(config.app, str) else getattr(app, "__qualname__", repr(app))
        scheme = "https" if self.shared is not None and self.shared.ssl_context is not None else "http"
        logger.info(
            "zonda %s serving %s (%s) with %s, %s",
            __version__,
            app_name,
            interface,
            loop_name,
            ", ".join(self._protocols_served(scheme)),
        )
        if _compiled.why_source and _compiled.why_source != "ZONDA_PURE_PYTHON=1":
            logger.warning(
                "Running the request path as Python, not compiled: %s (reinstall zonda, or `make build` in a "
                "checkout, to compile it again)",
                _compiled.why_source,
            )
        else:
            logger.debug("The request path runs %s", _compiled.mode)
        for sock in self.sockets:
            logger.info("Listening on %s (press CTRL+C to quit)", describe_address(sock, scheme))
        if self.quic_address is not None:
            host, port = self.quic_address
            logger.info("HTTP/3 (QUIC) on udp://%s:%d", f"[{host}]" if ":" in host else host, port)
        if scheme == "https":
            logger.info("TLS: %s", describe_tls(config))

    def _protocols_served(self, scheme: str) -> list[str]:
        """What the start-up line names: the protocols this server answers, as configured."""
        config = self.config
        served = [] if config.http == "2" else ["HTTP/1.1"]  # --http 2: HTTP/2 only
        if config.http == "2" and scheme == "http":
            served.append("HTTP/2 (prior knowledge only)")
        elif config.http != "1":
            served.append("HTTP/2 (ALPN h2)" if scheme == "https" else "HTTP/2 (h2c, prior knowledge)")
        if config.http3:
            served.append("HTTP/3 (QUIC)")
        if self.shared is not None and self.shared.context.ws is not None:
            served.append("WebSocket")
        return served


run_in_loop = run  # the name the tests and the CLI used before zonda.io.run
