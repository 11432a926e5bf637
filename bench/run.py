"""Side-by-side HTTP/1.1 benchmark: zonda against uvicorn (httptools + uvloop), one core each.

Run from the repo root with the project's virtualenv::

    .venv/bin/python -m bench.run                       # the full run (~6 min on idle cores)
    .venv/bin/python -m bench.run --floor --markdown    # what bench/RESULTS.md records
    .venv/bin/python -m bench.run --duration 3 --rounds 1 --only hello,idle   # a quick look
    .venv/bin/python -m bench.run --json out.json; .venv/bin/python -m bench.run --report out.json --markdown

How it measures:

- Each server runs alone (never two at once), pinned with ``taskset -c 0`` (``--server-cpu``); ``wrk -t1``
  runs pinned to core 1 (``--client-cpu``), and so does this script. Rounds are interleaved: for each
  workload, round 1 runs zonda then uvicorn, round 2 the same, and so on, with a fresh server process for
  every (workload, round, server) and a short unmeasured ``wrk`` warm-up before the measured run, so a
  slow drift of the shared VM spreads over both servers instead of landing on one.
- Requests/s and the request count come from wrk's Lua ``done()`` summary (printed as one JSON line),
  not from scraping its text output. Server CPU is utime+stime from ``/proc/PID/stat`` of the server and
  any children, read right before and right after wrk; divided by wrk's request count it gives
  µs of server CPU per request, steadier than requests/s on a shared machine.
- Other load: before each server starts, the script waits (up to ``--quiet-wait`` s) until every core has
  been idle for a few seconds, and holds an flock (``--lock``) for the measurement so benchmark scripts
  that take the same lock take turns. It measures how busy the server and client cores were with other
  processes during the run; a round above 5% is re-run (``--retries``), the quietest attempt is kept,
  and rounds still above it are marked ``*`` and left out of the medians (unless all are).
- Idle keep-alive memory: start the server with ``--timeout-keep-alive 60``, make a few requests, read
  VmRSS, open ``--idle-connections`` connections from this process and make one GET on each (so each
  is a real keep-alive connection that has served a request; ``--idle-connect-only`` just connects),
  wait ``--idle-settle`` seconds, read VmRSS again, check the connections are still open, close them.

Only processes this script starts are stopped, by pid: SIGTERM, then SIGKILL after a grace period, also
on Ctrl+C and errors. All traffic goes to 127.0.0.1 on ports picked by binding port 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import logging
import os
import platform
import random
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("zonda", "uvicorn")
WORKLOADS = ("hello", "json", "echo")
SECTIONS = (*WORKLOADS, "idle")
ECHO_BODY_SIZE = 64 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELLO_BODY = b"Hello, world!"
NOISE_LIMIT = 0.05  # a round with more foreign load than this on either core is re-run (--retries)


@dataclass(frozen=True)
class Workload:
    name: str
    app: str
    method: str = "GET"
    body_size: int = 0


WORKLOAD_SPECS = {
    "hello": Workload("hello", "bench.apps:hello"),
    "json": Workload("json", "bench.apps:json_app"),
    "echo": Workload("echo", "bench.apps:echo", method="POST", body_size=ECHO_BODY_SIZE),
}

# wrk's summary as one JSON line; latency values are in microseconds, duration too.
LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d,'
    .. ' "write": %d, "status": %d, "timeout": %d, "lat_mean_us": %.1f, "lat_p50_us": %d,'
    .. ' "lat_p99_us": %d, "lat_max_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

LUA_POST = """
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


# --------------------------------------------------------------------------- results


@dataclass
class Round:
    requests: int
    duration_s: float
    bytes_read: int
    errors: dict[str, int]
    lat_p99_us: float
    cpu_s: float
    noise: tuple[float, float]  # share of the server / client cores busy with other processes

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def cpu_us_per_req(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else float("nan")

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def noisy(self) -> bool:
        return max(self.noise) > NOISE_LIMIT


@dataclass
class IdleRound:
    rss_before_kib: int
    rss_after_kib: int
    opened: int
    still_open: int

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.opened if self.opened else float("nan")


@dataclass
class Results:
    rounds: dict[tuple[str, str], list[Round]] = field(default_factory=dict)
    idle: dict[str, list[IdleRound]] = field(default_factory=dict)


def clean(rounds: Sequence[Round]) -> Sequence[Round]:
    """The rounds other processes left alone; all of them when none were (the medians use these)."""
    return [r for r in rounds if not r.noisy] or rounds


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; servers started later inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_command(server: str, app: str, port: int, keep_alive: float | None) -> list[str]:
    py = sys.executable
    if server == "zonda":
        cmd = [py, "-m", "zonda", app, "--no-access-log", "--log-level", "warning", "--port", str(port)]
    elif server == "uvicorn":
        cmd = [py, "-m", "uvicorn", app, "--http", "httptools", "--loop", "uvloop", "--no-access-log"]
        cmd += ["--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)]
    elif server == "floor":
        return [py, str(REPO / "bench" / "floor.py"), str(port)]
    else:
        raise ValueError(f"unknown server {server!r}")
    if keep_alive is not None:
        cmd += ["--timeout-keep-alive", str(keep_alive)]
    return cmd


class ServerProcess:
    """One server under ``taskset``; taskset execs the server, so the Popen pid is the server's pid."""

    def __init__(self, server: str, app: str, cpu: str, logdir: Path, keep_alive: float | None = None):
        self.name = server
        self.port = free_port()
        self.argv = ["taskset", "-c", cpu, *self.command(app, keep_alive)]
        self.log_path = logdir / f"{server}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, app: str, keep_alive: float | None) -> list[str]:
        """The server's argv (without taskset); other bench scripts override it (bench/h2.py)."""
        return server_command(self.name, app, self.port, keep_alive)

    def probe(self) -> None:
        """One request, raising OSError or HTTPException until the server answers; start() polls it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        log.debug("start: %s", shlex.join(self.argv))
        with open(self.log_path, "wb") as out:
            # A new session keeps a terminal Ctrl+C away from the server; stop() ends it by pid.
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.probe()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0fs, killing it", self.name, proc.pid, grace)
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """utime+stime of the server and its descendants (a supervisor's workers count too)."""
        return sum(proc_cpu_ticks(pid) for pid in process_tree(self.pid)) / CLK_TCK

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is None and self.log_tail():
            log.info("%s printed:\n%s", self.name, self.log_tail())


def read_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the ``(comm)`` field: index 0 is field 3 (state)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def proc_cpu_ticks(pid: int) -> int:
    try:
        fields = read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(read_stat(int(entry.name))[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


# --------------------------------------------------------------------------- machine load


def parse_cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per core (busy, total) clock ticks from /proc/stat; busy includes steal (time the VM lost)."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            nums = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(nums)
            ticks[int(name[3:])] = (total - nums[3] - nums[4], total)
    return ticks


class LoadMeter:
    """Busy ticks of some cores between start() and stop(), minus what our own processes used."""

    def __init__(self, cores: set[int]):
        self.cores = cores
        self.start()

    def start(self) -> None:
        self.before = core_ticks()

    def busy_share(self, own_ticks: float = 0.0) -> float:
        after = core_ticks()
        busy = sum(after[c][0] - self.before[c][0] for c in self.cores)
        total = sum(after[c][1] - self.before[c][1] for c in self.cores)
        return max(0.0, busy - own_ticks) / total if total else 0.0


def children_cpu_ticks() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime) * CLK_TCK


def wait_for_quiet(max_wait: float, limit: float = 0.10, quiet_seconds: int = 3) -> None:
    """Before starting a server: wait (up to max_wait s) until no core has been more than `limit` busy
    for `quiet_seconds` samples in a row. Samples last a random 1-2 s, which keeps this script out of
    step with another benchmark that waits the same way, so the two do not start together."""
    deadline = time.monotonic() + max_wait
    meters = {c: LoadMeter({c}) for c in core_ticks()}
    quiet = 0
    while True:
        time.sleep(random.uniform(1.0, 2.0))
        busy = {c: m.busy_share() for c, m in meters.items()}
        for m in meters.values():
            m.start()
        quiet = quiet + 1 if max(busy.values()) <= limit else 0
        if quiet >= quiet_seconds:
            return
        if quiet:
            continue
        if time.monotonic() >= deadline:
            log.warning("machine still busy after %.0fs (%s); measuring anyway", max_wait, fmt_busy(busy))
            return
        log.info("waiting for a quiet machine: %s", fmt_busy(busy))


@contextlib.contextmanager
def bench_lock(path: str) -> Iterator[None]:
    """An exclusive flock held for one measurement, so benchmark scripts that take the same lock
    take turns on the machine instead of measuring each other."""
    if not path:
        yield
        return
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (another benchmark holds it)", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fmt_busy(busy: dict[int, float]) -> str:
    return ", ".join(f"core {c} {share * 100:.0f}% busy" for c, share in sorted(busy.items()))


# --------------------------------------------------------------------------- wrk


def write_lua(workdir: Path, workload: Workload) -> Path:
    path = workdir / f"{workload.name}.lua"
    text = LUA_DONE
    if workload.method == "POST":
        text = LUA_POST.replace("{size}", str(workload.body_size)) + text
    path.write_text(text)
    return path


def run_wrk(
    port: int, script: Path, duration: int, connections: int, cpu: str
) -> tuple[dict[str, float], str]:
    argv = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    argv += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]
    log.debug("wrk: %s", shlex.join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out}")
    for line in out.splitlines():
        if line.startswith("BENCH_SUMMARY "):
            return json.loads(line.removeprefix("BENCH_SUMMARY ")), out
    raise RuntimeError(f"no summary line in wrk output:\n{out}")


def check_response(port: int, workload: Workload) -> None:
    """One request before measuring: the server answers 200 with the body the workload expects."""
    body = b"y" * workload.body_size if workload.method == "POST" else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(workload.method, "/", body=body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{workload.name}: status {resp.status}")
    if workload.name == "hello" and data != HELLO_BODY:
        raise RuntimeError(f"hello: unexpected body {data[:80]!r}")
    if workload.name == "json":
        json.loads(data)
    if workload.name == "echo" and data != body:
        raise RuntimeError(f"echo: got {len(data)} bytes back, sent {workload.body_size}")


def measure_round(server: str, workload: Workload, args: argparse.Namespace, workdir: Path) -> Round:
    script = write_lua(workdir, workload)
    with ServerProcess(server, workload.app, args.server_cpu, workdir) as srv:
        check_response(srv.port, workload)
        if args.warmup > 0:
            run_wrk(srv.port, script, args.warmup, args.connections, args.client_cpu)
        server_load = LoadMeter(parse_cpu_list(args.server_cpu))
        client_load = LoadMeter(parse_cpu_list(args.client_cpu))
        cpu_before, own_before = srv.cpu_seconds(), children_cpu_ticks()
        summary, out = run_wrk(srv.port, script, args.duration, args.connections, args.client_cpu)
        cpu_after, own_after = srv.cpu_seconds(), children_cpu_ticks()
        noise = (
            server_load.busy_share((cpu_after - cpu_before) * CLK_TCK),
            client_load.busy_share(own_after - own_before),
        )
        if srv.proc is None or srv.proc.poll() is not None:
            raise RuntimeError(f"{server} died during the run:\n{srv.log_tail()}")
    errors = {k: int(summary[k]) for k in ("connect", "read", "write", "timeout", "status")}
    result = Round(
        requests=int(summary["requests"]),
        duration_s=summary["duration_us"] / 1e6,
        bytes_read=int(summary["bytes"]),
        errors=errors,
        lat_p99_us=summary["lat_p99_us"],
        cpu_s=cpu_after - cpu_before,
        noise=noise,
    )
    if result.error_count:
        log.warning("%s %s: wrk reported errors %s\n%s", server, workload.name, errors, out)
    return result


# --------------------------------------------------------------------------- idle connections


def open_idle_connections(port: int, count: int, make_request: bool) -> list[socket.socket]:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            if make_request:
                sock.sendall(request)
                read_hello_response(sock)
    except BaseException:
        close_all(socks)
        raise
    return socks


def read_hello_response(sock: socket.socket) -> None:
    data = b""
    while not (b"\r\n\r\n" in data and data.endswith(HELLO_BODY)):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed before a full response: {data[:200]!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {data[:200]!r}")


def count_open(socks: Sequence[socket.socket]) -> int:
    """Connections the server has not closed: no EOF (and no error) waiting to be read."""
    alive = 0
    for sock in socks:
        sock.settimeout(None)  # a socket with a timeout turns EAGAIN into TimeoutError
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                alive += 1  # unexpected bytes, but the connection is open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def measure_idle(server: str, args: argparse.Namespace, workdir: Path) -> IdleRound:
    with ServerProcess(server, "bench.apps:hello", args.server_cpu, workdir, keep_alive=60) as srv:
        for _ in range(20):  # warm the code paths a request touches before the baseline
            close_all(open_idle_connections(srv.port, 1, make_request=True))
        time.sleep(args.idle_settle)
        before = srv.rss_kib()
        socks = open_idle_connections(srv.port, args.idle_connections, not args.idle_connect_only)
        try:
            time.sleep(args.idle_settle)
            after = srv.rss_kib()
            alive = count_open(socks)
        finally:
            close_all(socks)
        time.sleep(0.5)  # let the server see the closes before it is asked to stop
    if alive != len(socks):
        log.warning("%s: only %d of %d idle connections were still open", server, alive, len(socks))
    return IdleRound(before, after, len(socks), alive)


# --------------------------------------------------------------------------- output


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def throughput_rows(results: Results, workloads: Sequence[str], servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for wl in workloads:
        for server in servers:
            rounds = results.rounds.get((server, wl))
            if not rounds:
                continue
            good = clean(rounds)
            rows.append(
                [
                    wl,
                    server,
                    " ".join(fmt_rps(r.rps) + ("*" if r.noisy else "") for r in rounds),
                    fmt_rps(median([r.rps for r in good])),
                    " ".join(f"{r.cpu_us_per_req:.1f}" + ("*" if r.noisy else "") for r in rounds),
                    f"{median([r.cpu_us_per_req for r in good]):.1f}",
                    f"{sum(not r.noisy for r in rounds)}/{len(rounds)}",
                    f"{median([r.cpu_share for r in good]) * 100:.0f}%",
                    f"{median([r.lat_p99_us for r in good]) / 1000:.2f}",
                    f"{median([r.bytes_read / r.requests for r in rounds if r.requests]):,.0f}",
                    str(sum(r.error_count for r in rounds)),
                    " ".join(f"{max(r.noise) * 100:.0f}%" for r in rounds),
                ]
            )
    return rows


THROUGHPUT_HEADER = [
    "workload",
    "server",
    "req/s per round",
    "median req/s",
    "CPU µs/req per round",
    "median CPU µs/req",
    "clean rounds",
    "server CPU",
    "p99 ms",
    "bytes/resp",
    "errors",
    "other load per round",
]


def ratio_rows(results: Results, workloads: Sequence[str]) -> list[list[str]]:
    rows = []
    for wl in workloads:
        z, u = results.rounds.get(("zonda", wl)), results.rounds.get(("uvicorn", wl))
        if not z or not u:
            continue
        zc, uc = clean(z), clean(u)
        rps = median([r.rps for r in zc]) / median([r.rps for r in uc])
        cpu = median([r.cpu_us_per_req for r in uc]) / median([r.cpu_us_per_req for r in zc])
        rows.append([wl, f"{rps:.2f}x", f"{cpu:.2f}x"])
    return rows


RATIO_HEADER = ["workload", "zonda/uvicorn req/s (medians)", "uvicorn/zonda CPU µs per request (medians)"]


def idle_rows(results: Results, servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for server in servers:
        rounds = results.idle.get(server)
        if not rounds:
            continue
        rows.append(
            [
                server,
                " ".join(f"{r.rss_before_kib:,}" for r in rounds),
                " ".join(f"{r.rss_after_kib:,}" for r in rounds),
                " ".join(f"{r.still_open}/{r.opened}" for r in rounds),
                " ".join(f"{r.kib_per_conn:.2f}" for r in rounds),
                f"{median([r.kib_per_conn for r in rounds]):.2f}",
            ]
        )
    return rows


IDLE_HEADER = [
    "server",
    "RSS before KiB",
    "RSS after KiB",
    "still open",
    "KiB/conn per round",
    "median KiB/conn",
]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def environment() -> list[tuple[str, str]]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in ("uvloop", "httptools", "uvicorn"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} missing")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("packages", ", ".join(versions)),
        ("wrk", " ".join(wrk.split()[:2])),
    ]


def zonda_commit() -> str:
    """``git rev-parse --short HEAD``, plus the files under src/ that differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return commit + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def report(results: Results, args: argparse.Namespace, env: Sequence[Sequence[str]], markdown: bool) -> str:
    workloads = [w for w in WORKLOADS if w in args.only]
    servers = [*args.servers, *(["floor"] if args.floor else [])]
    tput = throughput_rows(results, workloads, servers)
    ratios = ratio_rows(results, workloads)
    idle = idle_rows(results, args.servers)
    table = markdown_table if markdown else text_table
    parts = []
    if markdown:
        parts.append("\n".join(f"- {k}: {v}" for k, v in env))
    else:
        width = max(len(k) for k, _ in env)
        parts.append("\n".join(f"{k:>{width}}: {v}" for k, v in env))
    setup = (
        f"wrk -t1 -c{args.connections} -d{args.duration}s on core {args.client_cpu}; "
        f"each server alone on core {args.server_cpu}; {args.rounds} round(s)"
    )
    if tput:
        parts.append(f"Throughput ({setup}):\n\n" + table(THROUGHPUT_HEADER, tput))
        if any(r.noisy for rounds in results.rounds.values() for r in rounds):
            parts.append(
                f"Rounds marked * ran while other processes kept more than {NOISE_LIMIT:.0%} of the server "
                "or client core busy (the other load column), even after --retries. Their req/s is low and "
                "their CPU µs/req somewhat high; the medians, server CPU and p99 use the clean rounds only "
                "(all rounds when none was clean)."
            )
    if ratios:
        parts.append("Ratios:\n\n" + table(RATIO_HEADER, ratios))
    if idle:
        how = "connect only" if args.idle_connect_only else "one GET each"
        parts.append(
            f"Idle keep-alive memory ({args.idle_connections} connections, {how}, "
            f"--timeout-keep-alive 60):\n\n" + table(IDLE_HEADER, idle)
        )
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main


def csv_choice(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}; got {value!r}")
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="whole seconds per measured wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per (server, workload) (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument(
        "--only", type=csv_choice(SECTIONS), default=list(SECTIONS), help="hello,json,echo,idle (all)"
    )
    p.add_argument("--servers", type=csv_choice(SERVERS), default=list(SERVERS), help="zonda,uvicorn")
    p.add_argument("--floor", action="store_true", help="also run bench/floor.py under the hello workload")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured wrk seconds before each run (2)")
    p.add_argument("--idle-connections", type=int, default=5000, help="idle keep-alive connections (5000)")
    p.add_argument("--idle-connect-only", action="store_true", help="connect only, no request on each")
    p.add_argument("--idle-settle", type=float, default=2.0, help="seconds to wait before reading RSS (2)")
    p.add_argument("--quiet-wait", type=float, default=60, help="most seconds to wait for idle cores (60)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a round disturbed by other load (2)")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for wrk and this script (1)")
    p.add_argument("--lock", default="/tmp/zonda-bench.lock", help="flock held per measurement; '' for none")
    p.add_argument("--json", metavar="FILE", help="also save the raw results as JSON")
    p.add_argument("--report", metavar="FILE", help="print the report of a --json file; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log commands")
    return p.parse_args(argv)


def measure_with_retries(
    server: str, workload: Workload, args: argparse.Namespace, workdir: Path, prefix: str
) -> Round:
    """Re-run a round that other processes disturbed (up to --retries times); keep the quietest."""
    attempts: list[Round] = []
    for _ in range(args.retries + 1):
        with bench_lock(args.lock):
            wait_for_quiet(args.quiet_wait)
            r = measure_round(server, workload, args, workdir)
        attempts.append(r)
        noise = "/".join(f"{n * 100:.0f}%" for n in r.noise)
        log.info(
            "%s: %s req/s, %.1f µs CPU/req, server CPU %.0f%%, other load on server/client core %s",
            prefix, fmt_rps(r.rps), r.cpu_us_per_req, r.cpu_share * 100, noise,
        )  # fmt: skip
        if not r.noisy:
            break
        log.warning("%s: other processes used the cores during the run", prefix)
    return min(attempts, key=lambda a: max(a.noise))


def plan(args: argparse.Namespace) -> Iterator[tuple[str, str, int]]:
    """(section, server, round) in run order: rounds interleaved across servers."""
    for section in SECTIONS:
        if section not in args.only:
            continue
        servers = list(args.servers)
        if section == "hello" and args.floor:
            servers.append("floor")
        for rnd in range(args.rounds):
            for server in servers:
                yield section, server, rnd


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    nofile = raise_nofile_limit()
    if "idle" in args.only and nofile < args.idle_connections + 100:
        log.error("RLIMIT_NOFILE is %d, too low for %d connections", nofile, args.idle_connections)
        return 2
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    # SIGTERM to this script unwinds like Ctrl+C, so the servers it started get stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        sys.stdout.write(
            report(results_from_json(saved), argparse.Namespace(**saved["args"]), saved["env"], args.markdown)
        )
        return 0
    env = environment()
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    commit_start, load_start = zonda_commit(), loadavg()
    results = Results()
    steps = list(plan(args))
    status = 0
    with tempfile.TemporaryDirectory(prefix="zonda-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for i, (section, server, rnd) in enumerate(steps, 1):
                prefix = f"[{i}/{len(steps)}] {section} {server} round {rnd + 1}"
                if section == "idle":
                    with bench_lock(args.lock):
                        wait_for_quiet(args.quiet_wait)
                        idle = measure_idle(server, args, workdir)
                    results.idle.setdefault(server, []).append(idle)
                    log.info("%s: %.2f KiB/conn", prefix, idle.kib_per_conn)
                else:
                    r = measure_with_retries(server, WORKLOAD_SPECS[section], args, workdir, prefix)
                    results.rounds.setdefault((server, section), []).append(r)
        except KeyboardInterrupt:
            log.error("interrupted; printing what was measured")
            status = 130
        except Exception:
            log.exception("benchmark failed; printing what was measured")
            status = 1
    commit_end = zonda_commit()
    if commit_end == commit_start:
        env.append(("zonda commit", commit_start))
    else:  # zonda's code changed under the run: servers started later ran newer code
        env += [("zonda commit at start", commit_start), ("zonda commit at end", commit_end)]
    env += [("load average before / after", f"{load_start} / {loadavg()}"), ("command", f"`{command}`")]
    if args.json:
        saved = {"args": vars(args), "env": env, **results_to_json(results)}
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    sys.stdout.write(report(results, args, env, args.markdown))
    return status


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def results_to_json(results: Results) -> dict[str, list[dict[str, object]]]:
    return {
        "rounds": [
            {"server": server, "workload": wl, **asdict(r)}
            for (server, wl), rounds in results.rounds.items()
            for r in rounds
        ],
        "idle": [{"server": server, **asdict(r)} for server, rounds in results.idle.items() for r in rounds],
    }


def results_from_json(saved: dict[str, Any]) -> Results:
    results = Results()
    for item in saved["rounds"]:
        server, wl = item.pop("server"), item.pop("workload")
        item["noise"] = tuple(item["noise"])
        results.rounds.setdefault((server, wl), []).append(Round(**item))
    for item in saved["idle"]:
        results.idle.setdefault(item.pop("server"), []).append(IdleRound(**item))
    return results


if __name__ == "__main__":
    sys.exit(main())
