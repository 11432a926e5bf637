"""Apps that tests/e2e/test_otel.py serves in ``python -m zonda --otel`` children (``--app-dir tests/e2e``).

``app`` (ASGI): ``/api/...`` is a FastAPI app with opentelemetry-instrumentation-fastapi, whose spans must nest
under zonda's; ``/current`` answers with the trace and span id current in the app's task; ``/boom`` raises,
``/late-boom`` raises after its response; ``/status/N`` answers N; ``/ws`` is a WebSocket echo that closes
with the code it is sent as ``close:N``, and refuses the handshake for ``/ws?deny...``. ``wsgi_app``: the span
current in the WSGI app's thread, and a span the app starts there itself.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

api = FastAPI()


@api.get("/api/items/{item}")
async def read_item(item: int) -> dict[str, int]:
    return {"item": item}


FastAPIInstrumentor.instrument_app(api)


def current_ids() -> bytes:
    context = trace.get_current_span().get_span_context()
    return json.dumps({"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}).encode()


async def respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": body})


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    if scope["query_string"].startswith(b"deny"):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or ""
        if text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:])})
            return
        await send({"type": "websocket.send", "text": text})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if kind == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    if path.startswith("/api/"):
        await api(scope, receive, send)
    elif path == "/current":
        await respond(send, 200, current_ids())
    elif path == "/boom":
        raise RuntimeError("the app failed")
    elif path == "/late-boom":
        await respond(send, 200, b"sent")
        raise ValueError("failed after its response")
    elif path.startswith("/status/"):
        await respond(send, int(path[8:]), b"as asked")
    else:
        await respond(send, 200, b"hello")


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    current = current_ids()
    with trace.get_tracer("wsgi-test-app").start_as_current_span("inside the WSGI app"):
        pass
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(current)))])
    return [current]
