from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    """The event loop a real server runs on: every test that takes it runs on both."""
    return str(request.param)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog with all of zonda's records, debug ones included, for tests that assert on log lines."""
    caplog.set_level(logging.DEBUG, logger="zonda")
    return caplog


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory for Unix sockets: tmp_path can be longer than sun_path's ~107 bytes."""
    with tempfile.TemporaryDirectory(prefix="zonda-") as directory:
        yield directory
