"""What the benchmark scripts in bench/ share: server processes, CPU and load meters, the quiet-machine wait,
the lock, wrk, rounds and their medians, tables and the environment lines of a report.

Only processes a script starts are stopped, by pid. All traffic goes to 127.0.0.1 on ports picked by binding
port 0.
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
import sysconfig
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypeVar

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELLO_BODY = b"Hello, world!"
NOISE_LIMIT = 0.05  # a round with more foreign load than this on either core is re-run (--retries)

# Prepended to LUA_DONE: checks every response's status. wrk itself counts only statuses above 399
# (summary.errors.status), so a 1xx or 3xx answer would pass as a success. response() runs in each wrk thread's
# own Lua state; setup() keeps the threads so that done() can add up their counts.
LUA_STATUS_TALLY = """
threads = {}
setup = function(thread) table.insert(threads, thread) end
non_2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non_2xx = non_2xx + 1 end
end
"""

# wrk's summary as one JSON line; latency values are in microseconds, duration too. "errors" is the sum of
# the five kinds, for the scripts that only need the total. "non_2xx" counts responses whose status is not
# 2xx when the script starts with LUA_STATUS_TALLY, and is null without it.
LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  local non_2xx = "null"
  if response ~= nil and threads ~= nil then
    non_2xx = 0
    for _, thread in ipairs(threads) do non_2xx = non_2xx + thread:get("non_2xx") end
  end
  io.write(string.format(
    'BENCH_SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d,'
    .. ' "write": %d, "status": %d, "timeout": %d, "errors": %d, "non_2xx": %s, "lat_mean_us": %.1f,'
    .. ' "lat_p50_us": %d, "lat_p99_us": %d, "lat_max_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, e.connect + e.read + e.write + e.status + e.timeout, tostring(non_2xx), latency.mean,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

# bench/h2.py and bench/run.py give hypercorn this config file: it lifts hypercorn's per-connection request
# cap (keep_alive_max_requests, 1000 by default), after which it closes a connection.
HYPERCORN_CONFIG = """\
# zonda's bench/: lift hypercorn's per-connection request cap (keep_alive_max_requests, 1000 by default; a
# connection, HTTP/1.1 or HTTP/2, is closed once it has served that many requests).
keep_alive_max_requests = 1000000000
"""


# --------------------------------------------------------------------------- rounds


@dataclass
class Round:
    """One measured run of load against one server. ``requests`` are what the load generator completed (for
    a WebSocket echo, round trips); subclasses add what their load generator reports."""

    requests: int
    duration_s: float
    cpu_s: float  # the server's
    noise: tuple[float, float]  # share of the server / client cores busy with other processes

    noise_limit: ClassVar[float] = NOISE_LIMIT

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
    def noisy(self) -> bool:
        return max(self.noise) > self.noise_limit


R = TypeVar("R", bound=Round)


def clean(rounds: Sequence[R]) -> Sequence[R]:
    """The rounds other processes left alone; all of them when none were (the medians use these)."""
    return [r for r in rounds if not r.noisy] or rounds


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quietest(
    measure: Callable[[], R],
    describe: Callable[[R], None],
    prefix: str,
    retries: int,
    wait: Callable[[], None],
    lock: str = "",
) -> R:
    """Measure a round, re-run it while other processes disturbed it (up to ``retries`` times) and keep the
    quietest attempt. Each attempt holds ``lock`` (bench_lock) and first calls ``wait`` (wait_for_quiet);
    ``describe`` logs what an attempt measured."""
    attempts: list[R] = []
    for _ in range(retries + 1):
        with bench_lock(lock):
            wait()
            r = measure()
        attempts.append(r)
        describe(r)
        if not r.noisy:
            break
        log.warning("%s: other processes used the cores during the run", prefix)
    return min(attempts, key=lambda a: max(a.noise))


def round_from_json(cls: type[R], item: dict[str, Any]) -> R:
    return cls(**{**item, "noise": tuple(item["noise"])})


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


def read_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the ``(comm)`` field: index 0 is field 3 (state)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def proc_cpu_ticks(pid: int) -> int:
    """utime+stime of one process; 0 once it is gone."""
    try:
        fields = read_stat(pid)
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, root first."""
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


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of a process and its descendants (a supervisor's workers count too)."""
    return sum(proc_cpu_ticks(pid) for pid in process_tree(root)) / CLK_TCK


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None once it is gone or a zombie: with the
    pid it names one process, never a later one that reused the pid."""
    try:
        fields = read_stat(pid)
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def stop_process(proc: subprocess.Popen[Any] | None, name: str, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; only ever the process we started, by pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs, killing it", name, proc.pid, grace)
        proc.kill()
        proc.wait()


def stop_tree(proc: subprocess.Popen[Any], name: str, grace: float = 5.0) -> None:
    """stop_process, then the processes it started (a supervisor's or arbiter's workers) if they outlive it
    by ``grace`` s: SIGKILL by pid, once sure the pid is still the same process."""
    alive = proc.poll() is None
    children = {pid: start_time(pid) for pid in process_tree(proc.pid)[1:]} if alive else {}
    stop_process(proc, name, grace)
    deadline = time.monotonic() + grace
    while children and time.monotonic() < deadline:
        children = {pid: t for pid, t in children.items() if t is not None and start_time(pid) == t}
        time.sleep(0.05)
    for pid, started in children.items():
        if started is not None and start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                log.warning("%s: killed process %d, still running after its parent", name, pid)


def http_get(port: int, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET / from 127.0.0.1:port: (status, body); OSError or HTTPException while nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


S = TypeVar("S", bound="ServerProcess")


class ServerProcess:
    """One server a benchmark starts, under ``taskset -c CPU`` unless ``cpu`` is None (taskset execs the
    server, so the Popen pid is the server's pid). Subclasses give the command, and a readiness probe when
    an answer to ``GET /`` is not enough."""

    start_timeout: ClassVar[float] = 20.0
    stop_grace: ClassVar[float] = 5.0
    whole_tree: ClassVar[bool] = True  # cpu_seconds counts the descendants (a supervisor's workers) too

    def __init__(self, name: str, cpu: str | None, logdir: Path) -> None:
        self.name = name
        self.cpu = cpu
        self.port = free_port()
        self.log_path = logdir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> None:
        """Raise OSError or HTTPException until the server answers; start() polls it."""
        http_get(self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        argv = [*(["taskset", "-c", self.cpu] if self.cpu is not None else []), *self.command()]
        log.debug("start: %s", shlex.join(argv))
        with open(self.log_path, "wb") as out:
            # A new session keeps a terminal Ctrl+C away from the server; stop() ends it by pid.
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.probe()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {self.start_timeout}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_tree(proc, self.name, self.stop_grace)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        if self.whole_tree:
            return tree_cpu_seconds(self.pid)
        return proc_cpu_ticks(self.pid) / CLK_TCK

    def rss_kib(self) -> int:
        """VmRSS of the server, summed over its descendants too when ``whole_tree`` (a server that serves
        from a worker process under a parent, like granian: the parent's share stays put, so a difference
        of two readings is the worker's)."""
        pids = process_tree(self.pid) if self.whole_tree else [self.pid]
        return sum(vm_rss_kib(pid) for pid in pids)

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # Read only when shown: a server with an access log on can have written a large file.
        if exc[0] is None and log.isEnabledFor(logging.INFO) and self.log_tail():
            log.info("%s printed:\n%s", self.name, self.log_tail())


# --------------------------------------------------------------------------- machine load


def parse_cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def core_ticks(irq_busy: bool = True) -> dict[int, tuple[int, int]]:
    """Per core (busy, total) clock ticks from /proc/stat; busy includes steal (time the VM lost), and
    interrupt and softirq time unless ``irq_busy`` is false (loopback traffic is processed in softirq
    context, charged to no process, so most of it can be the benchmark's own)."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
            busy = user + nice + system + steal + (irq + softirq if irq_busy else 0)
            ticks[int(name[3:])] = (busy, user + nice + system + idle + iowait + irq + softirq + steal)
    return ticks


class LoadMeter:
    """Busy ticks of some cores between start() and busy_share(), minus what our own processes used."""

    def __init__(self, cores: set[int], irq_busy: bool = True) -> None:
        self.cores = cores
        self.irq_busy = irq_busy
        self.start()

    def start(self) -> None:
        self.before = core_ticks(self.irq_busy)

    def busy_share(self, own_ticks: float = 0.0) -> float:
        after = core_ticks(self.irq_busy)
        busy = sum(after[c][0] - self.before[c][0] for c in self.cores)
        total = sum(after[c][1] - self.before[c][1] for c in self.cores)
        return max(0.0, busy - own_ticks) / total if total else 0.0


def children_cpu_ticks(own: bool = True) -> float:
    """CPU ticks of the children this process has waited for (a finished wrk), and its own unless ``own``
    is false."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks = usage.ru_utime + usage.ru_stime
    if own:
        mine = resource.getrusage(resource.RUSAGE_SELF)
        ticks += mine.ru_utime + mine.ru_stime
    return ticks * CLK_TCK


T = TypeVar("T")


def under_load(
    srv: ServerProcess, server_cpu: str, client_cpu: str, load: Callable[[], T]
) -> tuple[T, float, float, tuple[float, float]]:
    """Run ``load`` (a load generator this process waits for) against a started server: (its result, the
    server's CPU seconds, the client's: this process's and its children's, and how busy the server's and
    the client's cores were with other processes meanwhile)."""
    server_load = LoadMeter(parse_cpu_list(server_cpu))
    client_load = LoadMeter(parse_cpu_list(client_cpu))
    cpu_before, own_before = srv.cpu_seconds(), children_cpu_ticks()
    result = load()
    cpu_after, own_after = srv.cpu_seconds(), children_cpu_ticks()
    noise = (
        server_load.busy_share((cpu_after - cpu_before) * CLK_TCK),
        client_load.busy_share(own_after - own_before),
    )
    if not srv.alive():
        raise RuntimeError(f"{srv.name} died during the run:\n{srv.log_tail()}")
    return result, cpu_after - cpu_before, (own_after - own_before) / CLK_TCK, noise


# Quiet samples wait_for_quiet needs in a row, each lasting a random time between two bounds (seconds).
RANDOM_SAMPLES = ((1.0, 2.0),) * 3
ONE_SECOND = ((1.0, 1.0),)


def wait_for_quiet(
    max_wait: float,
    limit: float = 0.10,
    samples: Sequence[tuple[float, float]] = RANDOM_SAMPLES,
    irq_busy: bool = True,
) -> None:
    """Before starting a server: wait (up to max_wait s) until no core has been more than ``limit`` busy
    for ``len(samples)`` samples in a row, sample i lasting a random time within ``samples[i]``. Random
    lengths keep this script out of step with another benchmark that waits the same way, so the two do not
    start together."""
    deadline = time.monotonic() + max_wait
    meters = {c: LoadMeter({c}, irq_busy) for c in core_ticks()}
    quiet = 0
    while True:
        time.sleep(random.uniform(*samples[quiet]))
        busy = {c: m.busy_share() for c, m in meters.items()}
        for m in meters.values():
            m.start()
        quiet = quiet + 1 if max(busy.values()) <= limit else 0
        if quiet >= len(samples):
            return
        if quiet:
            continue
        if time.monotonic() >= deadline:
            log.warning("machine still busy after %.0fs (%s); measuring anyway", max_wait, fmt_busy(busy))
            return
        log.info("waiting for a quiet machine: %s", fmt_busy(busy))


def fmt_busy(busy: dict[int, float]) -> str:
    return ", ".join(f"core {c} {share * 100:.0f}% busy" for c, share in sorted(busy.items()))


@contextlib.contextmanager
def bench_lock(path: str) -> Iterator[None]:
    """An exclusive flock held for one measurement, so benchmark scripts that take the same lock
    take turns on the machine instead of measuring each other; '' for none."""
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


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- wrk


def run_load(name: str, argv: list[str], seconds: float) -> str:
    """Run a load generator that takes about ``seconds``, and return its output (stdout and stderr); a
    RuntimeError if it fails or takes a minute longer."""
    log.debug("%s: %s", name, shlex.join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{out}")
    return out


def run_wrk(
    port: int,
    script: Path,
    seconds: float,
    connections: int,
    cpu: str | None = None,
    request_timeout: str | None = "10s",
    path: str = "/",
) -> tuple[dict[str, Any], str]:
    """``wrk -t1`` for ``seconds`` with a Lua script that prints LUA_DONE's summary line, pinned with
    taskset unless ``cpu`` is None: (the summary, wrk's output). ``request_timeout`` None keeps wrk's own
    (2 s)."""
    argv = [*(["taskset", "-c", cpu] if cpu is not None else []), "wrk", "-t1", f"-c{connections}"]
    argv += [f"-d{seconds:g}s", *(["--timeout", request_timeout] if request_timeout else [])]
    argv += ["-s", str(script), f"http://127.0.0.1:{port}{path}"]
    out = run_load("wrk", argv, seconds)
    for line in out.splitlines():
        if line.startswith("BENCH_SUMMARY "):
            return json.loads(line.removeprefix("BENCH_SUMMARY ")), out
    raise RuntimeError(f"no summary line in wrk output:\n{out}")


# --------------------------------------------------------------------------- output


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


# The columns round_cells fills.
ROUND_HEADER = [
    "req/s per round",
    "median req/s",
    "CPU µs/req per round",
    "median CPU µs/req",
    "clean rounds",
    "server CPU",
]


def round_cells(rounds: Sequence[Round]) -> list[str]:
    """Each round's req/s and server CPU µs per request (those other processes disturbed marked *), the
    medians of the clean rounds, how many were clean, and the server's median CPU share."""
    good = clean(rounds)
    return [
        " ".join(fmt_rps(r.rps) + ("*" if r.noisy else "") for r in rounds),
        fmt_rps(median([r.rps for r in good])),
        " ".join(f"{r.cpu_us_per_req:.1f}" + ("*" if r.noisy else "") for r in rounds),
        f"{median([r.cpu_us_per_req for r in good]):.1f}",
        f"{sum(not r.noisy for r in rounds)}/{len(rounds)}",
        f"{median([r.cpu_share for r in good]) * 100:.0f}%",
    ]


def noise_cell(rounds: Sequence[Round]) -> str:
    """The other load column: each round's busier core."""
    return " ".join(f"{max(r.noise) * 100:.0f}%" for r in rounds)


ZONDA = "zonda"  # zonda on uvloop, the reference its variants (zonda-trio, ...) are divided by


def program_of(server: str) -> str:
    """What a server runs: the benchmarks name servers PROGRAM or PROGRAM-VARIANT (zonda-trio,
    uvicorn-wsproto)."""
    return server.partition("-")[0]


def is_zonda(server: str) -> bool:
    """zonda itself or a variant of it."""
    return program_of(server) == ZONDA


def ratio_pairs(servers: Sequence[str], loops: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (zonda, peer) pairs a report divides, in the order of ``servers``: each zonda variant against
    every other server on the same event loop (``loops``: server -> loop), like with like; then each
    zonda variant but plain zonda against zonda, what the variant costs or gains (zonda-trio against
    zonda on uvloop)."""
    variants = [s for s in servers if is_zonda(s)]
    pairs = [(z, s) for z in variants for s in servers if not is_zonda(s) and loops[s] == loops[z]]
    if ZONDA in servers:
        pairs += [(z, ZONDA) for z in variants if z != ZONDA]
    return pairs


def pairs_caption(pairs: Sequence[tuple[str, str]], peers: str = "the other servers") -> str:
    """What ratio_pairs' pairs compare, for a report's caption; ``peers`` names the other servers."""
    what = []
    if any(not is_zonda(peer) for _, peer in pairs):
        what.append(f"zonda against {peers} on its event loop")
    if any(is_zonda(peer) for _, peer in pairs):
        what.append("each zonda variant (on another loop, or another checkout) against zonda on uvloop")
    return ", and ".join(what)


def ratio_cells(zonda: Sequence[Round], peer: Sequence[Round]) -> list[str]:
    """zonda's req/s over the peer's, and the peer's CPU per request over zonda's (medians of the clean
    rounds): above 1 where zonda does better. ``zonda`` may be a zonda variant, ``peer`` zonda itself."""
    zc, oc = clean(zonda), clean(peer)
    rps = median([r.rps for r in zc]) / median([r.rps for r in oc])
    cpu = median([r.cpu_us_per_req for r in oc]) / median([r.cpu_us_per_req for r in zc])
    return [f"{rps:.2f}x", f"{cpu:.2f}x"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], rule: bool = True) -> str:
    """Left-aligned columns two spaces apart, the header underlined with dashes unless ``rule`` is false."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_env(env: Sequence[Sequence[str]], markdown: bool, width: int | None = None) -> str:
    """The environment lines a report starts with: a markdown list, or keys right-aligned to ``width``
    (the longest key's by default)."""
    if markdown:
        return "\n".join(f"- {k}: {v}" for k, v in env)
    width = width or max(len(k) for k, _ in env)
    return "\n".join(f"{k:>{width}}: {v}" for k, v in env)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def python_build() -> str:
    """The Python a benchmark ran on, e.g. ``CPython 3.12.1``: the script's own interpreter, which also runs the
    servers it starts (each is started with ``sys.executable`` or from its venv)."""
    build = f"{platform.python_implementation()} {platform.python_version()}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        build += " (free-threaded)"
    return build


def environment(packages: Sequence[str]) -> list[tuple[str, str]]:
    """The machine, Python and the versions of ``packages``, as (key, value) rows for format_env."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = [f"{name} {package_version(name) or 'missing'}" for name in packages]
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model),
        ("kernel", platform.release()),
        ("Python", python_build()),
        ("packages", ", ".join(versions)),
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


def commit_rows(commit_start: str) -> list[tuple[str, str]]:
    """The zonda commit row for a report, given the one the run started with."""
    commit_end = zonda_commit()
    if commit_end == commit_start:
        return [("zonda commit", commit_start)]
    # zonda's code changed under the run: servers started later ran newer code
    return [("zonda commit at start", commit_start), ("zonda commit at end", commit_end)]


# --------------------------------------------------------------------------- command line


def csv_of(convert: Callable[[str], Any], allowed: Sequence[Any] | None = None) -> Callable[[str], list[Any]]:
    """An argparse type: a comma-separated list, each item converted and, with ``allowed``, one of them."""

    def parse(value: str) -> list[Any]:
        items = [convert(v.strip()) for v in value.split(",") if v.strip()]
        bad = [v for v in items if allowed is not None and v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {','.join(map(str, allowed or ()))}; got {value!r}"
            )
        return items

    return parse


def add_machine_args(p: argparse.ArgumentParser, client: str) -> None:
    """The flags of the scripts that pin, wait for quiet cores, lock and save their results as JSON;
    ``client`` names the load generator in the help."""
    p.add_argument("--quiet-wait", type=float, default=60, help="most seconds to wait for idle cores (60)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a round disturbed by other load (2)")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--client-cpu", default="1", help=f"taskset CPU list for {client} and this script (1)")
    p.add_argument("--lock", default="/tmp/zonda-bench.lock", help="flock held per measurement; '' for none")
    p.add_argument("--json", metavar="FILE", help="also save the raw results as JSON")
    p.add_argument("--report", metavar="FILE", help="print the report of a --json file; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log commands")


def round_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with --rounds, --duration, --warmup and --connections (3, 10 s, 2 s, 64), no help texts."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_steps(steps: Callable[[], None]) -> int:
    """Run the measurements; on Ctrl+C or an error stop there and return 130 or 1 (else 0), so that the
    caller still prints what was measured."""
    try:
        steps()
    except KeyboardInterrupt:
        log.error("interrupted; printing what was measured")
        return 130
    except Exception:
        log.exception("benchmark failed; printing what was measured")
        return 1
    return 0
