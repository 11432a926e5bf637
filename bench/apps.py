"""Benchmark apps, plain ASGI so every server runs the same code."""

import json

HELLO = b"Hello, world!"


async def lifespan(scope, receive, send):
    """Answer the lifespan protocol, so every server starts the apps the same way. It matters to hypercorn's
    trio worker: an app that returns from the lifespan scope at once makes it fail at startup (it sends
    lifespan.startup into a channel it closed when the app returned: trio.ClosedResourceError)."""
    if scope["type"] != "lifespan":
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


async def json_app(scope, receive, send):
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    body = json.dumps({"message": "Hello, world!", "path": scope["path"], "items": list(range(10))}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


ORDERS = [
    {"id": n, "customer": f"customer-{n:04d}", "status": "shipped", "total": 19.99 + n, "items": [1, 2, 3]}
    for n in range(10)
]


async def json_list(scope, receive, send):
    """A JSON API answer of about 1 KiB: ten objects, serialised per request."""
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    body = json.dumps({"orders": ORDERS, "count": len(ORDERS)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


STREAM_CHUNK = b"x" * (64 * 1024)
STREAM_CHUNKS = 16  # 1 MiB in all


async def stream(scope, receive, send):
    """A 1 MiB response streamed in sixteen 64 KiB body messages, without a Content-Length (chunked)."""
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for _ in range(STREAM_CHUNKS - 1):
        await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": STREAM_CHUNK})


async def echo(scope, receive, send):
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def ws_echo(scope, receive, send):
    """WebSocket echo: accept, then send every message back as it came, text as text, bytes as bytes."""
    if scope["type"] != "websocket":
        await lifespan(scope, receive, send)
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


MIB_PIECE = b"x" * 65536


async def download(scope, receive, send):
    """1 MiB in 16 pieces of 64 KiB (bench/h3.py)."""
    if scope["type"] != "http":
        await lifespan(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1048576")]})
    for _ in range(15):
        await send({"type": "http.response.body", "body": MIB_PIECE, "more_body": True})
    await send({"type": "http.response.body", "body": MIB_PIECE})


async def hello_ws_echo(scope, receive, send):
    """hello over HTTP (1.1 and 2), ws_echo over WebSocket: one app for every phase of bench/soak.py."""
    if scope["type"] == "websocket":
        await ws_echo(scope, receive, send)
    else:
        await hello(scope, receive, send)
