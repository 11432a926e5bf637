"""Where option values come from besides flags: TOML files (``--config``, ``[tool.zonda]`` in
``./pyproject.toml``), ``ZONDA_*`` environment variables, and the text parsing flags and variables share.

Every name is derived from ``Config``'s fields: a field's name, its flag, and the names other servers use
for it (``also``) are all TOML keys; ``ZONDA_<FIELD>`` is its variable.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from zonda._compat import tomllib
from zonda.config import ENV_PREFIX, KNOWN_ENV, PYPROJECT, Config, _field_types, _refuse
from zonda.errors import ConfigError


def parse_text(name: str, text: str) -> Any:
    """Turn an environment variable's (or a flag's) text into the field's type."""
    kind = _field_types()[name]
    aliases = Config.__dataclass_fields__[name].metadata["aliases"]
    if aliases and text.strip().lower() in aliases:
        return aliases[text.strip().lower()]
    _refuse(name, text)
    choices = Config.__dataclass_fields__[name].metadata["choices"]
    if choices and text not in choices:
        raise ConfigError(f"{name}: {text!r} is not one of {', '.join(choices)}")
    if kind.optional and text.strip().lower() in ("", "none"):
        return None
    base = kind.base
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is tuple:
            items: list[str] = []
            for item in text.split(","):
                # a comma inside a header value: "cache-control: a, b"
                if name == "headers" and items and ":" not in item:
                    items[-1] += "," + item
                else:
                    items.append(item)
            return tuple(item.strip() for item in items if item.strip())
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a valid {base.__name__}") from None
    return text


_FLAG_NAMES = {
    name.replace("-", "_"): f.name
    for f in dataclasses.fields(Config)
    for name in (f.name, f.metadata["flag"] or f.name, *f.metadata["also"])
}  # TOML keys may be the flag's name too: header = [...], reload-dir = [...], limit-max-requests = ...


def suggest(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """The text " (did you mean 'x'?)" for the closest candidate, or "" when none is close. A ``prefix``
    every name shares (``--``, ``ZONDA_``) is left out of the comparison: it makes any two names look alike."""
    stems = {candidate.removeprefix(prefix): candidate for candidate in candidates}
    close = difflib.get_close_matches(name.removeprefix(prefix), list(stems), n=1, cutoff=0.75)
    return f" (did you mean {stems[close[0]]!r}?)" if close else ""


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def env_var_warnings(env: Mapping[str, str]) -> list[str]:
    """Lines to warn about: ``ZONDA_*`` variables close to an option's name, and uvicorn's variables for
    options zonda has. Other ``ZONDA_*`` names are left alone: apps and tools share the prefix."""
    known = {ENV_PREFIX + name.upper() for name in field_names()} | KNOWN_ENV
    warnings = []
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and key not in known:
            hint = suggest(key, known - KNOWN_ENV, ENV_PREFIX)
            if hint:
                warnings.append(f"{key} is not a zonda option{hint}; it is ignored")
        elif key.startswith("UVICORN_"):
            name = _FLAG_NAMES.get(key[len("UVICORN_") :].lower())
            if name is not None and ENV_PREFIX + name.upper() not in env:
                warnings.append(f"{key} is uvicorn's; zonda reads {ENV_PREFIX}{name.upper()}")
    return warnings


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in field_names():
        key = ENV_PREFIX + name.upper()
        if key in env:
            try:
                values[name] = parse_text(name, env[key])
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None  # name the variable the bad value came from
    return values


def find_pyproject(directory: str = ".") -> str | None:
    """``./pyproject.toml`` when it has a ``[tool.zonda]`` table: read without ``--config``."""
    path = os.path.join(directory, PYPROJECT)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):
        return None  # not zonda's file to judge unless it names zonda: tools that own it will complain
    tool = data.get("tool")
    return path if isinstance(tool, dict) and "zonda" in tool else None


def read_toml(path: str) -> dict[str, Any]:
    """Read a zonda TOML file (flat keys, or ``[tool.zonda]`` in a pyproject.toml)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:  # tomllib decodes the bytes itself, outside its own error
        raise ConfigError(f"config: {path} is not valid TOML: not UTF-8 text") from None
    except RecursionError:  # arrays or inline tables nested a few thousand deep
        raise ConfigError(f"config: {path} is not valid TOML: nested too deeply") from None
    if os.path.basename(path) == PYPROJECT:
        tool = data.get("tool", {})
        data = tool.get("zonda", {}) if isinstance(tool, dict) else {}
    where = f"[tool.zonda] of {path}" if os.path.basename(path) == PYPROJECT else path
    if not isinstance(data, dict):
        raise ConfigError(f"config: {where} must be a table of options")
    values = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = _FLAG_NAMES.get(key.replace("-", "_"))
        if name is None:
            raise ConfigError(f"config: unknown key {key!r} in {where}{suggest(key, _toml_keys())}")
        if name in spelled:  # "timeout-keep-alive" and "timeout_keep_alive": TOML sees two keys, zonda one
            raise ConfigError(f"config: {spelled[name]!r} and {key!r} in {where} set the same option")
        spelled[name] = key
        values[name] = value
    return values


def _toml_keys() -> list[str]:
    return [name.replace("_", "-") for name in _FLAG_NAMES]
