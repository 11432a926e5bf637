"""``--env-file``: the .env format python-dotenv reads, and what reaches the environment (and a real app)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from helpers import zonda_process
from zonda.envfile import apply_env_file, parse_env_text
from zonda.errors import ConfigError

SAMPLE = """\
# a comment line

export PLAIN=1
SPACED = two words   # a comment after a space
HASH=a#b
EMPTY=
SINGLE='kept ${PLAIN} \\n as is'
DOUBLE="line\\nnext ${PLAIN} ${MISSING:-fallback} \\"quoted\\""
MULTI="first
second" # comment
UNQUOTED_EXPANSION=${PLAIN}-${FROM_ENV}
DOTTED.NAME=ok
"""


def test_the_dotenv_format() -> None:
    values = parse_env_text(SAMPLE, {"FROM_ENV": "env"})
    assert values == {
        "PLAIN": "1",
        "SPACED": "two words",
        "HASH": "a#b",
        "EMPTY": "",
        "SINGLE": "kept ${PLAIN} \\n as is",
        "DOUBLE": 'line\nnext 1 fallback "quoted"',
        "MULTI": "first\nsecond",
        "UNQUOTED_EXPANSION": "1-env",
        "DOTTED.NAME": "ok",
    }


def test_windows_line_ends() -> None:
    assert parse_env_text('A=1\r\nB="2" \r\n', {}) == {"A": "1", "B": "2"}


@pytest.mark.parametrize("text", ["JUST_A_NAME\n", "A=1\n=2\n", 'A="2" trailing\n', "1A=x\n"])
def test_a_line_that_is_not_key_value_is_an_error_naming_the_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"env_file: \.env line \d+ is not KEY=VALUE"):
        parse_env_text(text, {}, ".env")


def test_variables_already_set_win(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=from-file\nB=from-file\n")
    environ = {"A": "already"}
    assert apply_env_file(str(path), environ) == ["B"]
    assert environ == {"A": "already", "B": "from-file"}


ENV_APP = """
import json
import os

GREETING = os.environ["GREETING"]  # read at import: the file must be loaded before


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"greeting": GREETING, "kept": os.environ["KEPT"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_app_sees_the_file_at_import_in_every_worker(tmp_path: Path, workers: str) -> None:
    (tmp_path / "env_app.py").write_text(ENV_APP)
    env_file = tmp_path / "app.env"
    env_file.write_text('GREETING="hello from the file"\nKEPT=from-file\nZONDA_BACKLOG=64\n')
    args = ("env_app:app", "--app-dir", str(tmp_path), "--port", "0", "--env-file", str(env_file))
    with zonda_process(*args, "--workers", workers, env={"KEPT": "from-env"}) as proc:
        url = proc.wait_listening(20)
        assert httpx.get(url + "/").json() == {"greeting": "hello from the file", "kept": "from-env"}
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert f"Environment from {env_file}: 2 variable(s) set" in proc.output
