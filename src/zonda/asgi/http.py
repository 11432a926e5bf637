"""The one ASGI HTTP bridge: core events in, ``scope``/``receive``/``send`` out, for every HTTP version.

An ``HTTPCycle`` is one request and its response; the connection's ``HTTPSession`` (``zonda.asgi.session``)
makes one per request (``build_scope`` gives it its scope) and runs the app. Everything that does not wait is
``HTTPExchange``'s (``zonda.asgi.exchange``: the body buffered, each message checked and framed), which this
class derives from: here are only the coroutines, ``run`` and the app-facing ``receive()`` and ``send()``, and
they await only waiters the connection hands them (``Transport.create_waiter``, ``Transport.drain``,
``Transport.send_file``). Both are coroutine functions, as apps and their libraries expect
(``create_task(send(...))``, anyio's ``start_soon``, asgiref's ``async_to_sync``), though ``send()`` nearly
never waits.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from zonda.asgi._files import PATHSEND, ZEROCOPYSEND, open_path, zerocopy_span
from zonda.asgi.exchange import (
    ASGI_VERSION,
    DRAIN,
    CycleState,
    HTTPExchange,
    build_scope,
)
from zonda.asgi.types import ASGIApp, Message, Scope
from zonda.errors import AppProtocolError, ClientDisconnected, split_cancellation

__all__ = [
    "ASGI_VERSION",
    "CycleState",
    "HTTPCycle",
    "build_scope",
    "plain_response_app",
    "service_unavailable",
]

error_log = logging.getLogger("zonda.error")

_END_OF_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_NO_TRAILERS: Message = {"type": "http.response.trailers", "headers": []}
_BODY = CycleState.BODY
_DONE = CycleState.DONE
_TRAILERS = CycleState.TRAILERS


class HTTPCycle(HTTPExchange):
    """One request and its response: the app's ``receive`` and ``send``, and the ``run`` that calls it."""

    __slots__ = ()  # the attributes are HTTPExchange's (compiled, a slot here would hide its own)

    async def receive(self) -> Message:
        message = self.next_message()
        while message is None:
            waiter = self._waiter = self.transport.create_waiter()
            try:
                await waiter
            finally:
                self._waiter = None
            message = self.next_message()
        return message

    async def send(self, message: Message) -> None:
        wait = self.respond(message)
        if wait:
            if wait == DRAIN:
                await self._drain()
            else:
                await self._send_file_message(message)

    async def _drain(self) -> None:
        """Wait until the transport takes more (the rare part of ``send()`` that waits)."""
        await self.transport.drain()
        if self.disconnected:
            raise ClientDisconnected("client disconnected while the response was being sent")

    async def _send_file_message(self, message: Message) -> None:
        """An offered file-sending extension's message (``respond()`` checked that it is one)."""
        if message["type"] == ZEROCOPYSEND:
            file, offset, count, more_body, positioned = zerocopy_span(message)
            sent = await self._send_file(file, offset, count, more_body)
            if positioned and sent:
                file.seek(offset + sent)  # sent from the current position: leave it after, as a read would
        else:
            assert message["type"] == PATHSEND
            file, offset, count = open_path(message)
            try:
                await self._send_file(file, offset, count, False)
            finally:
                file.close()

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
                await self._drain()
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
            self.abort_unfinished()
            self.session.cycle_finished(self)
            if cancellation is not None:
                raise cancellation  # noqa: B904  # passed on as it came, not chained to its own group
            return
        else:
            if self.app_returned():
                await self._end_for_app()
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
                self.send_trailers(_NO_TRAILERS)
        except AppProtocolError as exc:
            error_log.info("Response cut at shutdown (%s): %s", self._describe(), exc)


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
