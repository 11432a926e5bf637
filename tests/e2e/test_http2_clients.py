"""HTTP/2 end to end with real clients: curl (TLS ALPN h2, prior knowledge, h2c upgrade with and without a body),
nghttp (server push, trailers, early hints, push disabled by the client), h2load (h2c and TLS), httpx with
``http2=True`` (one connection, concurrent streams), headless Chromium over HTTPS, mutual TLS, and ``--http 1|2``.

Every tool that is missing skips its test (``require_tool``; ``ZONDA_REQUIRE_TOOLS=1`` makes that a failure).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from h2socket import PREFACE, settings_frame
from helpers import REPO, raw_request, read_body, require_tool, respond, run_server, status_of, zonda_process
from tlsutil import TLSFiles, make_tls_files

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TLS_KEYS = {"server_cert", "client_cert_chain", "client_cert_name", "client_cert_error", "tls_version"}
PUSHING_PAGE = b"<link rel=stylesheet href=/style.css>main"


class AppState:
    """What the app saw, for the test thread to read; ``waiting`` counts /wait requests parked on the event."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.waiting = 0
        self.all_waiting = threading.Event()
        self.expected_waiters = 1
        self.event: anyio.Event | None = None


def make_app(state: AppState) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        state.paths.append(path)
        body = await read_body(receive)
        if path == "/push":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]}
            )
            await send(
                {"type": "http.response.push", "path": "/style.css", "headers": [(b"accept", b"text/css")]}
            )
            await send({"type": "http.response.body", "body": PUSHING_PAGE})
        elif path == "/style.css":
            await respond(send, b"body { color: green }", b"text/css")
        elif path == "/trailers":
            start = {"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-checksum")]}
            await send({**start, "trailers": True})
            await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
            await send({"type": "http.response.body", "body": b"part two"})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})
        elif path == "/hints":
            await send(
                {"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]}
            )
            await respond(send, b"hinted")
        elif path == "/wait":  # parks until /release: only concurrent streams get past it
            if state.event is None:
                state.event = anyio.Event()
            state.waiting += 1
            if state.waiting >= state.expected_waiters:
                state.all_waiting.set()
            await state.event.wait()
            await respond(
                send, json.dumps({"client": scope["client"], "version": scope["http_version"]}).encode()
            )
        elif path == "/release":
            assert state.event is not None
            state.event.set()
            await respond(send, json.dumps({"client": scope["client"]}).encode())
        else:
            tls = scope["extensions"].get("tls")
            data = {
                "http_version": scope["http_version"],
                "scheme": scope["scheme"],
                "method": scope["method"],
                "path": path,
                "body": body.decode("latin-1"),
                "host": dict(scope["headers"]).get(b"host", b"").decode(),
                "tls": tls,
                "extensions": sorted(scope["extensions"]),
            }
            await respond(send, json.dumps(data).encode(), b"application/json")

    return app


@pytest.fixture
def state() -> AppState:
    return AppState()


@pytest.fixture
def app(state: AppState) -> Callable[..., Any]:
    return make_app(state)


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def curl(*args: str) -> tuple[dict[str, Any], str, str]:
    """Run curl; return the JSON body, the HTTP version curl used (``%{http_version}``) and its stderr."""
    path = require_tool("curl")
    done = subprocess.run(
        [path, "-sS", "-v", "-w", "\n%{http_version}", *args], capture_output=True, text=True, timeout=15
    )
    assert done.returncode == 0, done.stderr
    body, _, version = done.stdout.rpartition("\n")
    return json.loads(body), version, done.stderr


def nghttp(*args: str) -> str:
    path = require_tool("nghttp")
    done = subprocess.run([path, "-nv", *args], capture_output=True, text=True, timeout=15)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def h2load(url: str) -> str:
    path = require_tool("h2load")
    done = subprocess.run(
        [path, "-n", "2000", "-c", "4", "-m", "10", url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --------------------------------------------------------------------------------------------- curl


def test_curl_http2_over_tls(app: Any, files: TLSFiles, loop: str) -> None:
    with run_server(app, loop=loop, **files.server_options()) as server:
        port = server.port
        data, version, log = curl("--http2", "--cacert", str(files.ca_pem), f"https://127.0.0.1:{port}/tls")
    assert version == "2"
    assert "ALPN: server accepted h2" in log
    assert data["http_version"] == "2"
    assert data["scheme"] == "https"
    assert data["host"] == f"127.0.0.1:{port}"  # from :authority
    assert set(data["tls"]) >= TLS_KEYS
    assert data["tls"]["tls_version"] in (0x0303, 0x0304)
    assert data["tls"]["client_cert_name"] is None
    assert {"http.response.trailers", "http.response.push", "http.response.early_hint"} <= set(
        data["extensions"]
    )


def test_curl_prior_knowledge(app: Any, loop: str) -> None:
    with run_server(app, loop=loop) as server:
        data, version, log = curl("--http2-prior-knowledge", f"http://127.0.0.1:{server.port}/pk?x=1")
    assert version == "2"
    assert data["http_version"] == "2"
    assert data["scheme"] == "http"
    assert data["tls"] is None
    assert "tls" not in data["extensions"]
    assert "HTTP/1.1 101" not in log  # no upgrade (a bare "101" can be part of a pointer in the log)


def test_curl_h2c_upgrade_get_and_post_with_a_body(app: Any) -> None:
    with run_server(app) as server:
        url = f"http://127.0.0.1:{server.port}/upgrade"
        get, get_version, get_log = curl("--http2", url)
        post, post_version, post_log = curl("--http2", "-d", "name=zonda&kind=server", url)
    for data, version, log in ((get, get_version, get_log), (post, post_version, post_log)):
        assert "HTTP/1.1 101 Switching Protocols" in log
        assert version == "2"
        assert data["http_version"] == "2"  # the upgraded request itself is answered over HTTP/2 (stream 1)
        assert data["scheme"] == "http"
    assert get["method"] == "GET"
    assert get["body"] == ""
    assert post["method"] == "POST"
    assert post["body"] == "name=zonda&kind=server"


# --------------------------------------------------------------------------------------------- nghttp


def stream_lines(output: str, stream_id: str) -> list[str]:
    return re.findall(rf"recv \(stream_id={stream_id}\) (.*)", output)


def main_stream(output: str) -> str:
    match = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", output)
    assert match, output
    return match.group(1)


def test_nghttp_server_push(app: Any, state: AppState) -> None:
    with run_server(app) as server:
        output = nghttp(f"http://127.0.0.1:{server.port}/push")
    main = main_stream(output)
    promise = re.search(
        rf"recv PUSH_PROMISE frame <[^>]*stream_id={main}>\s*\n.*\n.*promised_stream_id=(\d+)", output
    )
    assert promise, output
    pushed = promise.group(1)
    assert int(pushed) % 2 == 0  # server-initiated
    assert ":path: /style.css" in stream_lines(output, main)  # the promised request, on the parent stream
    assert "accept: text/css" in stream_lines(output, main)
    assert ":status: 200" in stream_lines(output, pushed)
    assert "content-type: text/css" in stream_lines(output, pushed)
    assert re.search(
        rf"recv DATA frame <length=21, flags=0x01, stream_id={pushed}>", output
    )  # the pushed body
    assert re.search(rf"recv DATA frame <length={len(PUSHING_PAGE)}, flags=0x01, stream_id={main}>", output)
    assert sorted(state.paths) == ["/push", "/style.css"]  # a new app instance answered the pushed request


def test_nghttp_push_from_starlette_before_the_response_starts() -> None:
    """Starlette's ``request.send_push_promise()`` sends http.response.push before http.response.start."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Route

    async def page(request: Request) -> HTMLResponse:
        await request.send_push_promise("/style.css")
        return HTMLResponse("<link rel=stylesheet href=/style.css>")

    async def style(request: Request) -> PlainTextResponse:
        return PlainTextResponse("body { color: green }", media_type="text/css")

    app = Starlette(routes=[Route("/", page), Route("/style.css", style)])
    with run_server(app, lifespan="off") as server:
        output = nghttp(f"http://127.0.0.1:{server.port}/")
    main = main_stream(output)
    promise = re.search(
        rf"recv PUSH_PROMISE frame <[^>]*stream_id={main}>\s*\n.*\n.*promised_stream_id=(\d+)", output
    )
    assert promise, output
    assert output.index("PUSH_PROMISE") < output.index(f"recv (stream_id={main}) :status: 200")
    assert ":status: 200" in stream_lines(output, promise.group(1))
    assert "content-type: text/css; charset=utf-8" in stream_lines(output, promise.group(1))


def test_nghttp_push_disabled_by_the_client(app: Any, state: AppState) -> None:
    with run_server(app) as server:
        output = nghttp("--no-push", f"http://127.0.0.1:{server.port}/push")
    main = main_stream(output)
    assert "SETTINGS_ENABLE_PUSH(0x02):0" in output.split("recv SETTINGS")[0]  # nghttp said so
    assert "PUSH_PROMISE" not in output
    assert ":status: 200" in stream_lines(output, main)
    assert re.search(rf"recv DATA frame <length={len(PUSHING_PAGE)}, flags=0x01, stream_id={main}>", output)
    assert state.paths == ["/push"]  # the push was dropped, not answered


def test_nghttp_trailers(app: Any) -> None:
    with run_server(app) as server:
        output = nghttp("-H", "te: trailers", f"http://127.0.0.1:{server.port}/trailers")
        without = nghttp(f"http://127.0.0.1:{server.port}/trailers")
    main = main_stream(output)
    lines = stream_lines(output, main)
    assert lines[0] == ":status: 200"
    assert lines[-1] == "x-checksum: abc123"  # after the body
    trailer_frame = output.rindex(f"recv (stream_id={main}) x-checksum: abc123")
    assert output.index(f"recv DATA frame <length=8, flags=0x00, stream_id={main}>") < trailer_frame
    assert re.search(
        rf"recv HEADERS frame <length=\d+, flags=0x05, stream_id={main}>", output[trailer_frame:]
    )
    # a client that did not say `te: trailers` gets the body, ended by an empty DATA frame, no trailers
    assert "x-checksum: abc123" not in without
    assert re.search(r"recv DATA frame <length=0, flags=0x01, stream_id=\d+>", without)


def test_nghttp_early_hints(app: Any) -> None:
    with run_server(app) as server:
        output = nghttp(f"http://127.0.0.1:{server.port}/hints")
    lines = stream_lines(output, main_stream(output))
    assert lines[0] == ":status: 103"
    assert lines[1] == "link: </style.css>; rel=preload; as=style"
    assert ":status: 200" in lines[2:]


# --------------------------------------------------------------------------------------------- h2load


def check_h2load(output: str, protocol: str) -> None:
    assert f"Application protocol: {protocol}" in output, output
    assert "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored" in output, (
        output
    )
    assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in output, output


def test_h2load_prior_knowledge(app: Any) -> None:
    with run_server(app, access_log=False) as server:
        check_h2load(h2load(f"http://127.0.0.1:{server.port}/"), "h2c")


def test_h2load_tls(app: Any, files: TLSFiles) -> None:
    with run_server(app, access_log=False, **files.server_options()) as server:
        check_h2load(h2load(f"https://127.0.0.1:{server.port}/"), "h2")


# --------------------------------------------------------------------------------------------- httpx


def test_httpx_http2_over_tls(app: Any, files: TLSFiles) -> None:
    context = files.client_context(alpn=["h2", "http/1.1"])
    with (
        run_server(app, **files.server_options()) as server,
        httpx.Client(http2=True, verify=context) as client,
    ):
        response = client.get(server.url + "/httpx")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    data = response.json()
    assert data["http_version"] == "2"
    assert data["scheme"] == "https"
    assert set(data["tls"]) >= TLS_KEYS


def test_httpx_concurrent_streams_on_one_connection(app: Any, state: AppState, files: TLSFiles) -> None:
    """Five requests park on an event that only a sixth request sets: all six finish only if the streams of
    the one connection run concurrently."""
    state.expected_waiters = 5

    async def scenario(url: str) -> tuple[list[httpx.Response], httpx.Response]:
        context = files.client_context(alpn=["h2", "http/1.1"])
        async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as client:
            first = await client.get(url + "/")  # the connection, established
            assert first.http_version == "HTTP/2"
            waits = [asyncio.ensure_future(client.get(url + "/wait")) for _ in range(5)]
            assert await asyncio.to_thread(state.all_waiting.wait, 5), "the five /wait requests run at once"
            assert not any(task.done() for task in waits)
            release = await client.get(url + "/release")
            return list(await asyncio.wait_for(asyncio.gather(*waits), 5)), release

    with run_server(app, **files.server_options()) as server:
        waited, release = asyncio.run(scenario(server.url))
    assert all(response.status_code == 200 and response.http_version == "HTTP/2" for response in waited)
    clients = {tuple(response.json()["client"]) for response in [*waited, release]}
    assert len(clients) == 1, f"one connection for all: {clients}"


# --------------------------------------------------------------------------------------------- Chromium


def test_chromium_loads_the_demo_page_over_h2(files: TLSFiles) -> None:
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    options = files.server_options()
    with run_server("examples.hello:app", app_dir=REPO, **options) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True)  # the test CA is not in Chromium's store
            page = context.new_page()
            response = page.goto(f"https://localhost:{server.port}/")
            assert response is not None and response.ok
            assert page.text_content("h1") == "Hello from zonda"
            assert page.evaluate("performance.getEntries()[0].nextHopProtocol") == "h2"
            json_response = page.evaluate("fetch('/json').then(r => r.json())")
            assert json_response == {"hello": "world", "path": "/json"}
            entries = page.evaluate("performance.getEntriesByType('resource').map(e => e.nextHopProtocol)")
            assert entries and set(entries) == {"h2"}
        finally:
            browser.close()


# --------------------------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_over_http2(app: Any, files: TLSFiles) -> None:
    with run_server(app, **files.mtls_options("required")) as server:
        # no client certificate: refused during or right after the handshake (TLS 1.3 sends the alert late)
        anonymous = files.client_context(alpn=["h2"])
        refused = (ssl.SSLError, ConnectionResetError, BrokenPipeError, httpx.HTTPError)
        with pytest.raises(refused), httpx.Client(http2=True, verify=anonymous) as client:
            client.get(server.url + "/")
        context = files.client_context(client_cert=True, alpn=["h2"])
        with httpx.Client(http2=True, verify=context) as client:
            response = client.get(server.url + "/mtls")
    assert response.http_version == "HTTP/2"
    data = response.json()
    assert data["http_version"] == "2"
    assert data["tls"]["client_cert_name"] == files.client_name
    assert data["tls"]["client_cert_name"].startswith("CN=zonda test client,")
    assert data["tls"]["client_cert_chain"] == files.client_chain_sent()


# --------------------------------------------------------------------------------------------- --http 1|2

HTTP_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = scope["http_version"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""


def alpn_of(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return sock.selected_alpn_protocol()


def version_by_curl(*args: str) -> tuple[str, str]:
    done = subprocess.run(
        [require_tool("curl"), "-sS", "-v", *args], capture_output=True, text=True, timeout=15
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_http_1_turns_http2_off(files: TLSFiles, tmp_path: Path) -> None:
    (tmp_path / "version_app.py").write_text(HTTP_APP)
    tls = ["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key)]
    common = ("version_app:app", "--port", "0", "--app-dir", str(tmp_path))
    with zonda_process(*common, "--http", "1") as plain:
        plain.wait_listening()
        answer = raw_request(plain.port, PREFACE + settings_frame())
        assert status_of(answer) == 400, answer  # the preface is a bad HTTP/1.1 request now
        assert b"connection: close" in answer.lower()
        body, log = version_by_curl("--http2", f"http://127.0.0.1:{plain.port}/")
        assert body == "1.1" and "HTTP/1.1 101" not in log  # the h2c upgrade is not taken
        plain.signal(signal.SIGTERM)
        assert plain.wait() == 0
    assert "400 response to" in plain.output
    with zonda_process(*common, "--http", "1", *tls) as secure:
        secure.wait_listening()
        assert alpn_of(secure.port, files.client_context(alpn=["h2", "http/1.1"])) == "http/1.1"
        body, log = version_by_curl(
            "--http2", "--cacert", str(files.ca_pem), f"https://127.0.0.1:{secure.port}/"
        )
        assert body == "1.1"
        assert "ALPN: server accepted http/1.1" in log
    assert "ALPN http/1.1," in secure.output


def test_http_2_offers_only_h2_on_tls(files: TLSFiles, tmp_path: Path) -> None:
    (tmp_path / "version_app.py").write_text(HTTP_APP)
    tls = ["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.key)]
    with zonda_process(
        "version_app:app", "--port", "0", "--app-dir", str(tmp_path), "--http", "2", *tls
    ) as proc:
        proc.wait_listening()
        assert alpn_of(proc.port, files.client_context(alpn=["http/1.1", "h2"])) == "h2"
        assert alpn_of(proc.port, files.client_context(alpn=["http/1.1"])) is None  # nothing in common
        body, log = version_by_curl(
            "--http2", "--cacert", str(files.ca_pem), f"https://127.0.0.1:{proc.port}/"
        )
        assert body == "2"
        assert "ALPN: server accepted h2" in log
    assert "ALPN h2," in proc.output
