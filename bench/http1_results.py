"""bench/run.py's results: the rounds it measures, their JSON form (--json, --report) and the report's
tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.harness import (
    NOISE_LIMIT,
    ROUND_HEADER,
    clean,
    format_env,
    markdown_table,
    median,
    noise_cell,
    pairs_caption,
    ratio_cells,
    ratio_pairs,
    round_cells,
    round_from_json,
    text_table,
)
from bench.harness import Round as BaseRound
from bench.http1 import SERVER_LOOPS, WORKLOADS, IdleRound

IN_PROCESS = "in-process"  # the fastapi section's app-alone rounds (bench/inprocess.py), run like a server
# bench/inprocess.py calls the app on uvloop: its cost is the app's share only for servers on the same loop
# (Starlette, through anyio, does different work on trio).
IN_PROCESS_LOOP = "uvloop"

# --------------------------------------------------------------------------- results


@dataclass
class Round(BaseRound):
    """One wrk run: what its Lua summary reports on top of the shared round. ``errors`` are wrk's socket
    errors and the responses that were not 2xx; ``asgi_spec`` is the spec_version the server announced to
    the app (fastapi only)."""

    bytes_read: int
    errors: dict[str, int]
    lat_p99_us: float
    client_cpu_s: float = 0.0
    asgi_spec: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class InProcessRound(BaseRound):
    """One bench/inprocess.py run: ``requests`` are calls of the app, ``cpu_s`` the driver thread's CPU
    time; ``noise`` is the server core's other load and 0 for the client core, which it does not use. (A
    call answered with anything but 2xx makes bench/inprocess.py exit 1, which stops the benchmark.)"""

    spec_version: str


@dataclass
class Results:
    rounds: dict[tuple[str, str], list[Round]] = field(default_factory=dict)
    idle: dict[str, list[IdleRound]] = field(default_factory=dict)
    in_process: dict[str, list[InProcessRound]] = field(default_factory=dict)  # by spec_version

    def failures(self) -> list[str]:
        """The rounds with socket errors or non-2xx answers, described."""
        failed = []
        for (server, wl), rounds in self.rounds.items():
            for n, r in enumerate(rounds, 1):
                if r.error_count:
                    failed.append(f"{wl} {server} round {n}: {error_detail(r.errors)}")
        return failed


def error_detail(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind.replace('_', '-')} {n:,}" for kind, n in errors.items() if n)


def results_to_json(results: Results) -> dict[str, list[dict[str, object]]]:
    return {
        "rounds": [
            {"server": server, "workload": wl, **asdict(r)}
            for (server, wl), rounds in results.rounds.items()
            for r in rounds
        ],
        "idle": [{"server": server, **asdict(r)} for server, rounds in results.idle.items() for r in rounds],
        "in_process": [asdict(r) for rounds in results.in_process.values() for r in rounds],
    }


def results_from_json(saved: dict[str, Any]) -> Results:
    results = Results()
    for item in saved["rounds"]:
        server, wl = item.pop("server"), item.pop("workload")
        results.rounds.setdefault((server, wl), []).append(round_from_json(Round, item))
    for item in saved["idle"]:
        results.idle.setdefault(item.pop("server"), []).append(IdleRound(**item))
    for item in saved.get("in_process", []):
        results.in_process.setdefault(item["spec_version"], []).append(round_from_json(InProcessRound, item))
    return results


# --------------------------------------------------------------------------- output


def errors_cell(rounds: Sequence[Round]) -> str:
    """0, or FAILED and what went wrong, added up over the rounds."""
    merged: dict[str, int] = {}
    for r in rounds:
        for kind, n in r.errors.items():
            merged[kind] = merged.get(kind, 0) + n
    total = sum(merged.values())
    return f"FAILED {total:,} ({error_detail(merged)})" if total else "0"


def throughput_rows(results: Results, workloads: Sequence[str], servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for wl in workloads:
        for server in servers:
            rounds = results.rounds.get((server, wl))
            if not rounds:
                continue
            good = clean(rounds)
            client = median([r.client_cpu_s / r.duration_s for r in good if r.duration_s])
            rows.append(
                [
                    wl,
                    server,
                    *round_cells(rounds),
                    f"{client * 100:.0f}%" if client else "-",  # saved before wrk's CPU was kept
                    f"{median([r.lat_p99_us for r in good]) / 1000:.2f}",
                    f"{median([r.bytes_read / r.requests for r in rounds if r.requests]):,.0f}",
                    errors_cell(rounds),
                    noise_cell(rounds),
                ]
            )
    return rows


THROUGHPUT_HEADER = [
    "workload",
    "server",
    *ROUND_HEADER,
    "wrk CPU",
    "p99 ms",
    "bytes/resp",
    "errors",
    "other load per round",
]


def ratio_rows(
    results: Results, workloads: Sequence[str], pairs: Sequence[tuple[str, str]]
) -> list[list[str]]:
    """Per workload, each (zonda, peer) pair of ratio_pairs: zonda's req/s over the peer's and the peer's CPU
    per request over zonda's (FAILED beside a ratio when either server's rounds had errors), and which
    servers' rounds had any."""
    rows = []
    for wl in workloads:
        rounds = {s: results.rounds.get((s, wl), []) for pair in pairs for s in pair}
        if not any(rounds[z] and rounds[p] for z, p in pairs):
            continue
        failed = [s for s, rs in rounds.items() if any(r.error_count for r in rs)]
        cells = []
        for z, p in pairs:
            mark = " FAILED" if {z, p} & set(failed) else ""
            cells += (
                [c + mark for c in ratio_cells(rounds[z], rounds[p])]
                if rounds[z] and rounds[p]
                else ["-", "-"]
            )
        rows.append([wl, *cells, f"no: {', '.join(failed)}" if failed else "yes"])
    return rows


def ratio_header(pairs: Sequence[tuple[str, str]]) -> list[str]:
    columns = [(f"{z}/{p} req/s", f"{p}/{z} CPU µs/req") for z, p in pairs]
    return ["workload", *(c for pair in columns for c in pair), "every answer 2xx, no socket errors"]


def share_rows(results: Results, servers: Sequence[str]) -> list[list[str]]:
    """The fastapi workload per server: CPU per request on the wire, the app's own in-process CPU per call
    at the ASGI spec_version that server announced, and the difference, the server's share (for servers on
    IN_PROCESS_LOOP; "-" for the others)."""
    app_cost = {
        spec: median([r.cpu_us_per_req for r in clean(rounds)]) for spec, rounds in results.in_process.items()
    }
    rows = []
    for server in servers:
        rounds = results.rounds.get((server, "fastapi"))
        if not rounds:
            continue
        wire = median([r.cpu_us_per_req for r in clean(rounds)])
        spec = rounds[0].asgi_spec
        hello = results.rounds.get((server, "hello"))
        hello_cell = f"{median([r.cpu_us_per_req for r in clean(hello)]):.1f}" if hello else "-"
        app = app_cost.get(spec) if SERVER_LOOPS[server] == IN_PROCESS_LOOP else None
        if app is None:
            rows.append([server, spec, f"{wire:.1f}", "-", "-", "-", hello_cell])
            continue
        share = wire - app
        rows.append(
            [server, spec, f"{wire:.1f}", f"{app:.1f}", f"{share:.1f}", f"{share / wire:.0%}", hello_cell]
        )
    return rows


SHARE_HEADER = [
    "server",
    "ASGI spec_version it announces",
    "CPU µs/req on the wire",
    "app alone in-process, CPU µs/call",
    "server's share µs/req",
    "server's share of the CPU",
    "hello CPU µs/req, same server",
]


def in_process_rows(results: Results) -> list[list[str]]:
    return [
        [spec, *round_cells(rounds), noise_cell(rounds)]
        for spec, rounds in sorted(results.in_process.items())
    ]


IN_PROCESS_HEADER = [
    "spec_version",
    "calls/s per round",
    "median calls/s",
    "CPU µs/call per round",
    "median CPU µs/call",
    "clean rounds",
    "driver CPU",
    "other load per round",
]


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
    pairs = ratio_pairs(args.servers, SERVER_LOOPS)
    tput = throughput_rows(results, workloads, servers)
    ratios = ratio_rows(results, workloads, pairs)
    shares = share_rows(results, args.servers)
    idle = idle_rows(results, args.servers)
    table = markdown_table if markdown else text_table
    parts = [format_env(env, markdown)]
    failures = results.failures()
    if failures:
        parts.append(
            "FAILED: these rounds had socket errors or answers that were not 2xx, so their rows and the "
            "ratios built on them are not valid:\n\n" + "\n".join(f"- {f}" for f in failures)
        )
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
        parts.append(
            f"Ratios, {pairs_caption(pairs)} (medians of the clean rounds; above 1 where zonda does "
            "better):\n\n" + table(ratio_header(pairs), ratios)
        )
    if shares:
        parts.append(
            "Where the CPU goes in the fastapi workload. The app alone is bench/inprocess.py calling it "
            f"in-process on core {args.server_cpu} for {args.duration}s per round, {args.connections} calls "
            "at once (as many as wrk keeps in flight), with the spec_version each server announces "
            "(Starlette's responses do more work below 2.4). The server's share is the server's CPU per "
            "request on the wire minus that: HTTP parsing, socket I/O and its system calls, the task per "
            "request, scope and messages, the event loop. If anything it comes out a little large, since "
            "in-process nothing else runs between the app's steps to cool its caches. The app alone runs on "
            f"{IN_PROCESS_LOOP}, so servers on another loop get no share.\n\n"
            + table(SHARE_HEADER, shares)
            + "\n\nThe app alone:\n\n"
            + table(IN_PROCESS_HEADER, in_process_rows(results))
        )
    if idle:
        how = "connect only" if args.idle_connect_only else "one GET each"
        parts.append(
            f"Idle keep-alive memory ({args.idle_connections} connections, {how}, keep-alive timeout 60 s "
            "where the server has one):\n\n" + table(IDLE_HEADER, idle)
        )
    return "\n\n".join(parts) + "\n"
