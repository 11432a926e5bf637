"""A Quart app as its docs write one: routes with a JSON body, and a WebSocket route.
Served by tests/frameworks/test_quart.py in a real zonda process."""

from __future__ import annotations

from typing import Any

from quart import Quart, request, websocket

app = Quart(__name__)


@app.get("/")
async def index() -> str:
    return "Hello from Quart"


@app.post("/echo")
async def echo() -> dict[str, Any]:
    data = await request.get_json()
    return {"received": data, "content_length": request.content_length}


@app.websocket("/ws")
async def ws() -> None:
    while True:
        message = await websocket.receive()
        if message == "bye":
            await websocket.close(1000)
            return
        await websocket.send(f"echo: {message}")
