"""Files sent by the server: ``http.response.zerocopysend`` and ``http.response.pathsend`` on HTTP/1.1, over a real
zonda on loopback with raw sockets, httpx and curl, on every driver (``os.sendfile`` driven from the loop thread),
and over TLS, where files are read in blocks instead. (Every HTTP version: test_extensions_files.py.)"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from helpers import assert_still_serving, download_partly, require_tool, rst_close, run_server, status_of

Scope = dict[str, Any]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random files: small (sent with the head), 3 MiB (sent by sendfile), and a sparse 64 MiB one."""
    directory = tmp_path_factory.mktemp("sendfile")
    made = {}
    for name, size in (("small", 5000), ("a", 3 * MIB + 17), ("b", 700_001)):
        made[name] = directory / name
        made[name].write_bytes(os.urandom(size))
    made["big"] = directory / "big"
    with made["big"].open("wb") as out:
        out.truncate(64 * MIB)  # holes read as zeros: no disk, still a regular file for sendfile
    return made


class FileApp:
    """Routes: /zc (zerocopysend; ?name, offset, count, cl=declared length, nocl, pos=seek first), /multi
    (several files and bodies, chunked), /path (pathsend; ?name), /mixed-path (a body, then pathsend),
    /extensions, anything else: 200 "alive". ``outcomes`` records how sends into a gone client ended."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.outcomes: list[str] = []
        self.done = threading.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
        path = scope["path"]
        if path == "/zc":
            await self.zerocopy(send, query)
        elif path == "/multi":
            await self.multi(send)
        elif path == "/big":  # one final body: the next pipelined response starts while it is still buffered
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"B" * (8 * MIB)})
        elif path in ("/path", "/mixed-path"):
            headers = [(b"content-type", b"application/octet-stream")]
            if "nocl" not in query:
                size = self.files[query.get("name", "a")].stat().st_size
                headers.append((b"content-length", b"%d" % size))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if path == "/mixed-path":
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await send({"type": "http.response.pathsend", "path": str(self.files[query.get("name", "a")])})
        elif path == "/extensions":
            body = json.dumps(sorted(scope["extensions"])).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"alive"})

    async def zerocopy(self, send: Any, query: dict[str, str]) -> None:
        path = self.files[query.get("name", "a")]
        size = path.stat().st_size
        offset = int(query.get("offset", "0"))
        count = int(query.get("count", str(size - offset)))
        headers = [(b"content-type", b"application/octet-stream")]
        if "nocl" not in query:
            headers.append((b"content-length", query.get("cl", str(count)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with path.open("rb") as file:
            message: dict[str, Any] = {"type": "http.response.zerocopysend", "file": file}
            if "pos" in query:
                file.seek(offset)  # no offset key: the server starts at the file's position
            else:
                message["offset"] = offset
            if "count" in query:
                message["count"] = count
            try:
                await send(message)
            except OSError as exc:
                self.outcomes.append(type(exc).__name__)
                raise
            finally:
                self.done.set()
            if "pos" in query:
                assert file.tell() == offset + count  # left after what was sent, as a read would

    async def multi(self, send: Any) -> None:
        """a, a body, b from 1000 on, a's first 10 bytes: one chunked response."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with self.files["a"].open("rb") as a, self.files["b"].open("rb") as b:
            await send({"type": "http.response.zerocopysend", "file": a, "more_body": True})
            await send({"type": "http.response.body", "body": b"--between--", "more_body": True})
            await send({"type": "http.response.zerocopysend", "file": b, "offset": 1000, "more_body": True})
            await send({"type": "http.response.zerocopysend", "file": a, "offset": 0, "count": 10})


def serve(files: dict[str, Path], loop: str, **options: Any) -> Any:
    return run_server(FileApp(files), loop=loop, **options)


def expected_multi(files: dict[str, Path]) -> bytes:
    a, b = files["a"].read_bytes(), files["b"].read_bytes()
    return a + b"--between--" + b[1000:] + a[:10]


def test_extensions_offered_on_plain_http(files: dict[str, Path], loop: str) -> None:
    with serve(files, loop) as server:
        offered = httpx.get(server.url + "/extensions").json()
        assert "http.response.zerocopysend" in offered and "http.response.pathsend" in offered


def test_zerocopysend_whole_files_and_ranges_with_httpx(files: dict[str, Path], loop: str) -> None:
    a = files["a"].read_bytes()
    with serve(files, loop) as server, httpx.Client(base_url=server.url) as client:
        for name in ("a", "small", "b"):
            response = client.get("/zc", params={"name": name})
            assert response.content == files[name].read_bytes()
            assert response.headers["content-length"] == str(files[name].stat().st_size)
        assert client.get("/zc", params={"offset": "12345", "count": "2000000"}).content == a[12345:2012345]
        assert client.get("/zc", params={"offset": "100", "count": "50"}).content == a[100:150]
        response = client.get("/zc", params={"offset": "100", "pos": "1"})  # from the file's position
        assert response.content == a[100:]
        response = client.get("/zc", params={"offset": "3000000", "nocl": "1"})  # no CL, one final file
        assert response.content == a[3000000:]
        assert response.headers["content-length"] == str(len(a) - 3000000)
        response = client.get("/multi")  # several files and a body, more_body: chunked
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.content == expected_multi(files)
        assert client.get("/").text == "alive"  # the same connection, still in step


def test_plaintext_files_go_by_os_sendfile(files: dict[str, Path], loop: str) -> None:
    with serve(files, loop) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/zc").content == files["a"].read_bytes()
        (connection,) = server.server.shared.connections
        assert connection._files.os_sendfile


def test_zerocopysend_with_curl(files: dict[str, Path], loop: str, tmp_path: Path) -> None:
    curl = require_tool("curl")
    with serve(files, loop) as server:
        out = tmp_path / "out.bin"
        for path in ("/zc?name=a", "/multi", "/zc?name=a&offset=5&count=1000000"):
            subprocess.run([curl, "-sS", "--fail", "-o", str(out), server.url + path], check=True, timeout=30)
            expected = {
                "/zc?name=a": files["a"].read_bytes(),
                "/multi": expected_multi(files),
            }.get(path, files["a"].read_bytes()[5:1000005])
            assert out.read_bytes() == expected


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_file_waits_for_the_bytes_ahead_of_it_and_pipelined_requests_wait_their_turn(
    files: dict[str, Path], loop: str
) -> None:
    a, b = files["a"].read_bytes(), files["b"].read_bytes()
    with (
        serve(files, loop) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(
            b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /zc?name=a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /path?name=b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        time.sleep(0.2)  # the file's turn comes while megabytes of /big wait in the server's buffers
        for expected in (b"B" * (8 * MIB), a, b):
            head, rest = read_head(sock)
            assert status_of(head) == 200 and b"content-length: %d" % len(expected) in head
            assert rest + read_exactly(sock, len(expected) - len(rest)) == expected


def test_head_sends_no_file_bytes(files: dict[str, Path], loop: str) -> None:
    with (
        serve(files, loop) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"HEAD /zc?name=a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /path HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"alive"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        *heads, last, body = data.split(b"\r\n\r\n")  # a HEAD response ends at its blank line
        size = files["a"].stat().st_size
        assert len(heads) == 2 and all(b"content-length: %d" % size in head for head in heads)
        assert status_of(last) == 200 and body == b"alive"


def test_content_length_mismatch_closes_the_connection(
    files: dict[str, Path], loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="zonda")
    with serve(files, loop) as server:
        for cl in (b"10", b"99999999"):  # less than the file, more than the file
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GET /zc?name=b&cl=%s HTTP/1.1\r\nHost: x\r\n\r\n" % cl)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert status_of(head) == 200 and b"content-length: %s" % cl in head  # the head, then close
            assert body == (b"" if cl == b"10" else files["b"].read_bytes())
        errors = [r.getMessage() for r in caplog.records if r.name == "zonda.error"]
        assert len(errors) == 2 and all("Exception in ASGI app" in e for e in errors)
        assert "content-length (10)" in caplog.text and "of 99999999" in caplog.text
        assert_still_serving(server.port)


def test_pathsend(files: dict[str, Path], loop: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="zonda")
    with serve(files, loop) as server, httpx.Client(base_url=server.url) as client:
        for name in ("a", "small", "big"):
            response = client.get("/path", params={"name": name})
            if name == "big":
                assert len(response.content) == 64 * MIB and not response.content.strip(b"\0")
            else:
                assert response.content == files[name].read_bytes()
        response = client.get("/path", params={"name": "b", "nocl": "1"})
        assert response.content == files["b"].read_bytes()
        assert response.headers["content-length"] == str(files["b"].stat().st_size)
        with pytest.raises(httpx.HTTPError):
            client.get("/mixed-path")  # a body before pathsend: an app error after the head
    assert "Expected no body before http.response.pathsend, got 1 bytes" in caplog.text


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_disconnect_mid_file(
    files: dict[str, Path], loop: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zonda")
    app = FileApp(files)
    with run_server(app, loop=loop) as server:
        sock = download_partly(server.port, b"GET /zc?name=big HTTP/1.1\r\nHost: x\r\n\r\n", 2 * MIB)
        if how == "reset":
            rst_close(sock)
        else:
            sock.close()
        assert app.done.wait(10)
        assert app.outcomes == ["ClientDisconnected"]
        assert_still_serving(server.port)
    assert not [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.WARNING]


def test_stalled_client_gets_the_whole_file_later(files: dict[str, Path], loop: str) -> None:
    """Back-pressure: the server waits for a client that stops reading, and the other connections go on."""
    with (
        serve(files, loop) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /zc?name=big HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(65536)
        assert_still_serving(server.port)  # the loop is free while this file waits for its client
        received = len(data.partition(b"\r\n\r\n")[2])
        buffer = bytearray(MIB)
        while received < 64 * MIB:
            count = sock.recv_into(buffer)
            assert count, "the server closed early"
            received += count
        assert received == 64 * MIB


def test_file_bytes_count_in_the_metrics(files: dict[str, Path], loop: str) -> None:
    pytest.importorskip("prometheus_client")
    sent = files["a"].stat().st_size + files["b"].stat().st_size

    def bytes_out(metrics_port: int) -> float:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        line = next(
            line for line in text.splitlines() if line.startswith('zonda_bytes_total{direction="out"}')
        )
        return float(line.split()[-1])

    with (
        serve(files, loop, metrics_bind="127.0.0.1:0") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert len(client.get("/zc?name=a").content) + len(client.get("/path?name=b").content) == sent
        deadline = time.monotonic() + 5
        while bytes_out(server.server.metrics_port) < sent and time.monotonic() < deadline:
            time.sleep(0.05)  # counts reach the exposition within half a second
        assert sent < bytes_out(server.server.metrics_port) < sent + 2000  # the files, once, and two heads


# ------------------------------------------------------------------ TLS: files read in blocks


@pytest.fixture
def tls_files(tmp_path: Path) -> Any:
    if importlib.util.find_spec("zonda.tls") is None or importlib.util.find_spec("trustme") is None:
        pytest.skip("TLS support (zonda.tls) or trustme is not installed")
    from tlsutil import make_tls_files

    return make_tls_files(tmp_path)


def test_tls_sends_files_in_blocks(files: dict[str, Path], loop: str, tls_files: Any) -> None:
    """Both extensions are offered over TLS too (as on every connection): the bytes are read in blocks, never
    by os.sendfile, since ssl needs them."""
    a = files["a"].read_bytes()
    with (
        serve(files, loop, **tls_files.server_options()) as server,
        httpx.Client(base_url=server.url, verify=tls_files.client_context()) as client,
    ):
        offered = client.get("/extensions").json()
        assert "http.response.pathsend" in offered and "http.response.zerocopysend" in offered
        for name in ("a", "small", "b"):
            assert client.get("/path", params={"name": name}).content == files[name].read_bytes()
        (connection,) = server.server.shared.connections
        assert not connection._files.os_sendfile  # read in blocks: ssl needs the bytes
        assert client.get("/zc", params={"offset": "12345", "count": "2000000"}).content == a[12345:2012345]
        assert client.get("/multi").content == expected_multi(files)
        assert client.get("/").text == "alive"
