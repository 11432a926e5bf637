"""The supervisor: a plain synchronous parent process that runs N workers over listeners it binds once.

It has no event loop: one ``selectors`` loop watches a self-pipe for signals (``signal.set_wakeup_fd``), each
worker's pipe (heartbeats, readiness, recycle requests), each worker's exit sentinel and, with ``--reload``,
the file watcher. Workers are kept in slots (``--workers`` of them); a slot holds its current worker and, while
that one is being replaced, its successor. Replacements (rolling restart, recycling) run one at a time and
always start the successor first: the old worker is told to drain only once the new one is ready.

Signals: SIGTERM/SIGINT graceful stop (a second SIGINT: immediate), SIGQUIT immediate stop, SIGHUP rolling
restart with the app imported anew, SIGTTIN/SIGTTOU one worker more/fewer.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from zonda.config import Config
from zonda.errors import ConfigError
from zonda.listeners import bind_socket, describe_address
from zonda.supervisor import systemd
from zonda.supervisor.pidfile import PidFile
from zonda.supervisor.worker import (
    BOOT_ERROR,
    EXIT_BOOT_FAILURE,
    READY,
    RECYCLE,
    SUPERVISOR_SIGNALS,
    InheritedFd,
    WorkerSpec,
    bind_reuse_port,
    worker_main,
)
from zonda.tls import create_ssl_context

logger = logging.getLogger("zonda.supervisor")

EXIT_OK = 0
EXIT_FAILURE = 1

TICK = 0.1  # longest sleep of the supervisor loop
BACKOFF_BASE = 0.1  # first restart delay after a worker died at start-up; doubles each time
BACKOFF_CAP = 10.0
MAX_START_FAILURES = 5  # deaths at start-up, with no worker ever ready, before giving up
STABLE_AFTER = 1.0  # a worker ready this long clears the start-up failure count
MEMORY_CHECK_INTERVAL = 1.0
LIFETIME_JITTER = 0.1  # --max-worker-lifetime is stretched by up to this fraction per worker
KILL_GRACE = 5.0  # beyond the graceful and lifespan-shutdown timeouts, before a draining worker is killed
QUIT_GRACE = 2.0  # after SIGQUIT, before SIGKILL


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before restarting after ``failures`` consecutive start-up deaths: 0, then base,
    2 base, 4 base, ... up to cap."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 62)))


def request_limit(max_requests: int | None, jitter: int, rng: random.Random) -> int | None:
    """A worker's own ``--max-requests``: the limit plus a random 0..jitter, so workers do not all recycle
    at once."""
    if max_requests is None:
        return None
    return max_requests + (rng.randint(0, jitter) if jitter > 0 else 0)


def lifetime_deadline(start: float, lifetime: float | None, rng: random.Random) -> float | None:
    if lifetime is None:
        return None
    return start + lifetime * rng.uniform(1.0, 1.0 + LIFETIME_JITTER)


def worker_count(workers: int) -> int:
    """``--workers``: 0 (or ``auto``) means one per CPU this process may run on."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def start_method() -> str:
    """fork on Linux (fast, the supervisor has imported zonda but never the app); spawn elsewhere."""
    method = os.environ.get("ZONDA_WORKER_START_METHOD")  # for tests of the spawn path
    if method in ("fork", "spawn", "forkserver"):
        return method
    return "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass(eq=False)
class Worker:
    number: int
    process: BaseProcess
    pid: int
    read_fd: int
    generation: int
    started_at: float
    last_seen: float
    request_limit: int | None
    lifetime_deadline: float | None
    slot: Slot | None
    ready_at: float | None = None
    buffer: bytes = b""
    error: str | None = None
    recycle_reason: str | None = None
    retiring: bool = False
    stop_deadline: float | None = None
    killed_for: str | None = None
    exit_code: int | None = None


@dataclass(eq=False)
class Slot:
    index: int
    current: Worker | None = None
    successor: Worker | None = None
    successor_reason: str = ""
    respawn_at: float | None = 0.0  # when to start a worker in an empty slot; None: wait (reload)


@dataclass
class Listeners:
    sockets: list[socket.socket] = field(default_factory=list)
    reuse_port: int | None = None
    reservation: socket.socket | None = None
    urls: list[str] = field(default_factory=list)
    unlink: str | None = None

    def close(self) -> None:
        for sock in [*self.sockets, *([self.reservation] if self.reservation else [])]:
            with contextlib.suppress(OSError):
                sock.close()
        if self.unlink:
            with contextlib.suppress(OSError):
                os.unlink(self.unlink)


def open_listeners(config: Config, env: MutableMapping[str, str]) -> Listeners:
    """Bind once, here: from systemd (LISTEN_FDS), a reserved SO_REUSEPORT port, or bind_socket()."""
    scheme = "https" if config.ssl_certfile else "http"
    fds = systemd.listen_fds(env)
    if fds:
        systemd.forget_listen_fds(env)
        sockets = systemd.activated_sockets(fds)
        logger.info(
            "Using %d socket(s) passed by systemd: %s",
            len(sockets),
            ", ".join(f"{name} (fd {fd})" for fd, name in fds),
        )
        if config.reuse_port:
            logger.warning("reuse_port is ignored: the listeners come from systemd")
        return Listeners(sockets, urls=[describe_address(s, scheme) for s in sockets])
    if config.reuse_port:
        if config.uds or config.fd is not None:
            raise ConfigError("reuse_port: needs a TCP host and port (not --uds or --fd)")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("reuse_port: SO_REUSEPORT is not available on this system")
        # bound but not listening: it holds the port (port 0 picks it once) and takes no connections
        reservation = bind_reuse_port(config, config.port, listen=False)
        port = int(reservation.getsockname()[1])
        host = config.host.strip("[]")
        url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        return Listeners([], reuse_port=port, reservation=reservation, urls=[url])
    sock = bind_socket(config)
    os.set_inheritable(sock.fileno(), True)
    unlink = config.uds if config.uds and config.fd is None else None
    return Listeners([sock], urls=[describe_address(sock, scheme)], unlink=unlink)


class Supervisor:
    def __init__(self, config: Config, env: MutableMapping[str, str] | None = None) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.target = worker_count(config.workers)
        self.rng = random.Random()
        self.method = start_method()
        self.context: Any = multiprocessing.get_context(self.method)  # typeshed's BaseContext lacks Process
        self.slots: list[Slot] = []
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.numbered = 0
        self.stopping = False
        self.forced = False
        self.exit_code = EXIT_OK
        self.ever_ready = False
        self.all_ready_once = False
        self.rolling = False
        self.failures = 0
        self.last_failure_at = 0.0
        self.replace_failures = 0
        self.replace_not_before = 0.0
        self.waiting_for_changes = False
        self.pending_signals: list[int] = []
        self.selector = selectors.DefaultSelector()
        self.listeners = Listeners()
        self.notifier = systemd.Notifier(None)
        self.pidfile: PidFile | None = None
        self.watcher: Any = None
        self.watchdog_interval: float | None = None
        self.next_watchdog = 0.0
        self.next_memory_check = 0.0
        self.last_status = ""
        self._wake_r = self._wake_w = -1
        self._spawning_fd = -1  # the read end of the pipe of the worker being started, closed in that child
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1
        self.heartbeat_interval = min(1.0, max(0.02, config.timeout_worker_healthcheck / 5))
        self.startup_timeout = config.timeout_lifespan_startup + config.timeout_worker_healthcheck
        self.drain_timeout = config.timeout_graceful_shutdown + config.timeout_lifespan_shutdown + KILL_GRACE

    # ------------------------------------------------------------------ set-up and the loop

    def run(self) -> int:
        """Serve until stopped; return the exit status. Raises ConfigError or OSError before any worker."""
        config = self.config
        if not hasattr(signal, "SIGHUP"):
            raise ConfigError("workers: the supervisor needs a POSIX system (signals, fork or spawn)")
        self.notifier = systemd.Notifier.from_env(self.env)
        self.watchdog_interval = systemd.watchdog_interval(self.env)
        create_ssl_context(config)  # a bad certificate or key: one error here, not a boot failure per worker
        try:
            if config.pid:
                self.pidfile = PidFile(config.pid)
                self.pidfile.create()
            self.listeners = open_listeners(config, self.env)
            if config.reload:
                self._start_watcher()
            if config.max_worker_memory is not None and rss_bytes(os.getpid()) is None:
                logger.warning("max_worker_memory is ignored: no /proc to read a worker's memory from")
            self._install_signals()
            logger.info(
                "Supervisor %d starting %d worker(s) (%s) for %s on %s",
                os.getpid(),
                self.target,
                self.method,
                config.app if isinstance(config.app, str) else getattr(config.app, "__qualname__", "app"),
                ", ".join(self.listeners.urls),
            )
            self.slots = [Slot(i) for i in range(self.target)]
            self._loop()
        except BaseException:
            self._kill_all()
            raise
        finally:
            self._cleanup()
        logger.info("Supervisor %d exiting with status %d", os.getpid(), self.exit_code)
        return self.exit_code

    def _loop(self) -> None:
        while True:
            for key, _ in self.selector.select(TICK):
                callback: Callable[[], None] = key.data
                callback()
            now = time.monotonic()
            self._handle_signals(now)
            self._reap(now)
            self._enforce_deadlines(now)
            if self.stopping:
                if not self.workers:
                    return
                continue
            self._check_health(now)
            self._check_recycling(now)
            self._reconcile(now)
            self._report(now)

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeups)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in sorted(SUPERVISOR_SIGNALS):  # the set a worker unblocks once its own handlers are set
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # The wake-up fd only wakes the loop; the queue says what came. A forked child that has not reset its
        # handlers yet appends to its own copy of the queue, so a stray byte from it changes nothing here.
        self.pending_signals.append(signum)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 4096):
                pass

    def _start_watcher(self) -> None:
        from zonda.supervisor.reload import ReloadFilter, Watcher, watch_dirs

        dirs = watch_dirs(self.config)
        watch_filter = ReloadFilter(self.config.reload_includes, self.config.reload_excludes, dirs)
        self.watcher = Watcher(dirs, watch_filter, self.config.reload_delay)
        self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, self._on_changes)
        self.watcher.start()
        logger.info(
            "Watching %s for changes to %s (reload)", ", ".join(dirs), ", ".join(watch_filter.includes)
        )

    def _cleanup(self) -> None:
        if self._wake_w != -1:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_wakeup)
            for sig, handler in self._old_handlers.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.selector.close()
        self.listeners.close()
        if self.pidfile is not None:
            self.pidfile.remove()
        self.notifier.close()

    def _close_in_child(self) -> None:
        """Run in a forked worker: close what belongs to the supervisor (never its listeners)."""
        with contextlib.suppress(OSError):
            self.selector.close()
        fds = [self._wake_r, self._wake_w, self._spawning_fd, *(w.read_fd for w in self.workers.values())]
        if self.watcher is not None:
            fds.extend(self.watcher.fds())
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.notifier.close()
        if self.listeners.reservation is not None:
            self.listeners.reservation.close()

    # ------------------------------------------------------------------ workers

    def _spawn(self, slot: Slot, now: float, successor_for: str = "") -> Worker:
        config = self.config
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_inheritable(read_fd, False)
        limit = request_limit(config.max_requests, config.max_requests_jitter, self.rng)
        forked = self.method == "fork"
        spec = WorkerSpec(
            config=config,
            sockets=self.listeners.sockets,
            channel=InheritedFd(write_fd),
            supervisor_pid=os.getpid(),
            heartbeat_interval=self.heartbeat_interval,
            request_limit=limit,
            reuse_port=self.listeners.reuse_port,
            configure_logging=not forked,
            after_fork=self._close_in_child if forked else None,
        )
        self.numbered += 1
        process = self.context.Process(target=worker_main, args=(spec,), name=f"zonda-worker-{self.numbered}")
        self._spawning_fd = read_fd
        # the child inherits the mask: what comes before it has its own dispositions waits for it (reset_signals)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            process.start()
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._spawning_fd = -1
            os.close(write_fd)
        assert process.pid is not None
        worker = Worker(
            number=self.numbered,
            process=process,
            pid=process.pid,
            read_fd=read_fd,
            generation=self.generation,
            started_at=now,
            last_seen=now,
            request_limit=limit,
            lifetime_deadline=lifetime_deadline(now, config.max_worker_lifetime, self.rng),
            slot=slot,
        )
        self.workers[worker.pid] = worker
        self.selector.register(read_fd, selectors.EVENT_READ, lambda: self._read_worker(worker))
        self.selector.register(process.sentinel, selectors.EVENT_READ, _nothing)
        why = (
            f" to replace worker {slot.current.pid} ({successor_for})"
            if successor_for and slot.current
            else ""
        )
        logger.info("Started worker %d (slot %d)%s", worker.pid, slot.index + 1, why)
        return worker

    def _read_worker(self, worker: Worker) -> None:
        try:
            data = os.read(worker.read_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._unregister(worker.read_fd)
            return
        worker.last_seen = time.monotonic()
        worker.buffer += data
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            kind, _, text = line.partition(b" ")
            if kind == READY:
                self._on_ready(worker, worker.last_seen)
            elif kind == RECYCLE:
                if worker.recycle_reason is None and not worker.retiring:
                    worker.recycle_reason = (
                        f"max-requests: served {text.decode(errors='replace')} requests"
                        f" (limit {worker.request_limit})"
                    )
                    logger.info("Worker %d asks to be recycled: %s", worker.pid, worker.recycle_reason)
            elif kind == BOOT_ERROR:
                worker.error = text.decode(errors="replace")

    def _unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def _on_ready(self, worker: Worker, now: float) -> None:
        if worker.ready_at is not None:
            return
        worker.ready_at = now
        self.ever_ready = True
        self.waiting_for_changes = False
        slot = worker.slot
        logger.info("Worker %d is ready (%.2fs after start)", worker.pid, now - worker.started_at)
        if slot is not None and slot.successor is worker:
            old = slot.current
            slot.current, slot.successor = worker, None
            self.replace_failures = 0
            if old is not None:
                self._retire(old, f"{slot.successor_reason}; worker {worker.pid} serves in its place", now)

    def _retire(self, worker: Worker, reason: str, now: float, sig: int = signal.SIGTERM) -> None:
        """Tell a worker to drain and exit; it is killed if it is still there after the drain timeout."""
        if worker.retiring:
            return
        worker.retiring = True
        worker.slot = None
        worker.stop_deadline = now + self.drain_timeout
        logger.info("Draining worker %d: %s", worker.pid, reason)
        self._signal(worker, sig)

    def _signal(self, worker: Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    def _reap(self, now: float) -> None:
        for worker in list(self.workers.values()):
            code = worker.process.exitcode
            if code is None:
                continue
            self._read_worker(worker)  # the last messages, such as why it could not boot
            self._forget(worker)
            worker.exit_code = code
            self._on_exit(worker, code, now)

    def _forget(self, worker: Worker) -> None:
        del self.workers[worker.pid]
        self._unregister(worker.read_fd)
        self._unregister(worker.process.sentinel)
        with contextlib.suppress(OSError):
            os.close(worker.read_fd)
        with contextlib.suppress(ValueError):
            worker.process.close()

    def _on_exit(self, worker: Worker, code: int, now: float) -> None:
        how = describe_exit(code)
        self._metrics_exit(worker, restarted=not (worker.retiring or self.stopping))
        if worker.retiring or self.stopping:
            log = (
                logger.info
                if code in (0, -signal.SIGTERM, -signal.SIGQUIT) or self.forced
                else logger.warning
            )
            log("Worker %d exited (%s)", worker.pid, how)
            return
        slot = worker.slot
        assert slot is not None
        if worker.killed_for:
            how = f"{how}, killed: {worker.killed_for}"
        if worker.ready_at is None:
            self._on_start_failure(worker, slot, code, how, now)
            return
        uptime = now - worker.ready_at
        if uptime < STABLE_AFTER:
            self._count_failure(now)
        if slot.current is worker:
            if slot.successor is not None:
                slot.current, slot.successor = slot.successor, None
                logger.warning(
                    "Worker %d died (%s); its replacement %d takes its place",
                    worker.pid,
                    how,
                    slot.current.pid,
                )
                return
            slot.current = None
            delay = backoff_delay(self.failures) if uptime < STABLE_AFTER else 0.0
            slot.respawn_at = now + delay
            logger.warning(
                "Worker %d died (%s) after %.1fs; restarting it%s",
                worker.pid,
                how,
                now - worker.started_at,
                f" in {delay:.1f}s" if delay else "",
            )

    def _metrics_exit(self, worker: Worker, restarted: bool) -> None:
        """With ``--metrics-bind``: drop the gone worker's live gauges; count an unplanned exit."""
        if not self.config.metrics_bind:
            return
        try:
            from zonda import metrics

            metrics.worker_exited(worker.pid)
            if restarted:
                metrics.count_worker_restart()
        except Exception:
            logger.exception("Updating the metrics for worker %d failed", worker.pid)

    def _count_failure(self, now: float) -> None:
        self.failures += 1
        self.last_failure_at = now

    def _on_start_failure(self, worker: Worker, slot: Slot, code: int, how: str, now: float) -> None:
        reason = worker.error or how
        if slot.successor is worker:
            slot.successor = None
            self._replacement_failed(worker, slot, reason, now)
            return
        slot.current = None
        self._count_failure(now)
        logger.error("Worker %d failed to boot (%s): %s", worker.pid, how, reason)
        if self.config.reload and code == EXIT_BOOT_FAILURE:
            slot.respawn_at = None
            if not self.waiting_for_changes:
                self.waiting_for_changes = True
                logger.error("Waiting for a file change to try again (reload)")
            return
        if (
            not self.config.reload
            and not self.ever_ready
            and (code == EXIT_BOOT_FAILURE or self.failures >= MAX_START_FAILURES)
        ):
            logger.critical("The app cannot boot: %s. Stopping.", reason)
            self.exit_code = EXIT_FAILURE
            self._begin_stop(now, graceful=True, why="the app cannot boot")
            return
        delay = backoff_delay(self.failures)
        slot.respawn_at = now + delay
        logger.warning(
            "Restarting slot %d in %.1fs (%d start-up failures in a row)",
            slot.index + 1,
            delay,
            self.failures,
        )

    def _replacement_failed(self, worker: Worker, slot: Slot, reason: str, now: float) -> None:
        if slot.successor_reason == "rolling restart":
            for other in self.slots:
                if other.current is not None:
                    other.current.generation = self.generation  # keep the old workers as they are
            self.rolling = False
            logger.error(
                "Rolling restart stopped: the new worker %d failed to boot (%s); the old workers keep serving",
                worker.pid,
                reason,
            )
            self.notifier.ready(self._status_text() + " (rolling restart failed)")
            return
        self.replace_failures += 1
        delay = backoff_delay(self.replace_failures)
        self.replace_not_before = now + delay
        logger.error(
            "Replacement worker %d failed to boot (%s); worker %s keeps serving, retrying in %.1fs",
            worker.pid,
            reason,
            slot.current.pid if slot.current else "-",
            delay,
        )

    # ------------------------------------------------------------------ policies

    def _check_health(self, now: float) -> None:
        timeout = self.config.timeout_worker_healthcheck
        for worker in list(self.workers.values()):
            if worker.retiring or worker.killed_for:
                continue
            if worker.ready_at is not None:
                silent = now - worker.last_seen
                if silent > timeout:
                    self._kill(
                        worker, f"no heartbeat for {silent:.1f}s (--timeout-worker-healthcheck {timeout:g})"
                    )
            elif now - worker.started_at > self.startup_timeout:
                self._kill(worker, f"not ready after {now - worker.started_at:.1f}s")

    def _kill(self, worker: Worker, reason: str) -> None:
        worker.killed_for = reason
        logger.error("Killing worker %d: %s", worker.pid, reason)
        self._signal(worker, signal.SIGKILL)

    def _check_recycling(self, now: float) -> None:
        config = self.config
        check_memory = config.max_worker_memory is not None and now >= self.next_memory_check
        if check_memory:
            self.next_memory_check = now + MEMORY_CHECK_INTERVAL
        for slot in self.slots:
            worker = slot.current
            if worker is None or worker.ready_at is None or worker.recycle_reason is not None:
                continue
            if worker.lifetime_deadline is not None and now >= worker.lifetime_deadline:
                worker.recycle_reason = f"max-worker-lifetime: up {now - worker.started_at:.0f}s"
            elif check_memory and config.max_worker_memory is not None:
                rss = rss_bytes(worker.pid)
                if rss is not None and rss > config.max_worker_memory * 1024 * 1024:
                    worker.recycle_reason = (
                        f"max-worker-memory: RSS {rss / 1048576:.0f} MiB over {config.max_worker_memory} MiB"
                    )
            if worker.recycle_reason is not None:
                logger.info("Worker %d to be recycled: %s", worker.pid, worker.recycle_reason)

    def _replace_reason(self, worker: Worker) -> str | None:
        if worker.generation < self.generation:
            return "rolling restart"
        return worker.recycle_reason

    def _reconcile(self, now: float) -> None:
        for slot in self.slots:
            if slot.current is None and slot.respawn_at is not None and now >= slot.respawn_at:
                slot.respawn_at = None
                slot.current = self._spawn(slot, now)
        if any(slot.successor is not None for slot in self.slots) or now < self.replace_not_before:
            return  # one replacement at a time
        for slot in self.slots:
            worker = slot.current
            if worker is None or worker.ready_at is None or worker.retiring:
                continue
            reason = self._replace_reason(worker)
            if reason is not None:
                slot.successor_reason = reason
                slot.successor = self._spawn(slot, now, successor_for=reason)
                return
        if self.rolling and all(
            slot.current is not None and slot.current.ready_at is not None for slot in self.slots
        ):
            self.rolling = False
            logger.info("Rolling restart complete: %s", self._status_text())
            self.notifier.ready(self._status_text())

    def _status_text(self) -> str:
        ready = [
            slot.current.pid for slot in self.slots if slot.current is not None and slot.current.ready_at
        ]
        return f"{len(ready)} of {len(self.slots)} workers serving"

    def _report(self, now: float) -> None:
        if not self.all_ready_once and all(
            slot.current is not None and slot.current.ready_at is not None for slot in self.slots
        ):
            self.all_ready_once = True
            pids = ", ".join(str(slot.current.pid) for slot in self.slots if slot.current is not None)
            logger.info(
                "Ready: %d worker(s) serving on %s (pids %s)",
                len(self.slots),
                ", ".join(self.listeners.urls),
                pids,
            )
            self.notifier.ready(self._status_text())
            self.last_status = self._status_text()
        status = self._status_text()
        if self.all_ready_once and status != self.last_status:
            self.last_status = status
            self.notifier.status(status)
        if self.watchdog_interval is not None and now >= self.next_watchdog:
            self.next_watchdog = now + self.watchdog_interval
            self.notifier.watchdog()

    # ------------------------------------------------------------------ signals and stopping

    def _handle_signals(self, now: float) -> None:
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            if sig == signal.SIGCHLD:
                continue
            name = signal.Signals(sig).name
            if sig in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                logger.info("Received %s: stopping %d worker(s) gracefully", name, len(self.workers))
                self._begin_stop(now, graceful=True, why=f"received {name}")
            elif sig in (signal.SIGINT, signal.SIGQUIT):
                logger.warning("Received %s: stopping now", name)
                self._begin_stop(now, graceful=False, why=f"received {name}")
            elif self.stopping:
                continue
            elif sig == signal.SIGHUP:
                self._rolling_restart(now)
            elif sig == signal.SIGTTIN:
                self.slots.append(Slot(len(self.slots), respawn_at=now))
                logger.info("Received SIGTTIN: scaling up to %d workers", len(self.slots))
            elif sig == signal.SIGTTOU:
                if len(self.slots) <= 1:
                    logger.warning("Received SIGTTOU: already at one worker")
                    continue
                slot = self.slots.pop()
                logger.info("Received SIGTTOU: scaling down to %d workers", len(self.slots))
                for worker in (slot.successor, slot.current):
                    if worker is not None:
                        self._retire(worker, "scaling down (SIGTTOU)", now)

    def _rolling_restart(self, now: float) -> None:
        self.generation += 1
        self.rolling = True
        self.replace_not_before = 0.0
        logger.info(
            "Received SIGHUP: rolling restart of %d worker(s), importing the app anew", len(self.slots)
        )
        self.notifier.reloading(f"rolling restart of {len(self.slots)} workers")

    def _on_changes(self) -> None:
        changes = self.watcher.take() if self.watcher is not None else []
        if not changes or self.stopping:
            return
        now = time.monotonic()
        shown = ", ".join(os.path.relpath(path) for path in changes[:3]) + (
            " ..." if len(changes) > 3 else ""
        )
        logger.warning("Detected changes in %s: reloading", shown)
        self.generation += 1
        self.waiting_for_changes = False
        self.failures = 0
        for slot in self.slots:
            for worker in (slot.successor, slot.current):
                if worker is not None:
                    self._retire(worker, "files changed (reload)", now)
            slot.current = slot.successor = None
            slot.respawn_at = now

    def _begin_stop(self, now: float, graceful: bool, why: str) -> None:
        if not graceful:
            self.forced = True
        first = not self.stopping
        self.stopping = True
        if first:
            self.notifier.stopping(f"stopping: {why}")
            if self.watcher is not None:
                self._unregister(self.watcher.fileno())
        for worker in self.workers.values():
            if graceful:
                if not worker.retiring:  # a draining worker had its SIGTERM and keeps its deadline
                    worker.retiring = True
                    worker.stop_deadline = now + self.drain_timeout
                    self._signal(worker, signal.SIGTERM)
            else:
                worker.retiring = True
                worker.stop_deadline = now + QUIT_GRACE
                self._signal(worker, signal.SIGQUIT)

    def _enforce_deadlines(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.stop_deadline is not None and now >= worker.stop_deadline and not worker.killed_for:
                self._kill(worker, "still running after the stop timeout")

    def _kill_all(self) -> None:
        for worker in list(self.workers.values()):
            self._signal(worker, signal.SIGKILL)
        for worker in list(self.workers.values()):
            worker.process.join(5)
            self._forget(worker)


def _nothing() -> None:
    """A sentinel turned readable: the loop reaps after every wake-up."""
