"""systemd integration without a systemd library: socket activation and ``sd_notify``.

Socket activation (``sd_listen_fds``): systemd passes listening sockets as file descriptors 3, 4, ... and says
so in ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the process meant, so a child does not take them too) and
``LISTEN_FDNAMES`` (colon-separated names from ``FileDescriptorName=``).

Notification (``sd_notify``): one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace): ``READY=1``, ``RELOADING=1`` (with
``MONOTONIC_USEC``, as ``Type=notify-reload`` wants), ``STOPPING=1``, ``STATUS=...``, ``WATCHDOG=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

from zonda.errors import ConfigError

logger = logging.getLogger("zonda.supervisor")

SD_LISTEN_FDS_START = 3


def listen_fds(env: Mapping[str, str], pid: int | None = None) -> list[tuple[int, str]]:
    """The ``(fd, name)`` pairs systemd passed to this process; empty when none were (or not for us)."""
    count_text = env.get("LISTEN_FDS")
    if not count_text:
        return []
    pid_text = env.get("LISTEN_PID")
    if pid_text is not None:  # systemd always sets it; a harness may leave it out
        try:
            meant_for = int(pid_text)
        except ValueError:
            raise ConfigError(f"LISTEN_PID: {pid_text!r} is not a process id") from None
        if meant_for != (os.getpid() if pid is None else pid):
            return []
    try:
        count = int(count_text)
    except ValueError:
        raise ConfigError(f"LISTEN_FDS: {count_text!r} is not a number") from None
    if count < 0:
        raise ConfigError(f"LISTEN_FDS: {count} is negative")
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    return [
        (SD_LISTEN_FDS_START + i, names[i] if i < len(names) and names[i] else f"fd{SD_LISTEN_FDS_START + i}")
        for i in range(count)
    ]


def forget_listen_fds(env: MutableMapping[str, str]) -> None:
    """Unset the variables, as ``sd_listen_fds(1)`` does, so that nothing started later reads them."""
    for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(key, None)


def activated_sockets(fds: list[tuple[int, str]]) -> list[socket.socket]:
    """Socket objects for the passed descriptors; each must be a listening stream socket."""
    sockets = []
    for fd, name in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ConfigError(
                f"LISTEN_FDS: descriptor {fd} ({name}) is not a socket: {exc.strerror}"
            ) from None
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise ConfigError(f"LISTEN_FDS: descriptor {fd} ({name}) is not a stream socket")
        with contextlib.suppress(OSError):
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.listen()  # systemd listens already; a bare bound socket from a harness may not
        sock.setblocking(False)
        os.set_inheritable(fd, True)
        sockets.append(sock)
    return sockets


def notify_address(env: Mapping[str, str]) -> str | None:
    """The address ``NOTIFY_SOCKET`` names, with ``@`` turned into the abstract namespace's NUL byte."""
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    if not path.startswith("/"):
        logger.warning("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract: not notifying", path)
        return None
    return path


def notify_message(**fields: str | int) -> bytes:
    """``READY=1\\nSTATUS=...`` from keyword arguments, keys upper-cased; values may not hold newlines."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"sd_notify value for {key} holds a newline")
        lines.append(f"{key.upper()}={text}")
    return "\n".join(lines).encode()


class Notifier:
    """Sends ``sd_notify`` datagrams when ``NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.set_inheritable(False)

    @classmethod
    def from_env(cls, env: MutableMapping[str, str]) -> Notifier:
        """Take the address from the environment and unset it, so that workers and the app do not notify."""
        address = notify_address(env)
        env.pop("NOTIFY_SOCKET", None)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def send(self, **fields: str | int) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(notify_message(**fields), self.address)
        except OSError as exc:
            logger.warning("sd_notify to %r failed: %s", self.address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status, mainpid=os.getpid())

    def reloading(self, status: str) -> bool:
        return self.send(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000, status=status
        )

    def stopping(self, status: str) -> bool:
        return self.send(stopping=1, status=status)

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when there is no watchdog."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != (os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
