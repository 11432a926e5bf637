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
import http.client
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    HELLO_BODY,
    LUA_DONE,
    NOISE_LIMIT,
    REPO,
    ROUND_HEADER,
    ServerProcess,
    add_machine_args,
    bench_lock,
    clean,
    commit_rows,
    csv_of,
    environment,
    fmt_rps,
    format_env,
    loadavg,
    markdown_table,
    median,
    noise_cell,
    quietest,
    raise_nofile_limit,
    ratio_cells,
    round_cells,
    round_from_json,
    run_steps,
    run_wrk,
    setup_logging,
    text_table,
    under_load,
    wait_for_quiet,
    zonda_commit,
)
from bench.harness import Round as BaseRound

log = logging.getLogger("bench")

SERVERS = ("zonda", "uvicorn")
WORKLOADS = ("hello", "json", "echo")
SECTIONS = (*WORKLOADS, "idle")
ECHO_BODY_SIZE = 64 * 1024


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

LUA_POST = """
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


# --------------------------------------------------------------------------- results


@dataclass
class Round(BaseRound):
    """One wrk run: what its Lua summary reports on top of the shared round."""

    bytes_read: int
    errors: dict[str, int]
    lat_p99_us: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


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


# --------------------------------------------------------------------------- processes


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


class Http1Server(ServerProcess):
    """zonda, uvicorn or the floor serving ``app``; ``keep_alive`` for the idle-connection section."""

    def __init__(self, server: str, app: str, cpu: str, logdir: Path, keep_alive: float | None = None):
        super().__init__(server, cpu, logdir)
        self.app = app
        self.keep_alive = keep_alive

    def command(self) -> list[str]:
        return server_command(self.name, self.app, self.port, self.keep_alive)


# --------------------------------------------------------------------------- wrk


def write_lua(workdir: Path, workload: Workload) -> Path:
    path = workdir / f"{workload.name}.lua"
    text = LUA_DONE
    if workload.method == "POST":
        text = LUA_POST.replace("{size}", str(workload.body_size)) + text
    path.write_text(text)
    return path


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
    with Http1Server(server, workload.app, args.server_cpu, workdir) as srv:
        check_response(srv.port, workload)
        if args.warmup > 0:
            run_wrk(srv.port, script, args.warmup, args.connections, args.client_cpu)
        (summary, out), cpu_s, _, noise = under_load(
            srv,
            args.server_cpu,
            args.client_cpu,
            lambda: run_wrk(srv.port, script, args.duration, args.connections, args.client_cpu),
        )
    errors = {k: int(summary[k]) for k in ("connect", "read", "write", "timeout", "status")}
    result = Round(
        requests=int(summary["requests"]),
        duration_s=summary["duration_us"] / 1e6,
        bytes_read=int(summary["bytes"]),
        errors=errors,
        lat_p99_us=summary["lat_p99_us"],
        cpu_s=cpu_s,
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
    with Http1Server(server, "bench.apps:hello", args.server_cpu, workdir, keep_alive=60) as srv:
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


def throughput_rows(results: Results, workloads: Sequence[str], servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for wl in workloads:
        for server in servers:
            rounds = results.rounds.get((server, wl))
            if not rounds:
                continue
            rows.append(
                [
                    wl,
                    server,
                    *round_cells(rounds),
                    f"{median([r.lat_p99_us for r in clean(rounds)]) / 1000:.2f}",
                    f"{median([r.bytes_read / r.requests for r in rounds if r.requests]):,.0f}",
                    str(sum(r.error_count for r in rounds)),
                    noise_cell(rounds),
                ]
            )
    return rows


THROUGHPUT_HEADER = [
    "workload",
    "server",
    *ROUND_HEADER,
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
        rows.append([wl, *ratio_cells(z, u)])
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


def report(results: Results, args: argparse.Namespace, env: Sequence[Sequence[str]], markdown: bool) -> str:
    workloads = [w for w in WORKLOADS if w in args.only]
    servers = [*args.servers, *(["floor"] if args.floor else [])]
    tput = throughput_rows(results, workloads, servers)
    ratios = ratio_rows(results, workloads)
    idle = idle_rows(results, args.servers)
    table = markdown_table if markdown else text_table
    parts = [format_env(env, markdown)]
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="whole seconds per measured wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per (server, workload) (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument(
        "--only", type=csv_of(str, SECTIONS), default=list(SECTIONS), help="hello,json,echo,idle (all)"
    )
    p.add_argument("--servers", type=csv_of(str, SERVERS), default=list(SERVERS), help="zonda,uvicorn")
    p.add_argument("--floor", action="store_true", help="also run bench/floor.py under the hello workload")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured wrk seconds before each run (2)")
    p.add_argument("--idle-connections", type=int, default=5000, help="idle keep-alive connections (5000)")
    p.add_argument("--idle-connect-only", action="store_true", help="connect only, no request on each")
    p.add_argument("--idle-settle", type=float, default=2.0, help="seconds to wait before reading RSS (2)")
    add_machine_args(p, "wrk")
    return p.parse_args(argv)


def measure_with_retries(
    server: str, workload: Workload, args: argparse.Namespace, workdir: Path, prefix: str
) -> Round:
    def describe(r: Round) -> None:
        log.info(
            "%s: %s req/s, %.1f µs CPU/req, server CPU %.0f%%, other load on server/client core %s",
            prefix, fmt_rps(r.rps), r.cpu_us_per_req, r.cpu_share * 100,
            "/".join(f"{n * 100:.0f}%" for n in r.noise),
        )  # fmt: skip

    return quietest(
        lambda: measure_round(server, workload, args, workdir),
        describe,
        prefix,
        args.retries,
        lambda: wait_for_quiet(args.quiet_wait),
        args.lock,
    )


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
    setup_logging(args.verbose)
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
    env = [*environment(("uvloop", "httptools", "uvicorn")), ("wrk", wrk_version())]
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    commit_start, load_start = zonda_commit(), loadavg()
    results = Results()
    steps = list(plan(args))

    def measure_all(workdir: Path) -> None:
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

    with tempfile.TemporaryDirectory(prefix="zonda-bench-") as tmp:
        status = run_steps(lambda: measure_all(Path(tmp)))
    env += commit_rows(commit_start)
    env += [("load average before / after", f"{load_start} / {loadavg()}"), ("command", f"`{command}`")]
    if args.json:
        saved = {"args": vars(args), "env": env, **results_to_json(results)}
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    sys.stdout.write(report(results, args, env, args.markdown))
    return status


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return " ".join(out.split()[:2])


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
        results.rounds.setdefault((server, wl), []).append(round_from_json(Round, item))
    for item in saved["idle"]:
        results.idle.setdefault(item.pop("server"), []).append(IdleRound(**item))
    return results


if __name__ == "__main__":
    sys.exit(main())
