"""Embedding zonda in an asyncio program: the README's example runs as written, and ``Server.wait_started()``
returns once zonda serves, or raises what stopped it, from the serving loop or any other."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO, simple_app
from zonda import Config, Server
from zonda.errors import AppLoadError, LifespanFailure, ListenError
from zonda.server import run_in_loop

README_MARKER = "<!-- embedding example: tests/test_embedding.py runs this block -->"


def readme_example() -> str:
    text = Path(REPO, "README.md").read_text()
    after = text.split(README_MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
    assert match, "the README's embedding example must follow its marker"
    return match.group(1)


def test_the_readme_embedding_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "embed.py"
    script.write_text(readme_example())
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from zonda\n"


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


def test_wait_started_in_the_serving_loop() -> None:
    async def main() -> None:
        server = Server(Config(app=simple_app, port=0))
        serving = asyncio.create_task(server.serve(install_signal_handlers=False))
        await asyncio.wait_for(server.wait_started(), 10)
        assert server.started.is_set()
        assert (await get(server.port)).startswith(b"HTTP/1.1 200 ")
        await server.wait_started()  # once started, it returns at once
        server.shutdown()
        await asyncio.wait_for(serving, 10)
        await server.wait_started()  # and still after the stop: it did start

    asyncio.run(main())


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


async def lifespan_failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"port": "BUSY"}, ListenError, "address already in use"),
        ({"app": lifespan_failing_app}, LifespanFailure, "no database"),
        ({"app": "no_such_module_here:app"}, AppLoadError, "no module named"),
    ],
)
def test_wait_started_raises_what_stopped_serve(
    busy_port: int, options: dict[str, Any], error: type[Exception], text: str
) -> None:
    options = {"app": simple_app, "port": 0, **options}
    if options["port"] == "BUSY":
        options["port"] = busy_port

    async def main() -> None:
        server = Server(Config(**options))
        waiter = asyncio.create_task(server.wait_started())  # waiting before serve() even runs
        serving = asyncio.create_task(server.serve(install_signal_handlers=False))
        with pytest.raises(error, match=text):
            await asyncio.wait_for(waiter, 10)
        with pytest.raises(error, match=text):
            await serving
        with pytest.raises(error, match=text):
            await server.wait_started()  # later callers learn it too
        assert not server.started.is_set()

    asyncio.run(main())


def test_wait_started_from_another_loop_in_another_thread() -> None:
    server = Server(Config(app=simple_app, port=0, loop="asyncio"))
    thread = threading.Thread(
        target=run_in_loop, args=("asyncio", server.serve(install_signal_handlers=False))
    )
    thread.start()
    try:

        async def main() -> bytes:
            await asyncio.wait_for(server.wait_started(), 10)
            return await get(server.port)

        assert asyncio.run(main()).startswith(b"HTTP/1.1 200 ")
    finally:
        server.shutdown()
        thread.join(10)
    assert not thread.is_alive()


def test_wait_started_when_serve_is_cancelled_during_startup() -> None:
    startup_reached = threading.Event()

    async def slow_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        startup_reached.set()
        await asyncio.sleep(60)

    async def main() -> None:
        server = Server(Config(app=slow_startup, port=0, lifespan="on"))
        serving = asyncio.create_task(server.serve(install_signal_handlers=False))
        waiter = asyncio.create_task(server.wait_started())
        while not startup_reached.is_set():
            await asyncio.sleep(0.01)
        serving.cancel()
        with pytest.raises(RuntimeError, match="zonda stopped before it started serving") as raised:
            await asyncio.wait_for(waiter, 10)
        assert isinstance(raised.value.__cause__, asyncio.CancelledError)
        with pytest.raises(asyncio.CancelledError):
            await serving

    asyncio.run(main())


class LifespanRecorder:
    """An app that answers 200 and records its lifespan messages."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.seen.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await simple_app(scope, receive, send)


def test_cancelling_serve_still_shuts_down_on_asyncio() -> None:
    app = LifespanRecorder()

    async def main() -> None:
        server = Server(Config(app=app, port=0, lifespan="on"))
        serving = asyncio.create_task(server.serve(install_signal_handlers=False))
        await asyncio.wait_for(server.wait_started(), 10)
        assert (await get(server.port)).startswith(b"HTTP/1.1 200 ")
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        with pytest.raises(OSError):
            await get(server.port)

    asyncio.run(main())
    assert app.seen == ["lifespan.startup", "lifespan.shutdown"]


def test_serve_awaited_straight_from_a_trio_program_and_cancelled() -> None:
    """As with hypercorn's ``serve()``: no zonda runtime opened by hand; a sibling task waits for the start;
    cancelling the nursery still runs the shutdown (lifespan included) before serve() ends."""
    trio = pytest.importorskip("trio")
    app = LifespanRecorder()
    answers: list[bytes] = []

    async def fetch(port: int) -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
        return data

    async def main() -> None:
        server = Server(Config(app=app, port=0, lifespan="on"))
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(server.serve, install_signal_handlers=False))
                await server.wait_started()
                answers.append(await fetch(server.port))
                nursery.cancel_scope.cancel()
            with pytest.raises(OSError):
                await fetch(server.port)

    trio.run(main)
    assert answers[0].startswith(b"HTTP/1.1 200 ")
    assert app.seen == ["lifespan.startup", "lifespan.shutdown"]
