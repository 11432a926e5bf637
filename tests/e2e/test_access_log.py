"""Access logs from a real zonda: ``--access-log-format`` fields, ``--access-log-json``, ``--access-log-file``,
stderr, request ids, WebSocket lines, and the errors a bad format gets. (The default ``zonda.access`` logger
line is covered by test_logging.py.)"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from helpers import raw_request, read_response, run_server, status_of, zonda_process
from zonda import Config
from zonda.errors import ConfigError

APP = """
async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    rid = (scope["state"].get("request_id") or "").encode()
    await send({"type": "http.response.start", "status": 404 if scope["path"] == "/missing" else 200,
                "headers": [(b"content-type", b"text/x-test"), (b"content-length", b"%d" % len(rid))]})
    await send({"type": "http.response.body", "body": rid})
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(APP, namespace)
    await namespace["app"](scope, receive, send)


def get(port: int, target: str, *headers: str) -> tuple[bytes, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        lines = "".join(f"{h}\r\n" for h in headers)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n".encode())
        return read_response(sock), sock.getsockname()[1]


def test_custom_format_fields_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    fmt = (
        "{time}|{client}|{remote}|{method}|{path}|{query}|{target}|{status}|{bytes}|{duration_ms}|"
        "{duration_us}|{request_header:user-agent}|{response_header:content-type}|{protocol}|{tls_version}|"
        "{pid}|{request_id}|{scheme}|{host}|{request_header:x-missing}|{{literal}}"
    )
    with run_server(app, access_log_format=fmt, access_log_file=str(path)) as server:
        response, client_port = get(server.port, "/a/b%20c?x=1&y=2", "User-Agent: probe/1.0")
        assert status_of(response) == 200
        rid = response.partition(b"\r\n\r\n")[2].decode()
        assert (
            status_of(raw_request(server.port, b"POST /missing HTTP/1.0\r\nContent-Length: 0\r\n\r\n")) == 404
        )
    first, second = path.read_text().splitlines()
    fields = first.split("|")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields[0])
    assert fields[1:10] == [
        f"127.0.0.1:{client_port}",
        "127.0.0.1",
        "GET",
        "/a/b%20c",
        "x=1&y=2",
        "/a/b%20c?x=1&y=2",
        "200",
        "32",
        fields[9],
    ]
    assert 0 < float(fields[9]) < 1000 and re.fullmatch(r"\d+\.\d{3}", fields[9])
    assert 0 < int(fields[10]) < 1_000_000
    assert fields[11:] == [
        "probe/1.0",
        "text/x-test",
        "HTTP/1.1",
        "-",
        str(os.getpid()),
        rid,  # the id the app saw in scope["state"]
        "http",
        "x",
        "-",
        "{literal}",
    ]
    assert len(rid) == 32
    assert second.split("|")[3:8] == ["POST", "/missing", "", "/missing", "404"]
    assert second.split("|")[13] == "HTTP/1.0"


def test_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    with run_server(app, access_log_json=True, access_log_file=str(path)) as server:
        get(server.port, "/q%22uote?a=%0A%22&b=%C3%A9|'")
        get(server.port, "/missing", "X-Request-ID: from-the-proxy")  # 127.0.0.1 is trusted by default
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {
        "time",
        "client",
        "method",
        "path",
        "query",
        "status",
        "bytes",
        "duration_ms",
        "protocol",
        "request_id",
    }
    assert first["path"] == "/q%22uote" and first["query"] == "a=%0A%22&b=%C3%A9|'"
    assert (first["method"], first["status"], first["bytes"], first["protocol"]) == (
        "GET",
        200,
        32,
        "HTTP/1.1",
    )
    assert isinstance(first["duration_ms"], float) and first["client"].startswith("127.0.0.1:")
    assert len(first["request_id"]) == 32
    assert (second["status"], second["request_id"]) == (404, "from-the-proxy")


def test_json_with_chosen_keys(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    fmt = "{method} {status} {request_header:user-agent} {duration_us} {remote}"
    with run_server(app, access_log_json=True, access_log_format=fmt, access_log_file=str(path)) as server:
        get(server.port, "/", 'User-Agent: a "quoted" agent\\')
        get(server.port, "/")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert list(first) == ["method", "status", "request_header:user-agent", "duration_us", "remote"]
    assert first["request_header:user-agent"] == 'a "quoted" agent\\'
    assert second["request_header:user-agent"] is None
    assert isinstance(first["duration_us"], int) and first["remote"] == "127.0.0.1"


def test_default_format_to_a_file_and_websocket_lines(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    path = tmp_path / "access.log"
    key = base64.b64encode(os.urandom(16)).decode()
    with run_server(app, access_log_file=str(path)) as server:
        get(server.port, "/plain?x=1")
        handshake = (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert raw_request(server.port, handshake.encode(), timeout=3).startswith(b"HTTP/1.1 101")
    plain, ws = path.read_text().splitlines()
    pattern = r'\S+Z 127\.0\.0\.1:\d+ - "{} {} HTTP/1\.1" {} {} \d+\.\dms'
    assert re.fullmatch(pattern.format("GET", re.escape("/plain?x=1"), 200, 0), plain), plain
    assert re.fullmatch(pattern.format("GET", "/ws", 101, 0), ws), ws


def test_custom_format_on_stderr_and_no_access_log(tmp_path: Path) -> None:
    (tmp_path / "log_app.py").write_text(APP)
    args = ["log_app:app", "--port", "0", "--app-dir", str(tmp_path)]
    with zonda_process(*args, "--access-log-format", "ACCESS {method} {path} {status}") as proc:
        proc.wait_listening()
        for target in ("/one", "/two"):
            get(proc.port, target)
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "ACCESS GET /one 200\nACCESS GET /two 200\n" in proc.output
    assert "zonda.access" not in proc.output
    fmt = ["--access-log-format", "ACCESS {status}", "--no-access-log"]
    with zonda_process(*args, *fmt) as proc:
        proc.wait_listening()
        get(proc.port, "/one")
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "ACCESS" not in proc.output


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("{nope}", "unknown field {nope}"),
        ("{status!r}", "conversions"),
        ("{request_header}", "needs a header name"),
        ("{request_header:bad name}", "needs a header name"),
        ("{duration_ms:}}", "access_log_format"),
        ("{status:x}}", "access_log_format"),
        ("{time", "access_log_format"),
    ],
)
def test_bad_formats_are_config_errors(fmt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(app=app, access_log_format=fmt)


def test_bad_format_on_the_command_line_exits_2(tmp_path: Path) -> None:
    with zonda_process("x:app", "--access-log-format", "{nope}") as proc:
        assert proc.wait(10) == 2
    assert "access_log_format: unknown field {nope}" in proc.output


def test_unwritable_access_log_file_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "log_app.py").write_text(APP)
    missing = tmp_path / "no" / "such" / "dir" / "access.log"
    args = ["log_app:app", "--port", "0", "--app-dir", str(tmp_path), "--access-log-file", str(missing)]
    with zonda_process(*args) as proc:
        assert proc.wait(10) == 1
    assert "access_log_file: cannot open" in proc.output
