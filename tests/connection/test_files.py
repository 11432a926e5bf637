"""File sending on the fake driver (``Connection.send_file``): a small file goes with the head, a larger one
through the loop's ``FileSender``, which waits on the connection's drain while writing is paused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakeio import FakeServer, responses
from wire import get
from zonda.errors import ClientDisconnected

Serve = Callable[..., FakeServer]


def file_app(path: Path, outcome: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        size = path.stat().st_size
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]}
        )
        try:
            await send({"type": "http.response.pathsend", "path": str(path)})
        except ClientDisconnected:
            outcome.append("disconnected")
            raise
        outcome.append("sent")

    return app


@pytest.mark.parametrize("size", [1000, 200_000])
def test_pathsend_sends_the_file_after_the_head(serve: Serve, tmp_path: Path, size: int) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    outcome: list[str] = []
    server = serve(file_app(path, outcome))
    stream = server.connect()
    stream.feed(get("/file"))
    [response] = responses(stream.take())
    assert response.body == path.read_bytes()
    assert outcome == ["sent"]
    stream.feed(get("/again"))  # still kept alive, the framing right
    assert responses(stream.take())[0].body == path.read_bytes()


def test_a_large_file_waits_for_the_drain_while_writing_is_paused(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"z" * 200_000)
    outcome: list[str] = []
    server = serve(file_app(path, outcome))
    stream = server.connect()
    stream.pause_writing()
    stream.feed(get("/file"))
    head, _, body = stream.take().partition(b"\r\n\r\n")
    assert b"content-length: 200000" in head
    assert 0 < len(body) < 200_000 and outcome == []  # a chunk went; the sender waits for the drain
    stream.resume_writing()
    assert outcome == ["sent"]
    assert len(body) + len(stream.take()) == 200_000


def test_a_file_send_waiting_on_the_drain_ends_when_the_peer_goes(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"z" * 200_000)
    outcome: list[str] = []
    server = serve(file_app(path, outcome))
    stream = server.connect()
    stream.pause_writing()
    stream.feed(get("/file"))
    stream.reset()
    assert outcome == ["disconnected"]
    assert not server.connections
