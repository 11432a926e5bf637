"""Fixtures for the framework suite: one real zonda process per (app, event loop), clients for HTTP/1.1 and
HTTP/2, and a check that the server log stayed clean of tracebacks while a test passed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from framework_clients import ClientFor, WebSocketOpener, open_h1_websocket, open_h2_websocket
from framework_servers import assert_clean, make_django_db, running
from helpers import ZondaProcess


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.fixture(autouse=True)
def clean_server_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that passed left no traceback in the log of any server it ran against."""
    starts = {id(process): len(process.lines) for process in running}
    yield
    report = request.node.stash.get(CALL_REPORT, None)
    if report is None or not report.passed:
        return
    for process in running:
        new = "".join(process.lines[starts.get(id(process), 0) :])
        assert_clean(new, f"the log of {process.url} during this test")


@pytest.fixture(params=["http1", "http2"])
def http_version(request: pytest.FixtureRequest) -> str:
    """HTTP/1.1, or HTTP/2 with prior knowledge on the plain port."""
    return str(request.param)


@pytest.fixture
def client_for(http_version: str) -> Iterator[ClientFor]:
    """Makes an httpx client of this test's HTTP version for a server; closes them after; checks every
    response came in that version."""
    clients: list[httpx.Client] = []
    expected = {"http1": "HTTP/1.1", "http2": "HTTP/2"}[http_version]

    def check_version(response: httpx.Response) -> None:
        assert response.http_version == expected

    def make(process: ZondaProcess) -> httpx.Client:
        assert process.url is not None
        client = httpx.Client(
            base_url=process.url,
            http1=http_version == "http1",
            http2=http_version == "http2",  # prior knowledge: zonda serves it on the plain port
            timeout=15,
            event_hooks={"response": [check_version]},
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def open_websocket(http_version: str) -> WebSocketOpener:
    """Opens a WebSocket over this test's HTTP version: the websockets client on HTTP/1.1, RFC 8441 on h2."""
    return open_h1_websocket if http_version == "http1" else open_h2_websocket


@pytest.fixture(scope="session")
def django_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a zonda serving the Django project: its settings and a migrated database with a
    superuser, made once for the whole run."""
    return make_django_db(tmp_path_factory.mktemp("django"))
