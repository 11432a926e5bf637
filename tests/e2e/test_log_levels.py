"""``--log-level debug`` (a line per connection), ``--log-level trace`` (a line per ASGI message), colors, and
``.ini`` log configs, from a real ``python -m zonda``; and that at ``info`` none of it is in the request path."""

from __future__ import annotations

import logging
import re
import signal
import textwrap
from pathlib import Path

import httpx
import pytest

from helpers import ZondaProcess, raw_request, run_server, simple_app, status_of, wait_for, zonda_process
from zonda.asgi.trace import MessageTrace, describe_message

ECHO_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"].upper()})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"x-secret", b"hunter2")]})
    await send({"type": "http.response.body", "body": b"echo:" + body})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "echo_app.py").write_text(ECHO_APP)
    return str(tmp_path)


def run_and_stop(proc: ZondaProcess) -> None:
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_debug_logs_a_line_per_connection(app_dir: str) -> None:
    with zonda_process("echo_app:app", "--app-dir", app_dir, "--port", "0", "--log-level", "debug") as proc:
        proc.wait_listening()
        port = proc.port
        with httpx.Client() as client:  # one connection, two requests, over HTTP/1.1
            assert client.post(f"http://127.0.0.1:{port}/a", content=b"x").status_code == 201
            assert client.get(f"http://127.0.0.1:{port}/b").status_code == 201
        with httpx.Client(http1=False, http2=True) as client:  # HTTP/2 with prior knowledge
            assert client.get(f"http://127.0.0.1:{port}/c").status_code == 201
        wait_for(lambda: proc.output.count("zonda.connection") == 4, timeout=5)
        run_and_stop(proc)
    opened = re.findall(
        rf"zonda\.connection: Connection from (127\.0\.0\.1:\d+) to 127\.0\.0\.1:{port} opened", proc.output
    )
    closed = re.findall(
        r"zonda\.connection: Connection from (127\.0\.0\.1:\d+) closed \((http1|http2)\)", proc.output
    )
    assert len(opened) == 2, proc.output
    assert sorted(closed) == sorted(zip(opened, ["http1", "http2"], strict=True)), proc.output
    assert "zonda.asgi" not in proc.output  # messages only at trace


def test_trace_logs_every_asgi_message_without_contents(app_dir: str) -> None:
    with zonda_process("echo_app:app", "--app-dir", app_dir, "--port", "0", "--log-level", "trace") as proc:
        url = proc.wait_listening()
        assert httpx.post(url + "/echo?q=1", content=b"secret body").text == "echo:secret body"
        run_and_stop(proc)
    trace = [line.split("zonda.asgi: ", 1)[1] for line in proc.output.splitlines() if "zonda.asgi: " in line]
    lifespan = [line for line in trace if line.startswith("ASGI [1]")]
    assert lifespan == [
        "ASGI [1] started: lifespan",
        "ASGI [1] received lifespan.startup",
        "ASGI [1] sent lifespan.startup.complete",
        "ASGI [1] received lifespan.shutdown",
        "ASGI [1] sent lifespan.shutdown.complete",
        "ASGI [1] completed",
    ]
    request = [re.sub(r"^127\.0\.0\.1:\d+ - ", "", line) for line in trace if "ASGI [2]" in line]
    assert request == [
        "ASGI [2] started: http POST /echo (HTTP/1.1)",
        "ASGI [2] received http.request body=<11 bytes> more_body=False",
        "ASGI [2] sent http.response.start status=201 headers=<2 headers>",
        "ASGI [2] sent http.response.body body=<16 bytes>",
        "ASGI [2] completed",
    ]
    assert "secret body" not in proc.output
    assert "hunter2" not in proc.output
    assert "zonda.connection: Connection from" in proc.output  # trace includes debug


def test_trace_of_a_websocket(app_dir: str) -> None:
    from websockets.sync.client import connect

    with zonda_process("echo_app:app", "--app-dir", app_dir, "--port", "0", "--log-level", "trace") as proc:
        url = proc.wait_listening()
        with connect(url.replace("http", "ws") + "/ws") as websocket:
            websocket.send("hi")
            assert websocket.recv(timeout=5) == "HI"
        wait_for(lambda: "(websocket)" in proc.output, timeout=5)
        run_and_stop(proc)
    trace = [
        re.sub(r"^127\.0\.0\.1:\d+ - ", "", line.split("zonda.asgi: ", 1)[1])
        for line in proc.output.splitlines()
        if "zonda.asgi: " in line and "ASGI [2]" in line
    ]
    assert trace == [
        "ASGI [2] started: websocket /ws (HTTP/1.1)",
        "ASGI [2] received websocket.connect",
        "ASGI [2] sent websocket.accept",
        "ASGI [2] received websocket.receive text=<2 chars>",
        "ASGI [2] sent websocket.send text=<2 chars>",
        "ASGI [2] sent websocket.close code=1000",
        "ASGI [2] completed",
    ]
    assert re.search(r"zonda\.connection: Connection from 127\.0\.0\.1:\d+ closed \(websocket\)", proc.output)


def test_info_level_keeps_the_request_path_plain() -> None:
    """At info: the app is called as it is (no trace wrapper) and connections are not looked at for logging."""
    with run_server(simple_app) as server:
        assert httpx.get(server.url + "/").status_code == 200
        shared = server.server.shared
        assert shared is not None
        assert shared.context.app is simple_app
        assert shared.log_connections is False


def test_trace_level_in_process_wraps_the_app(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(5, logger="zonda")
    with run_server(simple_app) as server:
        assert httpx.get(server.url + "/x").status_code == 200
        assert isinstance(server.server.shared.context.app, MessageTrace)  # type: ignore[union-attr]
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.asgi"]
    assert any(
        re.fullmatch(r"127\.0\.0\.1:\d+ - ASGI \[\d+\] started: http GET /x \(HTTP/1\.1\)", m) for m in lines
    )
    assert [r for r in caplog.records if r.name == "zonda.connection" and r.levelno == logging.DEBUG]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "websocket.send", "text": "a" * 10}, "websocket.send text=<10 chars>"),
        (
            {"type": "websocket.receive", "bytes": b"abc", "text": None},
            "websocket.receive bytes=<3 bytes> text=None",
        ),
        (
            {"type": "websocket.close", "code": 1000, "reason": "bye"},
            "websocket.close code=1000 reason='bye'",
        ),
        (
            {"type": "http.response.start", "status": 200, "headers": iter([])},
            "http.response.start status=200 headers=<headers>",
        ),
        (
            {"type": "http.response.pathsend", "path": "/srv/" + "x" * 80},
            "http.response.pathsend path=<85 chars>",
        ),
        (
            {"type": "http.response.zerocopysend", "file": object()},
            "http.response.zerocopysend file=<object>",
        ),
        ("not a dict", "<not a message: str>"),
    ],
)
def test_messages_are_described_by_shape(message: object, text: str) -> None:
    assert describe_message(message) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "env", "colored"),
    [
        (("--use-colors",), {}, True),
        (("--no-use-colors",), {}, False),
        ((), {}, False),  # stderr is a pipe here: no colors by default
        (("--use-colors",), {"NO_COLOR": "1"}, True),  # the flag wins over NO_COLOR
    ],
)
def test_colors(app_dir: str, args: tuple[str, ...], env: dict[str, str], colored: bool) -> None:
    with zonda_process("echo_app:app", "--app-dir", app_dir, "--port", "0", *args, env=env) as proc:
        proc.wait_listening()
        run_and_stop(proc)
    assert ("\x1b[32mINFO\x1b[0m zonda.error: Listening on" in proc.output) is colored
    assert ("\x1b[" in proc.output) is colored


def test_ini_log_config(app_dir: str, tmp_path: Path) -> None:
    config = tmp_path / "logging.ini"
    config.write_text(
        textwrap.dedent(
            """\
            [loggers]
            keys=root,zonda

            [handlers]
            keys=stderr

            [formatters]
            keys=plain

            [logger_root]
            level=WARNING
            handlers=stderr

            [logger_zonda]
            level=INFO
            handlers=stderr
            qualname=zonda
            propagate=0

            [handler_stderr]
            class=StreamHandler
            formatter=plain
            args=(sys.stderr,)

            [formatter_plain]
            format=INI|%(name)s|%(levelname)s|%(message)s
            """
        )
    )
    with zonda_process(
        "echo_app:app", "--app-dir", app_dir, "--port", "0", "--log-config", str(config)
    ) as proc:
        proc.wait_listening()
        assert (
            status_of(raw_request(proc.port, b"GET /ini HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            == 201
        )
        run_and_stop(proc)
    assert "INI|zonda.error|INFO|Listening on http://127.0.0.1:" in proc.output
    assert re.search(r'INI\|zonda\.access\|INFO\|127\.0\.0\.1:\d+ - "GET /ini HTTP/1\.1" 201', proc.output)
