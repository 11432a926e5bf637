"""The command line for people coming from other servers: every uvicorn 0.55 flag is accepted with its meaning
or refused in one line naming zonda's way; other servers' flags are refused the same way; errors are one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO, run_cli
from zonda.cli import build_parser, fold_boolean_values, parse_command_line

# uvicorn 0.55.0's `uvicorn --help`, every flag with a value it takes
UVICORN_FLAGS: list[tuple[str, ...]] = [
    ("--host", "0.0.0.0"),
    ("--port", "8001"),
    ("--uds", "/tmp/app.sock"),
    ("--fd", "3"),
    ("--reload",),
    ("--reload-dir", "."),
    ("--reload-include", "*.py"),
    ("--reload-exclude", "*.tmp"),
    ("--reload-delay", "0.25"),
    ("--workers", "2"),
    ("--loop", "asyncio"),
    ("--http", "h11"),
    ("--http2",),
    ("--ws", "wsproto"),
    ("--ws-max-size", "1000"),
    ("--ws-max-queue", "4"),
    ("--ws-ping-interval", "5"),
    ("--ws-ping-timeout", "5"),
    ("--ws-per-message-deflate", "false"),
    ("--lifespan", "on"),
    ("--interface", "asgi3"),
    ("--env-file", "ENV_FILE"),
    ("--log-config", "logging.ini"),
    ("--log-level", "trace"),
    ("--access-log",),
    ("--no-access-log",),
    ("--use-colors",),
    ("--no-use-colors",),
    ("--proxy-headers",),
    ("--no-proxy-headers",),
    ("--server-header",),
    ("--no-server-header",),
    ("--date-header",),
    ("--no-date-header",),
    ("--forwarded-allow-ips", "*"),
    ("--root-path", "/api"),
    ("--limit-concurrency", "10"),
    ("--backlog", "100"),
    ("--limit-max-requests", "1000"),
    ("--limit-max-requests-jitter", "10"),
    ("--timeout-keep-alive", "5"),
    ("--timeout-graceful-shutdown", "3"),
    ("--timeout-worker-healthcheck", "5"),
    ("--ssl-keyfile", "key.pem"),
    ("--ssl-certfile", "cert.pem"),
    ("--ssl-keyfile-password", "secret"),
    ("--ssl-version", "17"),
    ("--ssl-cert-reqs", "2"),
    ("--ssl-ca-certs", "ca.pem"),
    ("--ssl-ciphers", "ECDHE+AESGCM"),
    ("--header", "x-a:1"),
    ("--app-dir", "."),
    ("--h11-max-incomplete-event-size", "32768"),
    ("--reset-contextvars",),
    ("--factory",),
]


def parse(*args: str) -> dict[str, object]:
    config, _ = parse_command_line(["app:app", *args])
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


@pytest.mark.parametrize("flag", UVICORN_FLAGS, ids=lambda flag: " ".join(flag))
def test_every_uvicorn_flag_is_accepted(flag: tuple[str, ...], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("")
    parse(*(str(env_file) if part == "ENV_FILE" else part for part in flag))


def test_the_list_is_uvicorns_whole_command_line() -> None:
    """With uvicorn installed (the bench extra), its own command must hold no flag the list above lacks."""
    uvicorn_main = pytest.importorskip("uvicorn.main")
    ours = {part for flag in UVICORN_FLAGS for part in flag if part.startswith("--")}
    theirs = {
        name
        for param in uvicorn_main.main.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--") and name not in ("--version", "--help")
    }
    assert theirs <= ours, sorted(theirs - ours)


@pytest.mark.parametrize(
    ("args", "option", "expected"),
    [
        (("--http", "h11"), "http", "1"),
        (("--http", "httptools"), "http", "1"),
        (("--http", "zttp"), "http", "1"),
        (("--http", "zttp", "--http2"), "http", "auto"),
        (("--http2", "--http", "httptools"), "http", "auto"),
        (("--http", "2", "--http2"), "http", "2"),
        (("--ws", "websockets"), "ws", "auto"),
        (("--ws", "websockets-sansio"), "ws", "auto"),
        (("--ws", "none"), "ws", "none"),
        (("--ws-per-message-deflate", "false"), "ws_per_message_deflate", False),
        (("--ws-per-message-deflate=0",), "ws_per_message_deflate", False),
        (("--ws-per-message-deflate", "True"), "ws_per_message_deflate", True),
        (("--limit-max-requests", "500"), "max_requests", 500),
        (("--limit-max-requests-jitter", "7"), "max_requests_jitter", 7),
        (("--h11-max-incomplete-event-size", "32768"), "limit_request_header_size", 32768),
        (("--ssl-cert-reqs", "1"), "ssl_cert_reqs", "optional"),
        (("--use-colors",), "use_colors", True),
        (("--no-use-colors",), "use_colors", False),
        ((), "use_colors", None),
        (("--reload-delay", "0.25"), "reload_delay", 0.25),
        (("--interface", "asgi"), "interface", "asgi3"),
    ],
)
def test_other_servers_words_mean_the_same(args: tuple[str, ...], option: str, expected: object) -> None:
    assert parse(*args)[option] == expected


def test_uvicorns_http2_flag_leaves_an_http_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--http2 turned ZONDA_HTTP=2 (HTTP/2 only) into auto: it acted as if --http 1 had been given."""
    monkeypatch.setenv("ZONDA_HTTP", "2")
    assert parse("--http2")["http"] == "2"
    assert parse("--http2", "--http", "1")["http"] == "auto"


def test_flags_that_change_nothing_in_zonda_change_nothing() -> None:
    defaults = parse()
    assert parse("--reset-contextvars", "--ssl-version", "17", "--http2") == defaults
    assert parse("--ssl-version=2") == defaults


def test_a_yes_no_word_after_a_boolean_flag_is_its_value_not_the_app() -> None:
    assert fold_boolean_values(["--access-log", "no", "app:app"]) == ["--no-access-log", "app:app"]
    assert fold_boolean_values(["--factory", "app:create"]) == ["--factory", "app:create"]
    assert fold_boolean_values(["--", "--access-log", "off"]) == ["--", "--access-log", "off"]
    assert parse_command_line(["--access-log", "off", "app:app"])[0].app == "app:app"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--bind", "0.0.0.0:8000"],
            "zonda: error: --bind is gunicorn's and hypercorn's option, not zonda's; "
            "in zonda: --host HOST --port PORT, --uds PATH or --fd N",
        ),
        (
            ["-w", "4"],
            "zonda: error: -w is gunicorn's and hypercorn's option, not zonda's; in zonda: --workers N",
        ),
        (["-D"], "in zonda: zonda stays in the foreground"),
        (["--keep-alive", "5"], "in zonda: --timeout-keep-alive SECONDS"),
        (["--ssl-certificate", "c.pem"], "--ssl-certificate is granian's option"),
        (
            ["--loop", "zuvloop"],
            "zonda: error: argument --loop: 'zuvloop' is not supported: zonda runs on asyncio",
        ),
        (["--ssl-version", "5"], "zonda: error: --ssl-version 5 is not supported; in zonda: TLS 1.2 and 1.3"),
        (["--interface", "rsgi"], "not RSGI"),
        (["--workrs", "2"], "zonda: error: unknown option --workrs (did you mean '--workers'?)"),
        (["--frobnicate"], "zonda: error: unknown option --frobnicate (zonda --help lists the options)"),
        (["--thread"], "unknown option --thread (zonda --help lists the options)"),  # never another server's
        (["--port", "eighty"], "zonda: error: argument --port: 'eighty' is not a valid int"),
        (["second:app"], "zonda: error: unexpected argument 'second:app'"),
    ],
)
def test_refusals_are_one_line_naming_zondas_way(args: list[str], line: str) -> None:
    result = run_cli("examples.hello:app", *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # one line: no usage block, no traceback
    assert line in result.stderr


def test_misspelt_env_variable_and_uvicorns_variables_are_warned_about() -> None:
    env = {
        "ZONDA_WORKER": "2",
        "UVICORN_PORT": "9000",
        "ZONDA_TEST_SOMETHING": "x",
        "ZONDA_LOG_LEVEL": "warning",
    }
    result = run_cli("no_such_module:app", "--port", "0", env=env)  # exits after the warnings, at the import
    assert result.returncode == 1
    assert (
        "ZONDA_WORKER is not a zonda option (did you mean 'ZONDA_WORKERS'?); it is ignored" in result.stderr
    )
    assert "UVICORN_PORT is uvicorn's; zonda reads ZONDA_PORT" in result.stderr
    assert "ZONDA_TEST_SOMETHING" not in result.stderr  # not close to any option: someone else's


TABLE_ROW = re.compile(r"^\| (.+) \|$")


def readme_table_flags() -> set[str]:
    """Every flag named in the other servers' columns of the README's migration table."""
    text = Path(REPO, "README.md").read_text()
    section = text.split("## Coming from uvicorn, hypercorn, gunicorn or granian", 1)[1].split("\n## ", 1)[0]
    flags = set()
    for line in section.splitlines():
        match = TABLE_ROW.match(line)
        if not match or line.startswith("|---") or line.startswith("| zonda"):
            continue
        cells = match.group(1).split(" | ")
        for cell in cells[1:]:
            for span in re.findall(r"`([^`]+)`", cell):
                word = span.split()[0].split("=")[0]
                if word.startswith("-") and "*" not in word:
                    flags.add(word)
    return flags


def test_every_flag_in_the_readme_table_is_known_to_the_parser() -> None:
    """Each is zonda's own, an alias, or refused in one line with zonda's way: never "unknown option"."""
    flags = readme_table_flags()
    assert {"-b", "--limit-max-requests", "--ssl-certificate", "--http2"} <= flags
    known = build_parser()._option_string_actions
    assert sorted(flag for flag in flags if flag not in known) == []


def test_other_servers_flags_stay_out_of_help() -> None:
    result = run_cli("--help")
    assert "--bind" not in result.stdout
    assert "--reset-contextvars" not in result.stdout
    assert "--limit-max-requests" in result.stdout  # an alias is shown with the option it names
    assert "also h11=1, httptools=1, zttp=1" in result.stdout


def test_http3_without_aioquic_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    from tlsutil import make_tls_files

    files = make_tls_files(tmp_path)
    missing = tmp_path / "without" / "aioquic"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text('raise ImportError("aioquic is not installed here")\n')
    result = run_cli(
        "examples.hello:app",
        "--port",
        "0",
        "--http3",
        "--ssl-certfile",
        str(files.cert),
        "--ssl-keyfile",
        str(files.key),
        env={"PYTHONPATH": str(missing.parent)},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "pip install 'zonda[http3]'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_otel_without_the_opentelemetry_packages_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    missing = tmp_path / "without" / "opentelemetry"  # a plain package first on the path hides the real one
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text('raise ImportError("opentelemetry is not installed here")\n')
    result = run_cli("examples.hello:app", "--port", "0", "--otel", env={"PYTHONPATH": str(missing.parent)})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "pip install 'zonda[otel]'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_http3_without_tls_is_refused_in_one_line() -> None:
    result = run_cli("examples.hello:app", "--http3")
    assert result.returncode != 0
    assert "HTTP/3 runs over TLS only" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--foo\nbar"], ["--ssl-version", "x\ny"], ["--bind\r", "x"]])
def test_an_error_line_stays_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option or a refused value is shown as given, and a newline in it split the line."""
    with pytest.raises(SystemExit) as raised:
        parse_command_line(["app:app", *args])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zonda: error: ") and err.count("\n") == 1 and "\r" not in err, err
    assert "\\n" in err or "\\r" in err, err


def test_a_double_dash_given_as_an_options_own_value_is_that_value() -> None:
    """argparse before 3.13 turns --uds=-- into an empty list (a ConfigError about a list); "--" is the value."""
    config, _ = parse_command_line(["app:app", "--uds=--", "--root-path=--"])
    assert config.uds == "--" and config.root_path == "--"
