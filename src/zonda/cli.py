"""The ``zonda`` command and ``zonda.run()``: build a Config, set up logging, serve, exit with a status.

The argument parser is generated from ``Config``'s fields, grouped as they are grouped there.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from zonda import __version__
from zonda.config import Config, _field_types, parse_text
from zonda.errors import AppLoadError, ConfigError, LifespanFailure
from zonda.logging import configure_logging
from zonda.server import Server, run_in_loop
from zonda.supervisor import needs_supervisor, run_supervisor

logger = logging.getLogger("zonda.error")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1


def _text_parser(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parse_text(name, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its error line
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zonda",
        description="zonda: a fast, safe ASGI server.",
        usage="zonda [options] MODULE:APP",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=40, width=100),
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
        flag = "--" + (meta["flag"] or f.name).replace("_", "-")
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
        group.add_argument(flag, **kwargs)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    """Parse the command line; a bad value exits 2 with argparse's usage line and the key at fault."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config", None)
    try:
        return Config.load(cli=args, config_file=config_file)
    except ConfigError as exc:
        parser.error(str(exc))


def serve(config: Config) -> int:
    """Serve until stopped; return the process exit status."""
    try:
        configure_logging(config.log_level, config.access_log, config.log_config)
        if config.app is None:
            raise ConfigError("no app given: zonda MODULE:APP (or app = ... in the config file)")
        if needs_supervisor(config):  # workers, reload, recycling, systemd: a supervisor process
            if config.metrics_bind:
                from zonda.metrics import prepare_multiprocess

                prepare_multiprocess()  # before any worker, and before prometheus_client is imported
            return run_supervisor(config)
        server = Server(config)
        run_in_loop(config.loop, server.serve())
    except (AppLoadError, ConfigError) as exc:
        logger.error("Error: %s", exc)
        return EXIT_STARTUP_FAILURE
    except LifespanFailure as exc:
        logger.error("Application startup failed: %s", exc)
        return EXIT_STARTUP_FAILURE
    except OSError as exc:
        logger.error("Error: could not listen: %s", exc)
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
    raise SystemExit(serve(config_from_args(argv)))
