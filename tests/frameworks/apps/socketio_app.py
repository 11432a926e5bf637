"""A python-socketio server as an ASGI app (what Flask-SocketIO's async cousins and FastAPI chat apps use): an
echo event with an acknowledgement, rooms with a broadcast, and a counter of connections that the test asks
for. Engine.IO's long-polling transport is plain HTTP requests; its WebSocket transport is an ASGI WebSocket."""

from __future__ import annotations

from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
app = socketio.ASGIApp(sio)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    await sio.emit("welcome", {"sid": sid, "transport": sio.transport(sid)}, to=sid)


@sio.event
async def echo(sid: str, data: Any) -> dict[str, Any]:
    await sio.emit("echoed", data, to=sid)
    return {"ack": data}  # the client's callback gets this


@sio.event
async def leave(sid: str) -> None:
    await sio.disconnect(sid)  # the server ends the session: a long-poll waiting for packets gets the CLOSE


@sio.event
async def join(sid: str, room: str) -> None:
    await sio.enter_room(sid, room)
    await sio.emit("joined", {"room": room, "who": sid}, room=room)
