"""Start-up errors a person can act on, from a real ``python -m zonda``: the app's own traceback for an app that
raises at import, one line naming the address for a listener that cannot open, and the listener bound before
lifespan startup, so a busy port never starts (and stops) the app."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli, status_of, wait_for, zonda_process

BROKEN_APP = """\
import json


def read_settings():
    return json.loads("{not json")


SETTINGS = read_settings()


async def app(scope, receive, send):
    pass
"""

STARTUP_APP = """\
import os
import time

MARKER = os.environ["STARTUP_MARKER"]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                with open(MARKER, "a") as file:
                    file.write("startup ran\\n")
                go = os.environ.get("STARTUP_GO")
                while go and not os.path.exists(go):  # hold startup until the test says go
                    import anyio
                    await anyio.sleep(0.02)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "broken_app.py").write_text(BROKEN_APP)
    (tmp_path / "startup_app.py").write_text(STARTUP_APP)
    (tmp_path / "syntax_app.py").write_text("def app(scope:\n    pass\n")
    (tmp_path / "factory_app.py").write_text("def create():\n    raise KeyError('DATABASE_URL')\n")
    return str(tmp_path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


def assert_no_zonda_frames(output: str) -> None:
    assert "zonda/" not in output.replace("\\", "/"), output  # no frame from zonda's own files
    assert "importlib" not in output, output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_app_raising_at_import_shows_its_traceback_to_the_failing_line(app_dir: str, workers: str) -> None:
    result = run_cli("broken_app:app", "--app-dir", app_dir, "--port", "0", "--workers", workers)
    assert result.returncode == 1, result.stderr
    output = result.stderr
    path = os.path.join(app_dir, "broken_app.py")
    assert "Error: importing module 'broken_app' failed: JSONDecodeError: Expecting property name" in output
    assert "Traceback (most recent call last):" in output
    assert f'File "{path}", line 8, in <module>\n    SETTINGS = read_settings()' in output
    assert f'File "{path}", line 5, in read_settings\n    return json.loads("{{not json")' in output
    assert "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes" in output
    assert_no_zonda_frames(output)


def test_a_syntax_error_shows_file_line_and_caret(app_dir: str) -> None:
    result = run_cli("syntax_app:app", "--app-dir", app_dir, "--port", "0")
    assert result.returncode == 1
    assert f'File "{os.path.join(app_dir, "syntax_app.py")}", line 1' in result.stderr
    assert "def app(scope:" in result.stderr
    assert "SyntaxError" in result.stderr
    assert_no_zonda_frames(result.stderr)


def test_a_raising_factory_shows_its_traceback(app_dir: str) -> None:
    result = run_cli("factory_app:create", "--factory", "--app-dir", app_dir, "--port", "0")
    assert result.returncode == 1
    assert "Error: calling the app factory failed: KeyError: 'DATABASE_URL'" in result.stderr
    assert "in create\n    raise KeyError('DATABASE_URL')" in result.stderr
    assert_no_zonda_frames(result.stderr)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_names_the_address_and_never_starts_the_app(
    app_dir: str, busy_port: int, tmp_path: Path, workers: str
) -> None:
    marker = tmp_path / "startup.log"
    result = run_cli(
        "startup_app:app",
        *("--app-dir", app_dir, "--port", str(busy_port), "--workers", workers),
        env={"STARTUP_MARKER": str(marker)},
    )
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(error) == 1, result.stderr
    assert error[0].endswith(
        f"Error: could not listen on 127.0.0.1:{busy_port}: address already in use "
        "(another process listens there: stop it or choose another port)"
    )
    assert "Traceback" not in result.stderr
    assert "startup" not in result.stderr.lower().replace("startup_app", "")  # no lifespan line at all
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host", "a..b"), "could not listen on a..b:8000: a..b is not a valid host name"),
        (("--host", "a..b", "--reuse-port"), "could not listen on a..b:8000: a..b is not a valid host name"),
        (("--host", "192.0.2.1"), "could not listen on 192.0.2.1:8000: address not available"),
        (
            ("--uds", "/nonexistent-dir/app.sock"),
            "could not listen on unix:/nonexistent-dir/app.sock: no such",
        ),
        (("--fd", "987"), "could not listen on fd 987: not an open file descriptor"),
    ],
)
def test_a_listener_that_cannot_open_is_one_line(
    app_dir: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    marker = tmp_path / "startup.log"
    result = run_cli("startup_app:app", "--app-dir", app_dir, *args, env={"STARTUP_MARKER": str(marker)})
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_name_that_does_not_resolve_is_named() -> None:
    """The message for getaddrinfo's own failure (not run end to end: a lookup would leave the machine)."""
    from zonda.listeners import listen_error

    error = listen_error(
        "nosuch.example:8000", socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    )
    assert str(error) == (
        "could not listen on nosuch.example:8000: cannot resolve the host name nosuch.example "
        "(Name or service not known)"
    )


def test_the_listener_is_bound_before_lifespan_startup(app_dir: str, short_dir: str, tmp_path: Path) -> None:
    """A connection made while startup runs waits in the backlog and is answered once startup completes."""
    path = os.path.join(short_dir, "app.sock")
    go = tmp_path / "go"
    env = {"STARTUP_MARKER": str(tmp_path / "startup.log"), "STARTUP_GO": str(go)}
    with zonda_process("startup_app:app", "--app-dir", app_dir, "--uds", path, env=env) as proc:
        wait_for(lambda: os.path.exists(path) and (tmp_path / "startup.log").exists(), timeout=10)
        assert "Listening on" not in proc.output  # bound, but startup has not completed
        answers: list[bytes] = []

        def ask() -> None:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)  # accepted by the kernel into the backlog
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answers.append(sock.recv(65536))

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.2)
        assert answers == []
        go.write_text("")
        asking.join(10)
        assert status_of(answers[0]) == 200
        proc.wait_listening()
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not os.path.exists(path)


def test_a_failed_startup_removes_the_unix_socket_it_bound(
    app_dir: str, short_dir: str, tmp_path: Path
) -> None:
    path = os.path.join(short_dir, "app.sock")
    env = {"STARTUP_MARKER": str(tmp_path / "no-such-dir" / "startup.log")}  # startup raises opening it
    result = run_cli("startup_app:app", "--app-dir", app_dir, "--uds", path, "--lifespan", "on", env=env)
    assert result.returncode == 1
    assert "Application startup failed" in result.stderr
    assert not os.path.exists(path)
