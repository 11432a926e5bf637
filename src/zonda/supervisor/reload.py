"""``--reload``: watch files with ``watchfiles`` (``pip install 'zonda[reload]'``) and tell the supervisor.

The watcher runs in a thread of the supervisor (watchfiles blocks); each batch of changes is queued and one
byte is written to a pipe the supervisor's selector watches, so the supervisor itself stays single-threaded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zonda.config import Config
from zonda.errors import ConfigError

logger = logging.getLogger("zonda.supervisor")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", "*.py[cod]", "*.sw?", "*~", "__pycache__", "node_modules")


def _matches(path: Path, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) or path.match(pattern) for pattern in patterns)


class ReloadFilter:
    """Which changed paths reload: a file matching an include glob (``*.py`` by default, matched against the
    name or the path's tail) and matching no exclude glob, nor below a directory that does."""

    def __init__(
        self, includes: Iterable[str] = (), excludes: Iterable[str] = (), roots: Iterable[str] = ()
    ) -> None:
        self.includes = tuple(includes) or DEFAULT_INCLUDES
        self.excludes = DEFAULT_EXCLUDES + tuple(excludes)
        self.roots: list[Path] = []
        for root in roots:
            for form in (Path(os.path.abspath(root)), Path(root).resolve()):
                if form not in self.roots:
                    self.roots.append(form)

    def _relative_parts(self, path: Path) -> tuple[str, ...]:
        for root in self.roots:
            with contextlib.suppress(ValueError):
                return path.relative_to(root).parts
        return path.parts

    def __call__(self, change: Any, path_text: str) -> bool:
        path = Path(path_text)
        parts = self._relative_parts(path)
        for part in parts[:-1]:  # an excluded directory below a watched root
            if any(fnmatch.fnmatch(part, pattern) for pattern in self.excludes):
                return False
        if _matches(path, self.excludes):
            return False
        return _matches(path, self.includes)


def watch_dirs(config: Config) -> list[str]:
    """The directories to watch: ``--reload-dir`` values, or else the app directory."""
    dirs = config.reload_dirs or (config.app_dir,)
    resolved = []
    for directory in dirs:
        path = os.path.abspath(directory)
        if not os.path.isdir(path):
            raise ConfigError(f"reload_dirs: {directory!r} is not a directory")
        if path not in resolved:
            resolved.append(path)
    return resolved


class Watcher:
    """Watches ``dirs`` in a thread; ``fileno()`` turns readable when changes are waiting in ``take()``."""

    def __init__(self, dirs: list[str], watch_filter: ReloadFilter, delay: float = 0.4) -> None:
        try:
            import watchfiles
        except ImportError:
            raise ConfigError("reload: needs the watchfiles package (pip install 'zonda[reload]')") from None
        self._watch = watchfiles.watch
        self.dirs = dirs
        self.filter = watch_filter
        self.debounce_ms = max(1, round(delay * 1000))  # --reload-delay: changes gathered into one reload
        self._read_fd, self._write_fd = os.pipe()
        for fd in (self._read_fd, self._write_fd):
            os.set_inheritable(fd, False)
        os.set_blocking(self._read_fd, False)
        self._lock = threading.Lock()
        self._changes: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zonda-reload", daemon=True)

    def fileno(self) -> int:
        return self._read_fd

    def fds(self) -> tuple[int, int]:
        return self._read_fd, self._write_fd

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for changes in self._watch(
                *self.dirs,
                watch_filter=self.filter,
                stop_event=self._stop,
                debounce=self.debounce_ms,
                step=50,
                rust_timeout=500,
                raise_interrupt=False,
            ):
                with self._lock:
                    self._changes.update(path for _, path in changes)
                with contextlib.suppress(OSError):
                    os.write(self._write_fd, b"!")
        except Exception:
            logger.exception("The file watcher failed: reload is off")

    def take(self) -> list[str]:
        """The changed paths since the last call (drains the wake-up pipe)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read_fd, 4096):
                pass
        with self._lock:
            changes, self._changes = sorted(self._changes), set()
        return changes

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
