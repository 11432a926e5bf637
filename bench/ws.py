"""Side-by-side WebSocket echo benchmark: zonda against uvicorn (websockets-sansio and wsproto), one core each.

Run from the repo root with the project's virtualenv::

    .venv/bin/python bench/ws.py                                   # 1 and 64 KiB, 3 rounds: ~4 min if idle
    .venv/bin/python bench/ws.py --deflate off,on --markdown       # also a permessage-deflate row
    .venv/bin/python bench/ws.py --duration 3 --rounds 1 --sizes 1024 --servers zonda,uvicorn-sansio

How it measures:

- The app is ``bench.apps:ws_echo`` (accept, then echo every message as received). Each server runs alone,
  pinned with ``taskset -c 0`` (``--server-cpu``): ``python -m zonda``, and ``python -m uvicorn`` with
  ``--http httptools --loop uvloop`` and ``--ws websockets-sansio`` or ``--ws wsproto``; one process, no
  access log. Rounds are interleaved (round 1 runs every server, then round 2 ...) with a fresh server
  process each time, so a slow drift of the shared VM spreads over all servers.
- The load generator is this file in client mode, pinned with ``taskset -c 1`` (``--client-cpu``):
  ``--client-procs`` uvloop processes share ``--connections`` (64) connections, each driven by the
  ``websockets`` sans-io ``ClientProtocol`` straight from ``asyncio.Protocol`` callbacks (no coroutine
  per message), in a closed loop: send one message, wait for its echo, check it, send the next.
  Compression is off unless ``--deflate on`` (then the client offers permessage-deflate and the payload is
  compressible JSON-like text; without it the payload content does not matter to the servers).
- After a ``--warmup`` (2 s) the clients count echoes for ``--duration`` (10) seconds on a shared
  ``time.monotonic`` window. Server CPU is utime+stime from ``/proc/PID/stat`` read at the window's edges;
  divided by the round trips it gives µs of server CPU per round trip, the fairer number when the client
  core is saturated (then req/s measures the client as much as the server). Client CPU share and the load
  other processes put on both cores are printed per round. Before each round the script waits (up to
  ``--quiet-wait`` s) for idle cores, and re-runs a round that other processes disturbed (``--retries``).
  Server CPU leaves out the kernel's softirq time for loopback traffic (charged to no process).

Only processes this script starts are stopped, by pid: SIGTERM, then SIGKILL after a grace period, also on
Ctrl+C and errors. All traffic goes to 127.0.0.1 on ports picked by binding port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.ws")

REPO = Path(__file__).resolve().parent.parent
APP = "bench.apps:ws_echo"
SERVERS = ("zonda", "uvicorn-sansio", "uvicorn-wsproto", "uvicorn-websockets")
DEFAULT_SERVERS = SERVERS[:3]
CLK_TCK = os.sysconf("SC_CLK_TCK")
SATURATED = 0.90  # client processes using this share of their core: the client is (near) the bottleneck
NOISE_LIMIT = 0.10  # a round with more foreign load than this on either core is re-run (--retries)


# --------------------------------------------------------------------------- payloads


def make_payload(size: int) -> bytes:
    """ASCII (valid as text), JSON-like so permessage-deflate has something to do, same for every server."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b'{"id":%d,"name":"item-%d","price":%d.%02d,"tags":["a","b%d"]},' % (
            i, i * 7919 % 10007, i * 31 % 997, i % 100, i % 13,
        )  # fmt: skip
        i += 1
    return bytes(out[:size])


# --------------------------------------------------------------------------- client mode


class EchoConnection(asyncio.Protocol):
    """One WebSocket connection of the load generator: a closed send/echo loop over ClientProtocol."""

    def __init__(self, load: LoadGen) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.load = load
        self.proto = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{load.port}/"), extensions=load.extension_factories(), max_size=None
        )
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.parts: list[bytes] = []
        self.lost = load.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.proto.send_request(self.proto.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode

        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is not Frame:
                self.on_handshake()
            elif event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                if not event.fin:
                    self.parts.append(bytes(event.data))
                    continue
                message = event.data
                if self.parts:
                    message = b"".join([*self.parts, message])
                    self.parts = []
                self.on_echo(message)
        self.flush()

    def on_handshake(self) -> None:
        exc = self.proto.handshake_exc
        if exc is not None:
            self.load.fail(f"handshake failed: {exc!r}")
            return
        self.open = True
        self.load.negotiated = ", ".join(ext.name for ext in self.proto.extensions) or "none"
        self.load.on_open(self)

    def on_echo(self, data: Any) -> None:
        load = self.load
        if load.verify and data != load.payload:
            load.errors += 1
            log.error("echo mismatch: got %d bytes, sent %d", len(data), len(load.payload))
        load.count += 1
        if load.running:
            self.send()
        else:
            self.proto.send_close()

    def send(self) -> None:
        if self.load.text:
            self.proto.send_text(self.load.payload)
        else:
            self.proto.send_binary(self.load.payload)

    def flush(self) -> None:
        transport = self.transport
        assert transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # websockets' EOF marker: the closing handshake is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.running and not self.lost.done():
            self.load.fail(f"connection lost during the run: {exc!r}")
        if not self.lost.done():
            self.lost.set_result(None)


class LoadGen:
    """All connections of one client process, and the counters of the measured window."""

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.port: int = args.port
        self.payload = make_payload(args.size)
        self.text = args.kind == "text"
        self.deflate = args.deflate == "on"
        self.verify = not args.no_verify
        self.conns = [EchoConnection(self) for _ in range(args.connections)]
        self.opened = 0
        self.all_open = loop.create_future()
        self.running = False
        self.count = 0
        self.errors = 0
        self.negotiated = "none"
        self.failure: str | None = None

    def extension_factories(self) -> list[Any]:
        if not self.deflate:
            return []
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        # What websockets' own clients offer by default.
        return [
            ClientPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
            )
        ]

    def on_open(self, conn: EchoConnection) -> None:
        self.opened += 1
        if self.opened == len(self.conns) and not self.all_open.done():
            self.all_open.set_result(None)

    def fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        if not self.all_open.done():
            self.all_open.set_exception(RuntimeError(reason))

    def start(self) -> None:
        self.running = True
        for conn in self.conns:
            conn.send()
            conn.flush()

    async def connect(self) -> None:
        for conn in self.conns:
            await self.loop.create_connection(lambda c=conn: c, "127.0.0.1", self.port)  # type: ignore[misc]
        await asyncio.wait_for(self.all_open, 30)

    async def close(self) -> None:
        """Stop sending: each connection closes once its last echo is back; abort what is left after 5 s."""
        self.running = False
        lost = [conn.lost for conn in self.conns]
        _, pending = await asyncio.wait(lost, timeout=5)
        for conn in self.conns:
            if not conn.lost.done() and conn.transport is not None:
                conn.transport.abort()
        if pending:
            await asyncio.wait(pending, timeout=1)


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, say READY, read ``GO <start> <end>`` (time.monotonic) on stdin, count echoes in between."""
    loop = asyncio.get_running_loop()
    load = LoadGen(args, loop)
    await load.connect()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    _, start_at, end_at = line.split()
    load.start()  # the warm-up runs from here to start_at
    marks: list[tuple[float, int, float]] = []

    def mark() -> None:
        marks.append((time.monotonic(), load.count, cpu_now()))

    for at in (float(start_at), float(end_at)):
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        mark()
    await load.close()
    (t0, n0, c0), (t1, n1, c1) = marks
    return {
        "round_trips": n1 - n0,
        "seconds": t1 - t0,
        "cpu_s": c1 - c0,
        "errors": load.errors,
        "failure": load.failure,
        "negotiated": load.negotiated,
    }


def run_client(args: argparse.Namespace) -> int:
    import uvloop

    result = uvloop.run(client_main(args))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(server: str, port: int, deflate: bool) -> list[str]:
    py = sys.executable
    if server == "zonda":
        flag = "--ws-per-message-deflate" if deflate else "--no-ws-per-message-deflate"
        cmd = [py, "-m", "zonda", APP, "--no-access-log", "--log-level", "warning", flag]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port)]
    impl = server.removeprefix("uvicorn-")
    impl = {"sansio": "websockets-sansio"}.get(impl, impl)
    cmd = [py, "-m", "uvicorn", APP, "--http", "httptools", "--loop", "uvloop", "--no-access-log"]
    cmd += ["--log-level", "warning", "--ws", impl, "--ws-per-message-deflate", str(deflate)]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port)]


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


class ServerProcess:
    """One server under ``taskset``, which execs it: the Popen pid is the server's pid."""

    def __init__(self, server: str, deflate: bool, cpu: str, logdir: Path) -> None:
        self.name = server
        self.deflate = deflate
        self.port = free_port()
        self.argv = ["taskset", "-c", cpu, *server_command(server, self.port, deflate)]
        self.log_path = logdir / f"{server}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            stop_process(self.proc, self.name)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc, self.name)

    def start(self, timeout: float = 20.0) -> None:
        log.debug("start: %s", shlex.join(self.argv))
        with open(self.log_path, "wb") as out:
            # A new session keeps a terminal Ctrl+C away from the server; stop_process() ends it by pid.
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        from websockets.exceptions import WebSocketException

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.check_echo()
                return
            except (OSError, WebSocketException) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not echo on port {self.port} within {timeout}s"
                    ) from exc
                time.sleep(0.05)

    def check_echo(self) -> None:
        """One WebSocket with websockets' own client: text and bytes come back unchanged."""
        from websockets.sync.client import connect

        compression = "deflate" if self.deflate else None
        uri = f"ws://127.0.0.1:{self.port}/"
        with connect(uri, compression=compression, proxy=None, open_timeout=2, max_size=None) as ws:
            for message in ("hello", b"\x00\xff" * 1000, make_payload(65536)):
                ws.send(message)
                if ws.recv(timeout=5) != message:
                    raise RuntimeError(f"{self.name}: the echo differs from {type(message).__name__} sent")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of proc(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --------------------------------------------------------------------------- machine load


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per core (busy, total) clock ticks from /proc/stat.

    Busy is user+nice+system+steal (time the VM lost). Interrupt and softirq time are left out: loopback
    traffic is processed in softirq context, charged to no process, so most of it is this benchmark's own.
    """
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
            busy = user + nice + system + steal
            ticks[int(name[3:])] = (busy, busy + idle + iowait + irq + softirq)
    return ticks


def busy_share(before: dict[int, tuple[int, int]], cores: set[int], own_s: float) -> float:
    """Share of ``cores`` busy since ``before`` with work other than ``own_s`` CPU seconds of ours."""
    after = core_ticks()
    busy = sum(after[c][0] - before[c][0] for c in cores)
    total = sum(after[c][1] - before[c][1] for c in cores)
    return max(0.0, busy - own_s * CLK_TCK) / total if total else 0.0


def wait_for_quiet(max_wait: float, limit: float = 0.10) -> None:
    """Wait (up to ``max_wait`` s) until no core is more than ``limit`` busy over 1 s, then over a random 1-3 s.

    The random second look keeps this script out of step with another benchmark that waits the same way, so
    the two do not both see a quiet machine and start together.
    """
    deadline = time.monotonic() + max_wait
    second_look = False
    while True:
        before = core_ticks()
        time.sleep(random.uniform(1.0, 3.0) if second_look else 1.0)
        busy = {c: busy_share(before, {c}, 0.0) for c in before}
        if max(busy.values()) <= limit:
            if second_look:
                return
            second_look = True
            continue
        second_look = False
        text = ", ".join(f"core {c} {b * 100:.0f}% busy" for c, b in sorted(busy.items()))
        if time.monotonic() >= deadline:
            log.warning("machine still busy after %.0fs (%s); measuring anyway", max_wait, text)
            return
        log.info("waiting for a quiet machine: %s", text)


def parse_cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# --------------------------------------------------------------------------- one round


@dataclass(frozen=True)
class Case:
    size: int
    kind: str
    deflate: bool

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size % 1024 == 0 else f"{self.size} B"
        return f"{size} {self.kind}{' deflate' if self.deflate else ''}"


@dataclass
class Round:
    round_trips: int
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    errors: int
    negotiated: str
    noise: tuple[float, float]  # share of the server / client cores busy with other processes

    @property
    def noisy(self) -> bool:
        return max(self.noise) > NOISE_LIMIT

    @property
    def rtps(self) -> float:
        return self.round_trips / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.server_cpu_s * 1e6 / self.round_trips if self.round_trips else float("nan")

    @property
    def server_share(self) -> float:
        return self.server_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def client_share(self) -> float:
        return self.client_cpu_s / self.seconds if self.seconds else 0.0


def client_argv(args: argparse.Namespace, case: Case, port: int, connections: int) -> list[str]:
    argv = ["taskset", "-c", args.client_cpu, sys.executable, str(Path(__file__).resolve()), "client"]
    argv += ["--port", str(port), "--connections", str(connections), "--size", str(case.size)]
    argv += ["--kind", case.kind, "--deflate", "on" if case.deflate else "off"]
    return [*argv, *(["--no-verify"] if args.no_verify else [])]


def start_client(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The next stdout line of a client starting with ``prefix`` (other lines are logged)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited with {proc.wait()} before {prefix}")
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
        log.info("client: %s", line.rstrip())
    raise RuntimeError(f"no {prefix} from the client within {timeout}s")


def measure_round(server: str, case: Case, args: argparse.Namespace, workdir: Path) -> Round:
    split = [args.connections // args.client_procs] * args.client_procs
    split[0] += args.connections - sum(split)
    clients: list[subprocess.Popen[str]] = []
    with ServerProcess(server, case.deflate, args.server_cpu, workdir) as srv:
        try:
            for connections in split:
                clients.append(start_client(client_argv(args, case, srv.port, connections)))
            for proc in clients:
                read_line(proc, "READY", 60)
            start_at = time.monotonic() + args.warmup
            end_at = start_at + args.duration
            for proc in clients:
                assert proc.stdin is not None
                proc.stdin.write(f"GO {start_at} {end_at}\n")
                proc.stdin.flush()
            time.sleep(max(0.0, start_at - time.monotonic()))
            ticks, cpu0 = core_ticks(), srv.cpu_seconds()
            time.sleep(max(0.0, end_at - time.monotonic()))
            server_cpu = srv.cpu_seconds() - cpu0
            results = [json.loads(read_line(proc, "RESULT", 60)) for proc in clients]
            for proc in clients:
                proc.wait(10)
        finally:
            for proc in clients:
                stop_process(proc, "client")
        if srv.proc is None or srv.proc.poll() is not None:
            raise RuntimeError(f"{server} died during the run:\n{srv.log_tail()}")
        tail = srv.log_tail()
    if tail:
        log.warning("%s printed:\n%s", server, tail)
    failures = [r["failure"] for r in results if r["failure"]]
    if failures:
        raise RuntimeError(f"{server}: {failures[0]}")
    client_cpu = sum(r["cpu_s"] for r in results)
    seconds = statistics.mean(r["seconds"] for r in results)
    return Round(
        round_trips=sum(r["round_trips"] for r in results),
        seconds=seconds,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        errors=sum(r["errors"] for r in results),
        negotiated=results[0]["negotiated"],
        noise=(
            busy_share(ticks, parse_cpu_list(args.server_cpu), server_cpu),
            busy_share(ticks, parse_cpu_list(args.client_cpu), client_cpu),
        ),
    )


# --------------------------------------------------------------------------- output


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


Results = dict[tuple[Case, str], list[Round]]

ROUND_HEADER = [
    "message",
    "server",
    "round trips/s per round",
    "median rt/s",
    "server CPU µs/rt per round",
    "median µs/rt",
    "server CPU",
    "client CPU",
    "other load",
    "errors",
]


def round_rows(results: Results, cases: Sequence[Case], servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for case in cases:
        for server in servers:
            rounds = results.get((case, server))
            if not rounds:
                continue
            rows.append(
                [
                    case.label,
                    server,
                    " ".join(f"{r.rtps:,.0f}" for r in rounds),
                    f"{median([r.rtps for r in rounds]):,.0f}",
                    " ".join(f"{r.cpu_us:.1f}" for r in rounds),
                    f"{median([r.cpu_us for r in rounds]):.1f}",
                    f"{median([r.server_share for r in rounds]) * 100:.0f}%",
                    f"{median([r.client_share for r in rounds]) * 100:.0f}%",
                    f"{max(max(r.noise) for r in rounds) * 100:.0f}%",
                    str(sum(r.errors for r in rounds)),
                ]
            )
    return rows


RATIO_HEADER = ["message", "best uvicorn", "zonda / best rt/s", "best µs/rt / zonda µs/rt"]


def ratio_rows(results: Results, cases: Sequence[Case]) -> list[list[str]]:
    rows = []
    for case in cases:
        zonda = results.get((case, "zonda"))
        others = {s: r for (c, s), r in results.items() if c == case and s != "zonda" and r}
        if not zonda or not others:
            continue
        best_rt = max(others, key=lambda s: median([r.rtps for r in others[s]]))
        best_cpu = min(others, key=lambda s: median([r.cpu_us for r in others[s]]))
        rt = median([r.rtps for r in zonda]) / median([r.rtps for r in others[best_rt]])
        cpu = median([r.cpu_us for r in others[best_cpu]]) / median([r.cpu_us for r in zonda])
        best = best_rt if best_rt == best_cpu else f"{best_rt} (rt/s), {best_cpu} (CPU)"
        rows.append([case.label, best, f"{rt:.2f}x", f"{cpu:.2f}x"])
    return rows


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
    for dist in ("uvicorn", "websockets", "wsproto", "uvloop", "httptools"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} missing")
    git = ["git", "-C", str(REPO)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True)
        changed = [line[3:] for line in dirty.stdout.splitlines() if line.strip()]
        commit = commit.strip() + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")
    except OSError:
        commit = "unknown"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("packages", ", ".join(versions)),
        ("zonda commit", commit),
    ]


def report(results: Results, cases: Sequence[Case], args: argparse.Namespace, loadavg: str) -> str:
    table = markdown_table if args.markdown else text_table
    env = environment()
    if args.markdown:
        parts = ["\n".join(f"- {k}: {v}" for k, v in env)]
        parts[0] += f"\n- load average before / after: {loadavg}"
        parts[0] += f"\n- command: `{shlex.join(['.venv/bin/python', 'bench/ws.py', *sys.argv[1:]])}`"
    else:
        parts = ["\n".join(f"{k:>13}: {v}" for k, v in [*env, ("load average", loadavg)])]
    setup = (
        f"{args.connections} connections from {args.client_procs} client process(es) on core {args.client_cpu}, "
        f"each server alone on core {args.server_cpu}, {args.duration}s after {args.warmup}s warm-up, "
        f"{args.rounds} round(s)"
    )
    rows = round_rows(results, cases, args.servers)
    if rows:
        parts.append(f"Echo round trips ({setup}):\n\n" + table(ROUND_HEADER, rows))
    ratios = ratio_rows(results, cases)
    if ratios:
        parts.append("zonda against the best uvicorn variant (medians):\n\n" + table(RATIO_HEADER, ratios))
    negotiated = sorted({f"{c.label}: {r[0].negotiated}" for (c, _), r in results.items() if r})
    parts.append("Negotiated extensions: " + "; ".join(negotiated))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main


def csv_of(convert: Callable[[str], Any], allowed: Sequence[Any] | None = None) -> Callable[[str], list[Any]]:
    def parse(value: str) -> list[Any]:
        items = [convert(v.strip()) for v in value.split(",") if v.strip()]
        bad = [v for v in items if allowed is not None and v not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {','.join(map(str, allowed or ()))}; got {value!r}"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per (server, message) (3)")
    p.add_argument("--sizes", type=csv_of(int), default=[1024, 65536], help="message bytes (1024,65536)")
    p.add_argument("--kinds", type=csv_of(str, ("binary", "text")), default=["binary"], help="binary,text")
    p.add_argument("--deflate", type=csv_of(str, ("off", "on")), default=["off"], help="off,on (off)")
    p.add_argument(
        "--servers", type=csv_of(str, SERVERS), default=list(DEFAULT_SERVERS), help=",".join(DEFAULT_SERVERS)
    )
    p.add_argument("--connections", type=int, default=64, help="WebSocket connections in all (64)")
    p.add_argument("--client-procs", type=int, default=1, help="client processes sharing them (1)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds of load first (2)")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for the clients and this script (1)")
    p.add_argument("--quiet-wait", type=float, default=120, help="most seconds to wait for idle cores (120)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a round disturbed by other load (2)")
    p.add_argument("--no-verify", action="store_true", help="do not compare each echo with what was sent")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("-v", "--verbose", action="store_true", help="log commands")
    return p.parse_args(argv)


def parse_client_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ws.py client", description="the load generator (started by ws.py)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--kind", choices=("binary", "text"), default="binary")
    p.add_argument("--deflate", choices=("off", "on"), default="off")
    p.add_argument("--quiet-wait", type=float, default=120, help="most seconds to wait for idle cores (120)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a round disturbed by other load (2)")
    p.add_argument("--no-verify", action="store_true")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> Iterator[tuple[Case, int, str]]:
    """(case, round, server) in run order: rounds interleaved across servers."""
    for deflate in args.deflate:
        for size in args.sizes:
            for kind in args.kinds:
                for rnd in range(args.rounds):
                    for server in args.servers:
                        yield Case(size, kind, deflate == "on"), rnd, server


def measure_with_retries(
    server: str, case: Case, args: argparse.Namespace, workdir: Path, prefix: str
) -> Round:
    """Re-run a round that other processes disturbed (up to --retries times); keep the quietest."""
    attempts: list[Round] = []
    for _ in range(args.retries + 1):
        wait_for_quiet(args.quiet_wait)
        r = measure_round(server, case, args, workdir)
        attempts.append(r)
        log.info(
            "%s: %s rt/s, %.1f µs server CPU/rt, server %.0f%%, client %.0f%%, other load %.0f%%/%.0f%%",
            prefix, f"{r.rtps:,.0f}", r.cpu_us, r.server_share * 100, r.client_share * 100,
            r.noise[0] * 100, r.noise[1] * 100,
        )  # fmt: skip
        if r.client_share > SATURATED:
            log.warning("%s: the client processes used %.0f%% of their core", prefix, r.client_share * 100)
        if not r.noisy:
            break
        log.warning("%s: other processes used the cores during the run", prefix)
    return min(attempts, key=lambda a: max(a.noise))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["client"]:
        return run_client(parse_client_args(argv[1:]))
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, parse_cpu_list(args.client_cpu))
    # SIGTERM unwinds like Ctrl+C, so the servers and clients this script started get stopped; SIGINT too when
    # a shell started the script in the background with SIGINT ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results: Results = {}
    cases: list[Case] = []
    steps = list(plan(args))
    status = 0
    with tempfile.TemporaryDirectory(prefix="zonda-ws-bench-") as tmp:
        try:
            for i, (case, rnd, server) in enumerate(steps, 1):
                if case not in cases:
                    cases.append(case)
                prefix = f"[{i}/{len(steps)}] {case.label} {server} round {rnd + 1}"
                r = measure_with_retries(server, case, args, Path(tmp), prefix)
                results.setdefault((case, server), []).append(r)
        except KeyboardInterrupt:
            log.error("interrupted; printing what was measured")
            status = 130
        except Exception:
            log.exception("benchmark failed; printing what was measured")
            status = 1
    loadavg += " / " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    sys.stdout.write(report(results, cases, args, loadavg))
    return status


if __name__ == "__main__":
    sys.exit(main())
