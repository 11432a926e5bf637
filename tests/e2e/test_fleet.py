"""A fleet behind a real load balancer: three zonda processes behind HAProxy (health checks on /readyz) or nginx
(passive checks, next upstream on error), steady load, and a rolling replacement of each instance in turn (start
the new one, wait until it is ready, SIGTERM the old, which stops accepting, answers /readyz with 503 while it
drains and exits 0): not one request fails.

Each instance is ``python -m zonda`` on its own port with ``--metrics-bind`` for /readyz; the balancer knows six
addresses from the start (the three old instances and the three that replace them), as a fleet with fixed slots
does. The load is a few threads of keep-alive GETs through the balancer, each answered after 20 ms by the pid that
served it. Runs on one driver: what is tested is the process's life, not the event loop.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import ZondaProcess, child_process, free_port, require_tool, wait_for

pytestmark = pytest.mark.drivers("uvloop")

APP = """
import os

import anyio


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await anyio.sleep(0.02)
    body = b"%d" % os.getpid()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""

HAPROXY = """
global
    maxconn 500

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 3
    option redispatch
    retry-on all-retryable-errors

frontend fe
    bind 127.0.0.1:{port}
    default_backend fleet

backend fleet
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2
{servers}
"""

NGINX = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream fleet {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_503;
            proxy_next_upstream_tries 6;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


@dataclass
class Slot:
    port: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    process: ZondaProcess | None = None

    def start(self, app_dir: Path) -> ZondaProcess:
        args = ["fleetapp:app", "--app-dir", str(app_dir), "--port", str(self.port), "--no-access-log"]
        args += ["--metrics-bind", f"127.0.0.1:{self.metrics}", "--timeout-graceful-shutdown", "10"]
        self.process = ZondaProcess(args)
        self.process.wait_listening()
        wait_for(lambda: readyz(self.metrics) == 200, what=f"/readyz on {self.metrics}")
        return self.process


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Load:
    """``threads`` keep-alive clients of the balancer, GET after GET until stopped; every outcome recorded."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode()
                if response.status == 200:
                    self.answered.append(body)
                else:
                    self.failures.append(f"status {response.status}: {body[:80]}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@contextmanager
def fleet(tmp_path: Path) -> Iterator[tuple[list[Slot], list[Slot]]]:
    (tmp_path / "fleetapp.py").write_text(APP)
    old, new = [Slot() for _ in range(3)], [Slot() for _ in range(3)]
    with ExitStack() as stack:
        for slot in old:
            stack.callback(lambda slot=slot: slot.process and slot.process.kill())
            slot.start(tmp_path)
        for slot in new:
            stack.callback(lambda slot=slot: slot.process and slot.process.kill())
        yield old, new


def roll(tmp_path: Path, old: list[Slot], new: list[Slot], balancer_port: int) -> None:
    """Steady load through the balancer while each old instance is replaced by a new one in turn."""
    with Load(balancer_port) as load:
        wait_for(lambda: len(load.answered) >= 20, what="load through the balancer")
        for before, after in zip(old, new, strict=True):
            pid = after.start(tmp_path).proc.pid
            wait_for(
                lambda pid=pid: str(pid) in load.answered[-50:], what=f"the balancer using {pid}", timeout=10
            )
            assert before.process is not None
            before.process.signal(signal.SIGTERM)
            assert before.process.wait(20) == 0, before.process.output
        settled = len(load.answered)
        wait_for(lambda: len(load.answered) >= settled + 20, what="load after the last replacement")
    assert load.failures == [], load.failures[:10]
    old_pids = {str(slot.process.proc.pid) for slot in old if slot.process}
    new_pids = {str(slot.process.proc.pid) for slot in new if slot.process}
    assert old_pids <= set(load.answered) and new_pids <= set(load.answered)
    assert not set(load.answered[-20:]) & old_pids  # at the end only the new instances answer


def test_rolling_replacement_behind_haproxy_loses_nothing(tmp_path: Path) -> None:
    haproxy = require_tool("haproxy")
    with fleet(tmp_path) as (old, new):
        port = free_port()
        servers = "\n".join(
            f"    server {name}{i} 127.0.0.1:{slot.port} check port {slot.metrics}"
            for name, slots in (("old", old), ("new", new))
            for i, slot in enumerate(slots)
        )
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=port, servers=servers))
        with child_process([haproxy, "-db", "-f", str(config)], port, str(tmp_path / "haproxy.log")):
            roll(tmp_path, old, new, port)


def test_rolling_replacement_behind_nginx_loses_nothing(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    with fleet(tmp_path) as (old, new):
        port = free_port()
        servers = "\n".join(
            f"        server 127.0.0.1:{slot.port} max_fails=1 fail_timeout=1s;" for slot in old + new
        )
        config = tmp_path / "nginx.conf"
        config.write_text(NGINX.format(tmp=tmp_path, port=port, servers=servers))
        argv = [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)]
        with child_process(argv, port, str(tmp_path / "nginx.out")):
            roll(tmp_path, old, new, port)
