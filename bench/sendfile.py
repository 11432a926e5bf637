"""How zonda sends files (``http.response.pathsend`` / ``zerocopysend``): which way, on which loop, from what size.

Run from the repo root with the project's virtualenv (wrap it in ``flock /tmp/zonda-bench.lock`` on a shared
machine)::

    .venv/bin/python -m bench.sendfile                  # large downloads, then small files (a few minutes)
    .venv/bin/python -m bench.sendfile --only large --rounds 1

It decided ``zonda.io._sendfile``: for each loop (stock asyncio, uvloop) it forces each way of sending, in a
freshly started zonda pinned to core 0, serving one page-cached file with pathsend:

- large: ``curl -o /dev/null`` (pinned to core 1) downloads a 200 MiB file ``--downloads`` times in a row,
  then 4 at once; reported: MiB/s of wall time and server CPU ms per GiB sent, plus the server's peak RSS;
- small: ``wrk -t1 -c16`` (core 1) on a 4 KiB, 16 KiB, 64 KiB and 256 KiB file, sent each way and with the
  small-file read (``read``: ``SMALL`` raised past the size, so the file is read on the loop thread and
  written with the head): server CPU µs per request.

The ways: ``OS`` = ``os.sendfile`` driven from the loop thread with writability waits (what zonda uses on
plaintext), ``CHUNKS`` = ``os.pread`` blocks in the default executor written through the transport (what TLS
connections use), and for comparison ``LOOP`` = stock asyncio's ``loop.sendfile`` (uvloop does not implement
it), which zonda does not use. The child forces a way by replacing ``zonda.io._sendfile.way_for`` (and for
``LOOP`` the sending method) before it serves; nothing in zonda reads a benchmark switch.

Only processes this script starts are stopped, by pid. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    LUA_DONE,
    ONE_SECOND,
    REPO,
    free_port,
    python_build,
    run_wrk,
    stop_tree,
    tree_cpu_seconds,
    wait_for_quiet,
)

MIB = 1024 * 1024
LARGE = 200 * MIB
SMALL_SIZES = (4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024)
WAYS = {"asyncio": ("LOOP", "OS", "CHUNKS"), "uvloop": ("OS", "CHUNKS")}
CHILD = """
import sys
import zonda
from zonda.io import _sendfile

loop, way, small, port, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
chosen = _sendfile.OS if way == "LOOP" else getattr(_sendfile, way)
_sendfile.way_for = lambda *args: chosen
if way == "LOOP":  # what zonda does not use: stock asyncio's loop.sendfile in place of OsSendfile
    class Fd:
        mode = "rb"

        def __init__(self, fd):
            self.fd = fd

        def fileno(self):
            return self.fd

    async def loop_sendfile(self, fd, offset, count):
        try:
            return await self.loop.sendfile(self.transport, Fd(fd), offset, count, fallback=False)
        except RuntimeError as exc:  # asyncio reports a peer gone at the first call as "not available"
            raise ConnectionResetError("sendfile failed") from exc

    _sendfile.FileSending._os_sendfile = loop_sendfile
_sendfile.SMALL = small
_sendfile.STEP = step or _sendfile.STEP
zonda.run("bench.sendfile:app", port=port, loop=loop, access_log=False, log_level="warning", lifespan="off")
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /NAME: pathsend of $BENCH_SENDFILE_DIR/NAME with its Content-Length."""
    if scope["type"] != "http":
        return
    path = os.path.join(os.environ["BENCH_SENDFILE_DIR"], scope["path"].lstrip("/"))
    size = os.stat(path).st_size
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % size)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.pathsend", "path": path})


@contextlib.contextmanager
def serving(loop: str, way: str, small: int, directory: Path, step: int = 0) -> Iterator[tuple[int, int]]:
    """A zonda child pinned to core 0 with the given way forced; yields (pid, port) once it answers."""
    port = free_port()
    env = {**os.environ, "BENCH_SENDFILE_DIR": str(directory)}
    argv = ["taskset", "-c", "0", sys.executable, "-c", CHILD, loop, way, str(small), str(port), str(step)]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/f4096"], check=False
        ).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"zonda ({loop}, {way}) did not start")
            time.sleep(0.1)
        yield proc.pid, port
    finally:
        stop_tree(proc, f"zonda ({loop}, {way})")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def curl_download(port: int, name: str, parallel: int) -> None:
    argv = ["taskset", "-c", "1", "curl", "-sSf", "-o", "/dev/null", f"http://127.0.0.1:{port}/{name}"]
    procs = [subprocess.Popen(argv) for _ in range(parallel)]
    for proc in procs:
        if proc.wait(120):
            raise RuntimeError("curl failed")


def measure_large(loop: str, way: str, args: argparse.Namespace, directory: Path) -> dict[str, float]:
    wait_for_quiet(args.quiet_wait, samples=ONE_SECOND)
    with serving(loop, way, 16 * 1024, directory, args.step) as (pid, port):
        curl_download(port, "large", 1)  # warm: the page cache, the first connection
        cpu, started = tree_cpu_seconds(pid), time.monotonic()
        for _ in range(args.downloads):
            curl_download(port, "large", 1)
        elapsed, cpu = time.monotonic() - started, tree_cpu_seconds(pid) - cpu
        cpu4, started4 = tree_cpu_seconds(pid), time.monotonic()
        curl_download(port, "large", 4)
        elapsed4, cpu4 = time.monotonic() - started4, tree_cpu_seconds(pid) - cpu4
        rss = peak_rss_mib(pid)
    gib = args.downloads * LARGE / (1024 * MIB)
    return {
        "MiB/s": args.downloads * LARGE / MIB / elapsed,
        "CPU ms/GiB": cpu * 1000 / gib,
        "MiB/s x4": 4 * LARGE / MIB / elapsed4,
        "CPU ms/GiB x4": cpu4 * 1000 / (4 * LARGE / (1024 * MIB)),
        "peak RSS MiB": rss,
    }


def measure_small(
    loop: str, way: str, small: int, size: int, args: argparse.Namespace, directory: Path
) -> float:
    wait_for_quiet(args.quiet_wait, samples=ONE_SECOND)
    with serving(loop, way, small, directory) as (pid, port):
        script, path = directory / "done.lua", f"/f{size}"
        run_wrk(port, script, 1, 16, cpu="1", request_timeout=None, path=path)  # warm-up
        cpu = tree_cpu_seconds(pid)
        summary, _ = run_wrk(port, script, args.duration, 16, cpu="1", request_timeout=None, path=path)
        cpu = tree_cpu_seconds(pid) - cpu
    if summary["errors"]:
        raise RuntimeError(f"wrk saw {summary['errors']} errors")
    return float(cpu * 1e6 / summary["requests"])


def make_files(directory: Path) -> None:
    block = os.urandom(MIB)
    with (directory / "large").open("wb") as out:
        for _ in range(LARGE // MIB):
            out.write(block)
    for size in (*SMALL_SIZES, 4096):
        (directory / f"f{size}").write_bytes(os.urandom(size))
    (directory / "done.lua").write_text(LUA_DONE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("large", "small"), default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--downloads", type=int, default=5, help="sequential 200 MiB downloads per round")
    parser.add_argument("--duration", type=float, default=3.0, help="wrk seconds per small-file measurement")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--step", type=int, default=0, help="os.sendfile bytes per call (default: zonda's)")
    parser.add_argument("--ways", default=None, help="only these ways, e.g. OS,LOOP")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {1})
    print(f"Python: {python_build()} (zonda's child and this script)")
    with tempfile.TemporaryDirectory(prefix="zonda-bench-sendfile-") as tmp:
        directory = Path(tmp)
        make_files(directory)
        if args.only in (None, "large"):
            print(
                f"200 MiB pathsend downloads with curl: {args.downloads} in a row, then 4 at once (medians)"
            )
            for loop, ways in WAYS.items():
                for way in ways:
                    if args.ways and way not in args.ways.split(","):
                        continue
                    rounds = [measure_large(loop, way, args, directory) for _ in range(args.rounds)]
                    cells = "  ".join(
                        f"{k} {statistics.median(r[k] for r in rounds):8.1f}" for k in rounds[0]
                    )
                    print(f"{loop:8s} {way:7s} {cells}", flush=True)
        if args.only in (None, "small"):
            print(
                "small files, wrk -c16: server CPU µs/request (median); 'read': SMALL on, read with the head"
            )
            for loop, ways in WAYS.items():
                for way in ("read", *ways):
                    cells = []
                    for size in SMALL_SIZES:
                        small, forced = (size, ways[0]) if way == "read" else (0, way)
                        median = statistics.median(
                            measure_small(loop, forced, small, size, args, directory)
                            for _ in range(args.rounds)
                        )
                        cells.append(f"{size // 1024:>3} KiB {median:6.1f}")
                    print(f"{loop:8s} {way:7s} " + "   ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
