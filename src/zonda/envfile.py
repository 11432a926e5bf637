"""``--env-file``: read a ``.env`` file (the format python-dotenv reads) and put it into the environment.

Lines are ``KEY=VALUE``, optionally after ``export``; ``#`` starts a comment line, or a comment after an
unquoted value when a space precedes it. Single-quoted values are literal; double-quoted values take the escapes
``\\n \\t \\r \\" \\\\``; both may span lines. ``${NAME}`` and ``${NAME:-default}`` in unquoted and
double-quoted values expand from the environment, then from the file's earlier lines. A variable already in
the environment is never overwritten, as with uvicorn's ``--env-file``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping

from zonda.errors import ConfigError

_ENTRY = re.compile(
    r"""[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*
    (?:'(?P<single>[^']*)'|"(?P<double>(?:[^"\\]|\\.)*)"|(?P<plain>[^\n]*))
    (?P<rest>[^\n]*)(?:\n|$)""",
    re.VERBOSE | re.DOTALL,
)
_REST = re.compile(r"[ \t]*(?:#.*)?")  # what may follow a quoted value
_INLINE_COMMENT = re.compile(r"[ \t]+#.*")
_SKIP = re.compile(r"[ \t]*(?:#[^\n]*)?(?:\n|$)")
_EXPANSION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def parse_env_text(text: str, environ: Mapping[str, str], where: str = "env file") -> dict[str, str]:
    """The variables ``text`` sets, expanded against ``environ`` and the earlier lines."""
    values: dict[str, str] = {}
    text = text.replace("\r\n", "\n")
    position = 0
    while position < len(text):
        skipped = _SKIP.match(text, position)
        if skipped is not None and skipped.end() > position:
            position = skipped.end()
            continue
        entry = _ENTRY.match(text, position)
        if entry is None or not _REST.fullmatch(entry["rest"]):
            line = text.count("\n", 0, position) + 1
            snippet = text[position:].split("\n", 1)[0]
            raise ConfigError(f"env_file: {where} line {line} is not KEY=VALUE: {snippet!r}")
        position = entry.end()
        key = entry["key"]
        if entry["single"] is not None:
            values[key] = entry["single"]
            continue
        if entry["double"] is not None:
            raw = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), entry["double"])
        else:
            raw = _INLINE_COMMENT.sub("", entry["plain"]).rstrip()
        values[key] = _expand(raw, environ, values)
    return values


def _expand(value: str, environ: Mapping[str, str], earlier: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        found = environ.get(name, earlier.get(name))
        return found if found else (match["default"] or "")

    return _EXPANSION.sub(replace, value)


def read_env_file(path: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the file at ``path`` sets. Raises ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"env_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"env_file: {path} is not UTF-8 text") from None
    return parse_env_text(text, os.environ if environ is None else environ, path)


def apply_env_file(path: str, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the file's variables that ``environ`` (``os.environ``) lacks; return the names set."""
    environ = os.environ if environ is None else environ
    added = []
    for key, value in read_env_file(path, environ).items():
        if key not in environ:
            environ[key] = value
            added.append(key)
    return added
