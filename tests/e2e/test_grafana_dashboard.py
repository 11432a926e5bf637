"""The Grafana dashboard (deploy/grafana/zonda.json) against real data: Debian's Prometheus scrapes a zonda with
two workers while it serves HTTP/1.1, WebSocket and HTTP/2, rejects a body over its limit, answers a PING flood
and replaces a killed worker; then every panel's PromQL expression, with the dashboard's variables filled in as
Grafana would (all jobs, all instances, a rate interval of four scrapes), goes through Prometheus' HTTP API and
must return data."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from h2socket import ErrorCodes, RawH2, ping
from helpers import (
    REPO,
    child_process,
    free_port,
    raw_request,
    require_tool,
    status_of,
    wait_for,
    zonda_process,
)
from wsframes import WSClient, text

pytestmark = pytest.mark.drivers("uvloop")
DASHBOARD = Path(REPO, "deploy", "grafana", "zonda.json")

APP = """
import os


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        return
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""

PROMETHEUS = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: zonda
    static_configs:
      - targets: ["127.0.0.1:{metrics}"]
"""


def panel_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables filled in as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "4s")
            expr = expr.replace('"$job"', '".*"').replace('"$instance"', '".*"')
            assert "$" not in expr, expr
            found.append((panel["title"], expr))
    return found


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def scraped_once(port: int) -> bool:
    """Prometheus answers (it says 503 while it starts) and has scraped zonda at least once."""
    try:
        return query(port, "up") != []
    except OSError:  # urllib.error.HTTPError and URLError are OSErrors
        return False


def test_the_dashboard_covers_what_it_must() -> None:
    titles = " / ".join(title for title, _ in panel_expressions()).lower()
    for topic in ("status class", "protocol", "latency", "in flight", "connections", "rejections", "http/2"):
        assert topic in titles, topic
    assert "worker restarts" in titles


def test_every_panel_returns_data_from_a_real_zonda(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    (tmp_path / "dashapp.py").write_text(APP)
    metrics_port = free_port()
    args = ["dashapp:app", "--port", "0", "--app-dir", str(tmp_path), "--workers", "2", "--no-access-log"]
    args += ["--metrics-bind", f"127.0.0.1:{metrics_port}", "--limit-request-body", "100"]
    args += ["--h2-max-control-frames", "50"]
    with zonda_process(*args) as proc:
        proc.wait_listening(20)
        port = proc.port
        wait_for(lambda: len(re.findall(r"Metrics on http://", proc.output)) >= 2, timeout=20)
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(PROMETHEUS.format(metrics=metrics_port))
        argv = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        with child_process(argv, prom_port, str(tmp_path / "prometheus.log")):
            wait_for(lambda: scraped_once(prom_port), what="the first scrape", timeout=20)
            pids: set[str] = set()
            stop_at = time.monotonic() + 5  # traffic for several scrapes: rates need two points at least
            while time.monotonic() < stop_at:
                for path in ("/", "/", "/", "/missing"):
                    response = raw_request(
                        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                    )
                    if path == "/":
                        pids.add(response.partition(b"\r\n\r\n")[2].decode())
                big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                assert status_of(raw_request(port, big)) == 413
                with WSClient(port, "/ws") as ws:
                    ws.send(text("hi"))
                    ws.recv_frame()
                    ws.close_handshake(1000)
                with RawH2(port) as flooder:
                    flooder.send(*[ping()] * 100)
                    assert flooder.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
                time.sleep(0.2)
            os.kill(int(min(pids)), signal.SIGKILL)  # a worker of the supervisor this test started
            wait_for(lambda: "restarting it" in proc.output, timeout=20)
            empty = []
            for title, expr in panel_expressions():
                wait_until = time.monotonic() + 10  # a few more scrapes, for the restart's increase
                while not query(prom_port, expr) and time.monotonic() < wait_until:
                    time.sleep(0.5)
                if not query(prom_port, expr):
                    empty.append(f"{title}: {expr}")
            assert empty == [], "panels without data:\n" + "\n".join(empty)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
