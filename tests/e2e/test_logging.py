"""Logging of a real ``python -m zonda``: the access line per response, ``--no-access-log``, ``--log-level``,
and ``--log-config`` dictConfig files in JSON, TOML and YAML."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import ZondaProcess, raw_request, run_server, simple_app, status_of, zonda_process

LOG_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    status = 404 if scope["path"] == "/missing" else 200
    body = b"x" * 123
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

ACCESS = re.compile(
    r'zonda\.access: (?P<client>127\.0\.0\.1:\d+) - "(?P<method>\S+) (?P<target>\S+) HTTP/(?P<version>1\.[01])" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>\d+\.\d)ms$"
)


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "log_app.py").write_text(LOG_APP)
    return str(tmp_path)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bound listening socket for the child (``--fd``): its port is known even when no log line says it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def served(proc: ZondaProcess, port: int, *targets: str) -> None:
    """Send requests, then stop the process and wait for it."""
    for target in targets:
        response = raw_request(
            port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert response.startswith(b"HTTP/1.1 "), response
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def access_lines(output: str) -> list[re.Match[str]]:
    return [m for line in output.splitlines() if (m := ACCESS.search(line))]


def test_access_line_per_response(app_dir: str) -> None:
    with zonda_process("log_app:app", "--port", "0", "--app-dir", app_dir) as proc:
        proc.wait_listening()
        port = proc.port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
        assert status_of(raw_request(port, b"POST /missing HTTP/1.0\r\nContent-Length: 0\r\n\r\n")) == 404
        assert status_of(raw_request(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")) == 500
        served(proc, port)
    first, second, third = access_lines(proc.output)
    assert first["client"] == f"127.0.0.1:{client_port}"
    assert (first["method"], first["target"], first["version"]) == ("GET", "/a/b?x=1&y=2", "1.1")
    assert (first["status"], first["bytes"]) == ("200", "123")
    assert float(first["ms"]) < 1000
    assert (second["method"], second["target"], second["version"], second["status"]) == (
        "POST",
        "/missing",
        "1.0",
        "404",
    )
    assert (third["target"], third["status"]) == ("/boom", "500")
    assert " INFO zonda.access: " in proc.output


def test_no_access_log(app_dir: str) -> None:
    with zonda_process("log_app:app", "--port", "0", "--app-dir", app_dir, "--no-access-log") as proc:
        proc.wait_listening()
        served(proc, proc.port, "/one", "/two")
    assert access_lines(proc.output) == []
    assert "zonda.access" not in proc.output
    assert "Listening on" in proc.output


def test_log_level_warning_hides_info(app_dir: str, listener: socket.socket) -> None:
    fd = listener.fileno()
    args = ("log_app:app", "--fd", str(fd), "--app-dir", app_dir, "--log-level", "warning")
    with zonda_process(*args, pass_fds=(fd,)) as proc:
        served(proc, listener.getsockname()[1], "/one", "/boom")
    assert " INFO " not in proc.output, proc.output
    assert "Listening on" not in proc.output
    assert access_lines(proc.output) == []
    assert "Exception in ASGI app" in proc.output  # errors still show
    assert "RuntimeError: boom" in proc.output


def test_log_level_env_var(app_dir: str, listener: socket.socket) -> None:
    fd = listener.fileno()
    args = ("log_app:app", "--fd", str(fd), "--app-dir", app_dir)
    with zonda_process(*args, pass_fds=(fd,), env={"ZONDA_LOG_LEVEL": "error"}) as proc:
        served(proc, listener.getsockname()[1], "/one")
    assert proc.output.strip() == ""


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"custom": {"format": "CUSTOM|%(name)s|%(levelname)s|%(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "custom", "stream": "ext://sys.stderr"},
        "file": {"class": "logging.FileHandler", "formatter": "custom", "filename": "FILENAME"},
    },
    "loggers": {
        "zonda": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "zonda.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
    },
}

TOML_LOG_CONFIG = """
version = 1
disable_existing_loggers = false

[formatters.custom]
format = "CUSTOM|%(name)s|%(levelname)s|%(message)s"

[handlers.stderr]
class = "logging.StreamHandler"
formatter = "custom"
stream = "ext://sys.stderr"

[handlers.file]
class = "logging.FileHandler"
formatter = "custom"
filename = "FILENAME"

[loggers.zonda]
handlers = ["stderr"]
level = "INFO"
propagate = false

[loggers."zonda.access"]
handlers = ["file"]
level = "INFO"
propagate = false
"""

YAML_LOG_CONFIG = """
version: 1
disable_existing_loggers: false
formatters:
  custom:
    format: "CUSTOM|%(name)s|%(levelname)s|%(message)s"
handlers:
  stderr:
    class: logging.StreamHandler
    formatter: custom
    stream: ext://sys.stderr
  file:
    class: logging.FileHandler
    formatter: custom
    filename: FILENAME
loggers:
  zonda:
    handlers: [stderr]
    level: INFO
    propagate: false
  zonda.access:
    handlers: [file]
    level: INFO
    propagate: false
"""


@pytest.mark.parametrize("ext", ["json", "toml", "yaml"])
def test_log_config_file(app_dir: str, tmp_path: Path, ext: str) -> None:
    if ext == "yaml":
        pytest.importorskip("yaml")
    access_file = tmp_path / "access.log"
    text = {
        "json": json.dumps(LOG_CONFIG),
        "toml": TOML_LOG_CONFIG,
        "yaml": YAML_LOG_CONFIG,
    }[ext].replace("FILENAME", str(access_file))
    config = tmp_path / f"logging.{ext}"
    config.write_text(textwrap.dedent(text))
    with zonda_process(
        "log_app:app", "--port", "0", "--app-dir", app_dir, "--log-config", str(config)
    ) as proc:
        proc.wait_listening()
        served(proc, proc.port, "/via-config")
    assert "CUSTOM|zonda.error|INFO|Listening on http://127.0.0.1:" in proc.output
    assert "zonda.access" not in proc.output  # routed to the file by the config
    access = access_file.read_text()
    assert access.startswith("CUSTOM|zonda.access|INFO|127.0.0.1:")
    assert '"GET /via-config HTTP/1.1" 200 123' in access


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("missing.json", None, "cannot read"),
        ("logging.cfg", "[loggers]\n", "must end in"),
        ("logging.ini", "[loggers]\n", "log_config: "),
        ("missing.ini", None, "cannot read"),
        ("logging.json", "{not json", "could not be parsed"),
        ("logging.json", "[1, 2]", "dictConfig mapping"),
        ("logging.json", '{"handlers": {"h": {"class": "no.such.Handler"}}}', "log_config"),
    ],
)
def test_bad_log_config_is_a_clear_error(
    app_dir: str, tmp_path: Path, name: str, text: str | None, error: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with zonda_process("log_app:app", "--port", "0", "--app-dir", app_dir, "--log-config", str(path)) as proc:
        assert proc.wait(10) == 1
    assert error in proc.output
    assert "Traceback" not in proc.output


def test_access_record_in_process(caplog: pytest.LogCaptureFixture) -> None:
    """The access line is a record on the ``zonda.access`` logger."""
    with caplog.at_level(logging.INFO, logger="zonda.access"), run_server(simple_app) as server:
        assert httpx.get(server.url + "/rec?q=1").status_code == 200
    records = [r for r in caplog.records if r.name == "zonda.access"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /rec\?q=1 HTTP/1\.1" 200 8 \d+\.\dms', message), message
