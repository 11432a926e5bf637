from __future__ import annotations

import select
import time
from pathlib import Path

import pytest

from zonda.config import Config
from zonda.errors import ConfigError
from zonda.supervisor.reload import ReloadFilter, watch_dirs


def test_default_filter_takes_python_files_only(tmp_path: Path) -> None:
    accept = ReloadFilter(roots=[str(tmp_path)])
    assert accept(None, str(tmp_path / "app.py"))
    assert accept(None, str(tmp_path / "pkg" / "mod.py"))
    assert not accept(None, str(tmp_path / "notes.txt"))
    assert not accept(None, str(tmp_path / "app.pyc"))
    assert not accept(None, str(tmp_path / ".hidden.py"))
    assert not accept(None, str(tmp_path / "__pycache__" / "app.py"))
    assert not accept(None, str(tmp_path / ".venv" / "lib" / "x.py"))


def test_includes_and_excludes(tmp_path: Path) -> None:
    accept = ReloadFilter(["*.py", "*.html"], ["tests", "*_generated.py"], roots=[str(tmp_path)])
    assert accept(None, str(tmp_path / "templates" / "index.html"))
    assert accept(None, str(tmp_path / "app.py"))
    assert not accept(None, str(tmp_path / "tests" / "test_app.py"))
    assert not accept(None, str(tmp_path / "schema_generated.py"))


def test_a_watched_root_inside_a_hidden_directory_still_works(tmp_path: Path) -> None:
    root = tmp_path / ".cache" / "project"
    accept = ReloadFilter(roots=[str(root)])
    assert accept(None, str(root / "app.py"))


def test_watch_dirs(tmp_path: Path) -> None:
    assert watch_dirs(Config(app="a:b", app_dir=str(tmp_path))) == [str(tmp_path)]
    other = tmp_path / "src"
    other.mkdir()
    config = Config(app="a:b", reload_dirs=(str(other), str(other)))
    assert watch_dirs(config) == [str(other)]
    with pytest.raises(ConfigError, match="not a directory"):
        watch_dirs(Config(app="a:b", reload_dirs=(str(tmp_path / "nope"),)))


def test_reload_options_from_cli_env_and_toml(tmp_path: Path) -> None:
    from zonda.cli import config_from_args

    config = config_from_args(
        [
            "a:b",
            "--reload",
            "--reload-dir",
            "src",
            "--reload-dir",
            "lib",
            "--reload-include",
            "*.html",
            "--reload-exclude",
            "tests",
            "--workers",
            "auto",
        ]
    )
    assert config.reload and config.reload_dirs == ("src", "lib")
    assert config.reload_includes == ("*.html",) and config.reload_excludes == ("tests",)
    assert config.workers == 0
    env = Config.load(env={"ZONDA_RELOAD_DIRS": "src,lib"})
    assert env.reload_dirs == ("src", "lib")
    toml = tmp_path / "zonda.toml"
    toml.write_text('reload = true\nreload-dir = ["src"]\nworkers = "auto"\nmax-requests = 100\n')
    loaded = Config.load(env={}, config_file=str(toml))
    assert loaded.reload_dirs == ("src",) and loaded.workers == 0 and loaded.max_requests == 100


def test_reload_delay_is_the_time_changes_are_gathered(tmp_path: Path) -> None:
    """uvicorn's --reload-delay: how long the watcher gathers changes into one reload."""
    from zonda.cli import config_from_args
    from zonda.supervisor.reload import Watcher

    assert config_from_args(["a:b", "--reload-delay", "0.05"]).reload_delay == 0.05
    assert Config().reload_delay == 0.4
    watcher = Watcher([str(tmp_path)], ReloadFilter(roots=[str(tmp_path)]), delay=0.05)
    assert watcher.debounce_ms == 50
    watcher.start()
    try:
        changed = tmp_path / "app.py"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the watcher may still be starting: write until it sees one
            changed.write_text(str(time.monotonic()))
            if select.select([watcher], [], [], 0.5)[0]:
                break
        assert watcher.take() == [str(changed)]
    finally:
        watcher.stop()
