"""zonda: a fast, safe ASGI server."""

from __future__ import annotations

__version__ = "0.1.0"

from zonda.cli import run
from zonda.config import Config
from zonda.server import Server

__all__ = ["Config", "Server", "__version__", "run"]
