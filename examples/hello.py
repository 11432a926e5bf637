"""The demo app: a page, a JSON endpoint, an echo, a streamed response and a WebSocket echo.

Serve it with ``make run`` (or ``zonda examples.hello:app``) and open http://127.0.0.1:8000.
"""

import json

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>zonda</title></head>
<body><h1>Hello from zonda</h1>
<ul>
<li><a href="/json">/json</a>: a JSON response</li>
<li><a href="/stream">/stream</a>: a chunked, streamed response</li>
<li>POST /echo: echoes the request body</li>
<li>/ws: a WebSocket that echoes every message; this page says hello to it:</li>
</ul>
<p>WebSocket: <output id="ws-echo">connecting...</output></p>
<script>
const out = document.getElementById("ws-echo");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onopen = () => ws.send("hello over WebSocket");
ws.onmessage = (event) => { out.textContent = "echo: " + event.data; };
ws.onerror = () => { out.textContent = "WebSocket error"; };
</script>
</body></html>
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["type"] == "websocket":
        await _websocket_echo(receive, send) if path == "/ws" else await send({"type": "websocket.close"})
        return
    if path == "/json":
        body = json.dumps({"hello": "world", "path": path}).encode()
        await _respond(send, 200, body, b"application/json")
    elif path == "/echo":
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        await _respond(send, 200, b"".join(chunks), b"application/octet-stream")
    elif path == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/":
        await _respond(send, 200, PAGE, b"text/html; charset=utf-8")
    else:
        await _respond(send, 404, b"Not Found\n", b"text/plain")


async def _respond(send, status, body, content_type):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket_echo(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
