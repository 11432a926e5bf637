"""Logging set-up: the ``zonda.error`` and ``zonda.access`` loggers, levels, colors, and ``--log-config`` files.

Other loggers: ``zonda.connection`` (a line per connection at debug), ``zonda.asgi`` (a line per ASGI message at
trace), ``zonda.http2`` and ``zonda.supervisor``; all children of ``zonda``, whose level ``--log-level`` sets.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
import time
from typing import Any

from zonda._compat import tomllib
from zonda.errors import ConfigError


def describe_peer(address: tuple[str, int | None] | None) -> str:
    """An address as log lines show it: ``1.2.3.4:80``, ``[::1]:80``, ``unix:/path``, or ``client`` when unknown."""
    if address is None:
        return "client"
    host, port = address
    if port is None:
        return f"unix:{host}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

DEFAULT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class Formatter(logging.Formatter):
    """``logging.Formatter`` with the same output, but ``asctime``'s date and time are formatted once a
    second rather than per record: with the default ``zonda.access`` line that is once per request, and
    ``localtime`` + ``strftime`` were about 8% of the line's cost. (A ``datefmt`` is cached the same way.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cached: tuple[int, str | None, Any, str] | None = None  # second, datefmt, converter, text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        converter = self.converter
        cached = self._cached
        if cached is None or cached[0] != second or cached[1] != datefmt or cached[2] is not converter:
            text = time.strftime(datefmt or self.default_time_format, converter(second))
            cached = self._cached = (second, datefmt, converter, text)
        if datefmt or not self.default_msec_format:
            return cached[3]
        return self.default_msec_format % (cached[3], record.msecs)


LEVEL_COLORS = {
    TRACE: "34",  # blue
    logging.DEBUG: "36",  # cyan
    logging.INFO: "32",  # green
    logging.WARNING: "33",  # yellow
    logging.ERROR: "31",  # red
    logging.CRITICAL: "1;31",  # bold red
}


class ColorFormatter(Formatter):
    """``Formatter`` with the level name in a color per level: one prepared format per level, so a record is
    neither copied nor changed (other handlers see it as it was)."""

    def __init__(self, fmt: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt, *args, **kwargs)
        self._styles = {
            level: type(self._style)(fmt.replace("%(levelname)s", f"\033[{color}m%(levelname)s\033[0m"))
            for level, color in LEVEL_COLORS.items()
        }

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self._styles.get(record.levelno, self._style).format(record)


def colors_wanted(use_colors: bool | None, stream: Any = None) -> bool:
    """``--use-colors`` / ``--no-use-colors``, or by default: a terminal, and no NO_COLOR (no-color.org)."""
    if use_colors is not None:
        return use_colors
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def _read_log_config(path: str) -> dict[str, Any]:
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(f"log_config: cannot read {path}: {exc.strerror}") from None
    try:
        if ext == ".json":
            data = json.loads(raw)
        elif ext == ".toml":
            data = tomllib.loads(raw.decode())
        elif ext in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("log_config: YAML files need PyYAML installed") from None
            data = yaml.safe_load(raw)
        else:
            raise ConfigError(f"log_config: {path} must end in .json, .toml, .yaml, .yml or .ini")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"log_config: {path} could not be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"log_config: {path} must hold a dictConfig mapping")
    data.setdefault("version", 1)
    data.setdefault("disable_existing_loggers", False)
    return data


def _file_config(path: str) -> None:
    """An ``.ini`` file in ``logging.config.fileConfig``'s format (uvicorn takes these too)."""
    if not os.path.isfile(path):
        raise ConfigError(f"log_config: cannot read {path}: no such file")
    try:
        logging.config.fileConfig(path, disable_existing_loggers=False)
    except (configparser.Error, KeyError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"log_config: {path}: {type(exc).__name__}: {exc}") from None


def configure_logging(
    log_level: str = "info",
    access_log: bool = True,
    log_config: str | None = None,
    use_colors: bool | None = None,
) -> None:
    """Give zonda's loggers a stderr handler (unless a log config says otherwise) and set their levels."""
    if log_config and os.path.splitext(log_config)[1].lower() == ".ini":
        _file_config(log_config)
    elif log_config:
        try:
            logging.config.dictConfig(_read_log_config(log_config))
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ConfigError(f"log_config: {exc}") from None
    else:
        root = logging.getLogger("zonda")
        if not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            colored = colors_wanted(use_colors, handler.stream)
            handler.setFormatter((ColorFormatter if colored else Formatter)(DEFAULT_FORMAT))
            root.addHandler(handler)
            root.propagate = False
    if log_config:
        if not access_log:
            logging.getLogger("zonda.access").setLevel(logging.CRITICAL + 1)
        return  # the file owns the levels
    level = LEVELS[log_level]
    logging.getLogger("zonda").setLevel(level)
    logging.getLogger("zonda.error").setLevel(level)
    # access lines are INFO records: a level above info (e.g. warning) hides them too, as it does in uvicorn
    access_level = max(level, logging.INFO) if access_log else logging.CRITICAL + 1
    logging.getLogger("zonda.access").setLevel(access_level)


def access_log_enabled() -> bool:
    """Decided once at start-up: the hot path never asks logging per request."""
    return logging.getLogger("zonda.access").isEnabledFor(logging.INFO)
