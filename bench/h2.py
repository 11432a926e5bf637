"""HTTP/2 side by side: zonda, hypercorn and granian on the hello app under ``h2load``, one core each.

Run from the repo root with the project's virtualenv::

    .venv/bin/python -m bench.h2                                  # 3 rounds of 10 s per server (~3 min idle)
    .venv/bin/python -m bench.h2 --markdown --json /tmp/h2.json   # what bench/RESULTS.md records
    .venv/bin/python -m bench.h2 --duration 3 --rounds 1          # a quick look
    .venv/bin/python -m bench.h2 --tls                            # also over TLS (h2 via ALPN)
    .venv/bin/python -m bench.h2 --transports tls                 # TLS only
    .venv/bin/python -m bench.h2 --report /tmp/h2.json --markdown # reprint a saved run

How it measures (the harness is bench/harness.py's: server process, CPU and load meters, quiet-core wait, lock):

- Each server serves ``bench.apps:hello`` alone, pinned with ``taskset -c 0`` (``--server-cpu``), on
  127.0.0.1 and a free port, over plaintext HTTP/2 with prior knowledge (h2c); with ``--tls`` (or
  ``--transports h2c,tls``) also over TLS with a throwaway self-signed certificate, HTTP/2 chosen by ALPN.
  The commands are in ``server_command``: zonda as it starts by default (uvloop); hypercorn with the uvloop
  worker class, one worker, no access log, and its per-connection request cap (``keep_alive_max_requests``:
  1000 streams per HTTP/2 connection by default) lifted in a config file; granian ``--interface asgi
  --http 2 --workers 1 --runtime-threads 1 --loop uvloop --no-ws`` (its ``--runtime-mode auto`` picks the
  multi-threaded Tokio runtime for ASGI and HTTP/2; a quick check of ``--runtime-mode st`` here was no
  faster: 15.9-17.9 µs of CPU per request against 14.3-14.7).
- The load is ``h2load -c16 -m10 -D SECONDS`` (``--connections``, ``--streams``, ``--duration``) pinned with
  ``taskset -c 1`` (``--client-cpu``): 16 connections with up to 10 concurrent streams each. For a plain
  ``http://`` URI h2load speaks HTTP/2 with prior knowledge; the run stops with an error unless h2load
  reports ``Application protocol: h2c`` (``h2`` over TLS). h2load's failed/errored/timed-out requests and
  its non-2xx status counts are columns of the table. Before measuring, one request made with the ``h2``
  library must get status 200 and the hello body.
- Rounds are interleaved (round 1: zonda, hypercorn, granian; round 2 the same, ...), with a fresh server
  process for every round and a ``--warmup`` s unmeasured h2load run before the measured one.
- Server CPU is utime+stime of the server's process tree (granian and hypercorn run a worker process under
  a parent) read from ``/proc`` right before and after the measured h2load; divided by the requests h2load
  completed it gives µs of server CPU per request, steadier than req/s on a shared machine.
- Other load: like bench/run.py, each round holds the flock ``--lock``, waits up to ``--quiet-wait`` s for
  idle cores, measures how busy the two cores were with other processes, re-runs a round above 5%
  (``--retries``), keeps the quietest attempt and leaves rounds still above it (marked ``*``) out of the
  medians.

Only processes this script starts are stopped, by pid (the server, then any of its children left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from bench.harness import (
    HELLO_BODY,
    HYPERCORN_CONFIG,
    NOISE_LIMIT,
    ROUND_HEADER,
    Round,
    ServerProcess,
    add_machine_args,
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
    parse_cpu_list,
    quietest,
    raise_nofile_limit,
    ratio_cells,
    round_cells,
    round_from_json,
    run_load,
    run_steps,
    setup_logging,
    text_table,
    under_load,
    wait_for_quiet,
    zonda_commit,
)

log = logging.getLogger("bench")

SERVERS = ("zonda", "hypercorn", "granian")
TRANSPORTS = ("h2c", "tls")
APP = "bench.apps:hello"


def server_command(server: str, port: int | str, tls: Path | None, workdir: Path) -> list[str]:
    """The server's argv; ``tls`` is a directory with cert.pem and key.pem (PKCS#8) for the TLS variant,
    ``workdir`` holds hypercorn's config file (``write_hypercorn_config``)."""
    venv = Path(sys.executable).parent
    cert, key = (str(tls / "cert.pem"), str(tls / "key.pem")) if tls else ("", "")
    if server == "zonda":
        cmd = [sys.executable, "-m", "zonda", APP, "--no-access-log", "--log-level", "warning"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        if tls:
            cmd += ["--ssl-certfile", cert, "--ssl-keyfile", key]
    elif server == "hypercorn":
        config = workdir / "hypercorn.toml"
        cmd = [str(venv / "hypercorn"), APP, "--worker-class", "uvloop", "--workers", "1"]
        cmd += ["--log-level", "warning", "--config", str(config), "--bind", f"127.0.0.1:{port}"]
        if tls:
            cmd += ["--certfile", cert, "--keyfile", key]
    elif server == "granian":
        cmd = [str(venv / "granian"), APP, "--interface", "asgi", "--http", "2", "--workers", "1", "--no-ws"]
        cmd += ["--runtime-threads", "1", "--loop", "uvloop", "--log-level", "warning", "--no-access-log"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        if tls:
            cmd += ["--ssl-certificate", cert, "--ssl-keyfile", key]
    else:
        raise ValueError(f"unknown server {server!r}")
    return cmd


# --------------------------------------------------------------------------- one HTTP/2 request


def h2_get(port: int, tls: bool, timeout: float = 2.0) -> tuple[int, bytes, str]:
    """GET / over HTTP/2 (prior knowledge, or ALPN on TLS): (status, body, protocol). Raises OSError
    (ConnectionError for a protocol failure) while the server is not answering."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    protocol = "h2c"
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # our own throwaway certificate, on loopback
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock)
            protocol = sock.selected_alpn_protocol() or "none"
            if protocol != "h2":
                raise ConnectionError(f"ALPN chose {protocol!r}, not h2")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        headers = [(":method", "GET"), (":path", "/"), (":scheme", "https" if tls else "http")]
        conn.send_headers(1, [*headers, (":authority", f"127.0.0.1:{port}")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body = 0, b""
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the response ended")
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise ConnectionError(f"HTTP/2 error: {exc}") from exc
            for event in events:
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset: {event.error_code!r}")
                elif isinstance(event, h2.events.StreamEnded):
                    conn.close_connection()
                    with contextlib.suppress(OSError):
                        sock.sendall(conn.data_to_send())
                    return status, body, protocol
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


class H2Server(ServerProcess):
    """The harness's server process with these servers' commands and an HTTP/2 readiness probe."""

    def __init__(self, server: str, cpu: str, workdir: Path, tls: Path | None):
        super().__init__(server, cpu, workdir)
        self.tls = tls
        self.workdir = workdir

    def command(self) -> list[str]:
        return server_command(self.name, self.port, self.tls, self.workdir)

    def probe(self) -> None:
        h2_get(self.port, self.tls is not None, timeout=1.0)

    def __exit__(self, *exc: object) -> None:
        # hypercorn cancels its connection tasks on SIGTERM and prints a CancelledError traceback for each:
        # summarised here, so that anything else a server printed still shows.
        self.stop()
        tail = self.log_tail(10_000)
        cancelled = tail.count("asyncio.exceptions.CancelledError")
        if cancelled and cancelled == tail.count("Traceback (most recent call last)"):
            log.debug("%s printed %d CancelledError tracebacks when stopped", self.name, cancelled)
            return
        super().__exit__(*exc)


def check_hello(port: int, tls: bool) -> str:
    status, body, protocol = h2_get(port, tls, timeout=10)
    if status != 200 or body != HELLO_BODY:
        raise RuntimeError(f"hello over HTTP/2: status {status}, body {body[:80]!r}")
    return protocol


# --------------------------------------------------------------------------- h2load


H2LOAD_PATTERNS = {
    "protocol": r"Application protocol: (\S+)",
    "duration": r"finished in ([\d.]+)(ms|s),",
    "requests": r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    "status": r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
    "traffic": r"traffic: .*?\((\d+)\) total",
    "latency": r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)",
}


def parse_time_us(text: str) -> float:
    """h2load's durations: 812us, 1.23ms, 2.00s."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1.0, "ms": 1e3, "s": 1e6}[unit]


def parse_h2load(out: str) -> dict[str, Any]:
    found = {key: re.search(pattern, out) for key, pattern in H2LOAD_PATTERNS.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise RuntimeError(f"h2load output without {', '.join(missing)}:\n{out}")
    m = {key: match for key, match in found.items() if match is not None}
    value, unit = m["duration"].groups()
    _total, _started, done, ok, failed, errored, timeout = (int(v) for v in m["requests"].groups())
    s2, s3, s4, s5 = (int(v) for v in m["status"].groups())
    return {
        "protocol": m["protocol"].group(1),
        "duration_s": float(value) / (1000 if unit == "ms" else 1),
        "done": done,
        "succeeded": ok,
        "errors": {"failed": failed, "errored": errored, "timeout": timeout},
        "status": {"2xx": s2, "3xx": s3, "4xx": s4, "5xx": s5},
        "bytes": int(m["traffic"].group(1)),
        "lat_mean_us": parse_time_us(m["latency"].group(3)),
    }


def h2load_argv(port: int | str, seconds: int, args: argparse.Namespace, tls: bool) -> list[str]:
    scheme = "https" if tls else "http"
    argv = ["taskset", "-c", args.client_cpu, "h2load", "-t1", f"-c{args.connections}", f"-m{args.streams}"]
    return [*argv, "-D", str(seconds), f"{scheme}://127.0.0.1:{port}/"]


def run_h2load(port: int, seconds: int, args: argparse.Namespace, tls: bool) -> tuple[dict[str, Any], str]:
    out = run_load("h2load", h2load_argv(port, seconds, args, tls), seconds)
    return parse_h2load(out), out


# --------------------------------------------------------------------------- one round


@dataclass
class H2Round(Round):
    """One h2load run; ``requests`` is h2load's "done", req/s counts the succeeded ones."""

    succeeded: int
    bytes_read: int
    errors: dict[str, int]  # h2load's failed / errored / timeout
    status: dict[str, int]  # h2load's status-code classes
    protocol: str
    lat_mean_us: float
    client_cpu_s: float  # h2load's (and this script's): near 100% of the duration, the client is the limit

    @property
    def rps(self) -> float:
        return self.succeeded / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def non_2xx(self) -> int:
        return self.status["3xx"] + self.status["4xx"] + self.status["5xx"] + (self.requests - self.succeeded)


def measure_round(server: str, tls: Path | None, args: argparse.Namespace, workdir: Path) -> H2Round:
    expected = "h2" if tls else "h2c"
    with H2Server(server, args.server_cpu, workdir, tls) as srv:
        check_hello(srv.port, tls is not None)
        if args.warmup > 0:
            run_h2load(srv.port, args.warmup, args, tls is not None)
        (summary, out), cpu_s, client_cpu_s, noise = under_load(
            srv,
            args.server_cpu,
            args.client_cpu,
            lambda: run_h2load(srv.port, args.duration, args, tls is not None),
        )
    if summary["protocol"] != expected:
        raise RuntimeError(f"{server}: h2load negotiated {summary['protocol']!r}, not {expected}:\n{out}")
    result = H2Round(
        requests=summary["done"],
        succeeded=summary["succeeded"],
        duration_s=summary["duration_s"],
        bytes_read=summary["bytes"],
        errors=summary["errors"],
        status=summary["status"],
        protocol=summary["protocol"],
        lat_mean_us=summary["lat_mean_us"],
        cpu_s=cpu_s,
        client_cpu_s=client_cpu_s,
        noise=noise,
    )
    if result.error_count or result.non_2xx:
        log.warning("%s: h2load reported errors %s, status %s\n%s", server, result.errors, result.status, out)
    return result


def measure_with_retries(
    server: str, tls: Path | None, args: argparse.Namespace, workdir: Path, prefix: str
) -> H2Round:
    def describe(r: H2Round) -> None:
        log.info(
            "%s: %s req/s, %.1f µs CPU/req, server CPU %.0f%%, %s, other load on server/client core %s",
            prefix, fmt_rps(r.rps), r.cpu_us_per_req, r.cpu_share * 100, r.protocol,
            "/".join(f"{n * 100:.0f}%" for n in r.noise),
        )  # fmt: skip

    return quietest(
        lambda: measure_round(server, tls, args, workdir),
        describe,
        prefix,
        args.retries,
        lambda: wait_for_quiet(args.quiet_wait),
        args.lock,
    )


def make_cert(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and its key in PKCS#8 (granian reads no other format)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return directory


# --------------------------------------------------------------------------- output

Results = dict[tuple[str, str], list[H2Round]]  # (variant, server) -> rounds; variant h2c or tls


def throughput_rows(results: Results, variants: Sequence[str], servers: Sequence[str]) -> list[list[str]]:
    rows = []
    for variant in variants:
        for server in servers:
            rounds = results.get((variant, server))
            if not rounds:
                continue
            good = clean(rounds)
            rows.append(
                [
                    variant,
                    server,
                    " ".join(sorted({r.protocol for r in rounds})),
                    *round_cells(rounds),
                    f"{median([r.client_cpu_s / r.duration_s for r in good]) * 100:.0f}%",
                    f"{median([r.lat_mean_us for r in good]) / 1000:.2f}",
                    f"{median([r.bytes_read / r.requests for r in rounds if r.requests]):,.0f}",
                    str(sum(r.error_count for r in rounds)),
                    str(sum(r.non_2xx for r in rounds)),
                    noise_cell(rounds),
                ]
            )
    return rows


THROUGHPUT_HEADER = [
    "transport",
    "server",
    "protocol",
    *ROUND_HEADER,
    "h2load CPU",
    "mean latency ms",
    "bytes/resp",
    "errors",
    "non-2xx",
    "other load per round",
]


def ratio_rows(results: Results, variants: Sequence[str]) -> list[list[str]]:
    rows = []
    for variant in variants:
        z = results.get((variant, "zonda"))
        if not z:
            continue
        for other in ("granian", "hypercorn"):
            o = results.get((variant, other))
            if o:
                rows.append([variant, other, *ratio_cells(z, o)])
    return rows


RATIO_HEADER = ["transport", "vs", "zonda/vs req/s (medians)", "vs/zonda CPU µs per request (medians)"]


def report(results: Results, args: argparse.Namespace, env: Sequence[Sequence[str]], markdown: bool) -> str:
    variants = args.transports
    table = markdown_table if markdown else text_table
    parts = [format_env(env, markdown)]
    tput = throughput_rows(results, variants, args.servers)
    setup = (
        f"h2load -t1 -c{args.connections} -m{args.streams} -D {args.duration} on core {args.client_cpu}; "
        f"each server alone on core {args.server_cpu}; {args.rounds} round(s)"
    )
    if tput:
        parts.append(f"Throughput ({setup}):\n\n" + table(THROUGHPUT_HEADER, tput))
        if any(r.noisy for rounds in results.values() for r in rounds):
            parts.append(
                f"Rounds marked * ran while other processes kept more than {NOISE_LIMIT:.0%} of the server "
                "or client core busy (the other load column), even after --retries; the medians leave them "
                "out (unless no round was clean)."
            )
    ratios = ratio_rows(results, variants)
    if ratios:
        parts.append("Ratios:\n\n" + table(RATIO_HEADER, ratios))
    return "\n\n".join(parts) + "\n"


def versions() -> list[tuple[str, str]]:
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    return [*environment(("hypercorn", "granian", "uvloop", "h2", "hpack")), ("h2load", h2load)]


def results_to_json(results: Results) -> list[dict[str, Any]]:
    return [
        {"transport": variant, "server": server, **asdict(r)}
        for (variant, server), rounds in results.items()
        for r in rounds
    ]


def results_from_json(saved: list[dict[str, Any]]) -> Results:
    results: Results = {}
    for item in saved:
        key = (item.pop("transport"), item.pop("server"))
        results.setdefault(key, []).append(round_from_json(H2Round, item))
    return results


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="whole seconds per measured h2load run (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per server (3)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured h2load seconds before each run (2)")
    p.add_argument("--connections", type=int, default=16, help="h2load -c (16)")
    p.add_argument(
        "--streams", type=int, default=10, help="h2load -m, concurrent streams per connection (10)"
    )
    p.add_argument(
        "--servers", type=csv_of(str, SERVERS), default=list(SERVERS), help="zonda,hypercorn,granian"
    )
    p.add_argument(
        "--transports",
        type=csv_of(str, TRANSPORTS),
        default=["h2c"],
        help="h2c (plaintext), tls (ALPN h2); (h2c)",
    )
    p.add_argument("--tls", action="store_true", help="also over TLS (h2 by ALPN, self-signed cert)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    add_machine_args(p, "h2load")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tls and "tls" not in args.transports:
        args.transports.append("tls")
    setup_logging(args.verbose)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        saved_args = argparse.Namespace(**saved["args"])
        sys.stdout.write(report(results_from_json(saved["rounds"]), saved_args, saved["env"], args.markdown))
        return 0
    raise_nofile_limit()
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, parse_cpu_list(args.client_cpu))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind like Ctrl+C: servers get stopped
    env = versions()
    command = shlex.join([".venv/bin/python", "-m", "bench.h2", *(sys.argv[1:] if argv is None else argv)])
    commit_start, load_start = zonda_commit(), loadavg()
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="zonda-bench-h2-") as tmp:
        workdir = Path(tmp)
        (workdir / "hypercorn.toml").write_text(HYPERCORN_CONFIG)
        cert = make_cert(workdir) if "tls" in args.transports else None
        variants = [(t, cert if t == "tls" else None) for t in args.transports]
        steps = [(v, rnd, s) for v in variants for rnd in range(args.rounds) for s in args.servers]

        def measure_all() -> None:
            for i, ((variant, tls), rnd, server) in enumerate(steps, 1):
                prefix = f"[{i}/{len(steps)}] {variant} {server} round {rnd + 1}"
                r = measure_with_retries(server, tls, args, workdir, prefix)
                results.setdefault((variant, server), []).append(r)

        status = run_steps(measure_all)
    env += commit_rows(commit_start)
    venv = str(Path(sys.executable).parent) + "/"
    for server in args.servers:  # the servers' commands, the temporary directory shown as TMP
        cmd = server_command(server, "PORT", Path("TMP") if "tls" in args.transports else None, Path("TMP"))
        cmd = [c.removeprefix(venv) for c in cmd]
        env.append((f"{server} command", f"`taskset -c {args.server_cpu} {shlex.join(cmd)}`"))
    env.append(("h2load command", f"`{shlex.join(h2load_argv('PORT', args.duration, args, False))}`"))
    if "hypercorn" in args.servers:
        env.append(("TMP/hypercorn.toml", "`" + HYPERCORN_CONFIG.splitlines()[-1] + "`"))
    env += [("load average before / after", f"{load_start} / {loadavg()}"), ("command", f"`{command}`")]
    if args.json:
        saved = {"args": vars(args), "env": env, "rounds": results_to_json(results)}
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    sys.stdout.write(report(results, args, env, args.markdown))
    return status


if __name__ == "__main__":
    sys.exit(main())
