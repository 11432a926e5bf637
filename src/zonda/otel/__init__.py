"""OpenTelemetry tracing (``--otel``, ``pip install 'zonda[otel]'``): one SERVER span per request and per
WebSocket session, exported over OTLP/HTTP, configured by the SDK from the standard ``OTEL_*`` variables.

Imported only with ``--otel``. Everything is decided at start-up (``install``): the session context's cycle
classes become the traced subclasses (``zonda.otel.cycles``), the per-response hook gains the span's "last
byte" event, and a WSGI app's thread pool runs each request in its task's context. A server without ``--otel``
imports none of this and pays nothing per request.

- ``spans``: the tracer provider from the environment, the trust rule for incoming ``traceparent`` headers and
  the span's name and attributes (the stable HTTP semantic conventions).
- ``cycles``: ``TracedHTTPCycle``; ``websocket``: ``TracedWebSocketCycle``. Each starts its span inside the
  app's own task (the task's contextvars context), so the app's own instrumentation nests under it.
"""

from __future__ import annotations

from typing import Any

from zonda.asgi.session import SessionContext
from zonda.asgi.wsgi import WSGIAdapter
from zonda.otel.cycles import TracedHTTPCycle
from zonda.otel.spans import Tracing, start_tracing

__all__ = ["Tracing", "install", "response_sent", "start_tracing"]


def response_sent(cycle: Any) -> None:
    """The per-response hook's share (``SessionContext.on_response``): the response's last byte went out."""
    cycle.response_sent()


def install(tracing: Tracing, context: SessionContext, app: object) -> None:
    """Make ``context``'s requests traced ones; run a WSGI ``app``'s requests in their task's context."""
    context.tracing = tracing
    context.http_cycle = TracedHTTPCycle
    if context.ws is not None:  # the websockets package is there: the traced WebSocket cycle can be imported
        from zonda.otel.websocket import TracedWebSocketCycle

        context.websocket_cycle = TracedWebSocketCycle
    if isinstance(app, WSGIAdapter):
        app.carry_context()  # the span is current in the app's thread too
