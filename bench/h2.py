"""HTTP/2 side by side: zonda, hypercorn and granian on the hello app under ``h2load``, one core each.

Run from the repo root with the project's virtualenv::

    .venv/bin/python -m bench.h2                                  # 3 rounds of 10 s per server (~3 min idle)
    .venv/bin/python -m bench.h2 --markdown --json /tmp/h2.json   # what bench/RESULTS.md records
    .venv/bin/python -m bench.h2 --duration 3 --rounds 1          # a quick look
    .venv/bin/python -m bench.h2 --tls                            # also over TLS (h2 via ALPN)
    .venv/bin/python -m bench.h2 --transports tls                 # TLS only
    .venv/bin/python -m bench.h2 --report /tmp/h2.json --markdown # reprint a saved run

How it measures (the harness is bench/run.py's: server process, CPU and load meters, quiet-core wait, lock):

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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from bench.run import (
    CLK_TCK,
    HELLO_BODY,
    NOISE_LIMIT,
    LoadMeter,
    ServerProcess,
    bench_lock,
    children_cpu_ticks,
    csv_choice,
    environment,
    fmt_rps,
    loadavg,
    markdown_table,
    median,
    parse_cpu_list,
    process_tree,
    raise_nofile_limit,
    read_stat,
    text_table,
    wait_for_quiet,
    zonda_commit,
)

log = logging.getLogger("bench")

SERVERS = ("zonda", "hypercorn", "granian")
TRANSPORTS = ("h2c", "tls")
APP = "bench.apps:hello"
HYPERCORN_CONFIG = """\
# bench/h2.py: lift hypercorn's per-connection request cap (keep_alive_max_requests, 1000 by default; an
# HTTP/2 connection is closed once it has served that many streams).
keep_alive_max_requests = 1000000000
"""


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
    """bench/run.py's server process with another command, an HTTP/2 readiness probe, and a stop that also
    ends the worker processes it started if they outlive their parent."""

    def __init__(self, server: str, cpu: str, workdir: Path, tls: Path | None):
        self.tls = tls
        self.workdir = workdir
        super().__init__(server, APP, cpu, workdir)

    def command(self, app: str, keep_alive: float | None) -> list[str]:
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

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (bench/run.py: SIGTERM, SIGKILL after ``grace``), then its worker processes if
        they outlive it by ``grace`` s: SIGKILL by pid, once sure the pid is still the same process."""
        alive = self.proc is not None and self.proc.poll() is None
        children = {pid: start_time(pid) for pid in process_tree(self.pid)[1:]} if alive else {}
        super().stop(grace)
        deadline = time.monotonic() + grace
        while children and time.monotonic() < deadline:
            children = {pid: t for pid, t in children.items() if t is not None and start_time(pid) == t}
            time.sleep(0.05)
        for pid, started in children.items():
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    log.warning(
                        "%s: killed worker process %d, still running after its parent", self.name, pid
                    )


def start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None once it is gone or a zombie."""
    try:
        fields = read_stat(pid)
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


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
    argv = h2load_argv(port, seconds, args, tls)
    log.debug("h2load: %s", shlex.join(argv))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"h2load exited with {proc.returncode}:\n{out}")
    return parse_h2load(out), out


# --------------------------------------------------------------------------- one round


@dataclass
class H2Round:
    requests: int  # h2load's "done"
    succeeded: int
    duration_s: float
    bytes_read: int
    errors: dict[str, int]  # h2load's failed / errored / timeout
    status: dict[str, int]  # h2load's status-code classes
    protocol: str
    lat_mean_us: float
    cpu_s: float  # the server's process tree
    client_cpu_s: (
        float  # h2load's (and this script's) CPU: near 100% of the duration, the client is the limit
    )
    noise: tuple[float, float]  # share of the server / client cores busy with other processes

    @property
    def rps(self) -> float:
        return self.succeeded / self.duration_s if self.duration_s else 0.0

    @property
    def cpu_us_per_req(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else float("nan")

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def non_2xx(self) -> int:
        return self.status["3xx"] + self.status["4xx"] + self.status["5xx"] + (self.requests - self.succeeded)

    @property
    def noisy(self) -> bool:
        return max(self.noise) > NOISE_LIMIT


def clean(rounds: Sequence[H2Round]) -> Sequence[H2Round]:
    """The rounds other processes left alone; all of them when none were (the medians use these)."""
    return [r for r in rounds if not r.noisy] or rounds


def measure_round(server: str, tls: Path | None, args: argparse.Namespace, workdir: Path) -> H2Round:
    expected = "h2" if tls else "h2c"
    with H2Server(server, args.server_cpu, workdir, tls) as srv:
        check_hello(srv.port, tls is not None)
        if args.warmup > 0:
            run_h2load(srv.port, args.warmup, args, tls is not None)
        server_load = LoadMeter(parse_cpu_list(args.server_cpu))
        client_load = LoadMeter(parse_cpu_list(args.client_cpu))
        cpu_before, own_before = srv.cpu_seconds(), children_cpu_ticks()
        summary, out = run_h2load(srv.port, args.duration, args, tls is not None)
        cpu_after, own_after = srv.cpu_seconds(), children_cpu_ticks()
        noise = (
            server_load.busy_share((cpu_after - cpu_before) * CLK_TCK),
            client_load.busy_share(own_after - own_before),
        )
        if srv.proc is None or srv.proc.poll() is not None:
            raise RuntimeError(f"{server} died during the run:\n{srv.log_tail()}")
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
        cpu_s=cpu_after - cpu_before,
        client_cpu_s=(own_after - own_before) / CLK_TCK,
        noise=noise,
    )
    if result.error_count or result.non_2xx:
        log.warning("%s: h2load reported errors %s, status %s\n%s", server, result.errors, result.status, out)
    return result


def measure_with_retries(
    server: str, tls: Path | None, args: argparse.Namespace, workdir: Path, prefix: str
) -> H2Round:
    """Re-run a round that other processes disturbed (up to --retries times); keep the quietest."""
    attempts: list[H2Round] = []
    for _ in range(args.retries + 1):
        with bench_lock(args.lock):
            wait_for_quiet(args.quiet_wait)
            r = measure_round(server, tls, args, workdir)
        attempts.append(r)
        log.info(
            "%s: %s req/s, %.1f µs CPU/req, server CPU %.0f%%, %s, other load on server/client core %s",
            prefix, fmt_rps(r.rps), r.cpu_us_per_req, r.cpu_share * 100, r.protocol,
            "/".join(f"{n * 100:.0f}%" for n in r.noise),
        )  # fmt: skip
        if not r.noisy:
            break
        log.warning("%s: other processes used the cores during the run", prefix)
    return min(attempts, key=lambda a: max(a.noise))


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
                    " ".join(fmt_rps(r.rps) + ("*" if r.noisy else "") for r in rounds),
                    fmt_rps(median([r.rps for r in good])),
                    " ".join(f"{r.cpu_us_per_req:.1f}" + ("*" if r.noisy else "") for r in rounds),
                    f"{median([r.cpu_us_per_req for r in good]):.1f}",
                    f"{sum(not r.noisy for r in rounds)}/{len(rounds)}",
                    f"{median([r.cpu_share for r in good]) * 100:.0f}%",
                    f"{median([r.client_cpu_s / r.duration_s for r in good]) * 100:.0f}%",
                    f"{median([r.lat_mean_us for r in good]) / 1000:.2f}",
                    f"{median([r.bytes_read / r.requests for r in rounds if r.requests]):,.0f}",
                    str(sum(r.error_count for r in rounds)),
                    str(sum(r.non_2xx for r in rounds)),
                    " ".join(f"{max(r.noise) * 100:.0f}%" for r in rounds),
                ]
            )
    return rows


THROUGHPUT_HEADER = [
    "transport",
    "server",
    "protocol",
    "req/s per round",
    "median req/s",
    "CPU µs/req per round",
    "median CPU µs/req",
    "clean rounds",
    "server CPU",
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
        zc = clean(z)
        z_rps, z_cpu = median([r.rps for r in zc]), median([r.cpu_us_per_req for r in zc])
        for other in ("granian", "hypercorn"):
            o = results.get((variant, other))
            if not o:
                continue
            oc = clean(o)
            rps = z_rps / median([r.rps for r in oc])
            cpu = median([r.cpu_us_per_req for r in oc]) / z_cpu
            rows.append([variant, other, f"{rps:.2f}x", f"{cpu:.2f}x"])
    return rows


RATIO_HEADER = ["transport", "vs", "zonda/vs req/s (medians)", "vs/zonda CPU µs per request (medians)"]


def report(results: Results, args: argparse.Namespace, env: Sequence[Sequence[str]], markdown: bool) -> str:
    variants = args.transports
    table = markdown_table if markdown else text_table
    if markdown:
        parts = ["\n".join(f"- {k}: {v}" for k, v in env)]
    else:
        width = max(len(k) for k, _ in env)
        parts = ["\n".join(f"{k:>{width}}: {v}" for k, v in env)]
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
    def dist(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} missing"

    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    env = [(k, v) for k, v in environment() if k not in ("packages", "wrk")]
    env.append(("packages", ", ".join(dist(d) for d in ("hypercorn", "granian", "uvloop", "h2", "hpack"))))
    env.append(("h2load", h2load))
    return env


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
        item["noise"] = tuple(item["noise"])
        results.setdefault(key, []).append(H2Round(**item))
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
        "--servers", type=csv_choice(SERVERS), default=list(SERVERS), help="zonda,hypercorn,granian"
    )
    p.add_argument(
        "--transports",
        type=csv_choice(TRANSPORTS),
        default=["h2c"],
        help="h2c (plaintext), tls (ALPN h2); (h2c)",
    )
    p.add_argument("--tls", action="store_true", help="also over TLS (h2 by ALPN, self-signed cert)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables for RESULTS.md")
    p.add_argument("--quiet-wait", type=float, default=60, help="most seconds to wait for idle cores (60)")
    p.add_argument("--retries", type=int, default=2, help="re-runs of a round disturbed by other load (2)")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for h2load and this script (1)")
    p.add_argument("--lock", default="/tmp/zonda-bench.lock", help="flock held per measurement; '' for none")
    p.add_argument("--json", metavar="FILE", help="also save the raw results as JSON")
    p.add_argument("--report", metavar="FILE", help="print the report of a --json file; run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log commands")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tls and "tls" not in args.transports:
        args.transports.append("tls")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
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
    status = 0
    with tempfile.TemporaryDirectory(prefix="zonda-bench-h2-") as tmp:
        workdir = Path(tmp)
        (workdir / "hypercorn.toml").write_text(HYPERCORN_CONFIG)
        cert = make_cert(workdir) if "tls" in args.transports else None
        variants = [(t, cert if t == "tls" else None) for t in args.transports]
        steps = [(v, rnd, s) for v in variants for rnd in range(args.rounds) for s in args.servers]
        try:
            for i, ((variant, tls), rnd, server) in enumerate(steps, 1):
                prefix = f"[{i}/{len(steps)}] {variant} {server} round {rnd + 1}"
                r = measure_with_retries(server, tls, args, workdir, prefix)
                results.setdefault((variant, server), []).append(r)
        except KeyboardInterrupt:
            log.error("interrupted; printing what was measured")
            status = 130
        except Exception:
            log.exception("benchmark failed; printing what was measured")
            status = 1
    commit_end = zonda_commit()
    if commit_end == commit_start:
        env.append(("zonda commit", commit_start))
    else:  # zonda's code changed under the run: servers started later ran newer code
        env += [("zonda commit at start", commit_start), ("zonda commit at end", commit_end)]
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
