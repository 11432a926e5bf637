"""Side-by-side HTTP/1.1 benchmark: zonda against uvicorn (httptools + uvloop) and granian (ASGI, uvloop),
hypercorn if asked for, one core each; zonda on trio against hypercorn on trio, and against zonda on uvloop.

Run from the repo root with the project's virtualenv (``pip install -e '.[bench]'``)::

    .venv/bin/python -m bench.run                       # everything (~35 min on idle cores)
    .venv/bin/python -m bench.run --only hello,json,echo,fastapi --duration 8 --markdown   # ~11 min
    .venv/bin/python -m bench.run --duration 3 --rounds 1 --only hello,idle   # a quick look
    .venv/bin/python -m bench.run --servers zonda,uvicorn,granian,hypercorn --floor   # more to compare with
    .venv/bin/python -m bench.run --servers zonda,zonda-trio,hypercorn-trio --only hello,json   # trio
    git worktree add /tmp/zonda-base REV; .venv/bin/python -m bench.run --servers zonda,zonda-base \
        --base-src /tmp/zonda-base/src --only hello,json,echo   # this tree against REV, side by side
    .venv/bin/python -m bench.run --json out.json; .venv/bin/python -m bench.run --report out.json --markdown

Workloads (issue 17's list): ``hello`` (13 bytes; ``hello-c256`` the same with 256 connections), ``json`` (a
small dict), ``json-1k`` (ten objects, ~1 KiB), ``echo`` and ``echo-1k`` (a 64 KiB and a 1 KiB POST echoed
back), ``stream`` (1 MiB in sixteen body messages, chunked) are plain ASGI apps from bench/apps.py; ``fastapi``
is bench/fastapi_app.py, an idiomatic FastAPI app with one ``@app.middleware("http")`` and a route returning a
pydantic model. Every server serves the same app. ``idle`` measures memory per idle keep-alive connection.
HTTP/2, WebSocket and WSGI have their own scripts (bench/h2.py, bench/ws.py, bench/wsgi.py).

Servers (``--servers``): ``zonda`` (``--loop uvloop``), ``uvicorn`` (``--http httptools``), ``uvicorn-zttp``
(``--http zttp``), ``granian``, ``hypercorn`` (``--worker-class uvloop``) by default, and on trio ``zonda-trio`` (``--loop trio``) and ``hypercorn-trio``
(``--worker-class trio``, the same config file as hypercorn); ``zonda-base`` is zonda imported from another
checkout's ``--base-src`` (a before/after comparison in one run). The ratios divide each zonda by every other server on its
event loop (uvloop with uvloop, trio with trio), and zonda on trio by zonda on uvloop when both ran.

How it measures:

- Each server runs alone (never two at once), pinned with ``taskset -c 0`` (``--server-cpu``); ``wrk -t1``
  runs pinned to core 1 (``--client-cpu``), and so does this script. Rounds are interleaved: for each
  workload, round 1 runs zonda, uvicorn, granian in turn, round 2 the same, and so on, with a fresh
  server process for every (workload, round, server) and a short unmeasured ``wrk`` warm-up before the
  measured run, so a slow drift of the shared VM spreads over all servers instead of landing on one.
  Their commands are in ``server_command`` and in the report's environment lines.
- Requests/s and the request count come from wrk's Lua ``done()`` summary (printed as one JSON line),
  not from scraping its text output. Server CPU is utime+stime from ``/proc/PID/stat`` of the server and
  any children (granian and both hypercorns serve from a worker under a parent), read right before and right
  after wrk; divided by wrk's request count it gives µs of server CPU per request, steadier than
  requests/s on a shared machine. wrk's own CPU share is reported too, to show it was not the limit.
- Every answer is checked: the wrk script's ``response()`` counts statuses outside 2xx (wrk itself counts
  only those above 399). A round with any such answer or any socket error is marked FAILED in the
  tables and ratios, listed at the top of the report, and makes the exit status 1.
- Where the time goes (fastapi): each round ends with bench/inprocess.py calling the same app in-process,
  without a server, at the ASGI spec_version each server announced (Starlette does more per response
  below 2.4); a server's CPU per request minus the app's alone is the server's share.
- Other load: before each server starts, the script waits (up to ``--quiet-wait`` s) until every core has
  been idle for a few seconds, and holds an flock (``--lock``) for the measurement so benchmark scripts
  that take the same lock take turns. It measures how busy the server and client cores were with other
  processes during the run; a round above 5% is re-run (``--retries``), the quietest attempt is kept,
  and rounds still above it are marked ``*`` and left out of the medians (unless all are).
- Idle keep-alive memory: start the server with a 60 s keep-alive timeout (granian has none to set),
  make a few requests, read VmRSS (of the process tree), open ``--idle-connections`` connections from
  this process and make one GET on each (so each is a real keep-alive connection that has served a
  request; ``--idle-connect-only`` just connects), wait ``--idle-settle`` seconds, read VmRSS again,
  check the connections are still open, close them.

Only processes this script starts are stopped, by pid: SIGTERM, then SIGKILL after a grace period, also
on Ctrl+C and errors. All traffic goes to 127.0.0.1 on ports picked by binding port 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import bench.http1
from bench.harness import (
    HYPERCORN_CONFIG,
    LoadMeter,
    add_machine_args,
    bench_lock,
    children_cpu_ticks,
    commit_rows,
    csv_of,
    environment,
    fmt_rps,
    loadavg,
    parse_cpu_list,
    program_of,
    quietest,
    raise_nofile_limit,
    run_load,
    run_steps,
    run_wrk,
    setup_logging,
    under_load,
    wait_for_quiet,
    zonda_commit,
)
from bench.harness import Round as BaseRound
from bench.http1 import (
    DEFAULT_SERVERS,
    SERVER_LOOPS,
    SERVERS,
    WORKLOAD_SPECS,
    WORKLOADS,
    Http1Server,
    Workload,
    check_response,
    measure_idle,
    server_command,
    write_lua,
)
from bench.http1_results import (
    IN_PROCESS,
    IN_PROCESS_LOOP,
    InProcessRound,
    Results,
    Round,
    error_detail,
    report,
    results_from_json,
    results_to_json,
)

log = logging.getLogger("bench")

SECTIONS = (*WORKLOADS, "idle")


# --------------------------------------------------------------------------- measuring


def measure_round(server: str, workload: Workload, args: argparse.Namespace, workdir: Path) -> Round:
    script = write_lua(workdir, workload)
    with Http1Server(server, workload.app, args.server_cpu, workdir) as srv:
        asgi_spec = check_response(srv.port, workload)
        connections = workload.connections or args.connections
        if args.warmup > 0:
            run_wrk(srv.port, script, args.warmup, connections, args.client_cpu, path=workload.path)
        (summary, out), cpu_s, client_cpu_s, noise = under_load(
            srv,
            args.server_cpu,
            args.client_cpu,
            lambda: run_wrk(
                srv.port, script, args.duration, connections, args.client_cpu, path=workload.path
            ),
        )
    errors = {k: int(summary[k]) for k in ("connect", "read", "write", "timeout")}
    # non_2xx covers wrk's own "status" count (answers above 399); it is null only without the tally
    errors["non_2xx"] = int(summary["status"] if summary["non_2xx"] is None else summary["non_2xx"])
    result = Round(
        requests=int(summary["requests"]),
        duration_s=summary["duration_us"] / 1e6,
        bytes_read=int(summary["bytes"]),
        errors=errors,
        lat_p99_us=summary["lat_p99_us"],
        client_cpu_s=client_cpu_s,
        asgi_spec=asgi_spec,
        cpu_s=cpu_s,
        noise=noise,
    )
    if result.error_count:
        log.error("%s %s: FAILED: %s\n%s", server, workload.name, error_detail(errors), out)
    return result


def measure_in_process(spec_version: str, args: argparse.Namespace) -> InProcessRound:
    """bench/inprocess.py on the fastapi app, pinned to the server core for ``--duration`` seconds."""
    workload = WORKLOAD_SPECS["fastapi"]
    argv = ["taskset", "-c", args.server_cpu, *in_process_command(spec_version, args)]
    meter = LoadMeter(parse_cpu_list(args.server_cpu))
    ticks_before = children_cpu_ticks(own=False)
    out = run_load(IN_PROCESS, argv, args.duration)
    noise = meter.busy_share(children_cpu_ticks(own=False) - ticks_before)
    for line in out.splitlines():
        if line.startswith("INPROCESS "):
            item = json.loads(line.removeprefix("INPROCESS "))
            break
    else:
        raise RuntimeError(f"no INPROCESS line from bench/inprocess.py {workload.app}:\n{out}")
    return InProcessRound(
        requests=item["calls"],
        duration_s=item["seconds"],
        cpu_s=item["cpu_s"],
        noise=(noise, 0.0),
        spec_version=spec_version,
    )


def in_process_command(
    spec_version: str, args: argparse.Namespace, python: str = sys.executable
) -> list[str]:
    """bench/inprocess.py on the fastapi app for ``--duration`` s, as many callers at once as wrk has
    connections (with many requests in flight the app costs more than one at a time: more live objects
    for the garbage collector, colder caches)."""
    workload = WORKLOAD_SPECS["fastapi"]
    return [python, "-m", "bench.inprocess", workload.app, "--path", workload.path, "--spec-version",
            spec_version, "--seconds", str(args.duration), "--concurrency", str(args.connections)]  # fmt: skip


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="whole seconds per measured wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per (server, workload) (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument(
        "--only", type=csv_of(str, SECTIONS), default=list(SECTIONS), help=f"{','.join(SECTIONS)} (all)"
    )
    p.add_argument(
        "--servers",
        type=csv_of(str, SERVERS),
        default=list(DEFAULT_SERVERS),
        help=f"any of {','.join(SERVERS)} ({','.join(DEFAULT_SERVERS)})",
    )
    p.add_argument("--floor", action="store_true", help="also run bench/floor.py under the hello workloads")
    p.add_argument("--base-src", help="the src directory zonda-base imports zonda from")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured wrk seconds before each run (2)")
    p.add_argument("--idle-connections", type=int, default=5000, help="idle keep-alive connections (5000)")
    p.add_argument("--idle-connect-only", action="store_true", help="connect only, no request on each")
    p.add_argument("--idle-settle", type=float, default=2.0, help="seconds to wait before reading RSS (2)")
    add_machine_args(p, "wrk")
    return p.parse_args(argv)


def describe_round(prefix: str, what: str) -> Callable[[BaseRound], None]:
    def describe(r: BaseRound) -> None:
        log.info(
            "%s: %s %s/s, %.1f µs CPU/%s, CPU %.0f%%, other load on server/client core %s",
            prefix, fmt_rps(r.rps), what, r.cpu_us_per_req, what, r.cpu_share * 100,
            "/".join(f"{n * 100:.0f}%" for n in r.noise),
        )  # fmt: skip

    return describe


def measure_with_retries(
    server: str, workload: Workload, args: argparse.Namespace, workdir: Path, prefix: str
) -> Round:
    return quietest(
        lambda: measure_round(server, workload, args, workdir),
        describe_round(prefix, "req"),
        prefix,
        args.retries,
        lambda: wait_for_quiet(args.quiet_wait),
        args.lock,
    )


def plan(args: argparse.Namespace) -> Iterator[tuple[str, str, int]]:
    """(section, server, round) in run order: rounds interleaved across servers; in the fastapi section
    each round ends with the app alone (IN_PROCESS)."""
    for section in SECTIONS:
        if section not in args.only:
            continue
        servers = list(args.servers)
        if section in ("hello", "hello-c256") and args.floor:
            servers.append("floor")
        if section == "fastapi":
            servers.append(IN_PROCESS)
        for rnd in range(args.rounds):
            for server in servers:
                yield section, server, rnd


def announced_specs(results: Results, servers: Sequence[str]) -> list[str]:
    """The ASGI spec_versions the servers on IN_PROCESS_LOOP announced in the fastapi rounds so far."""
    on_loop = [s for s in servers if SERVER_LOOPS[s] == IN_PROCESS_LOOP]
    return sorted(
        {r.asgi_spec for s in on_loop for r in results.rounds.get((s, "fastapi"), ()) if r.asgi_spec}
    )


def run_environment(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The environment lines: machine, Python, versions, and the commands each server and wrk ran."""
    hypercorn = any(program_of(s) == "hypercorn" for s in args.servers)
    trio = any(SERVER_LOOPS[s] == "trio" for s in args.servers)
    packages = ["uvloop", "httptools", "uvicorn", "granian", *(["hypercorn"] if hypercorn else [])]
    packages += ["trio"] if trio else []
    if "fastapi" in args.only:
        packages += ["fastapi", "starlette", "pydantic"]
    env = [*environment(packages), ("wrk", wrk_version())]
    pin = f"taskset -c {args.server_cpu} "
    for server in args.servers:
        cmd = server_command(server, "APP", "PORT", None, Path("TMP"), python="python")
        env.append((f"{server} command", f"`{pin}{shlex.join(cmd)}`"))
    if hypercorn:
        env.append(("TMP/hypercorn.toml", "`" + HYPERCORN_CONFIG.splitlines()[-1] + "`"))
    if "fastapi" in args.only:
        cmd = in_process_command("SPEC", args, python="python")
        env.append((f"{IN_PROCESS} command", f"`{pin}{shlex.join(cmd)}`"))
    env.append(("wrk command", f"`taskset -c {args.client_cpu} wrk -t1 -c{args.connections} -d{args.duration}s "
                "--timeout 10s -s SCRIPT http://127.0.0.1:PORT/PATH`"))  # fmt: skip
    own = [
        f"{name} -c{spec.connections}"
        for name, spec in WORKLOAD_SPECS.items()
        if name in args.only and spec.connections
    ]
    if own:
        env.append(("connections of their own", ", ".join(own)))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if args.base_src is not None:
        bench.http1.BASE_SRC = Path(args.base_src).resolve()
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
        results = results_from_json(saved)
        sys.stdout.write(report(results, argparse.Namespace(**saved["args"]), saved["env"], args.markdown))
        return 1 if results.failures() else 0
    env = run_environment(args)
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    commit_start, load_start = zonda_commit(), loadavg()
    results = Results()
    steps = list(plan(args))

    def measure_all(workdir: Path) -> None:
        (workdir / "hypercorn.toml").write_text(HYPERCORN_CONFIG)
        for i, (section, server, rnd) in enumerate(steps, 1):
            prefix = f"[{i}/{len(steps)}] {section} {server} round {rnd + 1}"
            if section == "idle":
                with bench_lock(args.lock):
                    wait_for_quiet(args.quiet_wait)
                    try:
                        idle = measure_idle(server, args, workdir)
                    except OSError as exc:  # a GET left unanswered (granian, once): the others still measure
                        log.warning(
                            "%s: failed, left out of the table: %s", prefix, exc or type(exc).__name__
                        )
                        continue
                results.idle.setdefault(server, []).append(idle)
                log.info("%s: %.2f KiB/conn", prefix, idle.kib_per_conn)
            elif server == IN_PROCESS:
                for spec in announced_specs(results, args.servers):
                    at = f"{prefix} spec_version {spec}"
                    ir = quietest(
                        lambda spec=spec: measure_in_process(spec, args),  # type: ignore[misc]
                        describe_round(at, "call"),
                        at,
                        args.retries,
                        lambda: wait_for_quiet(args.quiet_wait),
                        args.lock,
                    )
                    results.in_process.setdefault(spec, []).append(ir)
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
    if results.failures():
        log.error("FAILED: %s", "; ".join(results.failures()))
        status = status or 1
    return status


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return " ".join(out.split()[:2])


if __name__ == "__main__":
    sys.exit(main())
