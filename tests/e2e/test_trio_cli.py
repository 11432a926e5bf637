"""``zonda --loop trio`` as a user runs it: a real process serving a trio-native app (a nursery, ``trio.sleep``) and
an unmodified FastAPI app with ``@app.middleware("http")`` (anyio: ``sniffio`` says trio), over HTTP/1.1, HTTP/2
and WebSocket, stopped by SIGTERM with a request in flight. The driver's own tests: tests/io/test_trio*.py."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from helpers import zonda_process

pytest.importorskip("trio")
pytestmark = pytest.mark.drivers("trio")  # names --loop trio itself

APPS = """
import json

import sniffio
import trio
from fastapi import FastAPI, Request, WebSocket


async def native(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    results = []

    async def child(delay):
        await trio.sleep(delay)
        results.append(delay)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child, 0.02)
        nursery.start_soon(child, 0.01)
    if scope["path"] == "/slow":
        await trio.sleep(1.0)
    body = json.dumps({"library": sniffio.current_async_library(), "results": results}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"Content-Type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


api = FastAPI()


@api.middleware("http")
async def stamp(request: Request, call_next):
    response = await call_next(request)
    response.headers["x-library"] = sniffio.current_async_library()
    return response


@api.get("/items/{item_id}")
async def item(item_id: int):
    await trio.sleep(0)
    return {"id": item_id, "library": sniffio.current_async_library()}


@api.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("echo " + await websocket.receive_text())
    await websocket.close()
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "trio_apps.py").write_text(APPS)
    return str(tmp_path)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_a_trio_native_app(app_dir: str, http2: bool) -> None:
    with zonda_process("trio_apps:native", "--loop", "trio", "--port", "0", "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        assert "with trio" in proc.output
        with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
            for _ in range(3):  # keep-alive
                response = client.get(url + "/")
                assert response.status_code == 200
                assert response.json() == {"library": "trio", "results": [0.01, 0.02]}
        with connect(url.replace("http", "ws") + "/ws", open_timeout=10) as websocket:
            websocket.send("hi")
            assert websocket.recv(timeout=10) == "echo hi"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_fastapi_with_http_middleware_on_trio(app_dir: str, http2: bool) -> None:
    with zonda_process("trio_apps:api", "--loop", "trio", "--port", "0", "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
            response = client.get(url + "/items/7")
        assert response.status_code == 200, proc.output
        assert response.json() == {"id": 7, "library": "trio"}
        assert response.headers["x-library"] == "trio"
        with connect(url.replace("http", "ws") + "/ws", open_timeout=10) as websocket:
            websocket.send("hi")
            assert websocket.recv(timeout=10) == "echo hi"
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output
        assert "Traceback" not in proc.output, proc.output


def test_sigterm_lets_an_in_flight_request_finish(app_dir: str) -> None:
    with zonda_process("trio_apps:native", "--loop", "trio", "--port", "0", "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        answers: list[httpx.Response] = []
        request = threading.Thread(target=lambda: answers.append(httpx.get(url + "/slow", timeout=10)))
        request.start()
        time.sleep(0.3)  # the request is in the app's trio.sleep(1.0)
        proc.signal(signal.SIGTERM)
        request.join(10)
        assert answers and answers[0].status_code == 200
        assert json.loads(answers[0].content)["library"] == "trio"
        assert proc.wait() == 0, proc.output
