"""Every end-to-end test runs on every driver: asyncio, uvloop and trio.

``driver`` is one session-scoped parameter, so pytest groups the tests by driver and a module- or session-scoped
server fixture can take it too. Servers started in the test process (``helpers.run_server``) and ``python -m zonda``
children both read it from ``ZONDA_LOOP``, set for each test; a test or fixture that names a loop itself passes
``loop=driver`` (or takes ``loop``, the same value here). ``@pytest.mark.drivers("asyncio", ...)`` narrows a test
or module to some drivers, for behaviour one driver does not have; the others are deselected, not skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

DRIVERS = ("asyncio", "uvloop", "trio")


@pytest.fixture(scope="session", params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def loop(driver: str) -> str:
    """The loop a test's own server runs on: the driver (tests/conftest.py's asyncio/uvloop pair is for unit tests)."""
    return driver


@pytest.fixture(autouse=True)
def _serve_on_driver(driver: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ZONDA_LOOP", driver)
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("drivers")
        callspec = getattr(item, "callspec", None)
        chosen = callspec.params.get("driver") if callspec is not None else None
        if marker is not None and chosen is not None and chosen not in marker.args:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
