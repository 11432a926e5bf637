"""Where and how a real ``python -m zonda`` listens: IPv4, IPv6, unix sockets, inherited fds, backlog, loop."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from helpers import require_tool, zonda_process

SCOPE_APP = """
import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"], "server": scope["server"], "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "scope_app.py").write_text(SCOPE_APP)
    return str(tmp_path)


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def startup_lines(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "serving" in line or "Listening on" in line)


def test_ipv4_default_and_startup_lines(app_dir: str, driver: str) -> None:
    with zonda_process("scope_app:app", "--port", "0", "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        assert url.startswith("http://127.0.0.1:")
        data = httpx.get(url + "/four").json()
        assert data["server"] == ["127.0.0.1", proc.port]
        assert data["client"][0] == "127.0.0.1"
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    lines = startup_lines(proc.output)
    assert f"serving scope_app:app (ASGI 3) with {driver}" in lines
    assert f"Listening on http://127.0.0.1:{proc.port}" in lines


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback(app_dir: str) -> None:
    with zonda_process("scope_app:app", "--host", "::1", "--port", "0", "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        assert url.startswith("http://[::1]:")
        data = httpx.get(url + "/six").json()
        assert data["server"] == ["::1", proc.port]
        assert data["client"][0] == "::1"
        assert isinstance(data["client"][1], int)
        with pytest.raises(httpx.ConnectError):  # IPV6_V6ONLY: not on IPv4
            httpx.get(f"http://127.0.0.1:{proc.port}/")
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_unix_socket_with_permissions(app_dir: str, short_dir: str) -> None:
    path = os.path.join(short_dir, "z.sock")
    args = ("scope_app:app", "--uds", path, "--uds-permissions", "600", "--app-dir", app_dir)
    with zonda_process(*args) as proc:
        assert proc.wait_listening() == f"unix:{path}"
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            data = client.get("http://localhost/unix").json()
        assert data["server"] == [path, None]
        assert data["path"] == "/unix"
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not os.path.exists(path), "the socket file is removed on exit"


def test_unix_socket_with_curl(app_dir: str, short_dir: str) -> None:
    curl = require_tool("curl")
    path = os.path.join(short_dir, "c.sock")
    with zonda_process(
        "scope_app:app", "--uds", path, "--uds-permissions", "660", "--app-dir", app_dir
    ) as proc:
        proc.wait_listening()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        result = subprocess.run(
            [curl, "-sS", "--max-time", "5", "--unix-socket", path, "http://localhost/curl"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        assert '"path": "/curl"' in result.stdout


def test_unix_socket_replaces_a_stale_socket(app_dir: str, short_dir: str) -> None:
    path = os.path.join(short_dir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays behind, as after a crash
    assert os.path.exists(path)
    with zonda_process("scope_app:app", "--uds", path, "--app-dir", app_dir) as proc:
        proc.wait_listening()
        with httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
            assert client.get("http://localhost/").status_code == 200


def test_unix_socket_never_removes_a_regular_file(app_dir: str, short_dir: str) -> None:
    path = os.path.join(short_dir, "precious.txt")
    Path(path).write_text("keep me")
    with zonda_process("scope_app:app", "--uds", path, "--app-dir", app_dir) as proc:
        assert proc.wait(10) == 1
    assert Path(path).read_text() == "keep me"
    assert "could not listen" in proc.output
    assert "Traceback" not in proc.output


def test_inherited_fd(app_dir: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        with zonda_process("scope_app:app", "--fd", str(fd), "--app-dir", app_dir, pass_fds=(fd,)) as proc:
            url = proc.wait_listening()
            listener.close()  # the child owns its copy now
            assert url == f"http://127.0.0.1:{port}"
            data = httpx.get(url + "/fd").json()
            assert data["server"] == ["127.0.0.1", port]
            proc.signal(signal.SIGTERM)
            assert proc.wait(10) == 0
    finally:
        listener.close()


def test_bad_fd_is_a_clear_error(app_dir: str) -> None:
    with zonda_process("scope_app:app", "--fd", "987", "--app-dir", app_dir) as proc:
        assert proc.wait(10) == 1
    assert "Traceback" not in proc.output
    assert "987" in proc.output or "Bad file descriptor" in proc.output


def test_backlog(app_dir: str) -> None:
    ss = require_tool("ss")
    with zonda_process("scope_app:app", "--port", "0", "--backlog", "7", "--app-dir", app_dir) as proc:
        proc.wait_listening()
        result = subprocess.run(
            [ss, "-ltnH", f"sport = :{proc.port}"], capture_output=True, text=True, timeout=10
        )
    fields = result.stdout.split()
    assert fields[0] == "LISTEN", result.stdout
    assert fields[2] == "7", result.stdout  # Send-Q of a listening socket is its backlog


def test_port_in_use_is_a_clear_error(app_dir: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with zonda_process("scope_app:app", "--port", str(port), "--app-dir", app_dir) as proc:
            assert proc.wait(10) == 1
    assert "could not listen" in proc.output
    assert "Traceback" not in proc.output


@pytest.mark.drivers("uvloop")  # the loops are this test's own parameter
@pytest.mark.parametrize(
    ("loop", "name"), [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop"), ("trio", "trio")]
)
def test_loop_is_named_in_the_startup_line(app_dir: str, loop: str, name: str) -> None:
    with zonda_process("scope_app:app", "--port", "0", "--loop", loop, "--app-dir", app_dir) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").status_code == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert f"serving scope_app:app (ASGI 3) with {name}," in proc.output
