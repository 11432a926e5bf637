from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zonda.errors import ConfigError
from zonda.supervisor.pidfile import PidFile


def test_written_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "zonda.pid"
    pidfile = PidFile(str(path))
    pidfile.create()
    assert path.read_text() == f"{os.getpid()}\n"
    pidfile.remove()
    assert not path.exists()


def test_stale_file_is_replaced(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "zonda.pid"
    path.write_text(f"{dead.pid}\n")
    pidfile = PidFile(str(path))
    pidfile.create()
    assert path.read_text() == f"{os.getpid()}\n"
    pidfile.remove()


def test_file_naming_a_live_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zonda.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(ConfigError, match="still running"):
        PidFile(str(path)).create()
    assert path.read_text() == f"{os.getppid()}\n"


def test_remove_leaves_a_file_someone_else_rewrote(tmp_path: Path) -> None:
    path = tmp_path / "zonda.pid"
    pidfile = PidFile(str(path))
    pidfile.create()
    path.write_text("1\n")
    pidfile.remove()
    assert path.read_text() == "1\n"


def test_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        PidFile(str(tmp_path / "missing" / "zonda.pid")).create()
