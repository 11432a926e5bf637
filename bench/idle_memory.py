"""Where an idle keep-alive connection's memory goes in Python's heap: a tracemalloc breakdown per connection.

bench/run.py's ``idle`` section gives the total (RSS of the process tree per connection); this says what it is
made of. A real zonda runs in a thread of this process (``tests.helpers.run_server``, 60 s keep-alive, as
bench/run.py starts it); this process opens ``--connections`` connections to it and makes one GET on each, so
each is a keep-alive connection that served a request, then compares a snapshot taken before them with one
taken after (garbage collected both times), leaving out what the client side allocated. Run by hand::

    .venv/bin/python -m bench.idle_memory                        # uvloop, 1,000 connections
    .venv/bin/python -m bench.idle_memory --loop trio --top 30

Output: the bytes per connection grouped by the source line that allocated them (the innermost frame in
zonda, uvloop or httptools' callers), largest first, and their total. Objects a C extension allocates with
no Python frame of its own (uvloop's transports, httptools' parser) show under the zonda or asyncio line that
was running; ``--frames`` more frames say which.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections, each having made one request and read its whole response."""
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(REQUEST)
        received = b""
        while not received.endswith(b"Hello, world!"):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("the server closed a connection before answering")
            received += chunk
        clients.append(sock)
    return clients


def settled_snapshot() -> tracemalloc.Snapshot:
    time.sleep(1.0)  # the server's loop finishes its turns (responses done, timers armed)
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, __file__, all_frames=True),  # the client side
            tracemalloc.Filter(False, tracemalloc.__file__),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio", "trio"))
    parser.add_argument("--frames", type=int, default=1, help="frames per group (1: the allocating line)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from bench.apps import hello
    from helpers import run_server  # type: ignore[import-not-found]

    tracemalloc.start(max(args.frames, 8))
    with run_server(hello, loop=args.loop, timeout_keep_alive=60, access_log=False) as server:
        warm = open_idle(server.port, 20)  # first-use caches (imports, the date header) out of the difference
        for sock in warm:
            sock.close()
        before = settled_snapshot()
        clients = open_idle(server.port, args.connections)
        after = settled_snapshot()
        stats = after.compare_to(before, "traceback" if args.frames > 1 else "lineno")
        total = sum(stat.size_diff for stat in stats)
        print(f"{args.loop}: {total / args.connections:,.0f} B per idle connection in Python's heap")
        for stat in stats[: args.top]:
            per = stat.size_diff / args.connections
            if abs(per) < 4:
                break
            frames = stat.traceback.format(limit=args.frames, most_recent_first=True)
            where = " <- ".join(line.strip() for line in frames if not line.startswith("    "))
            print(f"{per:8,.0f} B  {stat.count_diff / args.connections:5.2f} blocks  {where}")
        for sock in clients:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
