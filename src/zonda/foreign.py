"""Flags of other servers (uvicorn, gunicorn, hypercorn, granian) that are not zonda's own.

A flag with the same meaning as a zonda option is an alias of that option (``also=`` in ``zonda.config``),
and another server's value for an option is an alias there too (``--http h11``). This table holds the rest:
each flag is accepted where zonda already does what it asks (``--http2``, ``--reset-contextvars``), or
refused with one line naming zonda's way (``--bind`` -> ``--host``/``--port``). The CLI registers every flag
here, hidden from ``--help``; the README's migration table lists them with the aliases.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

# Called with the flag's value (None for a flag without one) and the command line's option values, which
# it may change; returns False to refuse this value.
Accept = Callable[[str | None, MutableMapping[str, Any]], bool]

UVICORN = "uvicorn"
GUNICORN = "gunicorn"
HYPERCORN = "hypercorn"
GRANIAN = "granian"


@dataclass(frozen=True)
class ForeignFlag:
    flags: tuple[str, ...]  # as the other server spells them, long and short
    owners: tuple[str, ...]
    remedy: str  # zonda's way, for the refusal line and the README
    takes_value: bool = True
    accept: Accept | None = None  # None: always refused

    def refusal(self, flag: str, value: str | None = None) -> str:
        """The one line that refuses ``flag`` (or this ``value`` of an accepted flag) and names zonda's way."""
        if value is not None:
            return f"{flag} {value} is not supported; in zonda: {self.remedy}"
        owners = " and ".join(f"{owner}'s" for owner in self.owners)
        return f"{flag} is {owners} option, not zonda's; in zonda: {self.remedy}"


def _serve_http2(value: str | None, values: MutableMapping[str, Any]) -> bool:
    """uvicorn's --http2 turns HTTP/2 on; it is on in zonda unless --http 1 (or h11, httptools, zttp). Only a
    ``--http`` on the same command line is changed: without one, the environment's or the TOML file's ``http``
    stands (``2``, HTTP/2 only, is no reason to fall back to auto)."""
    if values.get("http") == "1":
        values["http"] = "auto"
    return True


def _nothing_to_do(value: str | None, values: MutableMapping[str, Any]) -> bool:
    return True


def _negotiated_tls(value: str | None, values: MutableMapping[str, Any]) -> bool:
    # ssl.PROTOCOL_TLS (2) and PROTOCOL_TLS_SERVER (17), uvicorn's and gunicorn's defaults, negotiate the
    # highest version both sides speak, as zonda does; the others pin one old version.
    return value is not None and value.strip() in ("2", "17")


def _flag(
    flags: str,
    owners: str,
    remedy: str,
    takes_value: bool = True,
    accept: Accept | None = None,
) -> ForeignFlag:
    return ForeignFlag(tuple(flags.split()), tuple(owners.split()), remedy, takes_value, accept)


FOREIGN_FLAGS: tuple[ForeignFlag, ...] = (
    # uvicorn 0.55's flags that zonda has no option for (the rest are zonda's options or their aliases)
    _flag("--http2", UVICORN, "HTTP/2 is on unless --http 1", False, _serve_http2),
    _flag(
        "--reset-contextvars",
        UVICORN,
        "always so: each request runs in its own copy of the server's context, never the lifespan's",
        False,
        _nothing_to_do,
    ),
    _flag(
        "--ssl-version",
        f"{UVICORN} {GUNICORN}",
        "TLS 1.2 and 1.3 are negotiated; --ssl-min-version 1.3 refuses 1.2 (older versions are never served)",
        accept=_negotiated_tls,
    ),
    # gunicorn and hypercorn
    _flag("-b --bind", f"{GUNICORN} {HYPERCORN}", "--host HOST --port PORT, --uds PATH or --fd N"),
    _flag("-w", f"{GUNICORN} {HYPERCORN}", "--workers N"),
    _flag("-k --worker-class", f"{GUNICORN} {HYPERCORN}", "--loop asyncio|uvloop (one kind of worker)"),
    _flag("--certfile", f"{GUNICORN} {HYPERCORN}", "--ssl-certfile FILE"),
    _flag("--keyfile", f"{GUNICORN} {HYPERCORN}", "--ssl-keyfile FILE"),
    _flag("--keyfile-password", HYPERCORN, "--ssl-keyfile-password PASSWORD"),
    _flag("--ca-certs", f"{GUNICORN} {HYPERCORN}", "--ssl-ca-certs FILE"),
    _flag("--cert-reqs --verify-mode", f"{GUNICORN} {HYPERCORN}", "--ssl-cert-reqs none|optional|required"),
    _flag("--ciphers", f"{GUNICORN} {HYPERCORN}", "--ssl-ciphers CIPHERS"),
    _flag("--keep-alive", f"{GUNICORN} {HYPERCORN}", "--timeout-keep-alive SECONDS"),
    _flag("--graceful-timeout", f"{GUNICORN} {HYPERCORN}", "--timeout-graceful-shutdown SECONDS"),
    _flag("-t --timeout", GUNICORN, "--timeout-worker-healthcheck SECONDS"),
    _flag("--read-timeout", HYPERCORN, "--timeout-request-header and --timeout-request-body SECONDS"),
    _flag("--access-logfile", f"{GUNICORN} {HYPERCORN}", "--access-log-file FILE (stderr by default)"),
    _flag("--access-logformat", f"{GUNICORN} {HYPERCORN}", "--access-log-format with {field} names"),
    _flag("--error-logfile --log-file", f"{GUNICORN} {HYPERCORN}", "--log-config FILE with a file handler"),
    _flag("-c", f"{GUNICORN} {HYPERCORN}", "--config FILE (TOML)"),
    _flag("-p", f"{GUNICORN} {HYPERCORN}", "--pid FILE"),
    _flag("-D --daemon", f"{GUNICORN} {HYPERCORN}", "zonda stays in the foreground: run it under systemd"),
    _flag(
        "-u --user -g --group", f"{GUNICORN} {HYPERCORN}", "start zonda as that user (systemd User=, Group=)"
    ),
    _flag("-m --umask", f"{GUNICORN} {HYPERCORN}", "--uds-permissions MODE"),
    _flag("--threads", GUNICORN, "--wsgi-threads N"),
    _flag("--worker-connections", GUNICORN, "--limit-connections N"),
    _flag("--limit-request-fields", GUNICORN, "--limit-request-headers N"),
    _flag("--limit-request-field_size", GUNICORN, "--limit-request-header-size BYTES (the whole head)"),
    _flag("--chdir --pythonpath", GUNICORN, "--app-dir DIR"),
    _flag("-e --env", GUNICORN, "--env-file FILE"),
    _flag("--preload", GUNICORN, "each worker imports the app itself (nothing to preload)", False),
    _flag("--statsd-host", f"{GUNICORN} {HYPERCORN}", "--metrics-bind HOST:PORT (Prometheus)"),
    _flag("--asgi-loop", GUNICORN, "--loop asyncio|uvloop"),
    _flag("--asgi-lifespan", GUNICORN, "--lifespan auto|on|off"),
    _flag("--websocket-max-message-size", GUNICORN, "--ws-max-size BYTES"),
    _flag("--websocket-ping-interval", HYPERCORN, "--ws-ping-interval SECONDS"),
    _flag("--http-protocols", GUNICORN, "--http auto|1|2"),
    _flag("--http2-max-concurrent-streams", f"{GUNICORN} {GRANIAN}", "--h2-max-concurrent-streams N"),
    _flag(
        "--http2-initial-window-size --http2-initial-stream-window-size",
        f"{GUNICORN} {GRANIAN}",
        "--h2-initial-window-size BYTES",
    ),
    _flag("--http2-initial-connection-window-size", GRANIAN, "--h2-connection-window-size BYTES"),
    _flag("--http2-max-frame-size", f"{GUNICORN} {GRANIAN}", "--h2-max-frame-size BYTES"),
    _flag(
        "--http2-max-header-list-size --http2-max-headers-size",
        f"{GUNICORN} {GRANIAN}",
        "--h2-max-header-list-size BYTES",
    ),
    # granian
    _flag("--ssl-certificate", GRANIAN, "--ssl-certfile FILE"),
    _flag("--ssl-ca", GRANIAN, "--ssl-ca-certs FILE"),
    _flag("--ssl-client-verify", GRANIAN, "--ssl-cert-reqs required", False),
    _flag("--ssl-protocol-min", GRANIAN, "--ssl-min-version 1.2|1.3"),
    _flag("--url-path-prefix", GRANIAN, "--root-path PATH"),
    _flag("--no-ws", GRANIAN, "--ws none", False),
    _flag("--blocking-threads", GRANIAN, "--wsgi-threads N"),
    _flag("--backpressure", GRANIAN, "--limit-concurrency N"),
    _flag("--http1-header-read-timeout", GRANIAN, "--timeout-request-header SECONDS"),
    _flag("--http1-buffer-size", GRANIAN, "--limit-request-header-size BYTES"),
    _flag("--workers-lifetime", GRANIAN, "--max-worker-lifetime SECONDS"),
    _flag("--workers-max-rss", GRANIAN, "--max-worker-memory MIB"),
    _flag("--workers-kill-timeout", GRANIAN, "--timeout-graceful-shutdown SECONDS"),
    _flag("--pid-file", GRANIAN, "--pid FILE"),
    _flag("--env-files", GRANIAN, "--env-file FILE"),
    _flag("--working-dir", GRANIAN, "--app-dir DIR"),
    _flag("--reload-paths", GRANIAN, "--reload-dir DIR"),
    _flag(
        "--reload-ignore-patterns --reload-ignore-dirs --reload-ignore-paths",
        GRANIAN,
        "--reload-exclude GLOB",
    ),
    _flag("--access-log-fmt", GRANIAN, "--access-log-format FORMAT"),
    _flag("--log --no-log", GRANIAN, "--log-level LEVEL, --no-access-log", False),
    _flag("--metrics --no-metrics --metrics-address --metrics-port", GRANIAN, "--metrics-bind HOST:PORT"),
    _flag("--runtime-threads --runtime-mode --task-impl", GRANIAN, "--workers N (one event loop each)"),
)
