"""Two workers each: zonda ``--workers 2`` against uvicorn ``--workers 2`` and gunicorn with uvicorn's worker.

Run from the repo root with the project's virtualenv (``pip install -e '.[bench]'`` brings uvicorn, gunicorn
and uvicorn-worker)::

    .venv/bin/python -m bench.workers                        # 3 rounds of 10 s per server
    .venv/bin/python -m bench.workers --markdown --append bench/RESULTS.md

How it measures: every server runs the same plain-ASGI hello app (``bench.apps:hello``) with two worker
processes on one loopback port, never two servers at once. No pinning: the workers take both cores and ``wrk
-t1`` shares them (this machine has two), so the numbers compare servers under the same squeeze, not the
machine's ceiling. Rounds are interleaved (round 1: every server, round 2: every server, ...), each on a fresh
server with an unmeasured warm-up first. Requests/s and p99 come from wrk's Lua summary; server CPU is
utime+stime of the whole process tree (supervisor or arbiter and workers) from /proc, before and after, and
the split between the two busiest processes shows whether both workers took a share.

Only processes this script starts are stopped, by pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    CLK_TCK,
    HELLO_BODY,
    LUA_DONE,
    ServerProcess,
    children_cpu_ticks,
    http_get,
    package_version,
    proc_cpu_ticks,
    process_tree,
    python_build,
    round_parser,
    run_wrk,
)

log = logging.getLogger("bench.workers")

APP = "bench.apps:hello"
SERVERS = ("zonda", "zonda-reuse-port", "uvicorn", "gunicorn")


def command(server: str, port: int) -> list[str]:
    py = sys.executable
    if server.startswith("zonda"):
        cmd = [py, "-m", "zonda", APP, "--workers", "2", "--port", str(port)]
        cmd += ["--no-access-log", "--log-level", "warning", "--loop", "uvloop"]
        return cmd + (["--reuse-port"] if server == "zonda-reuse-port" else [])
    if server == "uvicorn":
        return [py, "-m", "uvicorn", APP, "--workers", "2", "--http", "httptools", "--loop", "uvloop",
                "--no-access-log", "--log-level", "warning", "--port", str(port)]  # fmt: skip
    if server == "gunicorn":
        return [py, "-m", "gunicorn", APP, "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    raise ValueError(server)


class Server(ServerProcess):
    """A server with two worker processes, not pinned: ready once it has them and answers."""

    start_timeout = 30.0
    stop_grace = 15.0

    def __init__(self, name: str, logdir: Path) -> None:
        super().__init__(name, None, logdir)

    def command(self) -> list[str]:
        return command(self.name, self.port)

    def probe(self) -> None:
        if len(process_tree(self.pid)) < 3 or http_get(self.port)[1] != HELLO_BODY:
            raise ConnectionError(f"{self.name} is still starting")

    def start(self) -> None:
        super().start()
        time.sleep(0.5)  # let the second worker finish starting too


@dataclass
class Round:
    rps: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float
    split: tuple[float, float]  # the two busiest processes' share of the tree's CPU
    foreign: float  # share of both cores busy with processes that are neither the server nor wrk


def busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks over all cores from /proc/stat; busy includes steal."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total


def wait_for_quiet(max_wait: float, limit: float = 0.10, quiet_seconds: int = 2) -> None:
    """Before a round: wait (up to max_wait s) until the cores have been at most `limit` busy for
    `quiet_seconds` seconds in a row."""
    deadline = time.monotonic() + max_wait
    quiet = 0
    before = busy_ticks()
    while quiet < quiet_seconds:
        time.sleep(1.0)
        after = busy_ticks()
        share = (after[0] - before[0]) / max(1, after[1] - before[1])
        before = after
        quiet = quiet + 1 if share <= limit else 0
        if not quiet and time.monotonic() >= deadline:
            log.warning("machine still %.0f%% busy after %.0fs; measuring anyway", share * 100, max_wait)
            return


def measure(server: Server, script: Path, args: argparse.Namespace) -> Round:
    run_wrk(server.port, script, args.warmup, args.connections)
    pids = process_tree(server.pid)
    before = {pid: proc_cpu_ticks(pid) for pid in pids}
    machine_before, wrk_before = busy_ticks(), children_cpu_ticks(own=False)
    summary, _ = run_wrk(server.port, script, args.duration, args.connections)
    after = {pid: proc_cpu_ticks(pid) for pid in pids}
    machine_after, wrk_after = busy_ticks(), children_cpu_ticks(own=False)
    used = {pid: after[pid] - before[pid] for pid in pids}
    total = sum(used.values())
    busy = machine_after[0] - machine_before[0] - total - (wrk_after - wrk_before)
    span = machine_after[1] - machine_before[1]
    top = [*sorted(used.values(), reverse=True)[:2], 0, 0]
    requests = summary["requests"]
    return Round(
        rps=requests / (summary["duration_us"] / 1e6),
        p99_ms=summary["lat_p99_us"] / 1000,
        errors=summary["errors"],
        cpu_us_per_req=total / CLK_TCK * 1e6 / requests if requests else float("nan"),
        split=(top[0] / total if total else 0.0, top[1] / total if total else 0.0),
        foreign=max(0.0, busy) / span if span else 0.0,
    )


def version(package: str) -> str:
    return package_version(package) or "?"


def markdown(results: dict[str, list[Round]], args: argparse.Namespace) -> str:
    lines = [
        "## Workers",
        "",
        f"`python -m bench.workers --rounds {args.rounds} --duration {args.duration:g}"
        f" --connections {args.connections}`, {time.strftime('%Y-%m-%d')}: the plain-ASGI hello app"
        f" (`{APP}`), two worker processes per server, `wrk -t1 -c{args.connections}` on loopback,"
        f" {args.rounds} interleaved rounds of {args.duration:g} s each (fresh server, unmeasured"
        f" {args.warmup:g} s warm-up), medians shown. {os.cpu_count()} cores, nothing pinned: **the load"
        " generator shares the two cores with the workers**, so these compare servers under the same"
        " squeeze rather than show the machine's ceiling. Server CPU is the whole process tree"
        " (supervisor or arbiter plus workers); the split is the two busiest processes' share of it. Foreign"
        " load is the share of both cores busy with other processes during the round; each round waits for"
        f" a quiet machine (up to {args.quiet_wait:g} s) and one above"
        f" {args.noise_limit * 100:.0f}% is run again, up to {args.retries} times): other sessions share this"
        " machine, so rounds vary; the CPU per request varies much less than requests/s.",
        "",
        f"{python_build()}, zonda {version('zonda')}, uvicorn {version('uvicorn')},"
        f" gunicorn {version('gunicorn')}, uvicorn-worker {version('uvicorn-worker')},"
        f" uvloop {version('uvloop')}, httptools {version('httptools')}.",
        "",
        "| server | command | req/s (each round) | p99 ms | server CPU µs/req | CPU split | foreign load | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    shown = {
        "zonda": "`zonda --workers 2`",
        "zonda-reuse-port": "`zonda --workers 2 --reuse-port`",
        "uvicorn": "`uvicorn --workers 2`",
        "gunicorn": "`gunicorn -k uvicorn_worker.UvicornWorker -w 2`",
    }
    for name, rounds in results.items():
        rps = statistics.median(r.rps for r in rounds)
        p99 = statistics.median(r.p99_ms for r in rounds)
        cpu = statistics.median(r.cpu_us_per_req for r in rounds)
        split = statistics.median(r.split[0] for r in rounds), statistics.median(r.split[1] for r in rounds)
        errors = sum(r.errors for r in rounds)
        all_rps = ", ".join(f"{r.rps:,.0f}" for r in rounds)
        foreign = max(r.foreign for r in rounds)
        lines.append(
            f"| {name} | {shown[name]} | {rps:,.0f} ({all_rps}) | {p99:.2f} | {cpu:.1f}"
            f" | {split[0] * 100:.0f}% / {split[1] * 100:.0f}% | ≤{foreign * 100:.0f}% | {errors} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = round_parser(__doc__)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--noise-limit", type=float, default=0.10, help="foreign load that voids a round")
    parser.add_argument("--retries", type=int, default=3, help="re-runs of a round over the noise limit")
    parser.add_argument("--quiet-wait", type=float, default=60, help="longest wait for a quiet machine (s)")
    parser.add_argument("--markdown", action="store_true", help="print the RESULTS.md section")
    parser.add_argument("--append", metavar="FILE", help="append the section to FILE (never overwrites)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    servers = [s for s in args.servers.split(",") if s]
    results: dict[str, list[Round]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory(prefix="zonda-bench-") as tmp:
        script = Path(tmp) / "done.lua"
        script.write_text(LUA_DONE)
        for round_number in range(1, args.rounds + 1):
            for name in servers:
                for attempt in range(args.retries + 1):
                    wait_for_quiet(args.quiet_wait)
                    with Server(name, Path(tmp)) as server:
                        result = measure(server, script, args)
                    if result.foreign <= args.noise_limit or attempt == args.retries:
                        break
                    log.info(
                        "round %d %s: %.0f%% foreign load, again", round_number, name, result.foreign * 100
                    )
                results[name].append(result)
                log.info(
                    "round %d %-16s %8.0f req/s  p99 %.2f ms  %.1f µs CPU/req  split %.0f/%.0f%%  errors %d"
                    "  foreign %.0f%%",
                    round_number,
                    name,
                    result.rps,
                    result.p99_ms,
                    result.cpu_us_per_req,
                    result.split[0] * 100,
                    result.split[1] * 100,
                    result.errors,
                    result.foreign * 100,
                )
    section = markdown(results, args)
    if args.markdown:
        sys.stdout.write(section)
    if args.append:
        path = Path(args.append)
        existing = path.read_text() if path.exists() else ""
        with open(path, "a") as file:
            if existing and not existing.endswith("\n\n"):
                file.write("\n" if existing.endswith("\n") else "\n\n")
            file.write(section)


if __name__ == "__main__":
    main()
