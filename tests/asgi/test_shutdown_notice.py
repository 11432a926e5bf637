"""The shutdown notice at the ASGI bridge (``--shutdown-stream-notice``), through a real in-process server.

``shutdown_stream_notice`` seconds before the graceful timeout ends, a response still streaming whose request was
read whole gets ``http.disconnect`` from ``receive()``, while ``send()`` keeps working so the app can end its
body; an app that returns instead has the body ended for it when the framing allows. Request bodies still
arriving, and handlers that never call ``receive()``, are left alone until the hard close.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from helpers import Record, dechunk, read_until_closed, run_server, wait_for

GRACEFUL = 3.0
NOTICE = 2.0  # so the notice comes 1 s into the shutdown
START_CHUNKED = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def more(body: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": True}


def end(body: bytes = b"") -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": False}


def open_stream(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    return sock


def split(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.lower(), body


def test_a_waiting_receive_wakes_with_disconnect_at_the_notice_and_send_still_works(
    loop: str, logs: pytest.LogCaptureFixture
) -> None:
    record = Record()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert await receive() == {"type": "http.request", "body": b"", "more_body": False}
        await send(START_CHUNKED)
        await send(more(b"hello\n"))
        record.add("streaming", True)
        message = await receive()  # the request was read whole: this waits for the notice
        record.add("message", (message["type"], time.monotonic()))
        await send(more(b"bye\n"))  # no ClientDisconnected: the client is still there
        await send(end())

    options = {"timeout_graceful_shutdown": GRACEFUL, "shutdown_stream_notice": NOTICE, "loop": loop}
    with run_server(app, **options) as server, ThreadPoolExecutor(1) as pool:
        sock = open_stream(server.port, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        record.wait("streaming")
        stopped_at = time.monotonic()
        stopping = pool.submit(server.stop, 10.0)
        response = read_until_closed(sock, 10.0)
        sock.close()
        stopping.result(10)
        finished_at = time.monotonic()
    [(kind, told_at)] = record.data["message"]
    assert kind == "http.disconnect"
    assert GRACEFUL - NOTICE - 0.1 <= told_at - stopped_at < GRACEFUL  # at the notice point, not at once
    assert finished_at - stopped_at < GRACEFUL
    head, body = split(response)
    assert b"transfer-encoding: chunked" in head
    assert dechunk(body) == (b"hello\nbye\n", True)  # the last chunk, then the connection closed
    assert "streaming response(s) to end" in logs.text
    assert "graceful timeout" not in logs.text.replace("before the graceful timeout", "")


@pytest.mark.parametrize("path", ["/chunked", "/sized"])
def test_an_app_that_returns_after_the_notice_has_its_body_ended_if_the_framing_allows(
    path: str, logs: pytest.LogCaptureFixture
) -> None:
    """As sse-starlette does: on any http.disconnect it stops without sending ``more_body=False``."""
    record = Record()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"100")] if scope["path"] == "/sized" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(more(b"part\n"))
        record.add("streaming", True)
        while (await receive())["type"] != "http.disconnect":
            pass

    options = {"timeout_graceful_shutdown": GRACEFUL, "shutdown_stream_notice": NOTICE}
    with run_server(app, **options) as server, ThreadPoolExecutor(1) as pool:
        sock = open_stream(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        record.wait("streaming")
        stopped_at = time.monotonic()
        stopping = pool.submit(server.stop, 10.0)
        response = read_until_closed(sock, 10.0)
        sock.close()
        stopping.result(10)
        assert time.monotonic() - stopped_at < GRACEFUL
    head, body = split(response)
    if path == "/chunked":
        assert dechunk(body) == (b"part\n", True)
        assert "without completing the response" not in logs.text
    else:  # 95 bytes short of the declared length: nothing honest to end it with, so it is cut
        assert b"content-length: 100" in head
        assert body == b"part\n"
        assert "Response cut at shutdown (GET /sized)" in logs.text


def test_a_request_body_not_yet_read_comes_before_the_disconnect(logs: pytest.LogCaptureFixture) -> None:
    record = Record()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(START_CHUNKED)
        await send(more(b"started\n"))
        record.add("streaming", True)
        while not record.go.is_set():  # until the notice was given
            await asyncio.sleep(0.01)
        first, second = await receive(), await receive()
        record.add("messages", [first, second])
        await send(end(b"done\n"))

    options = {"timeout_graceful_shutdown": GRACEFUL, "shutdown_stream_notice": GRACEFUL}  # notice at once
    with run_server(app, **options) as server, ThreadPoolExecutor(1) as pool:
        sock = open_stream(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\npayload")
        record.wait("streaming")
        stopping = pool.submit(server.stop, 10.0)
        wait_for(lambda: "streaming response(s) to end" in logs.text, what="the notice")
        record.go.set()
        response = read_until_closed(sock, 10.0)
        sock.close()
        stopping.result(10)
    [messages] = record.data["messages"]
    assert messages == [
        {"type": "http.request", "body": b"payload", "more_body": False},
        {"type": "http.disconnect"},
    ]
    assert dechunk(split(response)[1]) == (b"started\ndone\n", True)


def test_an_upload_in_progress_is_not_told_and_finishes() -> None:
    """The request body is still arriving at the notice point: its app reads it to the end and answers."""
    record = Record()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(START_CHUNKED)
        await send(more(b"reading\n"))
        record.add("streaming", True)
        kinds, size = [], 0
        while True:
            message = await receive()
            kinds.append(message["type"])
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        record.add("kinds", set(kinds))
        await send(end(b"got %d\n" % size))

    graceful, notice = 4.0, 3.0  # the notice at 1 s; the upload goes on until about 1.6 s
    options = {"timeout_graceful_shutdown": graceful, "shutdown_stream_notice": notice}
    with run_server(app, **options) as server, ThreadPoolExecutor(1) as pool:
        sock = open_stream(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        record.wait("streaming")
        stopped_at = time.monotonic()
        stopping = pool.submit(server.stop, 10.0)
        for _ in range(8):
            sock.sendall(b"64\r\n" + b"x" * 100 + b"\r\n")
            time.sleep(0.2)
        assert time.monotonic() - stopped_at > graceful - notice  # still uploading after the notice point
        sock.sendall(b"0\r\n\r\n")
        response = read_until_closed(sock, 10.0)
        sock.close()
        stopping.result(10)
    assert record.data["kinds"] == [{"http.request"}]
    assert dechunk(split(response)[1]) == (b"reading\ngot 800\n", True)


@pytest.mark.parametrize("case", ["never calls receive", "notice off"])
def test_what_gets_no_notice_is_cut_at_the_hard_close(case: str, logs: pytest.LogCaptureFixture) -> None:
    record = Record()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(START_CHUNKED)
        await send(more(b"tick\n"))
        record.add("streaming", True)
        if case == "notice off":
            await receive()  # the (empty) request
            record.add("message", await receive())  # never returns: cancelled at the hard close
        while True:
            await send(more(b"tick\n"))
            await asyncio.sleep(0.05)

    graceful = 1.0
    notice = 0.0 if case == "notice off" else graceful  # otherwise at once: the app does not listen
    options = {"timeout_graceful_shutdown": graceful, "shutdown_stream_notice": notice}
    with run_server(app, **options) as server, ThreadPoolExecutor(1) as pool:
        sock = open_stream(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        record.wait("streaming")
        stopped_at = time.monotonic()
        stopping = pool.submit(server.stop, 10.0)
        response = read_until_closed(sock, 10.0)
        cut_at = time.monotonic()
        sock.close()
        stopping.result(10)
    assert graceful - 0.1 <= cut_at - stopped_at < graceful + 2.0
    payload, ended = dechunk(split(response)[1])
    assert payload.startswith(b"tick\n")
    assert not ended  # no last chunk: the client can tell it was cut
    assert not record.data["message"]
    assert "still open after the graceful timeout" in logs.text
