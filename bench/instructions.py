"""User-space instructions per request of a server on the wire, deterministically: run the server under
``valgrind --tool=cachegrind`` (with its children: granian serves from a worker), send it exactly
``--requests`` GETs from ``--connections`` keep-alive connections, stop it, and read the instruction total; do
it again with ``--base`` requests, and divide the difference by the difference in requests. Start-up, imports
and the warm-up cancel out, so what is left is the per-request cost: the app and the server, not the kernel.
Unlike wrk's CPU per request on this shared VM it does not move with the neighbours' load
(``PYTHONHASHSEED=0``).

    .venv/bin/python -m bench.instructions --servers zonda,granian,uvicorn   # bench/fastapi_app.py
    .venv/bin/python -m bench.instructions --app bench.apps:hello --path / --servers zonda
    .venv/bin/python -m bench.instructions --gc --requests 10000   # the garbage collector's work, natively
    .venv/bin/python -m bench.instructions --servers zonda,zonda-base --base-src /tmp/other-tree/src

The client (this process, not under valgrind) is asyncio with plain streams: it reads each response's head and
its Content-Length body and checks the status is 200. Servers are started as bench/run.py starts them
(bench/http1.py ``server_command``), without taskset.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench.http1
from bench.http1 import server_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def one_connection(port: int, path: str, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:60]!r}")
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if match is None:
            raise RuntimeError("this client reads Content-Length bodies only")
        await reader.readexactly(int(match.group(1)))
    writer.close()
    await writer.wait_closed()


async def load(port: int, path: str, requests: int, connections: int) -> None:
    share, extra = divmod(requests, connections)
    await asyncio.gather(
        *(one_connection(port, path, share + (1 if n < extra else 0)) for n in range(connections))
    )


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server did not listen in time")


def instructions(server: str, app: str, path: str, requests: int, args: argparse.Namespace) -> int:
    """Total user-space instructions of the server's processes for start-up, warm-up and ``requests``."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / "cg.%p"
        cmd = server_command(server, app, port, None, Path(workdir))
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes"]
        valgrind += [f"--cachegrind-out-file={out}"]
        env = dict(os.environ, PYTHONHASHSEED="0")
        if args.pythonpath:
            env["PYTHONPATH"] = args.pythonpath
        proc = subprocess.Popen(valgrind + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port, proc)
            asyncio.run(load(port, path, args.warmup, args.connections))
            asyncio.run(load(port, path, requests, args.connections))
        finally:
            proc.send_signal(signal.SIGINT if server == "granian" else signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        total = 0
        for name in glob.glob(str(Path(workdir) / "cg.*")):
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(name, Path(args.keep) / f"{server}.{requests}.{Path(name).name}")
            text = Path(name).read_text()
            match = re.search(r"^summary: *(\d+)", text, re.MULTILINE)
            if match:
                total += int(match.group(1))
        return total


def read_census(directory: Path) -> dict[str, list[list[int]]]:
    return {name.name: list(json.loads(name.read_text()).values()) for name in directory.glob("census.*")}


def gc_census(server: str, app: str, path: str, args: argparse.Namespace) -> str:
    """The server run natively with bench/gc_census on its PYTHONPATH: its collections per 1,000 requests,
    the objects they examine per request, and the asyncio tasks alive when each starts (requests in
    flight)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        cmd = server_command(server, app, port, None, Path(workdir))
        env = dict(os.environ, PYTHONHASHSEED="0", ZONDA_GC_CENSUS_DIR=workdir)
        env["PYTHONPATH"] = str(Path(__file__).parent / "gc_census")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, proc)
            asyncio.run(load(port, path, args.warmup, args.connections))
            time.sleep(1.2)
            before = read_census(Path(workdir))
            asyncio.run(load(port, path, args.requests, args.connections))
            time.sleep(1.2)
            after = read_census(Path(workdir))
        finally:
            proc.send_signal(signal.SIGINT if server == "granian" else signal.SIGTERM)
            proc.wait(timeout=60)
    lines = []
    for name, now in after.items():
        then = before.get(name, [[0, 0, 0, 0]] * 3)
        delta = [[n - t for n, t in zip(now[g], then[g], strict=True)] for g in range(3)]
        collections = sum(d[0] for d in delta)
        if not collections:
            continue  # granian's parent: it serves nothing
        per_thousand = "/".join(f"{d[0] * 1000 / args.requests:.0f}" for d in delta)
        examined = "/".join(f"{d[1] / args.requests:.0f}" for d in delta)
        tasks = sum(d[2] for d in delta) / collections
        lines.append(
            f"{server}: collections per 1,000 requests (gen 0/1/2) {per_thousand}; "
            f"objects examined per request {examined}; asyncio tasks alive at a collection {tasks:.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", default="bench.fastapi_app:app")
    parser.add_argument("--path", default="/orders/42")
    parser.add_argument("--servers", default="zonda,granian,uvicorn")
    parser.add_argument("--base", type=int, default=256, help="requests of the first run")
    parser.add_argument("--requests", type=int, default=1536, help="requests of the second run")
    parser.add_argument("--warmup", type=int, default=128)
    parser.add_argument(
        "--connections", type=int, default=64, help="as many as bench/run.py's wrk keeps open"
    )
    parser.add_argument("--pythonpath", help="PYTHONPATH for the server (a sitecustomize that counts things)")
    parser.add_argument(
        "--base-src", help="the src directory zonda-base imports zonda from (as bench/run.py)"
    )
    parser.add_argument("--keep", help="copy the cachegrind outputs here (for cg_annotate and cg_diff)")
    parser.add_argument(
        "--gc", action="store_true", help="a census of the garbage collector instead (no valgrind)"
    )
    args = parser.parse_args()
    if args.base_src:
        bench.http1.BASE_SRC = Path(args.base_src).resolve()
    for server in args.servers.split(","):
        if args.gc:
            print(gc_census(server, args.app, args.path, args), flush=True)
            continue
        low = instructions(server, args.app, args.path, args.base, args)
        high = instructions(server, args.app, args.path, args.requests, args)
        per_request = (high - low) / (args.requests - args.base)
        print(f"{server}: {per_request:,.0f} instructions per request ({low:,} / {high:,})", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
