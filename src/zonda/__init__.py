"""zonda: a fast, safe ASGI server."""

from __future__ import annotations

__version__ = "0.1.0"

from zonda import _compiled

_compiled.choose()  # before the modules it may compile are imported (below)

from zonda.cli import run  # noqa: E402
from zonda.config import Config  # noqa: E402
from zonda.server import Server  # noqa: E402

__all__ = ["Config", "Server", "__version__", "run"]
