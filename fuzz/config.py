"""The config loader: a TOML file (flat, or ``[tool.zonda]`` of a pyproject.toml; drawn bytes, or TOML built
from the real option names with drawn values of drawn types), ``ZONDA_*`` variables, an env file (drawn bytes,
or built lines) and CLI values, given to ``Config.load`` as a dict and, as a drawn argv among the real flags,
to the real command-line parser. Files are written to a temporary directory; nothing is served.

Invariants: ``Config.load`` raises only ``ConfigError``, with a one-line message; ``parse_command_line``
exits only with status 2 and one line ``zonda: error: ...``; a Config that loads passes its own checks (types,
choices, minimums, ports, header lines, octal socket modes, no NaN; its access-log format builds a line);
loading the same sources twice gives equal Configs; the result is the documented precedence: CLI > environment
> env file > TOML file > default (``ZONDA_ENV_FILE`` and ``--env-file`` read like any other option, so
``none`` is no file), and a bad value anywhere in a source that is read is an error; a TOML or env file
built from values reads back as those values; an argv of zonda's own flags gives what ``Config.load`` gives
for the values those flags parse to.

Input layout (``fuzz._harness.Reader``): a mode byte (bits 0-1 the TOML file: none, drawn bytes, built flat,
built ``[tool.zonda]``; bit 2 drawn bytes named pyproject.toml; bit 3 a built env file, bit 4 a drawn one;
bit 5 the TOML file named by ``ZONDA_CONFIG``; bit 6 also the command line), which source names the env file
(none, CLI, environment, TOML) and its name, then the TOML entries, the environment, the env file, the CLI
values and the argv tokens.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import shutil
import tempfile
import time
import typing
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

from fuzz._harness import Reader, main, pack
from zonda.accesslog import compile_format
from zonda.cli import BOOLEAN_WORDS, build_parser, parse_command_line
from zonda.config import Config, parse_bind
from zonda.config_sources import env_var_warnings, parse_text, read_toml
from zonda.envfile import read_env_file
from zonda.errors import ConfigError
from zonda.foreign import FOREIGN_FLAGS
from zonda.proxy import TrustList

_DIR = tempfile.mkdtemp(prefix="zonda-fuzz-config-")
atexit.register(shutil.rmtree, _DIR, True)
os.mkdir(os.path.join(_DIR, "project"))
_FLAT = os.path.join(_DIR, "zonda.toml")
_PYPROJECT = os.path.join(_DIR, "project", "pyproject.toml")
_ENV_FILE = os.path.join(_DIR, "vars.env")
_MISSING = os.path.join(_DIR, "missing.env")

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _kinds() -> dict[str, tuple[Any, bool]]:
    """Each field's type (``int`` for ``int | None``, ``tuple`` for ``tuple[str, ...]``) and whether None is
    allowed."""
    kinds = {}
    for name, hint in typing.get_type_hints(Config).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            hint = next(arg for arg in args if arg is not type(None))
        kinds[name] = (typing.get_origin(hint) or hint, optional)
    return kinds


_KINDS = _kinds()

# Every name an option has (its field, its flag, other servers' names), spelt with dashes and underscores.
_OPTION_KEYS = {
    (spelling, f.name)
    for f in _FIELDS.values()
    for name in (f.name, f.metadata["flag"] or f.name, *f.metadata["also"])
    for spelling in (name.replace("-", "_"), name.replace("_", "-"))
}
_BOGUS_KEYS = ("prot", "worker", "tool", "zonda", "timeout-keepalive")
_TOML_KEYS: list[tuple[str, str | None]] = [*sorted(_OPTION_KEYS), *((key, None) for key in _BOGUS_KEYS)]
_BOGUS_ENV = ("ZONDA_WORKER", "ZONDA_REQUIRE_TOOLS", "UVICORN_PORT", "OTHER")
_ENV_KEYS: list[tuple[str, str | None]] = [
    *(("ZONDA_" + name.upper(), name) for name in _FIELDS),
    *((key, None) for key in _BOGUS_ENV),
]
_NAMES = list(_FIELDS)

_INTS = (0, 1, -1, 8, 80, 1024, 65535, 65536, 2**31, 2**63 - 1, -(2**63))
_FLOATS = (0.0, 0.25, 1.5, -1.0, 1e300, math.inf, -math.inf, math.nan)
_WHEN = datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone.utc)
_TEXTS_BY_KIND: dict[type, tuple[str, ...]] = {
    int: ("0", "1", "-1", "7", "80", "65535", "65536", "1_000", " 9 ", "0x10", "1e3", "\uff19", "9" * 30),
    float: ("0", "0.25", "5", "-1", "nan", "NaN", "inf", "-inf", "1e400", "1_0.5", "five"),
    bool: ("1", "0", "true", "False", "yes", "NO", "on", "off", "maybe", ""),
}
_STR_TEXTS = (
    *("", "none", "None", "x", "/api", "m:app", "127.0.0.1", "::1", "*", "10.0.0.0/8, unix", "bogus ip"),
    *(":9100", "[::1]:9100", "h:99999", "{client} {status}", "{status:d}", "{client:d}", "{nope}", "{"),
    *("{duration_ms:,d}", "{request_header:x-a} {pid:>6}", "660", "0o777", "-7", "999", "7777777"),
    *("x-a: 1", "x-a: 1, b", "no-colon", "h:\xb2", "h:" + "9" * 4400, "{status:d\n}"),
)
_ENV_FILE_TEXTS = (_ENV_FILE, _MISSING, "", "none")
_APPS = ("m:app", "examples.hello:app", "pkg.mod:create")


def _texts(name: str) -> tuple[str, ...]:
    if name == "env_file":
        return _ENV_FILE_TEXTS
    meta = _FIELDS[name].metadata
    words = (*(meta["choices"] or ()), *(meta["aliases"] or ()), *(meta["refused"] or ()))
    return (*words, *_TEXTS_BY_KIND.get(_KINDS[name][0], _STR_TEXTS))


_TEXTS = {name: _texts(name) for name in _NAMES}


def _draw_text(draw: Reader, name: str | None) -> str:
    choice = draw.byte()
    if name == "env_file":
        return _ENV_FILE_TEXTS[choice % len(_ENV_FILE_TEXTS)]
    if choice & 0x80 or name is None:
        return draw.chunk(40).decode("latin-1")
    return _TEXTS[name][choice % len(_TEXTS[name])]


def _draw_value(draw: Reader, name: str | None, toml: bool) -> Any:
    """A value of a drawn type, as TOML (or a Python caller) may give it."""
    kind = draw.below(8)
    if name == "env_file":
        return None if kind == 0 and not toml else _draw_text(draw, name)
    if kind == 0:
        return draw.pick(_INTS)
    if kind == 1:
        return draw.pick(_FLOATS)
    if kind == 2:
        return bool(draw.byte() & 1)
    if kind == 3:
        return _draw_text(draw, name)
    if kind == 4:
        return [_draw_text(draw, name) for _ in range(draw.below(4))]
    if kind == 5 and not toml:
        return None
    if kind == 5:
        return {"k": draw.pick(_INTS)}
    if kind == 6:
        return _WHEN
    return draw.pick(_INTS) if _KINDS.get(name or "", (int,))[0] is int else draw.pick(_FLOATS)


# --------------------------------------------------------------------------- the sources


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = (f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in value)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    assert isinstance(value, datetime.datetime)
    return value.isoformat()


def _draw_toml(draw: Reader, mode: int, env_file: str | None) -> tuple[str, dict[str, Any] | str | None]:
    """Write the TOML file; returns its path and the values it must read back as (None: not predicted; a
    text: the key it must be refused for, unknown or a second spelling of an option)."""
    kind = mode & 3
    if kind == 1:
        path = _PYPROJECT if mode & 4 else _FLAT
        with open(path, "wb") as file:
            file.write(draw.chunk(255))
        return path, None
    lines: list[str] = []
    expected: dict[str, Any] = {}
    refused: str | None = None  # the first key refused: unknown, or a second spelling of an option
    used = {"env-file"} if env_file is not None else set()  # that line comes last
    for _ in range(draw.below(10) if kind else 0):
        key, name = draw.pick(_TOML_KEYS)
        value = _draw_value(draw, name, toml=True)
        if key not in used:  # the same key twice is invalid TOML; two spellings of one option are refused
            used.add(key)
            lines.append(f"{key} = {_toml_value(value)}")
            if name is None or name in expected:
                refused = refused or key
            else:
                expected[name] = value
    if env_file is not None:
        lines.append(f"env-file = {_toml_value(env_file)}")
        if "env_file" in expected:
            refused = refused or "env-file"
        expected["env_file"] = env_file
    if kind == 3:
        text = '[project]\nname = "x"\n\n[tool.zonda]\n' + "".join(line + "\n" for line in lines)
        path = _PYPROJECT
    else:
        text, path = "".join(line + "\n" for line in lines), _FLAT
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    return path, refused or expected


def _env_line(key: str, value: str, style: int) -> str | None:
    """A .env line that reads back as ``value``, or None when no quoting keeps it whole."""
    export = "export " if style & 2 else ""
    if "'" not in value and "\r" not in value:
        return f"{export}{key}='{value}'"
    if "${" not in value:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'{export}{key} = "{escaped}"'
    return None


def _draw_env_file(draw: Reader, mode: int) -> dict[str, str] | None:
    """Write the env file; returns the variables it must read back as (None: not predicted)."""
    if mode & 16:
        with open(_ENV_FILE, "wb") as file:
            file.write(draw.chunk(255))
        return None
    lines: list[str] = []
    expected: dict[str, str] | None = {}
    for _ in range(draw.below(6) if mode & 8 else 0):
        key, name = draw.pick(_ENV_KEYS)
        value = _draw_text(draw, name)
        line = _env_line(key, value, draw.byte())
        if line is None or expected is None:
            expected = None
        else:
            expected[key] = value
        lines.append(line or f"{key}=x")
    with open(_ENV_FILE, "w", encoding="utf-8") as file:
        file.write("# drawn\n" + "".join(line + "\n" for line in lines))
    return expected


# --------------------------------------------------------------------------- the documented precedence


def _predict(cli: Mapping[str, Any], env: Mapping[str, str], toml: Any) -> Config | None:
    """The Config the sources give by the documented precedence, or None for a ConfigError."""
    if isinstance(toml, ConfigError):
        return None
    env_values: dict[str, Any] = {}
    try:
        env_file = cli.get("env_file") or (
            parse_text("env_file", env["ZONDA_ENV_FILE"]) if "ZONDA_ENV_FILE" in env else None
        )
        env_file = env_file or toml.get("env_file")
        merged = {**read_env_file(str(env_file)), **env} if env_file else env
        for name in _NAMES:
            if "ZONDA_" + name.upper() in merged:
                env_values[name] = parse_text(name, merged["ZONDA_" + name.upper()])
        return Config(**{**toml, **env_values, **cli})
    except ConfigError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself (the checks below refuse a NaN on their own)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, Exception) and isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return all(_same(getattr(a, name), getattr(b, name)) for name in _NAMES)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    return type(a) is type(b) and bool(a == b)


def _load(cli: Mapping[str, Any], env: Mapping[str, str], config_file: str | None) -> Config | ConfigError:
    try:
        return Config.load(cli=cli, env=env, config_file=config_file)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return exc


def _check_valid(config: Config) -> None:
    """What ``Config`` promises of every value it holds."""
    for name, f in _FIELDS.items():
        value = getattr(config, name)
        base, optional = _KINDS[name]
        if name == "app" or (value is None and optional):
            continue
        assert type(value) is base if base in (int, float, bool) else isinstance(value, base), (name, value)
        assert not (base is float and math.isnan(value)), (name, value)
        assert base is not tuple or all(type(item) is str for item in value), (name, value)
        assert not f.metadata["choices"] or value in f.metadata["choices"], (name, value)
        minimum = f.metadata["minimum"]
        assert minimum is None or base not in (int, float) or value >= minimum, (name, value)
    assert 0 <= config.port <= 65535, config.port
    assert all(":" in header for header in config.headers), config.headers
    if config.uds_permissions is not None:
        assert 0 <= int(config.uds_permissions, 8) <= 0o7777, config.uds_permissions
    TrustList(config.forwarded_allow_ips)
    if config.metrics_bind is not None:
        host, port = parse_bind(config.metrics_bind)
        assert isinstance(host, str) and 0 <= port <= 65535
    if config.access_log_format is not None:
        line = compile_format(config.access_log_format, config.access_log_json)(_CYCLE)
        assert isinstance(line, str) and line.endswith("\n"), line
        if config.access_log_json:
            json.loads(line)


_CYCLE = SimpleNamespace(  # a finished response, as the access-log hook sees it
    scope={
        "type": "http",
        "client": ("203.0.113.7", 40000),
        "method": "GET",
        "raw_path": b"/x",
        "query_string": b"a=1",
        "http_version": "1.1",
        "scheme": "http",
        "headers": [(b"host", b"example.com"), (b"x-a", b"1")],
        "state": {"request_id": "id-1"},
        "extensions": {},
    },
    status=200,
    bytes_sent=5,
    started_at=time.perf_counter(),
    response_headers=[(b"content-type", b"text/plain")],
)


# --------------------------------------------------------------------------- the command line

_PARSER = build_parser()
_ACTIONS = [
    (flag, action.dest, type(action).__name__)
    for action in _PARSER._actions
    if action.dest in _FIELDS and action.dest != "env_file"
    for flag in action.option_strings
]
_FOREIGN = [(flag, foreign.takes_value) for foreign in FOREIGN_FLAGS for flag in foreign.flags]


def _draw_argv(draw: Reader) -> tuple[list[str], dict[str, Any] | None, bool]:
    """Drawn argv tokens; the CLI values they stand for (None: not predicted); whether a value is bad."""
    argv: list[str] = []
    values: dict[str, Any] | None = {}
    bad = False
    positionals = 0
    for _ in range(draw.below(10)):
        kind = draw.below(8)
        if kind <= 4:
            flag, name, action = draw.pick(_ACTIONS)
            if action == "BooleanOptionalAction":
                word = draw.pick((*BOOLEAN_WORDS, "Yes", "OFF", "maybe", ""))
                form = draw.below(3)
                argv += [flag] if form == 0 else [flag, word] if form == 1 else [f"{flag}={word}"]
                negative = flag.startswith("--no-")
                word_value = BOOLEAN_WORDS.get(word.lower())
                if form == 1 and (negative or word_value is None):
                    values = None  # the word stays a positional: the app, or one too many
                elif form == 2 and (negative or word_value is None):
                    bad = True  # "--flag=maybe": argparse refuses an explicit argument
                elif values is not None:
                    values[name] = (not negative) if form == 0 else word_value
                continue
            text = _draw_text(draw, name)
            joined = draw.byte() & 1
            argv += [f"{flag}={text}"] if joined or text.startswith("-") else [flag, text]
            if action == "_AppendAction":
                if values is not None:
                    values[name] = [*values.get(name, []), text]
                continue
            try:
                parsed = parse_text(name, text)
            except ConfigError:
                bad = True
                continue
            if values is not None:
                values[name] = parsed
        elif kind == 5:
            positionals += 1
            argv.append(draw.pick(_APPS))
            if values is not None:
                values["app"] = argv[-1]
        elif kind == 6:
            flag, takes_value = draw.pick(_FOREIGN)
            argv += [flag, draw.pick(("2", "x", "17"))] if takes_value else [flag]
            values = None
        else:
            argv.append(_safe_token(draw.chunk(30).decode("latin-1")))
            values = None
    return argv, values, bad or positionals > 1


def _safe_token(token: str) -> str:
    """A drawn token, unless it asks for help or the version (exit 0), or names a file to read."""
    name = token.partition("=")[0]
    if (
        token.startswith("-h")
        or name in ("--help", "--version")
        or name.startswith(("--config", "--env-file"))
    ):
        return "x"
    return token


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with exactly ``env``'s ZONDA_* variables, for the duration."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("ZONDA_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in [key for key in os.environ if key.startswith("ZONDA_")]:
            del os.environ[key]
        os.environ.update(saved)


def _run_cli(argv: list[str]) -> Config | str:
    """``parse_command_line``'s Config, or the one line it wrote before exiting with status 2."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parse_command_line(argv)[0]
    except SystemExit as exc:
        text = errors.getvalue()
        assert exc.code == 2, (exc.code, text, argv)
        assert text.startswith("zonda: error: ") and text.endswith("\n") and text.count("\n") == 1, text
        return text


def _check_cli(draw: Reader, env: Mapping[str, str], config_file: str | None, toml: Any, via: str) -> None:
    argv, values, bad = _draw_argv(draw)
    env = {key: value.replace("\x00", "") for key, value in env.items() if key.startswith("ZONDA_")}
    if config_file is not None:
        argv += ["--config", config_file]
    if via == "cli":
        argv += ["--env-file", _ENV_FILE]
    with _environment(env):
        result = _run_cli(argv)  # once: building the parser is most of an input's time
        if isinstance(result, Config):
            _check_valid(result)
        if values is None:
            return
        if via == "cli":
            values["env_file"] = _ENV_FILE
        expected = None if bad else _predict(values, env, toml)
    if expected is None:
        assert isinstance(result, str), (argv, result)
    else:
        assert isinstance(result, Config) and _same(result, expected), (argv, result, expected)


# --------------------------------------------------------------------------- the target


def one_input(data: bytes) -> None:
    draw = Reader(data)
    mode = draw.byte()
    via = ("none", "cli", "env", "toml")[draw.below(4)]
    if via == "toml" and mode & 3 not in (2, 3):
        via = "cli"  # drawn TOML bytes cannot be told to name it
    named = draw.pick(_ENV_FILE_TEXTS)
    path, toml_expected = _draw_toml(draw, mode, named if via == "toml" else None)
    env: dict[str, str] = {}
    for _ in range(draw.below(8)):
        key, name = draw.pick(_ENV_KEYS)
        env[key] = _draw_text(draw, name)
    if via == "env":
        env["ZONDA_ENV_FILE"] = named
    env_file_expected = _draw_env_file(draw, mode)
    cli: dict[str, Any] = {}
    for _ in range(draw.below(6)):
        name = draw.pick(_NAMES)
        cli[name] = _draw_value(draw, name, toml=False)
    if via == "cli":
        cli["env_file"] = named
    config_file: str | None = path
    if mode & 32:
        env["ZONDA_CONFIG"], config_file = path, None
    assert all(isinstance(line, str) for line in env_var_warnings(env))

    try:
        toml: dict[str, Any] | ConfigError = read_toml(path)
    except ConfigError as exc:
        toml = exc
    if isinstance(toml_expected, str):
        assert isinstance(toml, ConfigError) and repr(toml_expected) in str(toml), (toml, toml_expected)
    elif toml_expected is not None:
        assert _same(toml, toml_expected), (toml, toml_expected)
    elif not isinstance(toml, ConfigError) and toml.get("env_file") not in (None, *_ENV_FILE_TEXTS):
        return  # drawn bytes naming some other file to read: not this target's to open
    if env_file_expected is not None:
        assert _same(read_env_file(_ENV_FILE), env_file_expected)

    loaded = _load(cli, env, config_file)
    assert _same(_load(cli, env, config_file), loaded), "loading twice gave different results"
    expected = _predict(cli, env, toml)
    if isinstance(loaded, Config):
        _check_valid(loaded)
        assert expected is not None and _same(loaded, expected), (loaded, expected)
    else:
        assert expected is None, (loaded, expected)
    if mode & 64:
        _check_cli(draw, env, config_file, toml, via)


def _key(name: str) -> int:
    return [key for key, _ in _TOML_KEYS].index(name)


def _env(name: str) -> int:
    return [key for key, _ in _ENV_KEYS].index(name)


def _text(text: str) -> tuple[int, str]:
    return 0x80, text  # a drawn text, not a table entry


def _arg(flag: str, text: str, joined: int = 0) -> tuple[int | str, ...]:
    return 0, [option for option, _, _ in _ACTIONS].index(flag), *_text(text), joined


def _switch(flag: str, form: int, word: int = 0) -> tuple[int, ...]:
    return 0, [option for option, _, _ in _ACTIONS].index(flag), word, form


_INT, _FLOAT, _TEXT, _LIST = 0, 1, 3, 4  # value kinds of _draw_value
_BUILT_FLAT, _BUILT_PYPROJECT, _ENV_BUILT, _ENV_RAW, _BY_ZONDA_CONFIG, _CLI = 2, 3, 8, 16, 32, 64
_VIA_NONE, _VIA_CLI, _VIA_ENV, _VIA_TOML = 0, 1, 2, 3

# fmt: off
SEEDS = [
    # built flat TOML, the environment, a built env file named by the CLI values, CLI values, an argv
    pack(
        _BUILT_FLAT | _ENV_BUILT | _CLI, _VIA_CLI, 0,
        3, _key("port"), _INT, 4, _key("timeout-keep-alive"), _FLOAT, 2, _key("log-level"), _TEXT, *_text("debug"),
        2, _env("ZONDA_BACKLOG"), *_text("20"), _env("ZONDA_HEADERS"), *_text("x-a: 1, x-b: 2"),
        2, _env("ZONDA_PORT"), *_text("9001"), 0, _env("ZONDA_WORKERS"), *_text("3"), 2,
        1, _NAMES.index("workers"), _INT, 1,
        4, *_arg("--port", "9300"), *_arg("--header", "x-c: 3", 1), 5, 0, *_switch("--access-log", 1, 6),
    ),
    # [tool.zonda] naming the env file, an environment over it, an argv of switches and choices
    pack(
        _BUILT_PYPROJECT | _ENV_BUILT | _CLI, _VIA_TOML, 0,
        3, _key("limit-max-requests"), _INT, 4, _key("header"), _LIST, 2, *_text("x: 1"), *_text("y: 2"),
        _key("proxy_protocol"), _TEXT, *_text("v2"),
        2, _env("ZONDA_ACCESS_LOG_FORMAT"), *_text("{client} {status:>4}"), _env("ZONDA_LOOP"), *_text("asyncio"),
        1, _env("ZONDA_FORWARDED_ALLOW_IPS"), *_text("10.0.0.0/8, unix"), 0,
        0,
        4, *_switch("--no-access-log", 0), *_switch("--ws-per-message-deflate", 2, 3), *_arg("--http", "h11"),
        *_arg("--timeout-keep-alive", "-1", 1),
    ),
    # drawn TOML bytes named by ZONDA_CONFIG, a drawn env file named by the environment
    pack(
        1 | _ENV_RAW | _BY_ZONDA_CONFIG | _CLI, _VIA_ENV, 0,
        b'port = 9100\nbacklog = 10\n"timeout-keep-alive" = 1.5\nheader = ["a: b"]\n', 0,
        b"ZONDA_PORT=9200\nexport ZONDA_LOG_LEVEL='debug'\nZONDA_ENV_FILE=none\n", 0, 2, 6, 1, 5, 2,
    ),
    pack(1 | 4, _VIA_ENV, 3, b"[tool.zonda]\nport = nan\nws-ping-interval = inf\n", 0, 0, 0),
    pack(1 | 4 | _CLI, _VIA_NONE, 0, b"tool = 1\n", 0, 0, 2, 7, *_text("--port=-1"), 6, 3),
    pack(1, _VIA_ENV, 0, b"a = \xff\n", 1, _env("ZONDA_TIMEOUT_KEEP_ALIVE"), *_text("nan"), 0),
    pack(_BUILT_FLAT, _VIA_NONE, 0, 1, _key("uds_permissions"), _TEXT, *_text("-7"), 0, 0),
    pack(_BUILT_FLAT, _VIA_NONE, 0, 1, _key("access_log_format"), _TEXT, *_text("{status:d} {client:d}"), 0, 0),
]
# fmt: on

if __name__ == "__main__":
    main("config", one_input, SEEDS)
