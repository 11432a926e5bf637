"""The listener of ``--metrics-bind HOST:PORT``: ``/metrics`` (``zonda.metrics``), ``/healthz`` and ``/readyz``,
served by zonda's own HTTP/1.1 connection on the server's runtime, one request per connection."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from zonda.asgi.session import SessionContext
from zonda.asgi.types import Receive, Scope, Send
from zonda.config import Config, parse_bind
from zonda.connection.http1 import HTTP1Connection
from zonda.connection.shared import ServerShared
from zonda.io.base import Listening, Runtime
from zonda.metrics import Metrics

logger = logging.getLogger("zonda.error")


class MetricsListener:
    """``/metrics``, ``/healthz`` and ``/readyz`` on their own port, served by zonda's HTTP/1.1 connection (its
    limits and timeouts included) on the server's runtime: one request per connection."""

    def __init__(self, metrics: Metrics, ready: Callable[[], str | None]) -> None:
        self.metrics = metrics
        self.ready = ready  # None when ready, else the reason it is not
        self.sock: socket.socket | None = None
        self._listening: Listening | None = None

    async def start(self, runtime: Runtime, bind: str, reuse_port: bool = False) -> None:
        host, port = parse_bind(bind)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        config = Config(
            app=self.app, http="1", ws="none", access_log=False, server_header=False, date_header=False
        )
        shared = ServerShared(config, SessionContext(self.app, {}, access_log=False))
        shared.refresh_date()
        self._listening = await runtime.listen(
            [sock], lambda: HTTP1Connection(shared, runtime.loop), None, 5.0, 64
        )
        address = sock.getsockname()
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        logger.info("Metrics on http://%s:%d/metrics (also /healthz, /readyz)", shown, address[1])

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        if self._listening is not None:
            self._listening.close()
            self._listening = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoints as an ASGI app (a HEAD's body is dropped by the HTTP/1.1 core)."""
        if scope["type"] != "http":
            return
        status, content_type, body = self._respond(scope["method"], scope["path"])
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"GET /metrics, /healthz or /readyz\n"
        if path == "/metrics":
            body, content_type = self.metrics.expose()
            return 200, content_type, body
        if path == "/healthz":
            return 200, text, b"ok\n"
        if path == "/readyz":
            reason = self.ready()
            if reason is None:
                return 200, text, b"ready\n"
            return 503, text, f"not ready: {reason}\n".encode()
        return 404, text, b"not found: GET /metrics, /healthz or /readyz\n"
