"""Side-by-side HTTP/3 benchmark: zonda (``--http3``) against hypercorn (``--quic-bind``), one core each.

Run from the repo root with the project's virtualenv (needs aioquic, hypercorn, and Debian's ngtcp2-client)::

    .venv/bin/python -m bench.h3                        # hello and a 1 MiB download, 3 rounds
    .venv/bin/python -m bench.h3 --rounds 1 --only hello --markdown

How it measures:

- The app is ``bench.apps:hello`` (13 bytes) or ``bench.apps:download`` (1 MiB in 64 KiB pieces). Each server
  runs alone, pinned with ``taskset -c 0`` (``--server-cpu``), TLS with a throwaway ECDSA certificate:
  ``python -m zonda --http3 --loop uvloop --no-access-log`` and ``python -m hypercorn --quic-bind`` (asyncio
  worker class, one worker under its parent). Both use aioquic for QUIC and HTTP/3 framing.
- The load generator is ngtcp2's client (``gtlsclient``, C, GnuTLS), ``--clients`` processes pinned to
  ``taskset -c 1`` (``--client-cpu``), each one QUIC connection running ``--requests`` requests on as many
  streams at once as the server allows (100 for both). It costs far less CPU than either server, so the numbers
  are the servers'. Requests/s is the total over the wall time of the slowest client; server CPU is
  utime+stime from /proc, per request.
- Rounds are interleaved with a fresh server each time; medians are printed. Before each round the script waits
  for idle cores (``--quiet-wait``).

Only processes this script starts are stopped, by pid. All traffic goes to 127.0.0.1 on ports picked by binding
port 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ServerProcess, markdown_table, text_table, wait_for_quiet

log = logging.getLogger("bench.h3")
WORKLOADS = {"hello": ("bench.apps:hello", 4000), "download": ("bench.apps:download", 40)}


def make_certificate(directory: Path) -> tuple[Path, Path]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


class H3Server(ServerProcess):
    """zonda or hypercorn serving HTTP/3 on the same port number as its TCP listener."""

    def __init__(self, name: str, app: str, cpu: str, workdir: Path, tls: tuple[Path, Path]) -> None:
        super().__init__(name, cpu, workdir)
        self.app = app
        self.tls = tls

    def command(self) -> list[str]:
        cert, key = (str(path) for path in self.tls)
        if self.name == "zonda":
            return [
                *(sys.executable, "-m", "zonda", self.app, "--port", str(self.port), "--http3"),
                *("--loop", "uvloop", "--no-access-log", "--ssl-certfile", cert, "--ssl-keyfile", key),
            ]
        address = f"127.0.0.1:{self.port}"
        return [
            *(sys.executable, "-m", "hypercorn", self.app, "--bind", address, "--quic-bind", address),
            *("--certfile", cert, "--keyfile", key, "--workers", "1", "--worker-class", "asyncio"),
        ]

    def probe(self) -> None:
        run_clients(self.port, "/", 1, 1, None, timeout=2.0)


@dataclass
class Round:
    server: str
    workload: str
    requests: int
    seconds: float
    server_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.requests * 1e6


def run_clients(port: int, path: str, clients: int, requests: int, cpu: str | None, timeout: float) -> float:
    """``clients`` gtlsclient processes, ``requests`` each on one connection; the slowest one's wall time."""
    argv = [
        *(["taskset", "-c", cpu] if cpu else []),
        *("gtlsclient", "-q", "--exit-on-all-streams-close", "-n", str(requests), f"--timeout={timeout:g}s"),
        *("127.0.0.1", str(port), f"https://127.0.0.1:{port}{path}"),
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(clients)
    ]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout + 30)
        if proc.returncode != 0:
            failures.append(err.decode(errors="replace")[-300:])
    if failures:
        raise OSError(f"gtlsclient failed: {failures[0]}")
    return time.monotonic() - started


def one_round(
    server: str, workload: str, args: argparse.Namespace, workdir: Path, tls: tuple[Path, Path]
) -> Round:
    app, requests = WORKLOADS[workload]
    requests = args.requests or requests
    wait_for_quiet(args.quiet_wait)
    with H3Server(server, app, args.server_cpu, workdir, tls) as proc:
        run_clients(proc.port, "/", 1, 20, args.client_cpu, 30.0)  # warm-up
        before = proc.cpu_seconds()
        seconds = run_clients(proc.port, "/", args.clients, requests, args.client_cpu, 120.0)
        cpu = proc.cpu_seconds() - before
    result = Round(server, workload, requests * args.clients, seconds, cpu)
    log.info("%s %s: %.0f req/s, %.0f µs CPU/req", server, workload, result.rps, result.cpu_us)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.h3", description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="zonda,hypercorn")
    parser.add_argument("--only", default="hello,download")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=0, help="per client (default: per workload)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    servers = args.servers.split(",")
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="zonda-h3-") as tmp:
        workdir = Path(tmp)
        tls = make_certificate(workdir)
        for _ in range(args.rounds):
            for workload in args.only.split(","):
                for server in servers:
                    rounds.append(one_round(server, workload, args, workdir, tls))
    header = ["workload", *(f"{s} req/s" for s in servers), *(f"{s} µs CPU/req" for s in servers)]
    if "zonda" in servers and len(servers) > 1:
        header.append("zonda ÷ " + " ÷ ".join(s for s in servers if s != "zonda"))
    rows = []
    for workload in args.only.split(","):
        rps = {
            s: statistics.median(r.rps for r in rounds if r.server == s and r.workload == workload)
            for s in servers
        }
        cpu = {
            s: statistics.median(r.cpu_us for r in rounds if r.server == s and r.workload == workload)
            for s in servers
        }
        row = [workload, *(f"{rps[s]:,.0f}" for s in servers), *(f"{cpu[s]:,.0f}" for s in servers)]
        if "zonda" in servers and len(servers) > 1:
            row.append(" / ".join(f"{rps['zonda'] / rps[s]:.2f}x" for s in servers if s != "zonda"))
        rows.append(row)
    print(markdown_table(header, rows) if args.markdown else text_table(header, rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rounds], indent=2))


if __name__ == "__main__":
    main()
