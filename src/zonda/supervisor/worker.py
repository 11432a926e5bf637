"""The worker process: ``Server(config).serve()`` on the inherited listeners, talking to the supervisor.

The worker writes one-line messages to its pipe: ``h`` (heartbeat, every interval, from the event loop, so a
blocked loop goes quiet), ``r`` (ready: lifespan startup done and listening), ``m COUNT`` (``--max-requests``
reached: please recycle me) and ``e REASON`` (the app cannot boot, just before exiting with
``EXIT_BOOT_FAILURE``). It stops gracefully on SIGTERM/SIGINT (the Server's own handlers), at once on SIGQUIT,
and by itself when the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import reduction
from typing import Any

from zonda.config import Config
from zonda.errors import AppLoadError, ConfigError, LifespanFailure, ListenError
from zonda.io import run, running
from zonda.io.base import Runtime
from zonda.listeners import listen_address, listen_error
from zonda.logging import configure_logging
from zonda.server import Server

logger = logging.getLogger("zonda.error")

HEARTBEAT = b"h"
READY = b"r"
RECYCLE = b"m"
BOOT_ERROR = b"e"

EXIT_BOOT_FAILURE = 3  # the app could not be imported, its lifespan startup failed, or it could not listen
READY_POLL = 0.01
DRAIN_GRACE = 0.1  # see Server.drain_grace: no connection accepted just before a drain is closed unread


class InheritedFd:
    """A file descriptor for the child: inherited as is under fork, duplicated into it under spawn."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[..., InheritedFd], tuple[Any]]:
        return (_rebuild_fd, (reduction.DupFd(self.fd),))


def _rebuild_fd(dup: Any) -> InheritedFd:
    return InheritedFd(dup.detach())


@dataclass
class WorkerSpec:
    """What a worker needs; plain data, so that the spawn start method can pickle it."""

    config: Config
    sockets: list[socket.socket]
    channel: InheritedFd
    supervisor_pid: int
    heartbeat_interval: float
    request_limit: int | None = None
    reuse_port: int | None = None  # bind our own SO_REUSEPORT listener on this port instead of `sockets`
    configure_logging: bool = False  # spawn: a fresh interpreter sets its logging up again
    after_fork: Callable[[], None] | None = field(default=None, repr=False)  # fork only: close parent fds


class Channel:
    """The write end of the pipe to the supervisor; never blocks the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False
        os.set_blocking(fd, False)

    def send(self, kind: bytes, text: str = "") -> bool:
        payload = text.replace("\n", " ").encode("utf-8", "replace")[:400]
        line = kind + (b" " + payload if payload else b"") + b"\n"
        try:
            os.write(self.fd, line)
        except BlockingIOError:
            return True  # the supervisor is slow to read: the next beat tells
        except OSError:
            self.broken = True
            return False
        return True


# The signals the supervisor handles. It blocks them while it starts a worker, and the worker unblocks them once
# its own dispositions are set (reset_signals): a forked child starts with the supervisor's Python handler,
# which would swallow a SIGTERM sent to the newborn (the worker would serve on until the drain timeout).
SUPERVISOR_SIGNALS = frozenset(
    {
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGCHLD,
    }
)


def reset_signals() -> None:
    """Forget the supervisor's signal handling: the Server installs its own once its loop runs. A signal
    that came while the supervisor's were blocked (see SUPERVISOR_SIGNALS) is delivered here, at the end."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # meant for the supervisor (a terminal's hang-up reaches us all)
    signal.signal(signal.SIGQUIT, _quit_now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)


def _quit_now(signum: int, frame: Any) -> None:
    os._exit(0)  # SIGQUIT before the event loop runs: nothing to drain yet


def bind_reuse_port(config: Config, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket on ``config.host``:``port`` with SO_REUSEPORT: one per worker, the kernel spreads
    connections between them."""
    host = config.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise listen_error(listen_address(config, port), exc) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise listen_error(listen_address(config, port), exc) from None
    sock.setblocking(False)
    return sock


async def _heartbeat(server: Server, channel: Channel, spec: WorkerSpec, runtime: Runtime) -> None:
    interval = spec.heartbeat_interval
    loop = runtime.loop
    next_beat = loop.time()
    while not server.started.is_set():
        if loop.time() >= next_beat:
            channel.send(HEARTBEAT)
            next_beat = loop.time() + interval
        await runtime.sleep(READY_POLL)
    channel.send(READY)
    asked_to_recycle = False
    while True:
        await runtime.sleep(interval)
        alive = channel.send(HEARTBEAT) and os.getppid() == spec.supervisor_pid
        if not alive and not server.should_exit:
            logger.warning("The supervisor (pid %d) is gone: shutting down.", spec.supervisor_pid)
            server.shutdown()
        limit = spec.request_limit
        if limit is not None and not asked_to_recycle and server.shared is not None:
            served = server.shared.context.stats.total_requests
            if served >= limit:
                asked_to_recycle = True
                channel.send(RECYCLE, str(served))


async def _serve(server: Server, sockets: list[socket.socket], channel: Channel, spec: WorkerSpec) -> None:
    runtime = running()
    quit_now = runtime.on_signals((signal.SIGQUIT,), lambda signum: server.shutdown(force=True))
    beat = runtime.start(_heartbeat(server, channel, spec, runtime))
    try:
        await server.serve(sockets=sockets)
    finally:
        quit_now()
        beat.cancel()
        await runtime.join([beat], 1.0)


def worker_main(spec: WorkerSpec) -> None:
    """The worker process's entry point (a multiprocessing target): serve, then exit with a status."""
    reset_signals()
    if spec.after_fork is not None:
        spec.after_fork()
    config = spec.config
    if spec.configure_logging:
        configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)
    channel = Channel(spec.channel.fd)
    reason = None
    try:
        sockets = spec.sockets
        if spec.reuse_port is not None:
            sockets = [bind_reuse_port(config, spec.reuse_port)]
        server = Server(config)
        server.drain_grace = DRAIN_GRACE
        run(config.loop, _serve(server, sockets, channel, spec))
    except AppLoadError as exc:
        reason = str(exc)
        logger.error("Error: %s%s", exc, exc.traceback_text)
    except (ConfigError, ListenError) as exc:
        reason = str(exc)
        logger.error("Error: %s", exc)
    except LifespanFailure as exc:
        reason = f"application startup failed: {exc}"
        logger.error("Application startup failed: %s", exc)
    except OSError as exc:
        reason = f"could not listen: {exc}"
        logger.error("Error: could not listen: %s", exc)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logger.exception("Worker failed")
        channel.send(BOOT_ERROR, f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    if reason is not None:
        channel.send(BOOT_ERROR, reason)
        sys.exit(EXIT_BOOT_FAILURE)
