"""sd_notify messages against a real AF_UNIX datagram socket, LISTEN_FDS parsing, the watchdog interval."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zonda.config import Config
from zonda.errors import ConfigError
from zonda.supervisor import needs_supervisor, systemd


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield path, sock
    finally:
        sock.close()


def test_notify_message_is_key_value_lines() -> None:
    assert systemd.notify_message(ready=1, status="2 workers") == b"READY=1\nSTATUS=2 workers"
    with pytest.raises(ValueError):
        systemd.notify_message(status="two\nlines")


def test_notifier_sends_ready_reloading_stopping_status(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    env = {"NOTIFY_SOCKET": path}
    notifier = systemd.Notifier.from_env(env)
    assert "NOTIFY_SOCKET" not in env, "workers and the app must not notify"
    assert notifier.enabled
    try:
        assert notifier.ready("2 of 2 workers serving")
        assert sock.recv(4096).decode().splitlines() == [
            "READY=1",
            "STATUS=2 of 2 workers serving",
            f"MAINPID={os.getpid()}",
        ]
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading("rolling restart")
        lines = sock.recv(4096).decode().splitlines()
        assert lines[0] == "RELOADING=1"
        usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
        assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert lines[2] == "STATUS=rolling restart"
        assert notifier.stopping("stopping")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        assert notifier.status("1 of 2 workers serving")
        assert sock.recv(4096) == b"STATUS=1 of 2 workers serving"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        notifier.close()


def test_notifier_abstract_namespace() -> None:
    name = f"zonda-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    notifier = systemd.Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.status("hello")
        assert sock.recv(4096) == b"STATUS=hello"
    finally:
        notifier.close()
        sock.close()


def test_notifier_without_socket_does_nothing(tmp_path: Path) -> None:
    assert not systemd.Notifier.from_env({}).send(ready=1)
    assert systemd.notify_address({"NOTIFY_SOCKET": "relative/path"}) is None
    gone = systemd.Notifier(str(tmp_path / "nobody-listens"))
    assert not gone.ready("x"), "a missing socket is a warning, not an error"
    gone.close()


def test_listen_fds_parsing() -> None:
    pid = 4242
    assert systemd.listen_fds({}, pid) == []
    assert systemd.listen_fds({"LISTEN_FDS": "2", "LISTEN_PID": "4242"}, pid) == [(3, "fd3"), (4, "fd4")]
    named = {"LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "web:admin"}
    assert systemd.listen_fds(named, pid) == [(3, "web"), (4, "admin")]
    assert systemd.listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"}, pid) == [], "meant for another process"
    assert systemd.listen_fds({"LISTEN_FDS": "1"}, pid) == [(3, "fd3")]
    assert systemd.listen_fds({"LISTEN_FDS": "0", "LISTEN_PID": "4242"}, pid) == []
    with pytest.raises(ConfigError, match="LISTEN_FDS"):
        systemd.listen_fds({"LISTEN_FDS": "two", "LISTEN_PID": "4242"}, pid)
    with pytest.raises(ConfigError, match="LISTEN_PID"):
        systemd.listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "me"}, pid)
    env = dict(named)
    systemd.forget_listen_fds(env)
    assert env == {}


def test_activated_sockets_take_passed_listeners() -> None:
    with socket.socket() as original:
        original.bind(("127.0.0.1", 0))
        original.listen()
        fd = os.dup(original.fileno())
        (sock,) = systemd.activated_sockets([(fd, "web")])
        try:
            assert sock.getsockname() == original.getsockname()
            assert not sock.getblocking()
        finally:
            sock.close()


def test_activated_sockets_refuse_datagram_sockets() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram,
        pytest.raises(ConfigError, match="not a stream socket"),
    ):
        systemd.activated_sockets([(dgram.fileno(), "udp")])


def test_watchdog_interval() -> None:
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000"}, 5) == 5.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "6"}, 5) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "x"}, 5) is None


def test_systemd_variables_bring_in_the_supervisor() -> None:
    config = Config(app="app:app")
    assert not needs_supervisor(config, {})
    assert needs_supervisor(config, {"NOTIFY_SOCKET": "/run/notify"})
    assert needs_supervisor(config, {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())})
    assert not needs_supervisor(config, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
