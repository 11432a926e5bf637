"""WSGI apps served for real: PEP 3333 checker apps, a Flask app and a Django project, driven over loopback by
httpx, curl and raw sockets; errors, the event loop staying free, and memory with 200 MiB bodies."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest

from h2socket import H2Client
from helpers import (
    REPO,
    assert_still_serving,
    download_partly,
    raw_request,
    read_response,
    require_tool,
    rst_close,
    run_server,
    status_of,
    wait_for,
    zonda_process,
)

E2E = str(Path(__file__).parent)
Environ = dict[str, Any]


def curl(*args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        [require_tool("curl"), "-sS", "--fail-with-body", *args], capture_output=True, timeout=30, input=stdin
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


# ------------------------------------------------------------------ a PEP 3333 checker app


def checker_app(environ: Environ, start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/echo":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(size) if size else b"".join(environ["wsgi.input"])
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))]
        )
        return [data]
    if path == "/lines":
        count = sum(1 for _ in environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(count).encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(100))
    if path == "/environ":
        keys = {k: v for k, v in environ.items() if k.isupper()}
        body = json.dumps(keys).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


CHECKED = validator(checker_app)


def test_checker_app_with_httpx() -> None:
    with run_server(CHECKED, interface="wsgi") as server, httpx.Client(base_url=server.url) as client:
        response = client.post("/echo", content=b"x" * 100_000)
        assert response.status_code == 200 and response.content == b"x" * 100_000

        def chunks() -> Iterator[bytes]:
            for i in range(50):
                yield b"line %d\n" % i

        response = client.post("/lines", content=chunks())  # chunked, no Content-Length
        assert response.text == "50"
        response = client.get("/stream")
        assert response.text == "".join(f"part {i}\n" for i in range(100))
        response = client.get("/environ", params={"q": "a b"}, headers={"X-Test": "1"})
        environ = response.json()
        assert environ["QUERY_STRING"] == "q=a+b" and environ["HTTP_X_TEST"] == "1"
        assert environ["SERVER_PORT"] == str(server.port) and environ["REMOTE_ADDR"] == "127.0.0.1"
        assert client.head("/stream").content == b""
        assert client.get("/nope").status_code == 404


def test_checker_app_with_curl(tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3_000_000))
    with run_server(CHECKED, interface="wsgi", root_path="/mnt") as server:
        assert curl("--data-binary", f"@{upload}", server.url + "/echo") == upload.read_bytes()
        body = curl(
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            server.url + "/lines",
            stdin=b"a\nb\nc\n",
        )
        assert body == b"3"
        environ = json.loads(curl(server.url + "/environ"))
        assert environ["SCRIPT_NAME"] == "/mnt" and environ["PATH_INFO"] == "/environ"


def test_app_error_before_headers_is_a_500_then_close(caplog: pytest.LogCaptureFixture) -> None:
    def broken(environ: Environ, start_response: Any) -> list[bytes]:
        raise ValueError("the WSGI app broke")

    caplog.set_level(logging.DEBUG, logger="zonda")
    with (
        run_server(broken) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(sock)
        assert status_of(response) == 500 and b"connection: close" in response.lower()
        assert sock.recv(10) == b""  # then the server closes
    errors = [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert errors[0].exc_info[1].args == ("the WSGI app broke",)
    assert "broken" in caplog.text  # the traceback reaches into the app


def test_app_error_after_headers_aborts(caplog: pytest.LogCaptureFixture) -> None:
    def half(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("mid-body")

    caplog.set_level(logging.DEBUG, logger="zonda")
    with run_server(half) as server:
        response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(response) == 200 and b"partial" in response
        assert not response.endswith(b"0\r\n\r\n")  # no final chunk: the client sees a truncated body
        errors = [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "mid-body" in caplog.text


def test_loop_serves_while_every_thread_is_busy() -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking(environ: Environ, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/block":
            entered.set()
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    with run_server(blocking, wsgi_threads=1) as server:
        results: list[int] = []
        blocker = threading.Thread(
            target=lambda: results.append(httpx.get(server.url + "/block").status_code)
        )
        blocker.start()
        assert entered.wait(5)
        queued = threading.Thread(
            target=lambda: results.append(httpx.get(server.url + "/queued").status_code)
        )
        queued.start()
        started = time.monotonic()
        bad = raw_request(server.port, b"BROKEN\r\n\r\n")  # answered by the loop at once
        assert status_of(bad) == 400 and time.monotonic() - started < 2
        time.sleep(0.2)
        assert results == []  # the queued request waits for the one thread
        release.set()
        blocker.join(10)
        queued.join(10)
        assert results == [200, 200]


class BodyReader:
    """An app that reads its whole body in small reads and records how that ended."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.done = threading.Event()

    def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
        try:
            total = 0
            while data := environ["wsgi.input"].read(1000):
                total += len(data)
            self.outcomes.append(f"read {total}")
        except OSError as exc:
            self.outcomes.append(type(exc).__name__)
            raise
        finally:
            self.done.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % total]


def test_body_limit_applies_to_wsgi_input(caplog: pytest.LogCaptureFixture) -> None:
    app = BodyReader()
    caplog.set_level(logging.DEBUG, logger="zonda")
    with run_server(app, limit_request_body=10_000) as server:
        declared = raw_request(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n")
        assert status_of(declared) == 413 and app.outcomes == []  # refused before the app ran
        chunk = b"%x\r\n%s\r\n" % (4000, b"c" * 4000)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
            time.sleep(0.2)  # the app is reading by now; the rest crosses the limit
            sock.sendall(chunk * 4 + b"0\r\n\r\n")
            assert status_of(read_response(sock)) == 413
        assert app.done.wait(5) and app.outcomes == ["ClientDisconnected"]
        assert httpx.post(server.url, content=b"k" * 9000).text == "9000"
    assert not [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.ERROR]


def test_body_stall_timeout_applies_to_wsgi_input() -> None:
    app = BodyReader()
    with run_server(app, timeout_request_body=0.3) as server:
        started = time.monotonic()
        response = raw_request(
            server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", timeout=5
        )
        assert status_of(response) == 408 and time.monotonic() - started < 3
        assert app.done.wait(5) and app.outcomes == ["ClientDisconnected"]


def test_cli_detects_wsgi_and_the_flag_serves_a_checker_app() -> None:
    with zonda_process("wsgi_apps:app", "--app-dir", E2E, "--port", "0", "--wsgi-threads", "3") as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/x").text == "hello from GET /x"
        assert "(WSGI)" in proc.output and "3 threads" in proc.output
    with zonda_process("wsgi_apps:checked", "--app-dir", E2E, "--port", "0", "--interface", "wsgi") as proc:
        url = proc.wait_listening()
        assert httpx.post(url + "/sink", content=b"y" * 12345).text == "12345"


# ------------------------------------------------------------------ Flask


def make_flask_app(download_file: Path) -> Any:
    from flask import Flask, Response, request, send_file, stream_with_context

    app = Flask("zonda_flask_test")

    @app.post("/form")
    def form() -> str:
        return f"hello {request.form['name']} ({request.form['lang']})"

    @app.post("/upload")
    def upload() -> dict[str, Any]:
        file = request.files["file"]
        data = file.read()
        return {"name": file.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    @app.get("/download")
    def download() -> Response:
        count = int(request.args.get("chunks", "10"))

        def generate() -> Iterator[bytes]:
            for i in range(count):
                yield (b"%06d" % i) * 1000

        return Response(stream_with_context(generate()), mimetype="application/octet-stream")

    @app.get("/file")
    def file() -> Response:
        return send_file(download_file, mimetype="application/octet-stream")

    return app


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "download.bin"
    path.write_bytes(os.urandom(2_500_000))
    return path


def expected_download(count: int) -> bytes:
    return b"".join((b"%06d" % i) * 1000 for i in range(count))


def test_flask_with_httpx(tmp_path: Path, big_file: Path) -> None:
    app = make_flask_app(big_file)
    data = os.urandom(1_500_000)
    with run_server(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/form", data={"name": "zoë", "lang": "fr"}).text == "hello zoë (fr)"
        response = client.post("/upload", files={"file": ("photo.jpg", data, "image/jpeg")})
        assert response.json() == {
            "name": "photo.jpg",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        with client.stream("GET", "/download", params={"chunks": "500"}) as response:
            assert b"".join(response.iter_bytes()) == expected_download(500)
        response = client.get("/file")
        assert response.content == big_file.read_bytes()
        assert response.headers["content-length"] == str(big_file.stat().st_size)


def test_flask_with_curl(tmp_path: Path, big_file: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(800_000))
    app = make_flask_app(big_file)
    with run_server(app) as server:
        assert curl("-d", "name=ada", "-d", "lang=en", server.url + "/form") == b"hello ada (en)"
        info = json.loads(curl("-F", f"file=@{upload}", server.url + "/upload"))
        assert info["size"] == 800_000 and info["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
        assert curl(server.url + "/download?chunks=300") == expected_download(300)
        out = tmp_path / "out.bin"
        curl("-o", str(out), server.url + "/file")
        assert out.read_bytes() == big_file.read_bytes()


# ------------------------------------------------------------------ Django


def django_application(download_file: Path) -> Any:
    """A minimal Django project configured in-process: form POST, upload, streamed download, FileResponse."""
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path

    def form(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"hello {request.POST['name']} ({request.POST['lang']})")

    def upload(request: HttpRequest) -> JsonResponse:
        file = request.FILES["file"]
        digest = hashlib.sha256()
        size = 0
        for chunk in file.chunks():
            digest.update(chunk)
            size += len(chunk)
        return JsonResponse(
            {"name": file.name, "size": size, "sha256": digest.hexdigest(), "title": request.POST["title"]}
        )

    def download(request: HttpRequest) -> StreamingHttpResponse:
        count = int(request.GET.get("chunks", "10"))
        return StreamingHttpResponse(
            ((b"%06d" % i) * 1000 for i in range(count)), content_type="application/octet-stream"
        )

    def file(request: HttpRequest) -> FileResponse:
        return FileResponse(open(request.GET["path"], "rb"))  # FileResponse closes it

    urls = types.ModuleType("zonda_test_django_urls")  # a urlconf needs no file: any hashable module object
    patterns = [path("form", form), path("upload", upload), path("download", download), path("file", file)]
    urls.urlpatterns = patterns  # type: ignore[attr-defined]
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="zonda-test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=urls,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            FILE_UPLOAD_MAX_MEMORY_SIZE=256 * 1024,  # larger uploads stream to a temporary file
            FILE_UPLOAD_TEMP_DIR=str(download_file.parent),
        )
        django.setup()
    else:
        settings.ROOT_URLCONF = urls
    return get_wsgi_application()


def test_django_with_httpx_and_curl(tmp_path: Path, big_file: Path) -> None:
    app = django_application(big_file)
    data = os.urandom(1_200_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    with run_server(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/form", data={"name": "zoë", "lang": "fr"}).text == "hello zoë (fr)"
        response = client.post("/upload", data={"title": "holiday"}, files={"file": ("photo.jpg", data)})
        assert response.json() == {
            "name": "photo.jpg",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "title": "holiday",
        }
        with client.stream("GET", "/download", params={"chunks": "400"}) as streamed:
            assert b"".join(streamed.iter_bytes()) == expected_download(400)
        response = client.get("/file", params={"path": str(big_file)})
        assert response.content == big_file.read_bytes()

        assert curl("-d", "name=ada", "-d", "lang=en", server.url + "/form") == b"hello ada (en)"
        info = json.loads(curl("-F", "title=t", "-F", f"file=@{upload}", server.url + "/upload"))
        assert info["size"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
        assert curl(server.url + "/download?chunks=250") == expected_download(250)
        out = tmp_path / "out.bin"
        curl("-o", str(out), "-G", "--data-urlencode", f"path={big_file}", server.url + "/file")
        assert out.read_bytes() == big_file.read_bytes()


# ------------------------------------------------------------------ wsgi.file_wrapper: zerocopysend


class FileWrapperApp:
    """``/file?name=N``: the file through ``wsgi.file_wrapper``; ``&cl=L`` declares L bytes (PEP 3333: only L
    go out), ``&seek=S`` starts at S. ``closed`` records the files whose ``close()`` ran."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.closed: list[str] = []
        self.all_closed = threading.Event()

    def __call__(self, environ: Environ, start_response: Any) -> Any:
        query = dict(part.split("=") for part in environ["QUERY_STRING"].split("&") if part)
        if environ["PATH_INFO"] != "/file":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"alive"]
        name = query["name"]
        filelike = self.files[name].open("rb")
        filelike.seek(int(query.get("seek", "0")))
        size = self.files[name].stat().st_size - filelike.tell()
        original_close = filelike.close

        def close() -> None:
            original_close()
            self.closed.append(name)
            self.all_closed.set()

        filelike.close = close  # type: ignore[method-assign]
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", query.get("cl", str(size)))],
        )
        return environ["wsgi.file_wrapper"](filelike)


@pytest.fixture(scope="module")
def wrapper_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("file_wrapper")
    random = directory / "random"
    with random.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(MIB))
    sparse = directory / "sparse"
    with sparse.open("wb") as out:
        out.truncate(64 * MIB)
    return {"random": random, "sparse": sparse}


def test_file_wrapper_downloads_by_sendfile_with_httpx_and_curl(
    wrapper_files: dict[str, Path], loop: str, tmp_path: Path
) -> None:

    data = wrapper_files["random"].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with run_server(FileWrapperApp(wrapper_files), loop=loop) as server:
        with (
            httpx.Client(base_url=server.url) as client,
            client.stream("GET", "/file?name=random") as response,
        ):
            streamed = hashlib.sha256()
            for chunk in response.iter_bytes():
                streamed.update(chunk)
            assert response.headers["content-length"] == str(len(data)) and streamed.hexdigest() == digest
            (connection,) = server.server.shared.connections
            assert connection._files.os_sendfile  # sent by os.sendfile, not read in the app thread
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/file?name=random&cl=1000").content == data[:1000]  # PEP 3333 truncation
            assert client.get("/file?name=random&seek=5000&cl=70000").content == data[5000:75000]
            assert client.get("/file?name=random&seek=100").content == data[100:]
            assert client.get("/").text == "alive"  # the same connection, still in step
        out = tmp_path / "out.bin"
        curl("-o", str(out), server.url + "/file?name=random")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


def test_file_wrapper_over_http2_goes_as_the_streams_body(wrapper_files: dict[str, Path], loop: str) -> None:
    """HTTP/2 offers zerocopysend too: the server reads the file in blocks under the stream's flow control
    (not the app thread), PEP 3333's truncation and the file's position kept."""
    data = wrapper_files["random"].read_bytes()
    app = FileWrapperApp(wrapper_files)
    with run_server(app, loop=loop) as server, H2Client(server.port, timeout=20) as client:
        whole = client.get("/file?name=random", timeout=30)
        assert whole.header(b"content-length") == b"%d" % len(data)
        assert hashlib.sha256(whole.data).digest() == hashlib.sha256(data).digest()
        assert client.get("/file?name=random&seek=5000&cl=70000").data == data[5000:75000]
        assert client.get("/").data == b"alive"
        wait_for(lambda: len(app.closed) == 2, what="the files closed")


def test_client_gone_mid_file_wrapper_closes_the_file_and_logs_nothing(
    wrapper_files: dict[str, Path], loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zonda")
    app = FileWrapperApp(wrapper_files)
    with run_server(app, loop=loop) as server:
        sock = download_partly(server.port, b"GET /file?name=sparse HTTP/1.1\r\nHost: x\r\n\r\n", 2 * MIB)
        rst_close(sock)  # a reset mid-file
        assert app.all_closed.wait(10) and app.closed == ["sparse"]
        assert_still_serving(server.port)
    assert not [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ memory with 200 MiB bodies


MIB = 1024 * 1024
SIZE = 200 * MIB
RSS_LIMIT = 30 * MIB


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakRss:
    """Peak RSS of a process from now on: reset VmHWM through clear_refs, or sample VmRSS if not allowed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = status_kib(pid, "VmRSS") * 1024
        self.samples = [self.baseline]
        self.stop = threading.Event()
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.samples.append(status_kib(self.pid, "VmRSS") * 1024)

    def growth(self) -> int:
        self.stop.set()
        self.thread.join(2)
        peak = max(self.samples)
        if self.hwm:
            peak = max(peak, status_kib(self.pid, "VmHWM") * 1024)
        return peak - self.baseline


def download_with_a_stall(port: int, target: bytes) -> int:
    """GET a 200 MiB body through a small receive buffer, not reading for 0.5 s once 20 MiB are in; the bytes
    received. While the client stalls, the server must wait for the socket (in the app thread, or before
    reading more of a file), not buffer what the client has not taken."""
    buffer = bytearray(MIB)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert status_of(head) == 200 and b"content-length: %d" % SIZE in head.lower()
        received = len(rest)
        stalled = False
        while received < SIZE:
            if not stalled and received > 20 * MIB:
                stalled = True
                time.sleep(0.5)
            count = sock.recv_into(buffer)
            assert count, "the server closed early"
            received += count
    return received


@pytest.fixture(scope="module")
def big_server() -> Iterator[Any]:
    args = ("wsgi_apps:app", "--app-dir", E2E, "--port", "0", "--limit-request-body", "0", "--no-access-log")
    with zonda_process(*args, cwd=REPO) as proc:
        proc.wait_listening()
        # warm up: the thread pool, imports and buffers exist before the baseline is read
        httpx.post(proc.url + "/sink", content=b"w" * (4 * MIB))
        with httpx.stream("GET", proc.url + "/stream?mib=4") as response:
            for _ in response.iter_bytes():
                pass
        yield proc


def test_200_mib_upload_keeps_rss_flat(big_server: Any) -> None:
    rss = PeakRss(big_server.proc.pid)
    block = b"u" * MIB
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", big_server.port), timeout=30) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for _ in range(SIZE // MIB):
            sock.sendall(block)
        response = read_response(sock, timeout=30)
    elapsed = time.monotonic() - started
    growth = rss.growth()
    assert status_of(response) == 200 and response.endswith(b"\r\n\r\n%d" % SIZE), response[-200:]
    assert growth < RSS_LIMIT, f"RSS grew by {growth / MIB:.1f} MiB during a 200 MiB upload"
    print(f"200 MiB upload in {elapsed:.2f}s, RSS growth {growth / MIB:.1f} MiB", file=sys.stderr)


def test_200_mib_download_keeps_rss_flat_even_with_a_stalled_client(big_server: Any) -> None:
    rss = PeakRss(big_server.proc.pid)
    started = time.monotonic()
    received = download_with_a_stall(big_server.port, b"/stream?mib=200")
    elapsed = time.monotonic() - started
    growth = rss.growth()
    assert received == SIZE
    assert growth < RSS_LIMIT, f"RSS grew by {growth / MIB:.1f} MiB during a 200 MiB download"
    print(f"200 MiB download in {elapsed:.2f}s, RSS growth {growth / MIB:.1f} MiB", file=sys.stderr)


def test_200_mib_file_wrapper_download_keeps_rss_flat_even_with_a_stalled_client(
    big_server: Any, tmp_path: Path
) -> None:
    path = tmp_path / "200mib.bin"
    with path.open("wb") as out:
        out.truncate(SIZE)  # sparse: nothing on disk, and os.sendfile never brings it into the process
    rss = PeakRss(big_server.proc.pid)
    started = time.monotonic()
    received = download_with_a_stall(big_server.port, b"/file?path=%s" % str(path).encode())
    elapsed = time.monotonic() - started
    growth = rss.growth()
    assert received == SIZE
    assert growth < RSS_LIMIT, f"RSS grew by {growth / MIB:.1f} MiB during a 200 MiB file download"
    print(
        f"200 MiB file_wrapper download in {elapsed:.2f}s, RSS growth {growth / MIB:.1f} MiB", file=sys.stderr
    )
