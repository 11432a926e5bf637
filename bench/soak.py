"""Soak (issue 16 item 8): one zonda under long runs of each kind of traffic, its memory and open file
descriptors read at a baseline, after a warm-up, during and at the end of each phase. Not a test: it prints
what it measured and leaves the judging to the reader (the issue's bars: RSS flat within 5% from the end of
the warm-up to the end of a phase, descriptors back to the baseline once the connections are closed).

Run from the repo root with the project's virtualenv (``pip install -e '.[bench]'``)::

    .venv/bin/python -m bench.soak                                  # every phase at full counts (minutes)
    .venv/bin/python -m bench.soak --markdown --json /tmp/soak.json # what bench/RESULTS.md records
    .venv/bin/python -m bench.soak --loop trio --phases http1,ws    # another loop, some phases
    .venv/bin/python -m bench.soak --scale 0.05                     # a quick look at 5% of the counts

Phases (``--phases``; counts as the issue asks, ``--scale`` multiplies them all):

- ``http1``: 1,000,000 HTTP/1.1 keep-alive requests, ``wrk -t1 -c64`` (``--connections``).
- ``h2``: 200,000 HTTP/2 streams, ``h2load -c16 -m10`` over h2c (prior knowledge).
- ``ws`` and ``ws-deflate``: 100,000 WebSocket messages of 1 KiB (compressible text-like bytes) each way,
  echoed, over 8 connections of the ``websockets`` asyncio client (``--ws-connections``), without and with
  permessage-deflate; each echo is compared with what was sent, and the negotiated extension checked.
- ``connect`` and ``connect-tls``: 20,000 connection cycles, each a connect, one GET and a close, plain and
  over TLS (a throwaway self-signed certificate from bench/h2.py's make_cert): ``wrk -t1 -c16`` sending
  ``Connection: close``, on which zonda answers and closes and wrk connects again. wrk resumes TLS sessions
  (TLS 1.3 tickets): nearly every handshake after a connection slot's first is a resumed one.

wrk has no request count: its Lua script counts the answers (checking each status), and at the slice's
count stops its thread and prints a line on which this script sends wrk SIGINT, so that wrk prints its
summary; the tables count what wrk reports (a few more than asked). Errors: non-2xx answers, socket errors.

How it measures: the app is ``bench.apps:hello_ws_echo``. One ``python -m zonda`` (one worker, ``--loop``,
no access log), pinned with ``taskset -c 0``, serves the plaintext phases in turn (what one leaves behind
shows in the next one's baseline); a second one, with the certificate, serves ``connect-tls``. The load
tools and this script run on core 1. A phase runs in ``--slices`` (10) equal slices, the first the warm-up.
RSS is VmRSS of the server and its children (``/proc/PID/status``), descriptors the entries of
``/proc/PID/fd``, read at the phase's start (baseline), SETTLE s after every slice (the WebSockets stay open
across slices, wrk's and h2load's connections close with each), and at the end once the descriptors are back
at the baseline or ``--fd-wait`` s passed; a thread reads them every PEAK_PERIOD s for the peaks. Requests/s
(context only) is the count over the load tools' own durations.

Growth without a leak: glibc keeps freed heap memory, and raises its mmap threshold once a large block is
freed, so the 256 KiB buffer asyncio's and uvloop's SSL protocols allocate per TLS connection then comes
from the heap and fragments it. zonda inherits this script's environment: ``MALLOC_MMAP_THRESHOLD_=131072``
keeps such buffers mmapped (returned to the system when freed), to tell the two apart.

Only processes this script starts are stopped, by pid. All traffic goes to 127.0.0.1, bounded by the counts
and ``--slice-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import logging
import os
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.h2 import make_cert, parse_h2load
from bench.harness import (
    LUA_DONE,
    LUA_STATUS_TALLY,
    ServerProcess,
    bench_lock,
    commit_rows,
    csv_of,
    environment,
    fmt_rps,
    format_env,
    loadavg,
    markdown_table,
    parse_cpu_list,
    process_tree,
    raise_nofile_limit,
    run_load,
    run_steps,
    setup_logging,
    stop_process,
    text_table,
    zonda_commit,
)
from bench.ws_client import make_payload

log = logging.getLogger("bench.soak")

APP = "bench.apps:hello_ws_echo"
LOOPS = ("uvloop", "asyncio", "trio")
PHASES = ("http1", "h2", "ws", "ws-deflate", "connect", "connect-tls")
DEFAULT_COUNTS = dict(zip(PHASES, (1_000_000, 200_000, 100_000, 100_000, 20_000, 20_000), strict=True))
UNITS = {"http1": "requests", "h2": "streams", "connect": "connections", "connect-tls": "connections"}
WS_MESSAGE = make_payload(1024)
SETTLE = 0.5  # seconds between a slice's end and its reading: the server handles the closes
PEAK_PERIOD = 0.25
GROWTH_BAR = 0.05  # the bar: flat within 5%

# wrk: count the answers (LUA_STATUS_TALLY's response() checks each status) and, at the slice's count, stop
# the thread and say so; the script sends wrk SIGINT on that line, as wrk itself only stops at -d.
LUA_COUNT = """
target = {target}
seen = 0
local tally = response
response = function(status, headers, body)
  tally(status, headers, body)
  seen = seen + 1
  if seen == target then
    wrk.thread:stop()
    io.write("BENCH_REACHED\\n")
    io.stdout:flush()
  end
end
"""


# --------------------------------------------------------------------------- the server and its readings


def zonda_command(loop: str, port: int | str, tls: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "zonda", APP, "--loop", loop, "--no-access-log", "--log-level", "warning"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if tls is not None:
        cmd += ["--ssl-certfile", str(tls / "cert.pem"), "--ssl-keyfile", str(tls / "key.pem")]
    return cmd


class SoakServer(ServerProcess):
    """The zonda a soak measures: the harness's server process, over TLS when given a certificate."""

    def __init__(self, loop: str, tls: Path | None, cpu: str | None, logdir: Path) -> None:
        super().__init__("zonda-tls" if tls else "zonda", cpu, logdir)
        self.loop, self.tls = loop, tls

    def command(self) -> list[str]:
        return zonda_command(self.loop, self.port, self.tls)

    def probe(self) -> None:
        if self.tls is None:
            return super().probe()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # our own throwaway certificate
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=1.0, context=ctx)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
        finally:
            conn.close()

    def fds(self) -> int:
        """Open file descriptors of the server and its children."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in process_tree(self.pid))


@dataclass
class Sample:
    label: str  # baseline, warm-up, slice N, closed
    done: int  # the phase's requests (streams, messages, connections) so far
    rss_kib: int
    fds: int
    at_s: float  # since the phase started


class PeakMeter:
    """Reads the server's RSS and descriptors every PEAK_PERIOD s in a thread, keeping the highest."""

    def __init__(self, srv: SoakServer) -> None:
        self.srv = srv
        self.rss_kib = self.fds = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="peak-meter", daemon=True)

    def watch(self) -> None:
        while not self.stopped.wait(PEAK_PERIOD):
            with contextlib.suppress(OSError, RuntimeError):
                self.rss_kib = max(self.rss_kib, self.srv.rss_kib())
                self.fds = max(self.fds, self.srv.fds())

    def __enter__(self) -> PeakMeter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


# --------------------------------------------------------------------------- loads


@dataclass
class Slice:
    done: int
    seconds: float  # the load tool's own measure
    errors: int


class Load:
    """One phase's traffic, run a slice at a time; open() and close() bracket the slices."""

    description = ""
    negotiated = ""  # what the client and zonda agreed on (protocol, extensions), for the table

    def open(self) -> None: ...  # fmt: skip

    def run(self, n: int) -> Slice:
        raise NotImplementedError

    def close(self) -> None: ...  # fmt: skip


def taskset(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu else []


class WrkLoad(Load):
    """``wrk -t1`` until it has ``n`` answers; with ``close_each`` every request says ``Connection: close``."""

    def __init__(self, url: str, connections: int, close_each: bool, args: argparse.Namespace) -> None:
        self.url, self.connections, self.close_each, self.args = url, connections, close_each, args
        self.negotiated = ("TLS, " if url.startswith("https") else "") + "HTTP/1.1"
        self.description = f"wrk -t1 -c{connections}" + (", Connection: close" if close_each else "")

    def script(self, n: int) -> Path:
        header = 'wrk.headers["Connection"] = "close"\n' if self.close_each else ""
        path = Path(self.args.workdir) / f"soak-{n}-{int(self.close_each)}.lua"
        path.write_text(header + LUA_STATUS_TALLY + LUA_COUNT.format(target=n) + LUA_DONE)
        return path

    def run(self, n: int) -> Slice:
        argv = [*taskset(self.args.client_cpu), "wrk", "-t1", f"-c{min(self.connections, n)}"]
        argv += [f"-d{self.args.slice_timeout}s", "--timeout", "10s", "-s", str(self.script(n)), self.url]
        log.debug("wrk: %s", shlex.join(argv))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("BENCH_REACHED"):
                    proc.send_signal(signal.SIGINT)
            proc.wait(30)
        finally:
            stop_process(proc, "wrk")
        out = "".join(lines)
        summary = next((line for line in lines if line.startswith("BENCH_SUMMARY ")), None)
        if proc.returncode != 0 or summary is None:
            raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out}")
        s = json.loads(summary.removeprefix("BENCH_SUMMARY "))
        errors = s["connect"] + s["read"] + s["write"] + s["timeout"] + s["non_2xx"]
        if errors:
            log.warning("wrk: %d errors or non-2xx answers:\n%s", errors, out)
        return Slice(s["requests"], s["duration_us"] / 1e6, errors)


class H2Load(Load):
    """``h2load -n`` over h2c (prior knowledge): exactly ``n`` streams over ``connections`` connections."""

    def __init__(self, port: int, args: argparse.Namespace) -> None:
        self.port, self.args = port, args
        self.description = f"h2load -t1 -c{args.h2_connections} -m{args.h2_streams}"

    def run(self, n: int) -> Slice:
        argv = [*taskset(self.args.client_cpu), "h2load", "-t1", f"-c{min(self.args.h2_connections, n)}"]
        argv += [f"-m{self.args.h2_streams}", "-n", str(n), f"http://127.0.0.1:{self.port}/"]
        out = run_load("h2load", argv, self.args.slice_timeout)
        s = parse_h2load(out)
        if s["protocol"] != "h2c":
            raise RuntimeError(f"h2load negotiated {s['protocol']!r}, not h2c:\n{out}")
        self.negotiated = "h2c"
        bad = s["status"]["3xx"] + s["status"]["4xx"] + s["status"]["5xx"] + s["done"] - s["succeeded"]
        errors = sum(s["errors"].values()) + bad
        if errors:
            log.warning("h2load: %d errors or non-2xx answers:\n%s", errors, out)
        return Slice(s["succeeded"], s["duration_s"], errors)


class WsLoad(Load):
    """``connections`` WebSockets of the ``websockets`` asyncio client, open for the whole phase, each in a
    closed loop: send WS_MESSAGE, await its echo, compare. Its loop runs only during a slice."""

    def __init__(self, port: int, connections: int, deflate: bool, timeout: float) -> None:
        self.uri, self.count, self.deflate = f"ws://127.0.0.1:{port}/", connections, deflate
        self.timeout = timeout
        self.description = f"websockets asyncio client, {connections} connections, 1 KiB echo"
        self.conns: list[Any] = []
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()

    def open(self) -> None:
        from websockets.asyncio.client import connect

        def one() -> Any:
            compression = "deflate" if self.deflate else None
            return connect(self.uri, compression=compression, max_size=None, proxy=None, open_timeout=10)

        async def open_all() -> list[Any]:
            return list(await asyncio.gather(*(one() for _ in range(self.count))))

        self.conns = self.loop.run_until_complete(open_all())
        names = {", ".join(ext.name for ext in ws.protocol.extensions) or "no extension" for ws in self.conns}
        self.negotiated = "; ".join(sorted(names))
        if (self.negotiated == "permessage-deflate") != self.deflate:
            raise RuntimeError(f"negotiated {self.negotiated}, deflate {'on' if self.deflate else 'off'}")

    def run(self, n: int) -> Slice:
        async def echo(ws: Any, k: int) -> int:
            mismatched = 0
            for _ in range(k):
                await ws.send(WS_MESSAGE)
                mismatched += await ws.recv() != WS_MESSAGE
            return mismatched

        shares = [n // self.count + (i < n % self.count) for i in range(self.count)]

        async def all_echoes() -> int:
            echoes = asyncio.gather(*(echo(ws, k) for ws, k in zip(self.conns, shares, strict=True)))
            return sum(await asyncio.wait_for(echoes, self.timeout))

        started = time.monotonic()
        mismatched = self.loop.run_until_complete(all_echoes())
        return Slice(n, time.monotonic() - started, mismatched)

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(ws.close() for ws in self.conns), return_exceptions=True)

        try:
            self.loop.run_until_complete(close_all())
        finally:
            self.loop.close()


# --------------------------------------------------------------------------- one phase


@dataclass
class Phase:
    name: str
    description: str
    target: int
    done: int = 0
    seconds: float = 0.0
    errors: int = 0
    negotiated: str = ""
    samples: list[Sample] = field(default_factory=list)
    peak_rss_kib: int = 0
    peak_fds: int = 0

    @property
    def baseline(self) -> Sample:
        return self.samples[0]

    @property
    def warm(self) -> Sample:
        return self.samples[1]

    @property
    def end(self) -> Sample:
        return self.samples[-2]  # the last slice's; the last sample is after the connections closed

    @property
    def closed(self) -> Sample:
        return self.samples[-1]

    @property
    def growth(self) -> float:
        return (self.end.rss_kib - self.warm.rss_kib) / self.warm.rss_kib

    @property
    def rps(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def slice_sizes(target: int, slices: int) -> list[int]:
    slices = max(2, min(slices, target))  # a warm-up slice and at least one after it
    return [target // slices + (i < target % slices) for i in range(slices)]


def wait_for_fds(srv: SoakServer, baseline: int, seconds: float) -> None:
    """Until the server is back at ``baseline`` descriptors (or fewer), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while srv.fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.1)


def run_phase(name: str, srv: SoakServer, load: Load, target: int, args: argparse.Namespace) -> Phase:
    phase = Phase(name, load.description, target)
    started = time.monotonic()

    def read(label: str) -> None:
        if not srv.alive():
            raise RuntimeError(f"{srv.name} died during {name}:\n{srv.log_tail()}")
        sample = Sample(label, phase.done, srv.rss_kib(), srv.fds(), time.monotonic() - started)
        phase.samples.append(sample)
        log.info(
            "%s %s: %s done, RSS %.1f MiB, %d fds",
            name, label, f"{phase.done:,}", sample.rss_kib / 1024, sample.fds,
        )  # fmt: skip

    time.sleep(SETTLE)  # the readiness probe's or the last phase's connections close
    read("baseline")
    sizes = slice_sizes(target, args.slices)
    with PeakMeter(srv) as peak:
        load.open()
        try:
            for i, n in enumerate(sizes, 1):
                result = load.run(n)
                phase.done += result.done
                phase.seconds += result.seconds
                phase.errors += result.errors
                time.sleep(SETTLE)
                read("warm-up" if i == 1 else f"slice {i}")
        finally:
            load.close()
        wait_for_fds(srv, phase.baseline.fds, args.fd_wait)
        read("closed")
    phase.negotiated = load.negotiated
    phase.peak_rss_kib, phase.peak_fds = peak.rss_kib, peak.fds
    log.info("%s: %s/s, RSS growth after the warm-up %+.1f%%", name, fmt_rps(phase.rps), phase.growth * 100)
    return phase


def make_load(name: str, srv: SoakServer, args: argparse.Namespace) -> Load:
    if name == "http1":
        return WrkLoad(f"http://127.0.0.1:{srv.port}/", args.connections, False, args)
    if name == "h2":
        return H2Load(srv.port, args)
    if name in ("ws", "ws-deflate"):
        return WsLoad(srv.port, args.ws_connections, name == "ws-deflate", args.slice_timeout)
    scheme = "https" if name == "connect-tls" else "http"
    return WrkLoad(f"{scheme}://127.0.0.1:{srv.port}/", args.cycle_connections, True, args)


# --------------------------------------------------------------------------- report


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


HEADER = [
    "phase", "load", "count", "per s", "errors", "RSS MiB baseline", "after warm-up", "end", "peak",
    "growth warm-up to end", "RSS flat (5%)", "fds baseline", "fds peak", "fds after close", "fds back",
]  # fmt: skip


def phase_row(p: Phase) -> list[str]:
    rss = [mib(kib) for kib in (p.baseline.rss_kib, p.warm.rss_kib, p.end.rss_kib, p.peak_rss_kib)]
    return [
        p.name, f"{p.description}; {p.negotiated}", f"{p.done:,} {UNITS.get(p.name, 'messages')}",
        fmt_rps(p.rps), str(p.errors), *rss, f"{p.growth * 100:+.1f}%", "yes" if p.growth <= GROWTH_BAR else "NO",
        str(p.baseline.fds), str(p.peak_fds), str(p.closed.fds), "yes" if p.closed.fds <= p.baseline.fds else "NO",
    ]  # fmt: skip


def samples_rows(phases: Sequence[Phase]) -> list[list[str]]:
    return [
        [p.name, s.label, f"{s.done:,}", f"{s.at_s:.1f}", mib(s.rss_kib), str(s.fds)]
        for p in phases
        for s in p.samples
    ]


def report(phases: Sequence[Phase], env: Sequence[Sequence[str]], markdown: bool, every: bool) -> str:
    table = markdown_table if markdown else text_table
    parts = [format_env(env, markdown)]
    if phases:
        parts.append(
            "Per phase (RSS: VmRSS of the server's processes; growth: from the reading after the warm-up "
            "slice to the one after the last slice; fds after close: once back at the baseline or "
            "--fd-wait passed):\n\n" + table(HEADER, [phase_row(p) for p in phases])
        )
    if phases and every:
        header = ["phase", "reading", "done", "s", "RSS MiB", "fds"]
        parts.append("Every reading:\n\n" + table(header, samples_rows(phases)))
    return "\n\n".join(parts) + "\n"


def phase_from_json(item: dict[str, Any]) -> Phase:
    samples = [Sample(**s) for s in item.pop("samples")]
    return Phase(**item, samples=samples)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--loop", choices=LOOPS, default="uvloop", help="zonda's --loop (uvloop)")
    p.add_argument("--phases", type=csv_of(str, PHASES), default=list(PHASES), help=",".join(PHASES))
    for name, count in DEFAULT_COUNTS.items():
        p.add_argument(f"--{name}-count", type=int, default=count, help=f"{count:,}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count (1)")
    p.add_argument("--slices", type=int, default=10, help="slices per phase; the first is the warm-up (10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for http1 (64)")
    p.add_argument("--h2-connections", type=int, default=16, help="h2load -c (16)")
    p.add_argument("--h2-streams", type=int, default=10, help="h2load -m (10)")
    p.add_argument("--ws-connections", type=int, default=8, help="WebSocket connections (8)")
    p.add_argument("--cycle-connections", type=int, default=16, help="wrk connections for connect* (16)")
    p.add_argument("--fd-wait", type=float, default=10.0, help="most seconds for fds to come back (10)")
    p.add_argument("--slice-timeout", type=int, default=600, help="most seconds per slice (600)")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for zonda; '' for none (0)")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for the clients; '' for none (1)")
    p.add_argument("--lock", default="/tmp/zonda-bench.lock", help="flock held for the run; '' for none")
    p.add_argument("--every", action="store_true", help="also print every reading")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--report", metavar="FILE", help="print the report of a --json file; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log commands")
    return p.parse_args(argv)


def run_all(args: argparse.Namespace, phases: list[Phase]) -> None:
    plain = [name for name in args.phases if name != "connect-tls"]
    tls = [name for name in args.phases if name == "connect-tls"]
    workdir = Path(args.workdir)
    for names, cert in ((plain, None), (tls, make_cert(workdir) if tls else None)):
        if not names:
            continue
        with SoakServer(args.loop, cert, args.server_cpu or None, workdir) as srv:
            for name in names:
                target = max(1, round(getattr(args, f"{name.replace('-', '_')}_count") * args.scale))
                phases.append(run_phase(name, srv, make_load(name, srv, args), target, args))


def environment_rows(args: argparse.Namespace, command: str) -> list[tuple[str, str]]:
    tools = [
        subprocess.run(argv, capture_output=True, text=True)
        for argv in (["wrk", "-v"], ["h2load", "--version"])
    ]
    wrk, h2load = (t.stdout.split(" [")[0].splitlines()[0] if t.stdout else "missing" for t in tools)
    server = zonda_command(args.loop, "PORT", Path("TMP") if "connect-tls" in args.phases else None)
    server = [c.removeprefix(str(Path(sys.executable).parent) + "/") for c in server]
    pin = f"taskset -c {args.server_cpu} " if args.server_cpu else ""
    return [
        *environment(("uvloop", "httptools", "websockets", "h2", "trio")),
        ("loop", args.loop),
        ("wrk", wrk),
        ("h2load", h2load),
        ("zonda command", f"`{pin}{shlex.join(server)}` (the TLS options only for connect-tls)"),
        ("command", f"`{command}`"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        phases = [phase_from_json(item) for item in saved["phases"]]
        sys.stdout.write(report(phases, saved["env"], args.markdown, args.every))
        return 0
    raise_nofile_limit()
    if args.client_cpu:
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, parse_cpu_list(args.client_cpu))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind like Ctrl+C: zonda gets stopped
    command = shlex.join([".venv/bin/python", "-m", "bench.soak", *(sys.argv[1:] if argv is None else argv)])
    env = environment_rows(args, command)
    commit_start, load_start = zonda_commit(), loadavg()
    phases: list[Phase] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zonda-soak-") as tmp, bench_lock(args.lock):
        args.workdir = tmp
        status = run_steps(lambda: run_all(args, phases))
    env += commit_rows(commit_start)
    env += [("load average before / after", f"{load_start} / {loadavg()}")]
    env += [("wall time", f"{time.monotonic() - started:.0f} s")]
    if args.json:
        saved = {"args": vars(args), "env": env, "phases": [asdict(p) for p in phases]}
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    sys.stdout.write(report(phases, env, args.markdown, args.every))
    return status


if __name__ == "__main__":
    sys.exit(main())
