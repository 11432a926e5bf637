"""The trio driver serving real clients: the connection layer on ``serve_trio`` and ``zonda.server.Server`` on
``zonda.io.run("trio", ...)``, over a real socket (httpx HTTP/1.1 and HTTP/2, raw pipelining, WebSockets over
HTTP/1.1 and HTTP/2, TLS with ALPN h2, back-pressure both ways, files, a client reset, a Unix socket), with
trio-native, FastAPI and WSGI apps on it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sniffio
import trio

from helpers import raw_request, respond, simple_app, status_of, wait_for
from tlsutil import make_tls_files
from zonda.asgi.session import SessionContext
from zonda.config import Config
from zonda.connection.http1 import HTTP1Connection
from zonda.connection.shared import ServerShared
from zonda.io.trio import open_runtime, serve_trio
from zonda.server import bind_socket, ws_settings
from zonda.tls import create_ssl_context


class TrioServer:
    def __init__(self, port: int, shared: ServerShared, url: str) -> None:
        self.port = port
        self.shared = shared
        self.url = url


@contextmanager
def trio_server(app: Any, **options: Any) -> Iterator[TrioServer]:
    """``app`` served by ``serve_trio`` in a ``trio.run`` on a thread, with a ``ServerShared`` built as
    ``zonda.server`` builds it; cancelled at the end."""
    config = Config(app=app, port=0, host="127.0.0.1", **options)
    sock = bind_socket(config)
    ssl_context = create_ssl_context(config)
    context = SessionContext(app, {}, ws=ws_settings(config))
    shared = ServerShared(config, context, ssl_context)
    shared.refresh_date()
    started = threading.Event()
    token: list[Any] = []
    errors: list[BaseException] = []
    stop_event: list[Any] = []

    async def main() -> None:
        async with open_runtime() as runtime:
            loop = runtime.loop
            listeners = serve_trio(
                loop, [sock], lambda: HTTP1Connection(shared, loop), ssl_context, config.timeout_tls_handshake
            )
            stop_event.append(trio.Event())
            token.append(trio.lowlevel.current_trio_token())
            started.set()
            await stop_event[0].wait()
            listeners.close()
            await listeners.wait_closed()
            for connection in list(shared.connections):
                connection.abort()
            tasks = runtime.app_tasks()
            for task in tasks:
                task.cancel()
            await runtime.join(tasks, 5)
            assert not runtime.app_tasks()

    def target() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(10), "the trio server did not start"
    if errors:
        raise errors[0]
    port = sock.getsockname()[1]
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield TrioServer(port, shared, f"{scheme}://127.0.0.1:{port}")
    finally:
        if thread.is_alive():
            token[0].run_sync_soon(stop_event[0].set)
            thread.join(10)
        assert not thread.is_alive(), "the trio server did not stop"
        if errors:
            raise errors[0]


def test_http1_keep_alive_and_pipelining() -> None:
    with trio_server(simple_app) as server:
        with httpx.Client(base_url=server.url) as client:
            for index in range(5):
                response = client.get(f"/item/{index}")
                assert response.status_code == 200 and response.text == f"GET /item/{index}"
                assert response.http_version == "HTTP/1.1"
        pipelined = b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % index for index in range(10))
        answer = raw_request(
            server.port, pipelined + b"GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        assert answer.count(b"HTTP/1.1 200 OK") == 11
        positions = [answer.index(b"GET /%d" % index) for index in range(10)]
        assert positions == sorted(positions) and answer.endswith(b"GET /last")
        wait_for(lambda: not server.shared.connections, what="connection_lost for both connections")


def test_a_bad_request_gets_its_status_and_the_connection_closes() -> None:
    with trio_server(simple_app) as server:
        answer = raw_request(server.port, b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n")
        assert status_of(answer) == 400


def test_http2_prior_knowledge() -> None:
    with (
        trio_server(simple_app) as server,
        httpx.Client(base_url=server.url, http1=False, http2=True) as client,
    ):
        for index in range(3):
            response = client.get(f"/h2/{index}")
            assert response.http_version == "HTTP/2" and response.text == f"GET /h2/{index}"


def test_tls_with_alpn_h2_and_the_tls_extension(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send, scope["http_version"].encode())

    with trio_server(app, **files.mtls_options(cert_reqs="optional")) as server:
        context = files.client_context(client_cert=True, alpn=["h2", "http/1.1"])
        with httpx.Client(base_url=server.url, verify=context, http2=True) as client:
            assert client.get("/").text == "2"
            assert client.get("/").text == "2"
        with httpx.Client(base_url=server.url, verify=files.client_context()) as client:
            assert client.get("/").text == "1.1"
    tls = scopes[0]["extensions"]["tls"]
    assert scopes[0]["scheme"] == "https"
    assert tls["tls_version"] in (0x0303, 0x0304) and tls["client_cert_name"] == files.client_name
    assert tls["client_cert_chain"] and tls["server_cert"]


def test_a_client_that_is_not_tls_is_closed_unseen(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with trio_server(simple_app, **files.server_options()) as server:
        assert raw_request(server.port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n") == b""
        assert not server.shared.connections


def test_a_websocket_over_http1_and_the_server_still_serves() -> None:
    from websockets.sync.client import connect

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await trio.sleep(0)  # a trio-native await inside the app
                await send({"type": "websocket.send", "text": message["text"][::-1]})
        else:
            await simple_app(scope, receive, send)

    with trio_server(app) as server:
        with connect(f"ws://127.0.0.1:{server.port}/ws") as websocket:
            for text in ("hello", "trio", "x" * 100_000):
                websocket.send(text)
                assert websocket.recv(timeout=5) == text[::-1]
        assert httpx.get(server.url + "/after").text == "GET /after"


def test_a_large_response_to_a_slow_reader_is_held_back_and_arrives_whole() -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    total_chunks = 512  # 32 MiB
    sent = [0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(total_chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent[0] += 1
        await send({"type": "http.response.body", "body": b""})

    with trio_server(app) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", server.port))
        with sock:
            sock.settimeout(10)
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            received = len(sock.recv(65536))
            time.sleep(0.5)  # the server fills the socket buffers and must then wait for us
            held_at = sent[0]
            assert held_at < total_chunks // 2, f"the app sent {held_at} of {total_chunks} chunks unread"
            data = bytearray()
            while not data.endswith(b"0\r\n\r\n"):
                piece = sock.recv(1 << 20)
                assert piece
                data += piece
            received += len(data)
        assert sent[0] == total_chunks
        assert received > total_chunks * len(chunk)


def test_a_large_upload_read_slowly_arrives_whole() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            await trio.sleep(0.001)  # slower than the client: reading gets paused
            if not message.get("more_body"):
                break
        await respond(send, str(size).encode())

    body = os.urandom(1024) * 8 * 1024  # 8 MiB
    with trio_server(app) as server:
        response = httpx.post(server.url, content=body, timeout=20)
        assert response.text == str(len(body))


@pytest.mark.parametrize("tls", [False, True], ids=["os-sendfile", "tls-blocks"])
def test_pathsend_to_a_slow_reader_then_the_next_response(tmp_path: Path, tls: bool) -> None:
    """Plaintext files go by os.sendfile after the head, TLS ones in blocks read in a thread; either way the
    bytes come whole and in order with what follows on the connection, to a client slower than the server."""
    path = tmp_path / "big.bin"
    content = os.urandom(3 * 1024 * 1024 + 123)
    path.write_bytes(content)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != "/file":
            await simple_app(scope, receive, send)
            return
        headers = [(b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})

    files = make_tls_files(tmp_path)
    with trio_server(app, **(files.server_options() if tls else {})) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock = files.client_context().wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        with sock:
            for _ in range(2):  # the keep-alive connection serves a second file after the first
                sock.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\nGET /next HTTP/1.1\r\nhost: x\r\n\r\n")
                time.sleep(0.2)  # the server fills the socket and must wait for us
                data = b""
                while not data.endswith(b"GET /next"):
                    piece = sock.recv(1 << 20)
                    assert piece, data[-200:]
                    data += piece
                head, _, rest = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and rest[: len(content)] == content
                assert rest[len(content) :].startswith(b"HTTP/1.1 200")
            (connection,) = server.shared.connections
            assert connection._files.os_sendfile is not tls


def test_a_fastapi_app_with_middleware_runs_on_trio() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.middleware("http")
    async def tag(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-library"] = sniffio.current_async_library()
        return response

    @app.get("/items/{item}")
    async def item(item: int) -> dict[str, Any]:
        await trio.sleep(0.001)
        return {"item": item, "library": sniffio.current_async_library()}

    with trio_server(app) as server, httpx.Client(base_url=server.url) as client:
        for index in range(3):
            response = client.get(f"/items/{index}")
            assert response.json() == {"item": index, "library": "trio"}
            assert response.headers["x-library"] == "trio"


async def reverse_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A WebSocket that answers each text reversed, after a trio-native await; plain HTTP gets simple_app."""
    if scope["type"] != "websocket":
        await simple_app(scope, receive, send)
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await trio.sleep(0)
        await send({"type": "websocket.send", "text": message["text"][::-1]})


def test_a_websocket_over_http2_runs_through_the_tunnel() -> None:
    from h2ws import H2Client
    from wsframes import text

    with trio_server(reverse_websocket, ws_ping_interval=0.2, ws_ping_timeout=5) as server:
        with H2Client(server.port) as client:
            websocket = client.open_websocket("/ws")
            assert websocket.status == 200
            for word in ("tunnel", "trio"):
                websocket.send(text(word))
                frame = websocket.recv_frame()
                while frame.opcode == 0x9:  # the server's keep-alive pings: its own timer on the stream
                    frame = websocket.recv_frame()
                assert frame.payload == word[::-1].encode()
            time.sleep(0.5)
            frame = websocket.recv_frame()
            assert frame.opcode == 0x9  # a ping from the tunnel's timer
            assert client.request("GET", "/plain").data == b"GET /plain"  # the connection serves on
            websocket.close_handshake()
        wait_for(lambda: not server.shared.connections, what="the HTTP/2 connection's end")


def test_a_client_reset_mid_response_ends_the_connection_once(logs: pytest.LogCaptureFixture) -> None:
    from helpers import download_partly, rst_close

    outcome: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != "/endless":
            await simple_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        except OSError:  # ClientDisconnected
            outcome.append("disconnected")
            raise

    with trio_server(app) as server:
        sock = download_partly(server.port, b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n", 256 * 1024)
        rst_close(sock)
        wait_for(lambda: not server.shared.connections, what="connection_lost")
        wait_for(lambda: outcome == ["disconnected"], what="the app's send to raise")
        assert httpx.get(server.url + "/after").status_code == 200
    assert "Error in a connection" not in logs.text


def test_a_unix_socket(short_dir: str) -> None:
    path = os.path.join(short_dir, "zonda.sock")
    seen_scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen_scopes.append(scope)
        await respond(send, b"over unix")

    with trio_server(app, uds=path), httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
        assert client.get("http://zonda/").text == "over unix"
    assert seen_scopes[0]["server"] == (path, None) and seen_scopes[0]["client"] is None


def test_the_server_runs_on_trio_with_lifespan_and_a_graceful_shutdown(
    logs: pytest.LogCaptureFixture,
) -> None:
    """``zonda.server.Server`` itself through ``zonda.io.run("trio", ...)``: lifespan state reaches requests,
    a request in flight at shutdown finishes, then lifespan shutdown runs."""
    from zonda import Server
    from zonda.io import run

    events: list[str] = []
    release = threading.Event()
    in_flight = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = "hello from lifespan"
                    events.append(f"startup on {sniffio.current_async_library()}")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/slow":
            in_flight.set()
            await trio.to_thread.run_sync(release.wait, 10)
        await respond(send, scope["state"]["greeting"].encode())

    server = Server(Config(app=app, port=0, host="127.0.0.1", lifespan="on", timeout_graceful_shutdown=10))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run("trio", server.serve(install_signal_handlers=False))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert server.started.wait(10), errors
    url = f"http://127.0.0.1:{server.port}"
    assert httpx.get(url + "/").text == "hello from lifespan"
    slow: list[httpx.Response] = []
    client = threading.Thread(target=lambda: slow.append(httpx.get(url + "/slow", timeout=10)))
    client.start()
    assert in_flight.wait(10)
    server.shutdown()
    time.sleep(0.2)
    assert thread.is_alive() and not slow  # waiting for the request in flight
    release.set()
    client.join(10)
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert slow[0].text == "hello from lifespan"
    assert events == ["startup on trio", "shutdown"]
    assert "with trio" in logs.text


@contextmanager
def server_on_trio(app: Any, **options: Any) -> Iterator[Any]:
    """``zonda.server.Server`` itself run by ``zonda.io.run("trio", ...)`` in a thread; stopped after."""
    from zonda import Server
    from zonda.io import run

    server = Server(Config(app=app, port=0, host="127.0.0.1", **options))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run("trio", server.serve(install_signal_handlers=False))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            server.started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert server.started.wait(10) and not errors, errors
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        assert not thread.is_alive() and not errors, errors


def test_a_wsgi_app_on_trio_wakes_the_loop_from_its_threads() -> None:
    from zonda.asgi.wsgi import WSGIAdapter

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("content-type", "application/octet-stream")])
        yield threading.current_thread().name.encode() + b"|"
        for index in range(0, len(body), 65536):
            yield body[index : index + 65536]

    body = os.urandom(1024 * 1024)
    with (
        server_on_trio(WSGIAdapter(wsgi_app, threads=2), lifespan="on") as server,
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client,
    ):
        for _ in range(3):
            response = client.post("/echo", content=body)
            thread_name, _, echoed = response.content.partition(b"|")
            assert response.status_code == 200 and echoed == body
            assert thread_name != threading.main_thread().name.encode()
