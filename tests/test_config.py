"""Config: defaults, precedence (CLI > ZONDA_* env > TOML file > default), validation and the CLI surface."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import httpx
import pytest

from helpers import run_cli, run_server, simple_app, zonda_process
from zonda import Config
from zonda.cli import build_parser, config_from_args
from zonda.config_sources import env_var_warnings
from zonda.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ defaults


def test_defaults() -> None:
    config = Config()
    assert config.app is None
    assert config.factory is False
    assert config.app_dir == "."
    assert config.interface == "auto"
    assert config.lifespan == "auto"
    assert config.root_path == ""
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.uds is None
    assert config.uds_permissions is None
    assert config.fd is None
    assert config.backlog == 2048
    assert config.loop == "auto"
    assert config.timeout_keep_alive == 5.0
    assert config.timeout_request_header == 10.0
    assert config.timeout_request_body == 30.0
    assert config.limit_request_line == 8190
    assert config.limit_request_headers == 100
    assert config.limit_request_header_size == 65536
    assert config.limit_request_body == 100 * 1024 * 1024
    assert config.limit_concurrency is None
    assert config.limit_connections is None
    assert config.server_header is True
    assert config.date_header is True
    assert config.headers == ()
    assert config.timeout_graceful_shutdown == 30.0
    assert config.timeout_lifespan_startup == 60.0
    assert config.timeout_lifespan_shutdown == 30.0
    assert config.log_level == "info"
    assert config.access_log is True
    assert config.log_config is None


def test_config_is_frozen_and_replace_returns_a_new_one() -> None:
    config = Config(port=1234)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    other = config.replace(port=4321)
    assert (config.port, other.port) == (1234, 4321)


def test_int_is_accepted_for_a_float_option() -> None:
    config = Config(timeout_keep_alive=3)
    assert config.timeout_keep_alive == 3.0
    assert type(config.timeout_keep_alive) is float


def test_load_with_nothing_gives_the_defaults() -> None:
    assert Config.load(cli={}, env={}) == Config()


# ------------------------------------------------------------------ precedence


def test_env_overrides_default() -> None:
    config = Config.load(env={"ZONDA_PORT": "9001", "ZONDA_ACCESS_LOG": "false", "ZONDA_LOOP": "asyncio"})
    assert config.port == 9001
    assert config.access_log is False
    assert config.loop == "asyncio"


def test_env_parses_every_kind() -> None:
    env = {
        "ZONDA_TIMEOUT_KEEP_ALIVE": "2.5",
        "ZONDA_LIMIT_CONCURRENCY": "none",
        "ZONDA_FD": "",
        "ZONDA_HEADERS": "x-a: 1, x-b: 2",
        "ZONDA_FACTORY": "yes",
        "ZONDA_APP": "examples.hello:app",
    }
    config = Config.load(env=env)
    assert config.timeout_keep_alive == 2.5
    assert config.limit_concurrency is None
    assert config.fd is None
    assert config.headers == ("x-a: 1", "x-b: 2")
    assert config.factory is True
    assert config.app == "examples.hello:app"


def test_env_header_values_may_contain_commas() -> None:
    config = Config.load(env={"ZONDA_HEADERS": "cache-control: no-cache, no-store, x-b: 2"})
    assert config.headers == ("cache-control: no-cache, no-store", "x-b: 2")


def test_app_from_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", 'app = "examples.hello:app"\nfactory = false\n')
    assert config_from_args(["--config", path]).app == "examples.hello:app"
    assert config_from_args(["--config", path, "other:app"]).app == "other:app"


def test_toml_overrides_default(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", 'app = "examples.hello:app"\nport = 9100\nlog-level = "debug"\n')
    config = Config.load(env={}, config_file=path)
    assert config.app == "examples.hello:app"
    assert config.port == 9100
    assert config.log_level == "debug"


def test_toml_keys_with_dashes_or_underscores(tmp_path: Path) -> None:
    path = write(
        tmp_path / "zonda.toml", 'timeout-keep-alive = 7\ntimeout_request_header = 3.5\nheader = ["x: 1"]\n'
    )
    config = Config.load(env={}, config_file=path)
    assert config.timeout_keep_alive == 7.0
    assert config.timeout_request_header == 3.5
    assert config.headers == ("x: 1",)


def test_env_overrides_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "port = 9100\nbacklog = 10\n")
    config = Config.load(env={"ZONDA_PORT": "9200"}, config_file=path)
    assert config.port == 9200
    assert config.backlog == 10


def test_cli_overrides_env_and_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "port = 9100\nbacklog = 10\ntimeout-keep-alive = 1\n")
    config = Config.load(
        cli={"port": 9300}, env={"ZONDA_PORT": "9200", "ZONDA_BACKLOG": "20"}, config_file=path
    )
    assert config.port == 9300
    assert config.backlog == 20
    assert config.timeout_keep_alive == 1.0


def test_zonda_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "port = 9400\n")
    assert Config.load(env={"ZONDA_CONFIG": path}).port == 9400


def test_pyproject_tool_zonda_table(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n\n[tool.zonda]\nport = 9500\ntimeout-graceful-shutdown = 2\n\n[tool.other]\nfoo = 1\n',
    )
    config = Config.load(env={}, config_file=path)
    assert config.port == 9500
    assert config.timeout_graceful_shutdown == 2.0


def test_pyproject_without_tool_zonda_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert Config.load(env={}, config_file=path) == Config()


def test_pyproject_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", "[tool.zonda]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        Config.load(env={}, config_file=path)


def test_pyproject_in_the_working_directory_is_read_without_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.zonda]\napp = "m:app"\nworkers = 3\n')
    monkeypatch.chdir(tmp_path)
    assert config_from_args([]).workers == 3
    assert config_from_args(["--workers", "2"]).workers == 2  # flags still win
    assert Config.load(env={}).app == "m:app"  # the Python API finds it too
    other = write(tmp_path / "zonda.toml", "port = 9700\n")
    config = config_from_args(["--config", other])  # an explicit file replaces the table, no merging
    assert (config.port, config.workers, config.app) == (9700, 1, None)
    assert Config.load(env={"ZONDA_CONFIG": other}).workers == 1


def test_zonda_with_no_arguments_serves_what_pyproject_says(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "site"\n\n[tool.zonda]\napp = "site_app:app"\nport = 0\nlog-level = "debug"\n'
    )
    (tmp_path / "site_app.py").write_text(SITE_APP)
    with zonda_process(cwd=str(tmp_path)) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").text == "site"
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "Options from ./pyproject.toml" in proc.output
    assert "zonda.connection: Connection from" in proc.output  # log-level came from the table too


SITE_APP = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"site"})
"""


def test_pyproject_without_a_zonda_table_or_broken_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert Config.load(env={}) == Config()
    write(tmp_path / "pyproject.toml", "[project\n")  # someone else's broken file: theirs to report
    assert Config.load(env={}) == Config()


@pytest.mark.parametrize(
    "text",
    ["timeout-keep-alive = 7\ntimeout_keep_alive = 9\n", "max-requests = 5\nlimit-max-requests = 50\n"],
    ids=["dash and underscore", "zonda's name and uvicorn's"],
)
def test_two_spellings_of_one_option_in_a_toml_file(tmp_path: Path, text: str) -> None:
    """TOML sees two keys; the second silently won."""
    path = write(tmp_path / "zonda.toml", text)
    with pytest.raises(ConfigError, match="set the same option"):
        Config.load(env={}, config_file=path)


def test_other_servers_flag_names_are_toml_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "limit-max-requests = 50\nh11-max-incomplete-event-size = 4096\n")
    config = Config.load(env={}, config_file=path)
    assert (config.max_requests, config.limit_request_header_size) == (50, 4096)


def test_env_file_sits_between_the_environment_and_the_toml_file(tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", "ZONDA_PORT=9001\nZONDA_BACKLOG=11\nZONDA_WORKERS=3\nOTHER=x\n")
    toml = write(tmp_path / "zonda.toml", "backlog = 5\nlimit-concurrency = 9\n")
    config = Config.load(
        cli={"env_file": env_file, "workers": 4}, env={"ZONDA_PORT": "9002"}, config_file=toml
    )
    assert config.port == 9002  # the environment wins over the file
    assert config.backlog == 11  # the file wins over TOML
    assert config.limit_concurrency == 9
    assert config.workers == 4  # the command line wins over all
    from_toml = write(tmp_path / "env.toml", f"env-file = {env_file!r}\n")
    assert Config.load(env={}, config_file=from_toml).port == 9001
    assert Config.load(env={"ZONDA_ENV_FILE": env_file}).backlog == 11


@pytest.mark.parametrize("none", ["none", "None", " none ", ""])
def test_zonda_env_file_none_is_no_env_file(none: str) -> None:
    """ZONDA_ENV_FILE=none is env_file None, as --env-file none is; the loader read a file named "none"."""
    assert Config.load(env={"ZONDA_ENV_FILE": none}) == Config()


def test_missing_env_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env_file: cannot read .*nope\.env"):
        Config.load(cli={"env_file": str(tmp_path / "nope.env")}, env={})


def test_cli_precedence_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real command line: flag > env > file, via config_from_args."""
    path = write(tmp_path / "zonda.toml", "port = 9100\nbacklog = 10\nlimit-concurrency = 5\n")
    monkeypatch.setenv("ZONDA_BACKLOG", "20")
    monkeypatch.setenv("ZONDA_LIMIT_CONCURRENCY", "6")
    config = config_from_args(["--config", path, "--limit-concurrency", "7", "examples.hello:app"])
    assert config.app == "examples.hello:app"
    assert config.port == 9100
    assert config.backlog == 20
    assert config.limit_concurrency == 7


# ------------------------------------------------------------------ errors name the key


def test_unknown_toml_key_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "port = 1\ntimeout-keepalive = 3\n")
    with pytest.raises(ConfigError, match="timeout-keepalive") as raised:
        Config.load(env={}, config_file=path)
    assert str(raised.value).endswith("(did you mean 'timeout-keep-alive'?)")


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("worker", " (did you mean 'workers'?)"),
        ("log_levl", " (did you mean 'log-level'?)"),
        ("max-request", " (did you mean 'max-requests'?)"),
        ("colour", ""),
    ],
)
def test_unknown_pyproject_key_suggests_the_nearest(tmp_path: Path, key: str, hint: str) -> None:
    path = write(tmp_path / "pyproject.toml", f"[tool.zonda]\n{key} = 1\n")
    with pytest.raises(ConfigError) as raised:
        Config.load(env={}, config_file=path)
    assert str(raised.value) == f"config: unknown key {key!r} in [tool.zonda] of {path}{hint}"


def test_env_var_warnings() -> None:
    env = {
        "ZONDA_WORKER": "2",
        "ZONDA_TIMEOUT_KEEPALIVE": "3",
        "ZONDA_PORT": "1",
        "ZONDA_CONFIG": "x",
        "ZONDA_REQUIRE_TOOLS": "1",  # not an option, not close to one: someone else's
        "ZONDA_TEST_MARKER": "x",
        "ZONDA_DEBUG": "1",
        "ZONDA_WORKER_START_METHOD": "spawn",  # read on purpose (tests of the supervisor's spawn path)
        "UVICORN_WORKERS": "4",
        "UVICORN_PORT": "9",  # ZONDA_PORT is set: nothing to say
        "UVICORN_SOMETHING_ELSE": "1",
    }
    assert env_var_warnings(env) == [
        "UVICORN_WORKERS is uvicorn's; zonda reads ZONDA_WORKERS",
        "ZONDA_TIMEOUT_KEEPALIVE is not a zonda option (did you mean 'ZONDA_TIMEOUT_KEEP_ALIVE'?); it is ignored",
        "ZONDA_WORKER is not a zonda option (did you mean 'ZONDA_WORKERS'?); it is ignored",
    ]


def test_missing_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config"):
        Config.load(env={}, config_file=str(tmp_path / "missing.toml"))
    path = write(tmp_path / "zonda.toml", "port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(env={}, config_file=path)


def test_toml_files_tomllib_fails_on_outside_its_own_error(tmp_path: Path) -> None:
    """tomllib decodes UTF-8 itself (a UnicodeDecodeError) and nests by recursion (a RecursionError):
    both escaped as tracebacks at start-up."""
    bad_bytes = tmp_path / "zonda.toml"
    bad_bytes.write_bytes(b'root-path = "/caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8"):
        Config.load(env={}, config_file=str(bad_bytes))
    deep = write(tmp_path / "deep.toml", "headers = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        Config.load(env={}, config_file=deep)


def test_pyproject_whose_tool_is_no_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "pyproject.toml", 'tool = 1\n\n[project]\nname = "x"\n')
    assert Config.load(env={}, config_file=path) == Config()  # was an AttributeError
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_bytes(b'[project]\nname = "caf\xe9"\n')
    assert Config.load(env={}) == Config()  # someone else's file, not UTF-8: not read, as when broken


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"port": "80"}, "port"),
        ({"port": 1.5}, "port"),
        ({"port": True}, "port"),
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"backlog": 0}, "backlog"),
        ({"timeout_keep_alive": -1}, "timeout_keep_alive"),
        ({"timeout_keep_alive": "5"}, "timeout_keep_alive"),
        ({"limit_request_headers": 0}, "limit_request_headers"),
        ({"limit_concurrency": 0}, "limit_concurrency"),
        ({"access_log": "yes"}, "access_log"),
        ({"loop": "trio-ish"}, "loop"),
        ({"lifespan": "maybe"}, "lifespan"),
        ({"interface": "wsgi-ish"}, "interface"),
        ({"log_level": "loud"}, "log_level"),
        ({"headers": ("no-colon",)}, "headers"),
        ({"headers": (1,)}, "headers"),
        ({"host": 127}, "host"),
        ({"uds_permissions": "999"}, "uds_permissions"),
    ],
)
def test_bad_values_name_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Config(**changes)


def test_nan_is_refused_wherever_it_comes_from(tmp_path: Path) -> None:
    """float("nan") and TOML's nan passed every minimum (NaN < 0 is False): a nan timeout reached the event
    loop (uvloop's call_at raises ValueError for it), and a Config holding one was unequal to itself."""
    with pytest.raises(ConfigError, match="timeout_keep_alive: nan is not a number"):
        Config(timeout_keep_alive=float("nan"))
    with pytest.raises(ConfigError, match="timeout_write"):
        Config.load(env={"ZONDA_TIMEOUT_WRITE": "NaN"})
    path = write(tmp_path / "zonda.toml", "ws-ping-interval = nan\n")
    with pytest.raises(ConfigError, match="ws_ping_interval"):
        Config.load(env={}, config_file=path)
    assert Config(timeout_keep_alive=float("inf")).timeout_keep_alive == float("inf")  # a number: never


def test_reload_delay_is_bounded() -> None:
    """``--reload-delay inf`` passed the minimum and failed with OverflowError when the reloader started."""
    with pytest.raises(ConfigError, match="reload_delay: inf must be at most 3600"):
        Config(reload_delay=float("inf"))
    with pytest.raises(ConfigError, match="reload_delay"):
        Config.load(env={"ZONDA_RELOAD_DELAY": "1e9"})
    assert Config(reload_delay=3600).reload_delay == 3600.0


@pytest.mark.parametrize("mode", ["-7", "-0o660", "10000", "7" * 12])
def test_uds_permissions_outside_a_file_mode(mode: str) -> None:
    """int(text, 8) takes a sign and any length: "-7" reached os.chmod as a negative mode, and 12 digits
    overflowed it (OverflowError, a traceback) after the socket was bound."""
    with pytest.raises(ConfigError, match="uds_permissions"):
        Config(uds_permissions=mode)
    assert Config(uds_permissions="7777").uds_permissions == "7777"


@pytest.mark.parametrize("bind", [":\xb2", "127.0.0.1:\u0669", "h:" + "9" * 5000, "h:123456"])
def test_metrics_bind_with_a_port_of_other_digits(bind: str) -> None:
    """str.isdigit() takes "\xb2" (which int() refuses: a ValueError out of Config) and 5000 digits (int()
    refuses those too)."""
    with pytest.raises(ConfigError, match="metrics_bind"):
        Config(metrics_bind=bind)
    assert Config(metrics_bind="[::1]:9100").metrics_bind == "[::1]:9100"


def test_bad_toml_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", 'port = "eighty"\n')
    with pytest.raises(ConfigError, match="port"):
        Config.load(env={}, config_file=path)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ZONDA_PORT": "eighty"}, "ZONDA_PORT"),
        ({"ZONDA_ACCESS_LOG": "perhaps"}, "ZONDA_ACCESS_LOG"),
        ({"ZONDA_TIMEOUT_KEEP_ALIVE": "soon"}, "ZONDA_TIMEOUT_KEEP_ALIVE"),
        ({"ZONDA_LOOP": "nope"}, "loop"),
    ],
)
def test_bad_env_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Config.load(env=env)


# ------------------------------------------------------------------ the command line


def test_header_flag_is_repeatable() -> None:
    config = config_from_args(["app:app", "--header", "x-a: 1", "--header", "x-b:2"])
    assert config.headers == ("x-a: 1", "x-b:2")


def test_default_headers_are_sent() -> None:
    config = config_from_args(["--header", "X-Frame-Options: DENY", "--header", "x-team:zonda"])
    with run_server(simple_app, headers=config.headers) as server:
        response = httpx.get(server.url + "/")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-team"] == "zonda"


def test_boolean_flags_have_no_forms() -> None:
    config = config_from_args(["app:app", "--no-access-log", "--no-server-header", "--factory"])
    assert config.access_log is False
    assert config.server_header is False
    assert config.factory is True


def test_every_option_has_a_flag() -> None:
    flags = {opt for action in build_parser()._actions for opt in action.option_strings}
    for f in dataclasses.fields(Config):
        if f.name == "app":
            continue
        flag = "--" + (f.metadata["flag"] or f.name).replace("_", "-")
        assert flag in flags, flag


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--port", "eighty"], "--port"),
        (["--port", "70000"], "port"),
        (["--backlog", "0"], "backlog"),
        (["--loop", "nope"], "--loop"),
        (["--header", "no-colon"], "headers"),
        (["--timeout-keep-alive", "-3"], "timeout_keep_alive"),
    ],
)
def test_bad_flag_exits_2_naming_the_key(args: list[str], key: str) -> None:
    result = run_cli("examples.hello:app", *args)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert result.stderr.startswith("zonda: error: ")
    assert result.stderr.count("\n") == 1, result.stderr  # one line: no usage block, no traceback


def test_bad_env_value_exits_2_naming_the_key() -> None:
    result = run_cli("examples.hello:app", env={"ZONDA_PORT": "eighty"})
    assert result.returncode == 2
    assert "ZONDA_PORT" in result.stderr


def test_unknown_key_in_config_file_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path / "zonda.toml", "prot = 1\n")
    result = run_cli("examples.hello:app", "--config", path)
    assert result.returncode == 2
    assert "'prot'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_the_groups() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    out = result.stdout
    for group in (
        "Application",
        "Listening",
        "HTTP timeouts and limits",
        "Response headers",
        "Lifespan and shutdown",
        "Logging",
    ):
        assert f"{group}:" in out, group
    for flag in ("--factory", "--uds-permissions", "--timeout-keep-alive", "--header NAME:VALUE", "--config"):
        assert flag in out
    assert "(default: 8000)" in out
    assert "{auto,asyncio,uvloop,trio}" in out


def test_version_flag() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("zonda ")


def test_no_app_is_a_clear_error() -> None:
    result = run_cli("--port", "0")
    assert result.returncode == 1
    assert "no app given" in result.stdout + result.stderr
