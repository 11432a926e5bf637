"""``TracedHTTPCycle``: an ``HTTPCycle`` with a SERVER span around its app call.

The cycle notes when its request head was parsed; ``run()``, the coroutine the driver spawns as the app's own
task, starts the span at that time and attaches it to that task's context before calling the app, so whatever
the app starts (its framework's instrumentation, a WSGI app's thread) is a child of it. The span ends when the
app returns, with the response's status.
"""

from __future__ import annotations

from time import time_ns

from opentelemetry.trace import INVALID_SPAN, Span

from zonda.asgi.exchange import CycleState
from zonda.asgi.http import HTTPCycle
from zonda.asgi.session import HTTPSession
from zonda.asgi.types import ASGIApp, Message, Scope
from zonda.otel.spans import FIRST_BYTE, LAST_BYTE, close_span, record_failure
from zonda.protocols.events import Request

_START = CycleState.START


class TracedHTTPCycle(HTTPCycle):
    __slots__ = ("failed", "received_ns", "span")

    def __init__(self, session: HTTPSession, request: Request, scope: Scope, app: ASGIApp) -> None:
        super().__init__(session, request, scope, app)
        self.received_ns = time_ns()
        self.span: Span = INVALID_SPAN  # until run() starts the real one
        self.failed = False

    async def run(self) -> None:
        tracing = self.session.context.tracing
        assert tracing is not None  # installed with this class
        span, token = tracing.open_span(
            self.scope, self.session.info.client, self.scope["method"], self.received_ns
        )
        self.span = span
        try:
            await HTTPCycle.run(self)
        finally:
            close_span(span, token, self.status, self.failed)

    async def send(self, message: Message) -> None:
        if self.state is not _START:
            await HTTPCycle.send(self, message)
            return
        await HTTPCycle.send(self, message)
        if self.state is not _START:
            self.span.add_event(FIRST_BYTE)

    def response_sent(self) -> None:
        self.span.add_event(LAST_BYTE)

    def _app_failed(self, exc: Exception) -> None:
        self.failed = True
        record_failure(self.span, exc)
        HTTPCycle._app_failed(self, exc)

    def _respond_500(self) -> None:
        self.span.add_event(FIRST_BYTE)
        HTTPCycle._respond_500(self)
