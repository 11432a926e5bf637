"""What observability costs: zonda's hello throughput with the access log off, in the default ``zonda.access``
logger line, in a custom format, as JSON, with metrics on, and with OpenTelemetry tracing (``--otel``) at
sampling ratios 1.0 and 0.1, as ratios to "off".

Run from the repo root with the project's virtualenv (prometheus_client installed for the metrics row, the
``otel`` extra for the tracing rows)::

    .venv/bin/python bench/observability.py                      # 3 rounds x 7 variants x 10 s, ~4 minutes
    .venv/bin/python bench/observability.py --append-results     # also append a section to bench/RESULTS.md
    .venv/bin/python bench/observability.py --duration 3 --rounds 1
    .venv/bin/python bench/observability.py --variants off,metrics --rounds 7 --duration 6

How it measures:

- ``python -m zonda bench.apps:hello`` runs alone, pinned with ``taskset -c 0``, one process, uvloop, with
  ``--log-level warning`` except for the ``logger`` variant (the stdlib ``zonda.access`` line needs info).
  ``wrk -t1 -c64 -d10s`` runs pinned with ``taskset -c 1``; its Lua ``done()`` prints the request count.
- Rounds are interleaved (round 1 runs every variant, then round 2 ...), a fresh server each time, with a
  2 s unmeasured warm-up, so a drift of the shared machine spreads over all variants. Medians of the rounds.
- Server CPU is utime+stime from ``/proc/PID/stat`` read right before and after wrk: µs per request is the
  steadier number when the machine is noisy.
- The access log variants write to a file in a temporary directory (``--access-log-file``); the script
  checks afterwards that it holds one line per request served.
- The tracing variants run ``--otel`` with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and
  ``OTEL_TRACES_SAMPLER_ARG`` 1.0 or 0.1 (wrk sends no traceparent: every request is a root, sampled at that
  ratio), exporting with the SDK's defaults (BatchSpanProcessor, OTLP/HTTP protobuf) to a receiver in this
  script that reads each POST and discards it. The export (encoding, HTTP) runs in the server's own exporter
  thread, so it is in the server's CPU; spans the SDK drops when its queue is full (its warning in the
  server's log) are counted and reported.
- Then, unless ``--no-in-process``, the same variants in process, without sockets: the real driver, bridge,
  core and hooks fed ``GET /`` through a fake transport, 40,000 requests per run (the loop turns once per
  request, so the app's task runs and timers fire, the access log's batches too), 7 interleaved runs, thread
  CPU time, best run. On a shared machine this is the steadier number; it leaves out the kernel's share, so its
  percentages are of a smaller base. Tracing there ends its spans into a BatchSpanProcessor whose exporter
  discards them: the serving thread's own cost (span, attributes, context, events), not the export.
- Then, unless ``--no-instructions`` (or without valgrind), user-space instructions per request of the same
  in-process run under ``valgrind --tool=cachegrind``: the difference of a 12,000- and a 2,000-request run
  over 10,000, ``PYTHONHASHSEED=0``. Deterministic: the number to compare when the machine is noisy (every
  variant's, though the access log's variants rebuild their cached time text more often at valgrind's pace,
  and the tracing ones count their exporter thread too). The metrics flush timer is left out of these runs
  (see ``in_process_once``).

Only processes this script starts are stopped, by pid. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if not __package__:  # run as a file (bench/observability.py, and its in-process child): import bench
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    HELLO_BODY,
    LUA_DONE,
    REPO,
    ServerProcess,
    http_get,
    python_build,
    round_parser,
    run_wrk,
)

if TYPE_CHECKING:
    from zonda.otel import Tracing

PLAIN = '{time} {client} - "{method} {target} {protocol}" {status} {bytes} {duration_ms:.1f}ms'
VARIANTS: dict[str, list[str]] = {
    "off": ["--no-access-log"],
    "logger": ["--log-level", "info"],  # the default zonda.access line through stdlib logging
    "plain": ["--access-log-format", PLAIN, "--access-log-file", "{log}"],
    "json": ["--access-log-json", "--access-log-file", "{log}"],
    "metrics": ["--no-access-log", "--metrics-bind", "127.0.0.1:0"],
    "otel": ["--no-access-log", "--otel"],
    "otel-0.1": ["--no-access-log", "--otel"],
}
SAMPLING = {"otel": "1.0", "otel-0.1": "0.1"}  # OTEL_TRACES_SAMPLER_ARG of the tracing variants
LABELS = {
    "off": "access log off",
    "logger": "default `zonda.access` logger line",
    "plain": "`--access-log-format` (plain line, to a file)",
    "json": "`--access-log-json` (to a file)",
    "metrics": "`--metrics-bind` (metrics on, access log off)",
    "otel": "`--otel`, sampling 1.0 (access log off)",
    "otel-0.1": "`--otel`, sampling 0.1 (access log off)",
}


@dataclass
class Round:
    requests: int
    seconds: float
    cpu_s: float
    dropped: int = 0  # the SDK's "queue full, dropping" warnings in the server's log (tracing variants)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.requests


class DiscardingCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1 that reads every export and answers 200, keeping nothing."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the exporter's session reuses its connection

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ObservedZonda(ServerProcess):
    """zonda serving the hello app with one variant's flags, ready once it answers the hello response."""

    stop_grace = 10.0
    whole_tree = False  # one process: its own /proc/PID/stat

    def __init__(
        self, variant: str, args: argparse.Namespace, workdir: Path, collector: str | None = None
    ) -> None:
        super().__init__(f"zonda-{variant}", args.server_cpu, workdir)
        self.access_log = workdir / f"{variant}-{self.port}.access.log"
        self.flags = [flag.replace("{log}", str(self.access_log)) for flag in VARIANTS[variant]]
        self.env: list[str] = []
        if variant in SAMPLING:
            self.env = [
                f"OTEL_EXPORTER_OTLP_ENDPOINT={collector}",
                "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                f"OTEL_TRACES_SAMPLER_ARG={SAMPLING[variant]}",
            ]

    def command(self) -> list[str]:
        # env(1) execs the server, as taskset does: the pid stays the server's
        argv = [*(["env", *self.env] if self.env else []), sys.executable, "-m", "zonda", "bench.apps:hello"]
        return [*argv, "--port", str(self.port), "--loop", "uvloop", "--log-level", "warning", *self.flags]

    def probe(self) -> None:
        if http_get(self.port)[1] != HELLO_BODY:
            raise ConnectionError(f"{self.name} is still starting")


def measure(variant: str, args: argparse.Namespace, workdir: Path, collector: str | None) -> Round:
    script = workdir / "summary.lua"
    script.write_text(LUA_DONE)
    with ObservedZonda(variant, args, workdir, collector) as srv:
        run_wrk(srv.port, script, args.warmup, args.connections, args.client_cpu, request_timeout=None)
        before = srv.cpu_seconds()
        summary, _ = run_wrk(
            srv.port, script, args.duration, args.connections, args.client_cpu, request_timeout=None
        )
        used = srv.cpu_seconds() - before
    if summary["errors"]:
        print(f"  warning: wrk reported {summary['errors']} errors", file=sys.stderr)
    if variant in ("plain", "json"):
        lines = sum(1 for _ in srv.access_log.open("rb"))
        if lines < summary["requests"]:  # warm-up and readiness requests are in the file too
            raise RuntimeError(f"{variant}: {lines} access lines for {summary['requests']} requests")
        srv.access_log.unlink()
    dropped = srv.log_path.read_text(errors="replace").count("dropping") if variant in SAMPLING else 0
    if dropped:
        print(f"  {variant}: the SDK dropped spans {dropped} time(s) (queue full)", file=sys.stderr)
    return Round(summary["requests"], summary["duration_us"] / 1e6, used, dropped)


IN_PROCESS: dict[str, dict[str, object]] = {
    "off": {"access_log": False},
    "logger": {},
    "plain": {"access_log_format": PLAIN, "access_log_file": "{log}"},
    "json": {"access_log_json": True, "access_log_file": "{log}"},
    "metrics": {"access_log": False, "metrics_bind": "127.0.0.1:0"},
    "otel": {"access_log": False, "otel": True},
    "otel-0.1": {"access_log": False, "otel": True},
}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


class FakeTransport:
    """Enough of an asyncio transport for one connection's callbacks; counts the writes."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # a connection whose keep-alive timer closes it after its run asks

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def in_process_run(variant: str, count: int, workdir: Path) -> float:
    """Thread CPU µs per request for ``count`` requests through one connection's real callbacks."""
    import asyncio

    from bench.apps import hello
    from zonda import Config, Server
    from zonda.asgi.session import SessionContext
    from zonda.connection.http1 import HTTP1Connection
    from zonda.connection.shared import ServerShared
    from zonda.io.asyncio import AsyncioLoop

    options = {
        key: value.replace("{log}", str(workdir / f"{variant}.log")) if isinstance(value, str) else value
        for key, value in IN_PROCESS[variant].items()
    }
    logging.getLogger("zonda.access").setLevel(logging.INFO if variant == "logger" else logging.WARNING)
    server = Server(Config(app=hello, **options))
    loop = asyncio.get_running_loop()
    if server.config.metrics_bind:
        from zonda.metrics import Metrics

        server.metrics = Metrics()
    tracing = in_process_tracing(variant)
    span_event = None
    if tracing is not None:
        from zonda.otel import response_sent as span_event
    hook, writer = server._response_hook(loop, span_event)
    context = SessionContext(hello, {}, access_log=hook is not None, on_response=hook)
    if tracing is not None:
        from zonda.otel import install

        install(tracing, context, hello)
    shared = ServerShared(server.config, context)
    shared.refresh_date()
    if server.metrics is not None:
        server.metrics.attach(shared, loop)
    connection = HTTP1Connection(shared, AsyncioLoop(loop, set()))  # as the server makes it, metrics or not
    transport = FakeTransport()
    connection.open(transport, ("127.0.0.1", 5555), ("127.0.0.1", 8000), None)  # type: ignore[arg-type]
    start = time.thread_time()
    for _ in range(count):
        connection.data_received(REQUEST)
        await asyncio.sleep(0)  # the app's task runs (before 3.12 it starts on this turn), due timers too
    await asyncio.sleep(0)
    used = time.thread_time() - start
    if transport.writes < count:
        raise RuntimeError(f"{variant}: {transport.writes} responses for {count} requests")
    if writer is not None:
        writer.close()
    if server.metrics is not None:
        server.metrics.close()
    return used / count * 1e6


def in_process_tracing(variant: str) -> Tracing | None:
    """The variant's tracer: the SDK's provider with its sampler from the environment, as ``--otel`` builds
    it, but one per run (the global provider can be set once per process) and an exporter that discards."""
    if variant not in SAMPLING:
        return None
    from opentelemetry.propagate import get_global_textmap
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from zonda.otel import Tracing
    from zonda.proxy import TrustList

    class Discarding(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = SAMPLING[variant]
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Discarding()))
    return Tracing(
        provider.get_tracer("zonda"), get_global_textmap(), TrustList("127.0.0.1"), False, provider
    )


def in_process(variants: list[str], workdir: Path) -> dict[str, float]:

    import uvloop

    access = logging.getLogger("zonda.access")
    access.handlers[:] = [logging.FileHandler(workdir / "logger.log")]
    access.propagate = False

    async def runs() -> dict[str, float]:
        best: dict[str, float] = {}
        for _ in range(7):
            for variant in variants:
                result = await in_process_run(variant, 40_000, workdir)
                best[variant] = min(best.get(variant, result), result)
        return best

    return uvloop.run(runs())


def in_process_once(variant: str, count: int, workdir: Path) -> None:
    """One in-process run of ``count`` requests, for ``instruction_counts`` (under valgrind, ~50x slower).

    The metrics flush timer is pushed out of the run: at valgrind's pace it would fire some 50 times as often
    per request as it does at full speed (every 0.5 s: once per ~30,000 hello requests). The last flush, at
    ``Metrics.close()``, happens in the short and the long run alike, so the difference leaves it out."""
    import uvloop

    from zonda import metrics

    metrics.FLUSH_INTERVAL = 1e9
    access = logging.getLogger("zonda.access")
    access.handlers[:] = [logging.FileHandler(workdir / f"{variant}-{count}.log")]
    access.propagate = False
    uvloop.run(in_process_run(variant, count, workdir))


INSTRUCTION_RUNS = (2_000, 12_000)  # requests: the difference of the two runs, per request


def instruction_counts(variants: list[str], workdir: Path) -> dict[str, float]:
    """User-space instructions per request of each variant in process, under ``valgrind --tool=cachegrind``:
    the difference between a run of 12,000 requests and one of 2,000 (start-up, imports and the first
    requests' warm-up cancel out), divided by 10,000. Deterministic (``PYTHONHASHSEED=0``), so unlike the
    timings above it does not depend on what else the machine runs."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    counts: dict[str, float] = {}
    for variant in variants:
        refs = []
        for count in INSTRUCTION_RUNS:
            command = [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--in-process-count",
                variant,
                str(count),
                str(workdir),
            ]
            run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
            match = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
            if match is None:
                raise RuntimeError(f"no instruction count from valgrind: {run.stderr[-500:]}")
            refs.append(int(match.group(1).replace(",", "")))
        counts[variant] = (refs[1] - refs[0]) / (INSTRUCTION_RUNS[1] - INSTRUCTION_RUNS[0])
        print(f"instructions {variant:8} {counts[variant]:10,.0f} per request", flush=True)
    return counts


def report(
    results: dict[str, list[Round]],
    args: argparse.Namespace,
    cpu: dict[str, float],
    instructions: dict[str, float] | None = None,
) -> str:
    base_rps = statistics.median(r.rps for r in results["off"])
    base_cpu = statistics.median(r.us_per_request for r in results["off"])
    rows = [
        "| variant | req/s (median) | ratio to off | server CPU µs/req | CPU vs off |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, rounds in results.items():
        rps = statistics.median(r.rps for r in rounds)
        us = statistics.median(r.us_per_request for r in rounds)
        rows.append(
            f"| {LABELS[variant]} | {rps:,.0f} | {rps / base_rps:.3f} | {us:.2f} | {us / base_cpu - 1:+.1%} |"
        )
    if cpu:
        rows += [
            "",
            "In process, no sockets (thread CPU per request, best of 7 runs of 40,000 requests):",
            "",
            "| variant | µs/req | added µs/req | vs off |",
            "|---|---:|---:|---:|",
        ]
        for variant, us in cpu.items():
            rows.append(
                f"| {LABELS[variant]} | {us:.2f} | {us - cpu['off']:+.2f} | {us / cpu['off'] - 1:+.1%} |"
            )
    if instructions:
        base = instructions["off"]
        rows += [
            "",
            "User-space instructions per request in process (`valgrind --tool=cachegrind`, 12,000 minus 2,000"
            " requests, `PYTHONHASHSEED=0`):",
            "",
            "| variant | instructions/req | added | vs off |",
            "|---|---:|---:|---:|",
        ]
        for variant, count in instructions.items():
            rows.append(
                f"| {LABELS[variant]} | {count:,.0f} | {count - base:+,.0f} | {count / base - 1:+.2%} |"
            )
    every = "; ".join(
        f"{variant}: " + ", ".join(f"{r.rps:,.0f}" for r in rounds) for variant, rounds in results.items()
    )
    dropped = {
        variant: sum(r.dropped for r in rounds) for variant, rounds in results.items() if variant in SAMPLING
    }
    if dropped:
        every += ". Span drops (the SDK's queue-full warnings, all rounds): " + ", ".join(
            f"{variant} {count}" for variant, count in dropped.items()
        )
    return "\n".join(
        [
            "## Observability",
            "",
            f"`bench/observability.py`: hello app, zonda pinned `taskset -c {args.server_cpu}`, "
            f"`wrk -t1 -c{args.connections} -d{args.duration}s` pinned `taskset -c {args.client_cpu}`, "
            f"{args.rounds} interleaved rounds, fresh server each, medians. "
            f"{platform.machine()}, {os.cpu_count()} CPUs, {python_build()}, "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            *rows,
            "",
            f"Every round's req/s: {every}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--in-process-only"]:  # a fresh interpreter, pinned to the server's core
        _, workdir, variants, core = argv
        os.sched_setaffinity(0, {int(core)})
        print(json.dumps(in_process(variants.split(","), Path(workdir))))
        return 0
    if argv[:1] == ["--in-process-count"]:  # one run, under valgrind (instruction_counts)
        _, variant, count, workdir = argv
        in_process_once(variant, int(count), Path(workdir))
        return 0
    parser = round_parser(__doc__)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument(
        "--append-results", action="store_true", help="append the section to bench/RESULTS.md"
    )
    parser.add_argument("--no-in-process", dest="in_process", action="store_false")
    parser.add_argument("--no-instructions", dest="instructions", action="store_false")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if "off" not in variants:
        variants.insert(0, "off")
    results: dict[str, list[Round]] = {v: [] for v in variants}
    collector = DiscardingCollector() if any(v in SAMPLING for v in variants) else None
    with tempfile.TemporaryDirectory(prefix="zonda-bench-obs-") as tmp:
        for number in range(1, args.rounds + 1):
            for variant in variants:
                result = measure(variant, args, Path(tmp), collector.endpoint if collector else None)
                results[variant].append(result)
                print(
                    f"round {number} {variant:8} {result.rps:10,.0f} req/s {result.us_per_request:6.2f} µs/req",
                    flush=True,
                )
        cpu: dict[str, float] = {}
        if args.in_process:
            command = [
                sys.executable,
                __file__,
                "--in-process-only",
                tmp,
                ",".join(variants),
                args.server_cpu,
            ]
            out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
            cpu = json.loads(out.strip().splitlines()[-1])
        instructions: dict[str, float] = {}
        if args.instructions and shutil.which("valgrind"):
            instructions = instruction_counts(variants, Path(tmp))
        elif args.instructions:
            print("  valgrind not found: no instruction counts", file=sys.stderr)
    if collector is not None:
        collector.close()
    text = report(results, args, cpu, instructions)
    print()
    print(text)
    if args.append_results:
        path = REPO / "bench" / "RESULTS.md"
        with open(path, "a") as out:  # other sections belong to other benchmarks: append, never rewrite
            out.write(("\n" if path.exists() and path.stat().st_size else "") + text)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
