"""The ``zonda`` command and ``zonda.run()``: build a Config, set up logging, serve, exit with a status.

The argument parser is generated from ``Config``'s fields, grouped as they are grouped there, plus the other
servers' flags of ``zonda.foreign`` (hidden from ``--help``). Every error on the command line is one line:
``zonda: error: ...``, with "did you mean" for a misspelt flag and zonda's way for another server's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, NoReturn

from zonda import __version__
from zonda.config import Config, _field_types
from zonda.config_sources import env_var_warnings, find_pyproject, parse_text, suggest
from zonda.errors import AppLoadError, ConfigError, LifespanFailure, ListenError
from zonda.foreign import FOREIGN_FLAGS, ForeignFlag
from zonda.io import run as run_loop
from zonda.logging import configure_logging
from zonda.server import Server
from zonda.supervisor import needs_supervisor, run_supervisor

logger = logging.getLogger("zonda.error")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_USAGE = 2
BOOLEAN_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
FOREIGN_DEST = "_foreign"  # where the parser collects the other servers' flags it accepted


def _text_parser(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parse_text(name, text)
        except ConfigError as exc:  # argparse names the flag: the key's name would say it twice
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None

    parse.__name__ = name  # argparse names the type in its error line
    return parse


class ArgumentParser(argparse.ArgumentParser):
    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse before Python 3.13 drops a "--" given as an option's own value (--uds=--), leaving it an
        # empty list; it is the value, as 3.13 reads it
        if arg_strings == ["--"] and action.option_strings and action.nargs is None:
            return self._get_value(action, "--")
        return super()._get_values(action, arg_strings)

    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: the line names the flag and what to do. Text from the
        command line may hold a newline: control characters are escaped as repr() would."""
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(EXIT_USAGE, f"zonda: error: {message}\n")


class ForeignFlagAction(argparse.Action):
    """Another server's flag: kept for after parsing when zonda does what it asks, else refused at once."""

    def __init__(self, option_strings: list[str], dest: str, foreign: ForeignFlag, **kwargs: Any) -> None:
        self.foreign = foreign
        if foreign.accept is None:
            kwargs["nargs"] = "?"  # refused whatever follows
        elif not foreign.takes_value:
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        value = values if isinstance(values, str) else None
        if self.foreign.accept is None:
            parser.error(self.foreign.refusal(str(option)))
        accepted = getattr(namespace, FOREIGN_DEST, [])
        accepted.append((self.foreign, str(option), value))
        setattr(namespace, FOREIGN_DEST, accepted)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="zonda",
        description="zonda: a fast, safe ASGI server.",
        usage="zonda [options] MODULE:APP",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=40, width=100),
        allow_abbrev=False,  # a prefix could name another server's flag; flags are spelt out, as in uvicorn
    )
    parser.add_argument("--version", action="version", version=f"zonda {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="read options from a TOML file (flat keys, or [tool.zonda])"
    )
    kinds = _field_types()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        meta = f.metadata
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        default_text = "" if f.default in (None, (), "") else f" (default: {f.default})"
        if f.name == "app":
            group.add_argument("app", nargs="?", default=argparse.SUPPRESS, help=meta["help"])
            continue
        flags = ["--" + (meta["flag"] or f.name).replace("_", "-"), *("--" + also for also in meta["also"])]
        aliases = meta["aliases"]
        if aliases and meta["choices"]:  # another server's words for a value, e.g. uvicorn's --http h11
            words = ", ".join(f"{word}={value}" for word, value in aliases.items())
            default_text += f"; also {words}"
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": meta["help"] + default_text,
        }
        base = kinds[f.name].base
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif base is tuple:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = _text_parser(f.name)
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        elif base in (int, float, str) and not meta["choices"]:
            kwargs["metavar"] = base.__name__.upper()
        if meta["choices"]:  # the choices check would refuse the aliases before they are turned into values
            kwargs["type"] = _text_parser(f.name)
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
            del kwargs["choices"]
        group.add_argument(*flags, **kwargs)
    for foreign in FOREIGN_FLAGS:
        parser.add_argument(*foreign.flags, action=ForeignFlagAction, foreign=foreign, dest=FOREIGN_DEST)
    return parser


def _boolean_flags() -> dict[str, str]:
    """``--flag`` -> its ``--no-`` form, for every boolean option and its other names."""
    kinds = _field_types()
    flags = {}
    for f in dataclasses.fields(Config):
        if kinds[f.name].base is bool:
            for name in ((f.metadata["flag"] or f.name).replace("_", "-"), *f.metadata["also"]):
                flags["--" + name] = "--no-" + name
    return flags


def fold_boolean_values(argv: Sequence[str]) -> list[str]:
    """``--flag VALUE`` and ``--flag=VALUE`` with a yes/no word (uvicorn's ``--ws-per-message-deflate false``)
    become ``--flag`` or ``--no-flag``; any other word is left for the app argument or an error."""
    flags = _boolean_flags()
    folded: list[str] = []
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token == "--":
            folded.extend(argv[position - 1 :])
            break
        name, equals, value = token.partition("=")
        if name in flags and not equals and position < len(argv) and argv[position].lower() in BOOLEAN_WORDS:
            value, equals = argv[position], "="
            position += 1
        if name in flags and equals and value.lower() in BOOLEAN_WORDS:
            folded.append(name if BOOLEAN_WORDS[value.lower()] else flags[name])
        else:
            folded.append(token)
    return folded


def _reject_unknown(parser: argparse.ArgumentParser, extras: list[str]) -> NoReturn:
    options = [option for option in extras if option.startswith("-")]
    if not options:
        parser.error(f"unexpected argument {extras[0]!r} (the app is given once, as MODULE:APP)")
    option = options[0].partition("=")[0]
    known = [  # zonda's own flags: another server's would only be refused next
        flag
        for action in parser._actions
        if not isinstance(action, ForeignFlagAction)
        for flag in action.option_strings
        if flag.startswith("--")
    ]
    hint = suggest(option, known, "--") or " (zonda --help lists the options)"
    parser.error(f"unknown option {option}{hint}")


def parse_command_line(argv: Sequence[str] | None = None) -> tuple[Config, str | None]:
    """The Config a command line asks for, and the TOML file it read (given or found), if any.

    A bad flag, value, file or key exits 2 with one line naming it."""
    parser = build_parser()
    namespace, extras = parser.parse_known_args(fold_boolean_values(sys.argv[1:] if argv is None else argv))
    if extras:
        _reject_unknown(parser, extras)
    args: MutableMapping[str, Any] = vars(namespace)
    for foreign, option, value in args.pop(FOREIGN_DEST, []):
        if not foreign.accept(value, args):
            parser.error(foreign.refusal(option, value))
    config_file = args.pop("config", None) or os.environ.get("ZONDA_CONFIG") or find_pyproject()
    try:
        return Config.load(cli=args, config_file=config_file), config_file
    except ConfigError as exc:
        parser.error(str(exc))


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    """Parse the command line; a bad value exits 2 with one line naming the key at fault."""
    return parse_command_line(argv)[0]


def serve(config: Config, config_file: str | None = None) -> int:
    """Serve until stopped; return the process exit status. ``config_file``: the TOML file read, to log."""
    try:
        configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)
        if config_file:
            logger.info("Options from %s", config_file)
        for warning in env_var_warnings(os.environ):
            logger.warning("%s", warning)
        if config.env_file:
            from zonda.envfile import apply_env_file

            added = apply_env_file(config.env_file)
            logger.info("Environment from %s: %d variable(s) set", config.env_file, len(added))
        if config.app is None:
            raise ConfigError("no app given: zonda MODULE:APP (or app = ... in the config file)")
        if needs_supervisor(config):  # workers, reload, recycling, systemd: a supervisor process
            if config.metrics_bind:
                from zonda.metrics import prepare_multiprocess

                prepare_multiprocess()  # before any worker, and before prometheus_client is imported
            return run_supervisor(config)
        server = Server(config)
        run_loop(config.loop, server.serve())
    except AppLoadError as exc:
        logger.error("Error: %s%s", exc, exc.traceback_text)
        return EXIT_STARTUP_FAILURE
    except (ConfigError, ListenError) as exc:
        logger.error("Error: %s", exc)
        return EXIT_STARTUP_FAILURE
    except LifespanFailure as exc:
        logger.error("Application startup failed: %s", exc)
        return EXIT_STARTUP_FAILURE
    except OSError as exc:
        logger.error("Error: could not listen: %s", exc)  # an OSError past binding (ListenError is above)
        return EXIT_STARTUP_FAILURE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an ASGI callable or a "module:attr" string) with Config options; exits on failure."""
    try:
        config = Config(app=app, **options)
    except (ConfigError, TypeError) as exc:
        raise SystemExit(f"zonda: {exc}") from None
    status = serve(config)
    if status != EXIT_OK:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    config, config_file = parse_command_line(argv)
    raise SystemExit(serve(config, config_file))
