"""Side-by-side WebSocket echo benchmark: zonda against uvicorn (websockets-sansio and wsproto), one core
each; zonda on trio against hypercorn on trio, and against zonda on uvloop.

Run from the repo root with the project's virtualenv::

    .venv/bin/python bench/ws.py                                   # 1 and 64 KiB, 3 rounds: ~4 min if idle
    .venv/bin/python bench/ws.py --deflate off,on --markdown       # also a permessage-deflate row
    .venv/bin/python bench/ws.py --duration 3 --rounds 1 --sizes 1024 --servers zonda,uvicorn-sansio
    .venv/bin/python bench/ws.py --sizes 1024 --servers zonda,zonda-trio,hypercorn-trio --markdown   # trio

How it measures:

- The app is ``bench.apps:ws_echo`` (accept, then echo every message as received). Each server runs alone,
  pinned with ``taskset -c 0`` (``--server-cpu``): ``python -m zonda --loop uvloop`` (``zonda``) or
  ``--loop trio`` (``zonda-trio``), ``python -m uvicorn`` with ``--http httptools --loop uvloop`` and
  ``--ws websockets-sansio``, ``--ws wsproto`` or ``--ws websockets``, and ``python -m hypercorn
  --worker-class trio --workers 1`` (``hypercorn-trio``, wsproto-based; one worker under its parent, as in
  bench/run.py) and ``python -m granian --interface asgi --loop uvloop --workers 1 --runtime-threads 1``
  (``granian``, its Rust WebSocket layer; one worker under its parent); one process otherwise, no access log (hypercorn has none unless asked). Rounds are
  interleaved (round 1 runs every server, then round 2 ...) with a fresh server process each time, so a slow
  drift of the shared VM spreads over all servers. The ratios divide each zonda by the best of the other
  servers on its event loop, and zonda on trio by zonda on uvloop when both ran.
- The load generator is bench/ws_client.py, pinned with ``taskset -c 1`` (``--client-cpu``):
  ``--client-procs`` uvloop processes share ``--connections`` (64) connections, each driven by the
  ``websockets`` sans-io ``ClientProtocol`` straight from ``asyncio.Protocol`` callbacks (no coroutine
  per message), in a closed loop: send one message, wait for its echo, check it, send the next.
  Compression is off unless ``--deflate on`` (then the client offers permessage-deflate and the payload is
  compressible JSON-like text; without it the payload content does not matter to the servers).
- After a ``--warmup`` (2 s) the clients count echoes for ``--duration`` (10) seconds on a shared
  ``time.monotonic`` window. Server CPU is utime+stime from ``/proc/PID/stat`` of the server's processes,
  read at the window's edges; divided by the round trips it gives µs of server CPU per round trip, the
  fairer number when the client core is saturated (then req/s measures the client as much as the server).
  Client CPU share and the load other processes put on both cores are printed per round. Before each round
  the script waits (up to ``--quiet-wait`` s) for idle cores, and re-runs a round that other processes
  disturbed (``--retries``).
  Server CPU leaves out the kernel's softirq time for loopback traffic (charged to no process).

Only processes this script starts are stopped, by pid: SIGTERM, then SIGKILL after a grace period, also on
Ctrl+C and errors. All traffic goes to 127.0.0.1 on ports picked by binding port 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

if not __package__:  # run as a file (bench/ws.py): import bench from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CLK_TCK,
    REPO,
    LoadMeter,
    Round,
    ServerProcess,
    csv_of,
    environment,
    format_env,
    is_zonda,
    loadavg,
    markdown_table,
    median,
    pairs_caption,
    parse_cpu_list,
    proc_cpu_ticks,
    process_tree,
    program_of,
    quietest,
    ratio_pairs,
    run_steps,
    setup_logging,
    stop_process,
    text_table,
    wait_for_quiet,
    zonda_commit,
)
from bench.ws_client import make_payload

log = logging.getLogger("bench.ws")

APP = "bench.apps:ws_echo"
# The event loop each server runs its Python on; the report compares zonda with the servers on its own loop,
# and zonda on another loop with zonda on uvloop (harness.ratio_pairs).
SERVER_LOOPS = {
    "zonda": "uvloop",
    "zonda-trio": "trio",
    "uvicorn-sansio": "uvloop",
    "uvicorn-wsproto": "uvloop",
    "uvicorn-websockets": "uvloop",
    "hypercorn-trio": "trio",
    "granian": "uvloop",
}
SERVERS = tuple(SERVER_LOOPS)
DEFAULT_SERVERS = ("zonda", "uvicorn-sansio", "uvicorn-wsproto", "granian")
SATURATED = 0.90  # client processes using this share of their core: the client is (near) the bottleneck
NOISE_LIMIT = 0.10  # a round with more foreign load than this on either core is re-run (--retries)
# Before a round: a quiet second, then a quiet second look of a random 1-3 s (see wait_for_quiet).
QUIET_SAMPLES = ((1.0, 1.0), (1.0, 3.0))


# --------------------------------------------------------------------------- processes


def server_command(server: str, port: int, deflate: bool) -> list[str]:
    """One process (hypercorn: one worker under its parent, as in bench/run.py) on the server's SERVER_LOOPS
    loop. hypercorn has no switch for permessage-deflate: it accepts it whenever the client offers it, which
    the client does only with ``--deflate on``."""
    py = sys.executable
    program, loop = program_of(server), SERVER_LOOPS[server]
    if program == "zonda":
        flag = "--ws-per-message-deflate" if deflate else "--no-ws-per-message-deflate"
        cmd = [py, "-m", "zonda", APP, "--loop", loop, "--no-access-log", "--log-level", "warning", flag]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port)]
    if program == "hypercorn":
        cmd = [py, "-m", "hypercorn", APP, "--worker-class", loop, "--workers", "1", "--log-level", "warning"]
        return [*cmd, "--bind", f"127.0.0.1:{port}"]
    if program == "granian":
        # granian answers an offer of permessage-deflate by itself (no switch), as hypercorn does
        cmd = [py, "-m", "granian", APP, "--interface", "asgi", "--http", "1", "--loop", loop]
        cmd += ["--workers", "1", "--runtime-threads", "1", "--no-access-log", "--log-level", "warning"]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port)]
    impl = server.removeprefix("uvicorn-")
    impl = {"sansio": "websockets-sansio"}.get(impl, impl)
    cmd = [py, "-m", "uvicorn", APP, "--http", "httptools", "--loop", loop, "--no-access-log"]
    cmd += ["--log-level", "warning", "--ws", impl, "--ws-per-message-deflate", str(deflate)]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port)]


class WsServer(ServerProcess):
    """One server serving the echo app, ready once websockets' own client gets its messages back."""

    def __init__(self, server: str, deflate: bool, cpu: str, logdir: Path) -> None:
        super().__init__(server, cpu, logdir)
        self.deflate = deflate
        self.pids: list[int] = []

    def command(self) -> list[str]:
        return server_command(self.name, self.port, self.deflate)

    def start(self) -> None:
        super().start()
        # The server's processes, found once it answers (hypercorn serves from a worker under its parent):
        # reading only their /proc/PID/stat keeps the window's edges sharp (no /proc walk).
        self.pids = process_tree(self.pid)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_ticks(pid) for pid in self.pids) / CLK_TCK

    def probe(self) -> None:
        from websockets.exceptions import WebSocketException

        try:
            self.check_echo()
        except WebSocketException as exc:
            raise ConnectionError(f"{self.name}: {exc!r}") from exc

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

    def __exit__(self, *exc: object) -> None:
        self.stop()  # measure_round shows what the server printed


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
class EchoRound(Round):
    """One round of echoes; ``requests`` are round trips (a message and its echo)."""

    client_cpu_s: float
    errors: int
    negotiated: str

    noise_limit: ClassVar[float] = NOISE_LIMIT

    @property
    def client_share(self) -> float:
        return self.client_cpu_s / self.duration_s if self.duration_s else 0.0


def client_argv(args: argparse.Namespace, case: Case, port: int, connections: int) -> list[str]:
    argv = ["taskset", "-c", args.client_cpu, sys.executable, "-m", "bench.ws_client"]  # from REPO
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


def measure_round(server: str, case: Case, args: argparse.Namespace, workdir: Path) -> EchoRound:
    split = [args.connections // args.client_procs] * args.client_procs
    split[0] += args.connections - sum(split)
    server_cores, client_cores = parse_cpu_list(args.server_cpu), parse_cpu_list(args.client_cpu)
    clients: list[subprocess.Popen[str]] = []
    with WsServer(server, case.deflate, args.server_cpu, workdir) as srv:
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
            # softirq time left out of the load: it is mostly this benchmark's own loopback traffic
            server_load = LoadMeter(server_cores, irq_busy=False)
            client_load = LoadMeter(client_cores, irq_busy=False)
            cpu0 = srv.cpu_seconds()
            time.sleep(max(0.0, end_at - time.monotonic()))
            server_cpu = srv.cpu_seconds() - cpu0
            results = [json.loads(read_line(proc, "RESULT", 60)) for proc in clients]
            for proc in clients:
                proc.wait(10)
        finally:
            for proc in clients:
                stop_process(proc, "client")
        if not srv.alive():
            raise RuntimeError(f"{server} died during the run:\n{srv.log_tail()}")
        tail = srv.log_tail()
    if tail:
        log.warning("%s printed:\n%s", server, tail)
    failures = [r["failure"] for r in results if r["failure"]]
    if failures:
        raise RuntimeError(f"{server}: {failures[0]}")
    client_cpu = sum(r["cpu_s"] for r in results)
    seconds = statistics.mean(r["seconds"] for r in results)
    return EchoRound(
        requests=sum(r["round_trips"] for r in results),
        duration_s=seconds,
        cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        errors=sum(r["errors"] for r in results),
        negotiated=results[0]["negotiated"],
        noise=(server_load.busy_share(server_cpu * CLK_TCK), client_load.busy_share(client_cpu * CLK_TCK)),
    )


# --------------------------------------------------------------------------- output


Results = dict[tuple[Case, str], list[EchoRound]]

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
                    " ".join(f"{r.rps:,.0f}" for r in rounds),
                    f"{median([r.rps for r in rounds]):,.0f}",
                    " ".join(f"{r.cpu_us_per_req:.1f}" for r in rounds),
                    f"{median([r.cpu_us_per_req for r in rounds]):.1f}",
                    f"{median([r.cpu_share for r in rounds]) * 100:.0f}%",
                    f"{median([r.client_share for r in rounds]) * 100:.0f}%",
                    f"{max(max(r.noise) for r in rounds) * 100:.0f}%",
                    str(sum(r.errors for r in rounds)),
                ]
            )
    return rows


RATIO_HEADER = [
    "message",
    "zonda",
    "against (the best of them)",
    "zonda / it rt/s",
    "its µs/rt / zonda µs/rt",
]


def measured_pairs(results: Results, case: Case, servers: Sequence[str]) -> list[tuple[str, str]]:
    return ratio_pairs([s for s in servers if results.get((case, s))], SERVER_LOOPS)


def ratio_rows(results: Results, cases: Sequence[Case], servers: Sequence[str]) -> list[list[str]]:
    """Per message, each zonda against the best of the other servers on its event loop (by round trips/s
    and, apart, by CPU per round trip), and zonda on another loop against zonda on uvloop."""
    rows = []
    for case in cases:
        peers: dict[tuple[str, bool], list[str]] = {}  # (zonda, against zonda) -> what it is divided by
        for zonda, peer in measured_pairs(results, case, servers):
            peers.setdefault((zonda, is_zonda(peer)), []).append(peer)
        for (zonda, _), against in peers.items():
            z = results[(case, zonda)]
            best_rt = max(against, key=lambda s: median([r.rps for r in results[(case, s)]]))
            best_cpu = min(against, key=lambda s: median([r.cpu_us_per_req for r in results[(case, s)]]))
            rt = median([r.rps for r in z]) / median([r.rps for r in results[(case, best_rt)]])
            cpu = median([r.cpu_us_per_req for r in results[(case, best_cpu)]]) / median(
                [r.cpu_us_per_req for r in z]
            )
            best = best_rt if best_rt == best_cpu else f"{best_rt} (rt/s), {best_cpu} (CPU)"
            rows.append([case.label, zonda, best, f"{rt:.2f}x", f"{cpu:.2f}x"])
    return rows


def negotiated_line(results: Results) -> str:
    """The extensions each message size negotiated, per server where the servers differ."""
    by_label: dict[str, dict[str, str]] = {}
    for (case, server), rounds in results.items():
        if rounds:
            by_label.setdefault(case.label, {})[server] = rounds[0].negotiated
    cells = []
    for label, by_server in sorted(by_label.items()):
        if len(set(by_server.values())) == 1:
            cells.append(f"{label}: {next(iter(by_server.values()))}")
        else:
            cells.append(f"{label}: " + ", ".join(f"{s} {n}" for s, n in by_server.items()))
    return "Negotiated extensions: " + "; ".join(cells)


def report(results: Results, cases: Sequence[Case], args: argparse.Namespace, load: str) -> str:
    table = markdown_table if args.markdown else text_table
    packages = ["uvicorn", "websockets", "wsproto", "uvloop", "httptools"]
    packages += ["hypercorn"] if any(program_of(s) == "hypercorn" for s in args.servers) else []
    packages += ["granian"] if any(program_of(s) == "granian" for s in args.servers) else []
    packages += ["trio"] if any(SERVER_LOOPS[s] == "trio" for s in args.servers) else []
    env = [*environment(packages), ("zonda commit", zonda_commit())]
    if args.markdown:
        env.append(("load average before / after", load))
        env.append(("command", f"`{shlex.join(['.venv/bin/python', 'bench/ws.py', *sys.argv[1:]])}`"))
    else:
        env.append(("load average", load))
    parts = [format_env(env, args.markdown, width=13)]
    setup = (
        f"{args.connections} connections from {args.client_procs} client process(es) on core {args.client_cpu}, "
        f"each server alone on core {args.server_cpu}, {args.duration}s after {args.warmup}s warm-up, "
        f"{args.rounds} round(s)"
    )
    rows = round_rows(results, cases, args.servers)
    if rows:
        parts.append(f"Echo round trips ({setup}):\n\n" + table(ROUND_HEADER, rows))
    ratios = ratio_rows(results, cases, args.servers)
    if ratios:
        pairs = [pair for case in cases for pair in measured_pairs(results, case, args.servers)]
        caption = pairs_caption(pairs, peers="the best of the other servers")
        parts.append(
            f"Ratios, {caption} (medians; above 1 where zonda does better):\n\n" + table(RATIO_HEADER, ratios)
        )
    parts.append(negotiated_line(results))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per (server, message) (3)")
    p.add_argument("--sizes", type=csv_of(int), default=[1024, 65536], help="message bytes (1024,65536)")
    p.add_argument("--kinds", type=csv_of(str, ("binary", "text")), default=["binary"], help="binary,text")
    p.add_argument("--deflate", type=csv_of(str, ("off", "on")), default=["off"], help="off,on (off)")
    p.add_argument(
        "--servers",
        type=csv_of(str, SERVERS),
        default=list(DEFAULT_SERVERS),
        help=f"any of {','.join(SERVERS)} ({','.join(DEFAULT_SERVERS)})",
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
) -> EchoRound:
    def describe(r: EchoRound) -> None:
        log.info(
            "%s: %s rt/s, %.1f µs server CPU/rt, server %.0f%%, client %.0f%%, other load %.0f%%/%.0f%%",
            prefix, f"{r.rps:,.0f}", r.cpu_us_per_req, r.cpu_share * 100, r.client_share * 100,
            r.noise[0] * 100, r.noise[1] * 100,
        )  # fmt: skip
        if r.client_share > SATURATED:
            log.warning("%s: the client processes used %.0f%% of their core", prefix, r.client_share * 100)

    return quietest(
        lambda: measure_round(server, case, args, workdir),
        describe,
        prefix,
        args.retries,
        lambda: wait_for_quiet(args.quiet_wait, samples=QUIET_SAMPLES, irq_busy=False),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, parse_cpu_list(args.client_cpu))
    # SIGTERM unwinds like Ctrl+C, so the servers and clients this script started get stopped; SIGINT too when
    # a shell started the script in the background with SIGINT ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    load = loadavg()
    results: Results = {}
    cases: list[Case] = []
    steps = list(plan(args))

    def measure_all(workdir: Path) -> None:
        for i, (case, rnd, server) in enumerate(steps, 1):
            if case not in cases:
                cases.append(case)
            prefix = f"[{i}/{len(steps)}] {case.label} {server} round {rnd + 1}"
            r = measure_with_retries(server, case, args, workdir, prefix)
            results.setdefault((case, server), []).append(r)

    with tempfile.TemporaryDirectory(prefix="zonda-ws-bench-") as tmp:
        status = run_steps(lambda: measure_all(Path(tmp)))
    sys.stdout.write(report(results, cases, args, f"{load} / {loadavg()}"))
    return status


if __name__ == "__main__":
    sys.exit(main())
