"""Workers under the supervisor, as real processes on loopback ports.

Load sharing, kill -9 of a worker, a rolling restart (SIGHUP) and max-requests recycling under a steady load
with zero lost requests, graceful SIGTERM, SIGQUIT, scaling with SIGTTIN/SIGTTOU, the heartbeat timeout, an app
that cannot boot, ``--reload``, systemd socket activation and sd_notify, and ``--pid``.

Every process here is started by the test (the supervisor) or by that supervisor (its workers, whose pids it
logs); each test stops them by pid in a ``finally``, also when it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import LISTENING, REPO, wait_for

APP = """
import anyio
import os
import time

VERSION = "{version}"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    path = scope["path"]
    print("app started " + path, flush=True)
    if path == "/slow":
        await anyio.sleep(1.0)
    elif path == "/nap":
        await anyio.sleep(0.05)
    elif path == "/block":
        time.sleep(30)  # blocks the event loop: the heartbeat stops
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""

STARTED = re.compile(r"Started worker (\d+)")
READY_WORKER = re.compile(r"Worker (\d+) is ready")


def write_app(directory: Path, version: str, name: str = "wapp.py") -> None:
    (directory / name).write_text(APP.format(version=version))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path, "v1")
    return tmp_path


class Supervised:
    """A supervisor process started by the test; its output is collected line by line."""

    def __init__(
        self, argv: list[str], env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if "NOTIFY_SOCKET" not in (env or {}):
            full_env.pop("NOTIFY_SOCKET", None)  # a test run under systemd must not notify it
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            text=True,
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition: Callable[[str], bool], timeout: float = 10.0, what: str = "output") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.output):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"timed out waiting for {what}; output:\n{self.output}")
                self._changed.wait(min(left, 0.1))

    def wait_line(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_for(lambda out: out.count(text) >= count, timeout, repr(text))

    @property
    def port(self) -> int:
        match = LISTENING.search(self.output)
        assert match, self.output
        return int(match.group(1).rsplit(":", 1)[1])

    def started_pids(self) -> list[int]:
        return [int(pid) for pid in STARTED.findall(self.output)]

    def ready_pids(self) -> list[int]:
        return [int(pid) for pid in READY_WORKER.findall(self.output)]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:g}s later; output:\n{self.output}") from None
        self._reader.join(2)
        return code

    def stop(self) -> None:
        """Stop what this test started, by pid: the supervisor, then any worker it left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.started_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if _is_child_of(pid, self.proc.pid) or _is_zonda_worker(pid):
                    os.kill(pid, signal.SIGKILL)
        self._reader.join(2)


def _is_child_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, ValueError, IndexError):
        return False


def _is_zonda_worker(pid: int) -> bool:
    """An orphaned worker of ours (re-parented after its supervisor died): its command line is ours."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return b"zonda" in file.read()
    except OSError:
        return False


@contextlib.contextmanager
def supervisor(*args: str, env: dict[str, str] | None = None) -> Iterator[Supervised]:
    proc = Supervised([sys.executable, "-m", "zonda", *args], env=env)
    try:
        yield proc
    finally:
        proc.stop()


def base_args(app_dir: Path, *extra: str) -> list[str]:
    return ["wapp:app", "--port", "0", "--app-dir", str(app_dir), "--no-access-log", *extra]


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    """One request on a new connection; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise ConnectionError("empty response")
    return int(head.split(b" ", 2)[1]), body.decode()


def pid_of(body: str) -> int:
    return int(body.split()[1])


class Load:
    """A steady client load: ``threads`` threads, ``rate`` requests/s in all, each on a new connection;
    bounded in count and time. Every outcome is recorded; failures keep their error text."""

    def __init__(
        self, port: int, rate: float = 400.0, threads: int = 4, path: str = "/", limit: int = 30000
    ) -> None:
        self.port = port
        self.rate = rate
        self.threads = threads
        self.path = path
        self.limit = limit
        self.max_seconds = 40.0
        self.ok: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._workers:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(10)
        if not self.elapsed:
            self.elapsed = time.monotonic() - self.started

    @property
    def count(self) -> int:
        return len(self.ok) + len(self.failures)

    def _run(self) -> None:
        interval = self.threads / self.rate
        next_at = time.monotonic()
        deadline = next_at + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline and self.count < self.limit:
            try:
                status, body = get(self.port, self.path)
                outcome = body if status == 200 else None
                error = f"status {status}"
            except OSError as exc:
                outcome, error = None, f"{type(exc).__name__}: {exc}"
            with self._lock:
                if outcome is None:
                    self.failures.append(error)
                else:
                    self.ok.append(outcome)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()

    def wait_for_count(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            assert time.monotonic() < deadline, f"only {self.count} requests of {count}"
            time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as file:
        return file.read().rsplit(")", 1)[1].split()[0] != "Z"


# ------------------------------------------------------------------ load sharing and supervision


@pytest.mark.parametrize("reuse_port", [False, True], ids=["shared-listener", "reuse-port"])
def test_workers_share_the_load(app_dir: Path, reuse_port: bool) -> None:
    extra = ["--workers", "2"] + (["--reuse-port"] if reuse_port else [])
    with supervisor(*base_args(app_dir, *extra)) as proc:
        proc.wait_line("Ready: 2 worker(s)")
        workers = set(proc.ready_pids())
        assert len(workers) == 2
        port = proc.port
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: get(port, "/nap"), range(160)))
        assert all(status == 200 for status, _ in answers)
        pids = {pid_of(body) for _, body in answers}
        assert pids == workers, f"answered by {pids}, workers {workers}"
        assert proc.proc.pid not in pids
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    assert "Worker" in proc.output and "exited (exit code 0)" in proc.output
    # every worker line carries the worker's pid, every supervisor line the supervisor's and its name
    for line in proc.lines:
        if "zonda.supervisor" in line:
            assert f"[{proc.proc.pid}]" in line
        elif "Listening on" in line:
            assert any(f"[{pid}]" in line for pid in workers)


def test_spawn_start_method(app_dir: Path) -> None:
    """Where fork is unsafe (macOS) workers are spawned: the listeners and the pipe are passed, not inherited."""
    env = {"ZONDA_WORKER_START_METHOD": "spawn"}
    with supervisor(*base_args(app_dir, "--workers", "2"), env=env) as proc:
        proc.wait_line("Ready: 2 worker(s)", timeout=20)
        assert "worker(s) (spawn)" in proc.output
        workers = set(proc.ready_pids())
        with ThreadPoolExecutor(16) as pool:
            pids = {pid_of(body) for _, body in pool.map(lambda _: get(proc.port, "/nap"), range(160))}
        assert pids == workers
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_killed_worker_is_replaced_and_serving_goes_on(app_dir: Path) -> None:
    with supervisor(*base_args(app_dir, "--workers", "2")) as proc:
        proc.wait_line("Ready: 2 worker(s)")
        port = proc.port
        victim, survivor = proc.ready_pids()
        os.kill(victim, signal.SIGKILL)
        for _ in range(50):  # served all along, by the survivor and then the replacement too
            status, _ = get(port)
            assert status == 200
        proc.wait_for(lambda out: len(READY_WORKER.findall(out)) >= 3, what="the replacement to be ready")
        replacement = proc.ready_pids()[2]
        assert f"Worker {victim} died (signal SIGKILL)" in proc.output
        with ThreadPoolExecutor(16) as pool:
            pids = {pid_of(body) for _, body in pool.map(lambda _: get(port, "/nap"), range(160))}
        assert pids == {survivor, replacement}
        assert not alive(victim)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_rolling_restart_under_load_loses_nothing_and_serves_new_code(app_dir: Path) -> None:
    with supervisor(*base_args(app_dir, "--workers", "2")) as proc:
        proc.wait_line("Ready: 2 worker(s)")
        old = set(proc.ready_pids())
        with Load(proc.port, rate=400) as load:
            load.wait_for_count(200)
            write_app(app_dir, "v2-new")
            proc.signal(signal.SIGHUP)
            proc.wait_line("Rolling restart complete", timeout=20)
            settled = load.count
            load.wait_for_count(settled + 200)
        assert load.failures == [], load.failures[:5]
        assert load.count / load.elapsed > 200, f"{load.count} requests in {load.elapsed:.1f}s"
        assert load.ok[0].startswith("v1 ")
        assert all(body.startswith("v2-new ") for body in load.ok[-100:])
        new = set(proc.ready_pids()) - old
        assert len(new) == 2
        assert {pid_of(body) for body in load.ok[-100:]} <= new
        assert not any(alive(pid) for pid in old)
        # one at a time: each new worker was ready before an old one was told to drain
        out = proc.output
        for pid in new:
            assert out.index(f"Worker {pid} is ready") < out.index(
                "Draining worker", out.index(f"Started worker {pid}")
            )
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_max_requests_recycling_under_load_loses_nothing(app_dir: Path) -> None:
    args = base_args(app_dir, "--workers", "2", "--max-requests", "150", "--max-requests-jitter", "50")
    with supervisor(*args, "--timeout-worker-healthcheck", "1") as proc:
        proc.wait_line("Ready: 2 worker(s)")
        with Load(proc.port, rate=400) as load:
            proc.wait_for(lambda out: out.count("Draining worker") >= 3, timeout=30, what="three recycles")
        assert load.failures == [], load.failures[:5]
        assert load.count > 450
        out = proc.output
        assert "asks to be recycled: max-requests: served" in out
        assert len(set(proc.started_pids())) >= 5
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


@pytest.mark.parametrize("limit", ["lifetime", "memory"])
def test_lifetime_and_memory_recycling_lose_nothing(app_dir: Path, limit: str) -> None:
    flag = (
        ["--max-worker-lifetime", "1"] if limit == "lifetime" else ["--max-worker-memory", "1"]
    )  # 1 MiB: always
    with supervisor(*base_args(app_dir, "--workers", "2", *flag)) as proc:
        proc.wait_line("Ready: 2 worker(s)")
        with Load(proc.port, rate=200, threads=2) as load:
            proc.wait_for(lambda out: out.count("Draining worker") >= 2, timeout=15, what="two recycles")
        assert load.failures == [], load.failures[:5]
        assert f"to be recycled: max-worker-{limit}" in proc.output
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_sigterm_lets_slow_requests_finish(app_dir: Path) -> None:
    with supervisor(*base_args(app_dir, "--workers", "2")) as proc, ThreadPoolExecutor(4) as pool:
        proc.wait_line("Ready: 2 worker(s)")
        port = proc.port
        slow = [pool.submit(get, port, "/slow") for _ in range(4)]
        proc.wait_for(lambda out: out.count("app started /slow") == 4, what="four slow requests in the app")
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        for future in slow:
            status, body = future.result(5)
            assert status == 200 and body.startswith("v1 ")
        assert proc.wait(5) == 0
        assert time.monotonic() - signalled < 3
        assert proc.output.count("Application shutdown complete.") == 2


def test_sigterm_right_behind_a_fork_stops_the_new_worker_too(app_dir: Path) -> None:
    # SIGHUP makes the supervisor fork a successor; a SIGTERM a moment later reaches it while or just after it
    # forks, and it passes the SIGTERM on to every worker, the newborn included. The newborn must not lose it
    # (it would serve on until the drain timeout, 35 s here). The delays walk the SIGTERM across the fork.
    for delay in (0.0, 0.001, 0.002, 0.003, 0.005):
        with supervisor(*base_args(app_dir, "--workers", "2")) as proc:
            proc.wait_line("Ready: 2 worker(s)")
            proc.signal(signal.SIGHUP)
            time.sleep(delay)
            proc.signal(signal.SIGTERM)
            assert proc.wait(10) == 0, f"SIGTERM {delay * 1000:g} ms after SIGHUP"


def test_sigquit_stops_at_once(app_dir: Path) -> None:
    with supervisor(*base_args(app_dir, "--workers", "2")) as proc, ThreadPoolExecutor(1) as pool:
        proc.wait_line("Ready: 2 worker(s)")
        stuck = pool.submit(lambda: get(proc.port, "/slow"))
        proc.wait_line("app started /slow")
        signalled = time.monotonic()
        proc.signal(signal.SIGQUIT)
        assert proc.wait(5) == 0
        assert time.monotonic() - signalled < 0.9  # before the slow request could finish
        with pytest.raises(ConnectionError):
            stuck.result(5)
    assert "Received SIGQUIT: stopping now" in proc.output


def test_sigttin_and_sigttou_scale(app_dir: Path) -> None:
    with supervisor(*base_args(app_dir, "--workers", "2")) as proc:
        proc.wait_line("Ready: 2 worker(s)")
        proc.signal(signal.SIGTTIN)
        proc.wait_for(lambda out: len(READY_WORKER.findall(out)) == 3, what="a third worker")
        third = proc.ready_pids()[2]
        proc.signal(signal.SIGTTOU)
        proc.wait_line(f"Worker {third} exited (exit code 0)")
        assert "scaling up to 3 workers" in proc.output
        assert "scaling down to 2 workers" in proc.output
        assert get(proc.port)[0] == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_silent_worker_is_killed_and_replaced(app_dir: Path) -> None:
    args = base_args(app_dir, "--workers", "2", "--timeout-worker-healthcheck", "1")
    with supervisor(*args) as proc, ThreadPoolExecutor(1) as pool:
        proc.wait_line("Ready: 2 worker(s)")
        blocked = pool.submit(lambda: get(proc.port, "/block", timeout=10))
        proc.wait_line("app started /block")
        proc.wait_line("no heartbeat for", timeout=5)
        with pytest.raises(ConnectionError):
            blocked.result(5)
        proc.wait_for(lambda out: len(READY_WORKER.findall(out)) >= 3, what="the replacement")
        assert get(proc.port)[0] == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


@pytest.mark.parametrize("failure", ["import", "lifespan"])
def test_app_that_cannot_boot_stops_the_supervisor(tmp_path: Path, failure: str) -> None:
    if failure == "import":
        (tmp_path / "wapp.py").write_text("import no_such_module_here\n")
    else:
        (tmp_path / "wapp.py").write_text(
            "async def app(scope, receive, send):\n"
            "    await receive()\n"
            "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n"
        )
    started = time.monotonic()
    with supervisor(*base_args(tmp_path, "--workers", "2")) as proc:
        code = proc.wait(10)
    assert code == 1
    assert time.monotonic() - started < 10
    out = proc.output
    reason = "no_such_module_here" if failure == "import" else "no database"
    assert re.search(r"The app cannot boot: .*" + reason, out), out
    assert len(proc.started_pids()) <= 2, "no restart storm"


# ------------------------------------------------------------------ reload


def test_reload_picks_up_edits_and_survives_a_syntax_error(app_dir: Path) -> None:
    pytest.importorskip("watchfiles")
    with supervisor(*base_args(app_dir, "--reload")) as proc:
        proc.wait_line("Ready: 1 worker(s)")
        port = proc.port
        assert get(port)[1].startswith("v1 ")
        write_app(app_dir, "v2-edited")
        wait_for(lambda: _serves(port, "v2-edited "), timeout=10.0, what="the edit to be served")
        (app_dir / "wapp.py").write_text("def broken(:\n")
        proc.wait_line("Waiting for a file change", timeout=10)
        assert "SyntaxError" in proc.output or "invalid syntax" in proc.output
        write_app(app_dir, "v3-fixed-again")
        wait_for(lambda: _serves(port, "v3-fixed-again "), timeout=10.0, what="the fixed app to be served")
        (app_dir / "notes.txt").write_text("not python")  # not *.py: no reload
        time.sleep(0.6)
        changes = [line for line in proc.lines if "Detected changes" in line]
        assert changes and all("wapp.py" in line and "notes.txt" not in line for line in changes)
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def _serves(port: int, prefix: str) -> bool:
    try:
        return get(port, timeout=1)[1].startswith(prefix)
    except OSError:
        return False


# ------------------------------------------------------------------ systemd and --pid

ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = "web"
os.execv(sys.executable, [sys.executable, "-m", "zonda", *sys.argv[2:]])
"""


def read_notifications(sock: socket.socket, until: str, timeout: float = 10.0) -> list[str]:
    messages = []
    deadline = time.monotonic() + timeout
    while not any(until in message for message in messages):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {until!r} in {messages}") from None
    return messages


def test_socket_activation_sd_notify_and_pidfile(app_dir: Path, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    pidfile = tmp_path / "zonda.pid"
    argv = [
        sys.executable,
        "-c",
        ACTIVATE,
        str(listener.fileno()),
        *base_args(app_dir, "--workers", "2", "--pid", str(pidfile), "--port", "1"),  # the port is ignored
    ]
    proc = Supervised(argv, env={"NOTIFY_SOCKET": notify_path}, pass_fds=(listener.fileno(),))
    listener.close()  # the supervisor has it now
    try:
        messages = read_notifications(notify, "READY=1")
        ready = messages[-1].splitlines()
        assert "READY=1" in ready
        assert f"MAINPID={proc.proc.pid}" in ready
        assert "STATUS=2 of 2 workers serving" in ready
        assert "Using 1 socket(s) passed by systemd: web (fd 3)" in proc.output
        assert pidfile.read_text().strip() == str(proc.proc.pid)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: get(port, "/nap"), range(40)))
        assert all(status == 200 for status, _ in answers)

        proc.signal(signal.SIGHUP)
        messages = read_notifications(notify, "READY=1")
        reloading = next(m for m in messages if "RELOADING=1" in m)
        assert re.search(r"MONOTONIC_USEC=\d+", reloading)
        proc.signal(signal.SIGTERM)
        messages = read_notifications(notify, "STOPPING=1")
        assert proc.wait() == 0
        assert not pidfile.exists()
    finally:
        proc.stop()
        notify.close()


def test_pidfile_naming_a_live_process_is_refused(app_dir: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "zonda.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test process: alive
    with supervisor(*base_args(app_dir, "--workers", "2", "--pid", str(pidfile))) as proc:
        assert proc.wait(10) == 1
    assert "still running" in proc.output
    assert pidfile.read_text().strip() == str(os.getpid())
