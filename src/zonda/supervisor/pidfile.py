"""``--pid FILE``: the supervisor's process id, written at start and removed at exit."""

from __future__ import annotations

import contextlib
import os
import tempfile

from zonda.errors import ConfigError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as someone else's
    return True


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.pid: int | None = None

    def create(self, pid: int | None = None) -> None:
        """Write ``pid`` (default: this process). A file naming another live process is an error."""
        pid = os.getpid() if pid is None else pid
        try:
            with open(self.path) as file:
                text = file.read().strip()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"pid: cannot read {self.path}: {exc.strerror}") from None
        else:
            if text.isdigit() and int(text) != pid and _alive(int(text)):
                raise ConfigError(f"pid: {self.path} names process {text}, which is still running")
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".zonda-pid-", dir=os.path.dirname(self.path))
            with os.fdopen(fd, "w") as file:
                file.write(f"{pid}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)  # atomic: a reader never sees a half-written file
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise ConfigError(f"pid: cannot write {self.path}: {exc.strerror}") from None
        self.pid = pid

    def remove(self) -> None:
        """Remove the file if it still names the process that wrote it."""
        if self.pid is None:
            return
        with contextlib.suppress(OSError), open(self.path) as file:
            if file.read().strip() == str(self.pid):
                os.unlink(self.path)
        self.pid = None
