"""``--log-level trace``: a line per ASGI message on the ``zonda.asgi`` logger, as uvicorn's trace level shows.

The server wraps the app in ``MessageTrace`` only when that logger is enabled for TRACE at start-up, so at any
other level none of this runs and the request path is the plain one. Each line names the client, a running
number per app call, and the message: its type and small fields; bodies appear as their length and headers as
their count, never their contents (they may hold credentials).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from zonda.asgi.types import ASGIApp, Message, Receive, Scope, Send
from zonda.logging import TRACE

asgi_log = logging.getLogger("zonda.asgi")

_SHORT_TEXT = 60  # longer strings are shown as their length


def describe_value(key: str, value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if key == "headers":
        return f"<{len(value)} headers>" if hasattr(value, "__len__") else "<headers>"
    if isinstance(value, str) and (key == "text" or len(value) > _SHORT_TEXT):
        return f"<{len(value)} chars>"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    return f"<{type(value).__name__}>"


def describe_message(message: Mapping[str, Any]) -> str:
    """``http.response.start status=200 headers=<2 headers>``: the type, then each other field, small."""
    try:
        fields = [f"{key}={describe_value(key, value)}" for key, value in message.items() if key != "type"]
        return " ".join([str(message.get("type")), *fields])
    except (AttributeError, TypeError):
        return f"<not a message: {type(message).__name__}>"  # the bridge rejects it right after


def describe_scope(scope: Scope) -> str:
    kind = scope["type"]
    if kind == "http":
        return f"http {scope.get('method')} {scope.get('path')} (HTTP/{scope.get('http_version')})"
    if kind == "websocket":
        return f"websocket {scope.get('path')} (HTTP/{scope.get('http_version')})"
    return str(kind)


class MessageTrace:
    """Wraps the app: logs its start, every message received and sent, and how it ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        client = scope.get("client")
        name = f"{client[0]}:{client[1]} - ASGI [{self.calls}]" if client else f"ASGI [{self.calls}]"
        asgi_log.log(TRACE, "%s started: %s", name, describe_scope(scope))

        async def traced_receive() -> Message:
            message = await receive()
            asgi_log.log(TRACE, "%s received %s", name, describe_message(message))
            return message

        async def traced_send(message: Message) -> None:
            asgi_log.log(TRACE, "%s sent %s", name, describe_message(message))
            await send(message)

        try:
            await self.app(scope, traced_receive, traced_send)
        except BaseException as exc:
            asgi_log.log(TRACE, "%s raised %s", name, type(exc).__name__)
            raise
        asgi_log.log(TRACE, "%s completed", name)


def traced(app: ASGIApp) -> ASGIApp:
    """``app`` wrapped in ``MessageTrace`` when ``zonda.asgi`` logs at TRACE, else ``app`` itself."""
    return MessageTrace(app) if asgi_log.isEnabledFor(TRACE) else app
