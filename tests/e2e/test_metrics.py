"""``--metrics-bind``: Prometheus /metrics with exact counts (one process, and two workers under the
supervisor), /healthz, and /readyz through lifespan startup, serving and drain."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from h2socket import (
    ACK,
    DATA,
    END_STREAM,
    PREFACE,
    SETTINGS,
    ErrorCodes,
    RawH2,
    frame,
    ping,
    rst_stream,
    settings_frame,
)
from h2ws import H2Client
from helpers import (
    echo_messages,
    free_port,
    raw_request,
    read_response,
    run_server,
    simple_app,
    status_of,
    wait_for,
    zonda_process,
)
from tlsutil import make_tls_files
from wsframes import WSClient, text
from zonda import Config, Server
from zonda.server import run_in_loop

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/deny":
            await send({"type": "websocket.close"})  # a 403
            return
        await send({"type": "websocket.accept"})
        await echo_messages(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await anyio.sleep(0.5)
    status = 404 if scope["path"] == "/missing" else 200
    body = b"%d" % os.getpid()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and sorted labels -> value, for every sample of a scrape."""
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def scrape(port: int) -> dict[Any, float]:
    return samples(fetch(port, "/metrics")[1])


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scraped: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in scraped.items() if n == name)


def websocket_echo(port: int, messages: int) -> None:
    with WSClient(port, "/ws") as ws:
        assert ws.status == 101, ws.headers
        for _ in range(messages):
            ws.send(text("hi"))
            assert ws.recv_raw(4) == b"\x81\x02hi"
        ws.close_handshake(1000)


def test_metrics_single_process() -> None:
    with run_server(app, metrics_bind="127.0.0.1:0", limit_request_body=10) as running:
        port, metrics_port = running.port, running.server.metrics_port
        assert metrics_port is not None
        for _ in range(5):
            assert (
                status_of(raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
            )
        for _ in range(3):
            assert status_of(raw_request(port, b"POST /missing HTTP/1.0\r\nContent-Length: 0\r\n\r\n")) == 404
        big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        assert status_of(raw_request(port, big)) == 413
        websocket_echo(port, 4)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            status, text = fetch(metrics_port, "/metrics")
            assert status == 200
            during = samples(text)
            assert status_of(read_response(slow)) == 200
        wait_for(lambda: value(scrape(metrics_port), "zonda_connections_open", protocol="http1") == 0)
        after = scrape(metrics_port)
    assert value(during, "zonda_requests_in_flight") == 1
    assert value(during, "zonda_connections_open", protocol="http1") == 1
    assert value(after, "zonda_requests_total", method="GET", status_class="2xx", protocol="1.1") == 6
    assert value(after, "zonda_requests_total", method="POST", status_class="4xx", protocol="1.0") == 3
    assert value(after, "zonda_requests_total", method="GET", status_class="1xx", protocol="websocket") == 1
    assert value(after, "zonda_request_duration_seconds_count", protocol="1.1") == 6
    assert value(after, "zonda_request_duration_seconds_count", protocol="1.0") == 3
    assert (
        value(after, "zonda_request_duration_seconds_bucket", protocol="1.1", le="0.25") == 5
    )  # /slow: 0.5s
    assert value(after, "zonda_request_duration_seconds_bucket", protocol="1.1", le="+Inf") == 6
    # /slow sleeps 0.5 s on the loop clock; uvloop timers have millisecond resolution and may fire a little early
    assert value(after, "zonda_request_duration_seconds_sum", protocol="1.1") >= 0.49
    assert value(after, "zonda_rejections_total", reason="request_body") == 1
    assert value(after, "zonda_websocket_connections_total") == 1
    assert value(after, "zonda_websocket_messages_total", direction="in") == 4
    assert value(after, "zonda_websocket_messages_total", direction="out") == 4
    assert value(after, "zonda_bytes_total", direction="in") > 300
    assert value(after, "zonda_bytes_total", direction="out") > 500
    assert value(after, "zonda_requests_in_flight") == 0
    assert value(after, "zonda_connections_open", protocol="http1") == 0
    assert "process_cpu_seconds_total" in text  # the default registry: process and app metrics too


def test_websockets_over_http2_count_as_connections_and_denials_do_not() -> None:
    """Accepted over HTTP/2 (a 200, RFC 8441) as over HTTP/1.1 (a 101): one WebSocket connection each; a denied
    handshake is a response of the websocket protocol but not a connection."""
    with run_server(app, metrics_bind="127.0.0.1:0") as running, H2Client(running.port) as client:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None
        accepted = client.open_websocket("/ws")
        assert accepted.status == 200
        denied = client.open_websocket("/deny")
        assert denied.status == 403
        accepted.close_handshake(1000)
        websocket_echo(running.port, 1)  # and one over HTTP/1.1
        wait_for(lambda: value(scrape(metrics_port), "zonda_websocket_connections_total") == 2)
        after = scrape(metrics_port)
    assert value(after, "zonda_requests_total", method="GET", status_class="2xx", protocol="websocket") == 1
    assert value(after, "zonda_requests_total", method="GET", status_class="4xx", protocol="websocket") == 1
    assert value(after, "zonda_requests_total", method="GET", status_class="1xx", protocol="websocket") == 1


def test_limit_rejections_are_counted() -> None:
    with run_server(app, metrics_bind="127.0.0.1:0", limit_connections=1, limit_concurrency=1) as running:
        port, metrics_port = running.port, running.server.metrics_port
        assert metrics_port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as held:
            held.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            assert status_of(raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 503
            read_response(held)
        scraped = samples(fetch(metrics_port, "/metrics")[1])
    assert value(scraped, "zonda_rejections_total", reason="limit_connections") == 1


def test_health_endpoints() -> None:
    with run_server(app, metrics_bind="127.0.0.1:0") as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None
        assert fetch(metrics_port, "/healthz") == (200, "ok\n")
        assert fetch(metrics_port, "/readyz") == (200, "ready\n")
        assert fetch(metrics_port, "/other")[0] == 404
        assert fetch(metrics_port, "/metrics", method="POST")[0] == 405
        assert fetch(metrics_port, "/metrics", method="HEAD")[0] == 200
        with socket.create_connection(
            ("127.0.0.1", metrics_port), timeout=5
        ) as sock:  # nonsense: 400, closed
            sock.sendall(b"\x00\x01garbage\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")


class SlowStartApp:
    """Lifespan startup waits for ``release``; requests to /slow wait for ``finish``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finish = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            while not self.release.is_set():
                await anyio.sleep(0.01)
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        while scope["path"] == "/slow" and not self.finish.is_set():
            await anyio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def test_readyz_during_startup_and_drain(loop: str) -> None:
    slow = SlowStartApp()
    server = Server(Config(app=slow, port=0, metrics_bind="127.0.0.1:0", loop=loop, lifespan="on"))
    thread = threading.Thread(
        target=run_in_loop, args=(loop, server.serve(install_signal_handlers=False)), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: server.metrics_port is not None)
        metrics_port = server.metrics_port
        assert metrics_port is not None
        assert fetch(metrics_port, "/readyz") == (503, "not ready: starting\n")
        assert fetch(metrics_port, "/healthz") == (200, "ok\n")
        slow.release.set()
        wait_for(server.started.is_set)
        assert fetch(metrics_port, "/readyz") == (200, "ready\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            server.shutdown()
            time.sleep(0.1)
            assert fetch(metrics_port, "/readyz") == (503, "not ready: draining\n")
            slow.finish.set()
            assert status_of(read_response(sock)) == 200
    finally:
        slow.release.set()
        slow.finish.set()
        server.shutdown()
        thread.join(10)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- two workers

WORKER_APP = """
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def requests_total(metrics_port: int) -> float:
    return total(samples(fetch(metrics_port, "/metrics")[1]), "zonda_requests_total")


def test_metrics_across_two_workers(tmp_path: Path) -> None:
    (tmp_path / "mapp.py").write_text(WORKER_APP)
    metrics_port = free_port()
    args = ["mapp:app", "--port", "0", "--app-dir", str(tmp_path), "--workers", "2"]
    args += [
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        "--no-access-log",
        "--h2-max-control-frames",
        "50",
    ]
    with zonda_process(*args) as proc:
        proc.wait_listening(20)
        port = proc.port
        wait_for(lambda: len(re.findall(r"Metrics on http://", proc.output)) >= 2, timeout=20)
        wait_for(lambda: fetch(metrics_port, "/readyz")[0] == 200, timeout=20)

        def one(_: int) -> str:
            response = raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(response) == 200
            return response.partition(b"\r\n\r\n")[2].decode()

        sent = 0
        pids: set[str] = set()
        with ThreadPoolExecutor(8) as pool:
            while len(pids) < 2 or sent < 200:
                pids.update(pool.map(one, range(50)))
                sent += 50
                assert sent <= 2000, f"only worker(s) {pids} answered"
        # each worker moves its counts into the shared files every 0.5 s; a scrape sums every worker
        deadline = time.monotonic() + 5
        while requests_total(metrics_port) != sent and time.monotonic() < deadline:
            time.sleep(0.1)
        assert requests_total(metrics_port) == sent
        time.sleep(0.6)  # a further flush changes nothing: no request is counted twice
        scraped = samples(fetch(metrics_port, "/metrics")[1])
        assert total(scraped, "zonda_requests_total") == sent
        assert value(scraped, "zonda_request_duration_seconds_count", protocol="1.1") == sent
        assert value(scraped, "zonda_worker_restarts_total") == 0
        for _ in range(4):  # PING floods, to whichever worker takes each connection
            with RawH2(port) as flooder:
                flooder.send(*[ping()] * 100)
                assert flooder.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
        wait_for(
            lambda: value(scrape(metrics_port), "zonda_http2_rejections_total", reason="control_flood") == 4
        )
        os.kill(int(min(pids)), signal.SIGKILL)  # a worker of the supervisor this test started
        wait_for(lambda: "restarting it" in proc.output and proc.output.count("is ready") >= 3, timeout=20)
        scraped = samples(fetch(metrics_port, "/metrics")[1])
        assert value(scraped, "zonda_worker_restarts_total") == 1
        assert total(scraped, "zonda_requests_total") == sent  # a dead worker's counts stay
        assert value(scraped, "zonda_http2_rejections_total", reason="control_flood") == 4
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert len(pids) == 2


# --------------------------------------------------------------------------- HTTP/2


def test_http2_rejections_are_counted() -> None:
    """HTTP/2 attacks over real sockets, each counted once under its cause and the error code sent: a rapid
    reset and a PING flood (both end their connection with GOAWAY ENHANCE_YOUR_CALM), and a header list over
    the limit (431), counted while its connection is still open."""
    options = {"h2_max_resets": 20, "h2_max_control_frames": 50, "h2_max_header_list_size": 4096}
    with run_server(simple_app, metrics_bind="127.0.0.1:0", **options) as running:
        port, metrics_port = running.port, running.server.metrics_port
        assert metrics_port is not None
        assert total(scrape(metrics_port), "zonda_http2_rejections_total") == 0
        with RawH2(port) as attacker:
            attacker.send(
                *[part for i in range(30) for part in (attacker.headers(1 + 2 * i), rst_stream(1 + 2 * i))]
            )
            assert attacker.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
        with RawH2(port) as flooder:
            flooder.send(*[ping()] * 150)
            assert flooder.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
        with RawH2(port) as live:
            live.send(live.headers(1, "/", extra=[("x-big", "b" * 5000)]))
            assert live.response(1)[0] == 431
            during = scrape(metrics_port)  # the connection is still open: its count is there already
            live.send(live.headers(3, "/fine"))
            assert live.response(3)[2] == b"GET /fine"
        time.sleep(0.6)  # flushes in between add nothing: no event is counted twice
        after = scrape(metrics_port)
    assert value(during, "zonda_http2_rejections_total", reason="header_list_too_large") == 1
    assert value(after, "zonda_http2_rejections_total", reason="rapid_reset") == 1
    assert value(after, "zonda_http2_rejections_total", reason="control_flood") == 1
    assert value(after, "zonda_http2_rejections_total", reason="enhance_your_calm") == 2
    assert value(after, "zonda_http2_rejections_total", reason="header_list_too_large") == 1
    assert total(after, "zonda_http2_rejections_total") == 5


async def upload_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request body and answers with its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"%d" % size
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def data_frames(stream_id: int, body: bytes, size: int = 16384) -> list[bytes]:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return [
        frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, stream_id, c) for i, c in enumerate(chunks)
    ]


H2C_UPGRADE = (
    b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: \r\nContent-Length: %d\r\n\r\n"
)


@pytest.mark.parametrize("how", ["prior knowledge", "TLS ALPN h2", "h2c upgrade"])
def test_http2_bytes_are_counted(tmp_path: Path, how: str) -> None:
    """zonda_bytes_total counts HTTP/2 connections exactly: every byte the client wrote (a 50 000-byte
    upload among them), however the connection became HTTP/2, and every byte it read back."""
    body = os.urandom(50_000)
    files = make_tls_files(tmp_path) if how == "TLS ALPN h2" else None
    options = files.server_options() if files is not None else {}
    with run_server(upload_app, metrics_bind="127.0.0.1:0", **options) as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None
        head = b""  # the 101, for h2c
        if how == "h2c upgrade":
            # one write: the HTTP/1.1 driver reads the body and the preface too, and hands them over
            raw = RawH2(running.port, preface=False)
            sent = H2C_UPGRADE % len(body) + body + PREFACE + settings_frame()
            raw.send(sent)
            while not head.endswith(b"\r\n\r\n"):
                head += raw.sock.recv(1)  # byte by byte: the frames that follow are RawH2's to read
            assert head.startswith(b"HTTP/1.1 101"), head
        else:
            raw = RawH2(running.port, context=files.client_context(alpn=["h2"]) if files else None)
            sent = PREFACE + settings_frame() + frame(SETTINGS, ACK, 0)  # what RawH2 has sent so far
            upload = [raw.headers(1, "/upload", "POST", end_stream=False), *data_frames(1, body)]
            raw.send(*upload)
            sent += b"".join(upload)
        with raw:
            status, _, answer = raw.response(1)
            assert (status, answer) == (200, b"50000")
            while_open = scrape(metrics_port)
        assert value(while_open, "zonda_connections_open", protocol="http2") == 1
        assert value(while_open, "zonda_connections_open", protocol="http1") == 0
        received = len(head) + sum(9 + len(f.payload) for f in raw.frames)
        wait_for(lambda: not running.server.shared.connections)
        scraped = scrape(metrics_port)
    assert value(scraped, "zonda_bytes_total", direction="in") == len(sent)
    assert value(scraped, "zonda_bytes_total", direction="out") == received


def test_http3_is_counted(tmp_path: Path) -> None:
    """Requests under protocol "3", the connection under http3, and its datagrams' bytes both ways."""
    import asyncio

    from h3client import h3_connect

    files = make_tls_files(tmp_path)
    with run_server(app, metrics_bind="127.0.0.1:0", http3=True, **files.server_options()) as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None

        async def go() -> dict[Any, float]:
            async with h3_connect(running.server.quic_port, files.ca_pem) as client:
                for _ in range(3):
                    assert (await client.request("GET", "/")).status == 200
                assert (await client.request("GET", "/missing")).status == 404
                await asyncio.to_thread(
                    wait_for,
                    lambda: value(scrape(metrics_port), "zonda_connections_open", protocol="http3") == 1,
                )
                return scrape(metrics_port)

        during = asyncio.run(go())
        wait_for(lambda: value(scrape(metrics_port), "zonda_connections_open", protocol="http3") == 0)
        after = scrape(metrics_port)
    assert value(during, "zonda_connections_open", protocol="http3") == 1
    assert value(after, "zonda_requests_total", method="GET", status_class="2xx", protocol="3") == 3
    assert value(after, "zonda_requests_total", method="GET", status_class="4xx", protocol="3") == 1
    assert value(after, "zonda_bytes_total", direction="in") > 1200  # the client's Initial alone
    assert value(after, "zonda_bytes_total", direction="out") > 1200
