"""One ``Config``: CLI flags, ``ZONDA_*`` environment variables and a TOML file all fill it.

Each option is one field with its metadata (help, group, choices, the names and values other servers use for
it); the CLI, the env var names and the TOML keys are generated from the fields. Precedence: CLI flag >
environment variable > ``--env-file`` variable > TOML file (``--config``, or ``[tool.zonda]`` in
``./pyproject.toml``) > default. Resolving a config (importing the app, setting up logging) happens elsewhere
and never mutates it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zonda.errors import ConfigError

ENV_PREFIX = "ZONDA_"
PYPROJECT = "pyproject.toml"
# ZONDA_* variables that are not options but are read on purpose (not warned about as unknown)
KNOWN_ENV = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "WORKER_START_METHOD"}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


MAX_RELOAD_DELAY = 3600.0


def option(
    default: Any,
    help: str,
    group: str,
    *,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    minimum: float | None = 0,
    aliases: Mapping[str, Any] | None = None,
    also: tuple[str, ...] = (),
    refused: Mapping[str, str] | None = None,
) -> Any:
    metadata = {
        "help": help,
        "group": group,
        "choices": choices,
        "flag": flag,
        "metavar": metavar,
        "minimum": minimum,
        "aliases": aliases,  # words accepted for a value, e.g. workers "auto" for 0, uvicorn's --http h11 for 1
        "also": also,  # more flag (and TOML key) names with the same meaning, e.g. uvicorn's
        "refused": refused,  # values other servers take that zonda does not: value -> what to do instead
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    app: Any = option(
        None, "the app as module:attribute (or the callable itself, from Python)", "Application"
    )
    factory: bool = option(
        False, "treat the app as a factory: call it with no arguments to get the app", "Application"
    )
    app_dir: str = option(".", "directory put first on sys.path before importing the app", "Application")
    interface: str = option(
        "auto",
        "app interface; auto tells WSGI, ASGI 2 and ASGI 3 apps apart by their call signature",
        "Application",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
        aliases={"asgi": "asgi3"},  # granian's name
        refused={"rsgi": "zonda serves ASGI and WSGI apps, not RSGI", "asginl": "use --lifespan off"},
    )
    wsgi_threads: int = option(
        16, "threads per process that run a WSGI app; more requests wait for one", "Application", minimum=1
    )
    lifespan: str = option(
        "auto",
        "lifespan protocol: auto runs it if the app supports it",
        "Application",
        choices=("auto", "on", "off"),
    )
    root_path: str = option("", "ASGI root_path, for an app mounted below a path prefix", "Application")
    env_file: str | None = option(
        None,
        "read KEY=VALUE lines (a .env file) into the environment before the app is imported; variables "
        "already set win, and its ZONDA_* variables configure zonda",
        "Application",
        metavar="FILE",
    )

    host: str = option("127.0.0.1", "interface to bind (IPv4 or IPv6 address, or a host name)", "Listening")
    port: int = option(8000, "TCP port to bind; 0 picks a free one", "Listening", minimum=0)
    uds: str | None = option(None, "bind a unix domain socket at this path instead of TCP", "Listening")
    uds_permissions: str | None = option(None, "octal file mode for the unix socket, e.g. 660", "Listening")
    fd: int | None = option(None, "serve an already bound socket passed as this file descriptor", "Listening")
    backlog: int = option(2048, "listen backlog", "Listening", minimum=1)
    loop: str = option(
        "auto",
        "event loop; auto picks uvloop when installed; trio needs zonda[trio] (apps run as trio tasks)",
        "Listening",
        choices=("auto", "asyncio", "uvloop", "trio"),
        refused=dict.fromkeys(
            ("zuvloop", "rloop", "winloop"), "zonda runs on asyncio, uvloop or trio (--loop uvloop)"
        ),
    )

    timeout_keep_alive: float = option(
        5.0, "close an idle keep-alive connection after this many seconds", "HTTP timeouts and limits"
    )
    timeout_request_header: float = option(
        10.0, "answer 408 when a request's headers take longer (seconds)", "HTTP timeouts and limits"
    )
    timeout_request_body: float = option(
        30.0, "answer 408 when a request body stalls this long (seconds)", "HTTP timeouts and limits"
    )
    limit_request_body_rate: int = option(
        256,
        "slowest average rate (bytes per second, from the body's first byte) a request body may arrive at, "
        "checked after --limit-request-body-rate-grace; slower: 408 (HTTP/2: RST_STREAM CANCEL); 0: no minimum",
        "HTTP timeouts and limits",
        metavar="BYTES/S",
    )
    limit_request_body_rate_grace: float = option(
        5.0,
        "seconds a request body arrives before its rate is checked (also after the server paused reading it)",
        "HTTP timeouts and limits",
        metavar="SECONDS",
    )
    timeout_write: float = option(
        30.0,
        "close a connection whose client takes none of the response for this many seconds (a slow reader; "
        "HTTP/2: RST_STREAM CANCEL for a stream whose window stays closed); 0: never",
        "HTTP timeouts and limits",
    )
    limit_request_line: int = option(
        8190, "longest request target in bytes (longer: 414)", "HTTP timeouts and limits", minimum=1
    )
    limit_request_headers: int = option(
        100, "most request headers (more: 431)", "HTTP timeouts and limits", minimum=1
    )
    limit_request_header_size: int = option(
        65536,
        "largest request header block in bytes (larger: 431)",
        "HTTP timeouts and limits",
        minimum=64,
        also=("h11-max-incomplete-event-size",),  # uvicorn's: h11's buffer for an unfinished request head
    )
    limit_request_body: int = option(
        100 * 1024 * 1024, "largest request body in bytes, 0 for none (413)", "HTTP timeouts and limits"
    )
    limit_concurrency: int | None = option(
        None,
        "most requests in flight; beyond it, 503 with Retry-After",
        "HTTP timeouts and limits",
        minimum=1,
    )
    limit_connections: int | None = option(
        None, "most open connections; beyond it, 503 and close", "HTTP timeouts and limits", minimum=1
    )

    http: str = option(
        "auto",
        "HTTP versions served: auto (HTTP/1.1 and HTTP/2 via ALPN, h2c upgrade or prior knowledge), 1, "
        "or 2 (HTTP/2 only)",
        "HTTP/2",
        choices=("auto", "1", "2"),
        aliases=dict.fromkeys(("h11", "httptools", "zttp"), "1"),  # uvicorn's HTTP/1.1 implementations
    )
    h2_max_concurrent_streams: int = option(
        100,
        "most streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)",
        "HTTP/2",
        minimum=1,
    )
    h2_initial_window_size: int = option(
        1024 * 1024, "per-stream receive window in bytes (SETTINGS_INITIAL_WINDOW_SIZE)", "HTTP/2", minimum=1
    )
    h2_connection_window_size: int = option(
        4 * 1024 * 1024, "connection receive window in bytes", "HTTP/2", minimum=65535
    )
    h2_max_frame_size: int = option(
        16384, "largest frame payload the client may send (SETTINGS_MAX_FRAME_SIZE)", "HTTP/2", minimum=16384
    )
    h2_max_header_list_size: int = option(
        65536, "largest decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); larger: 431", "HTTP/2", minimum=1
    )
    h2_max_resets: int = option(
        200,
        "stream resets a client may cause per 10 s before GOAWAY ENHANCE_YOUR_CALM (rapid reset)",
        "HTTP/2",
        minimum=1,
    )
    h2_max_control_frames: int = option(
        1000,
        "SETTINGS, PING, PRIORITY and empty frames a client may send per 10 s before GOAWAY ENHANCE_YOUR_CALM",
        "HTTP/2",
        minimum=1,
    )
    timeout_h2_idle: float = option(
        60.0, "seconds an HTTP/2 connection with no open streams stays open", "HTTP/2"
    )

    http3: bool = option(
        False,
        "also serve HTTP/3 over QUIC (UDP) on the TLS listener's host and port (needs --ssl-certfile and "
        "pip install 'zonda[http3]')",
        "HTTP/3",
    )
    quic_bind: str | None = option(
        None, "HOST:PORT of the HTTP/3 UDP listener instead (hypercorn's flag); turns --http3 on", "HTTP/3"
    )
    quic_retry: bool = option(
        False, "validate every client address with a Retry token before its QUIC handshake", "HTTP/3"
    )
    quic_retry_after: int = option(
        64,
        "QUIC handshakes in progress (per worker) from which new clients must echo a Retry token first",
        "HTTP/3",
        minimum=1,
    )
    quic_0rtt: bool = option(
        False,
        "accept 0-RTT early data from resuming clients (replayable: each session ticket is good for one use)",
        "HTTP/3",
    )
    h3_max_concurrent_streams: int = option(
        100, "most request streams a client may have open at once (QUIC max_streams)", "HTTP/3", minimum=1
    )
    h3_stream_window: int = option(
        1024 * 1024,
        "per-stream receive window in bytes, at first (it grows while the app reads, never while it does not)",
        "HTTP/3",
        minimum=1024,
    )
    h3_connection_window: int = option(
        4 * 1024 * 1024, "connection receive window in bytes, at first", "HTTP/3", minimum=1024
    )
    timeout_quic_idle: float = option(60.0, "seconds a QUIC connection may stay silent", "HTTP/3", minimum=1)
    alt_svc_max_age: int = option(
        86400,
        "seconds clients may remember the alt-svc header that TCP responses carry with --http3; 0: no header",
        "HTTP/3",
    )

    ssl_certfile: str | None = option(None, "TLS certificate chain file (PEM); turns TLS on", "TLS")
    ssl_keyfile: str | None = option(None, "TLS private key file (PEM)", "TLS")
    ssl_keyfile_password: str | None = option(None, "password of an encrypted key file", "TLS")
    ssl_ca_certs: str | None = option(None, "CA certificates (PEM) to verify client certificates with", "TLS")
    ssl_cert_reqs: str = option(
        "none",
        "client certificates: none, optional or required (mutual TLS)",
        "TLS",
        choices=("none", "optional", "required"),
        aliases={"0": "none", "1": "optional", "2": "required"},
    )
    ssl_ciphers: str | None = option(None, "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)", "TLS")
    ssl_min_version: str = option("1.2", "lowest TLS version accepted", "TLS", choices=("1.2", "1.3"))
    timeout_tls_handshake: float = option(10.0, "seconds a client gets to finish the TLS handshake", "TLS")

    ws: str = option(
        "auto",
        "WebSocket support; none serves upgrade requests as plain HTTP",
        "WebSocket",
        choices=("auto", "none"),
        aliases=dict.fromkeys(("websockets", "websockets-sansio", "wsproto"), "auto"),  # uvicorn's
    )
    ws_max_size: int = option(
        16 * 1024 * 1024, "largest incoming WebSocket message in bytes (larger: 1009)", "WebSocket", minimum=1
    )
    ws_max_queue: int = option(
        32, "incoming messages queued for the app before reading pauses", "WebSocket", minimum=1
    )
    ws_ping_interval: float | None = option(
        20.0, "seconds between keep-alive pings; none to disable", "WebSocket"
    )
    ws_ping_timeout: float | None = option(
        20.0, "seconds to wait for a pong before closing; none to disable", "WebSocket"
    )
    ws_per_message_deflate: bool = option(
        True, "negotiate permessage-deflate compression (RFC 7692)", "WebSocket"
    )

    server_header: bool = option(True, "send a Server header", "Response headers")
    date_header: bool = option(True, "send a Date header", "Response headers")
    headers: tuple[str, ...] = option(
        (),
        "a default response header as name:value (repeatable)",
        "Response headers",
        flag="header",
        metavar="NAME:VALUE",
    )

    timeout_graceful_shutdown: float = option(
        30.0, "seconds in-flight requests get to finish on shutdown", "Lifespan and shutdown"
    )
    shutdown_stream_notice: float = option(
        5.0,
        "seconds before the graceful timeout ends that a response still streaming, its request read whole, "
        "gets http.disconnect to end its body cleanly; 0: never (it is cut at the timeout)",
        "Lifespan and shutdown",
    )
    timeout_lifespan_startup: float = option(
        60.0, "seconds the app's lifespan startup may take", "Lifespan and shutdown"
    )
    timeout_lifespan_shutdown: float = option(
        30.0, "seconds the app's lifespan shutdown may take", "Lifespan and shutdown"
    )

    log_level: str = option(
        "info",
        "log level; debug adds a line per connection (zonda.connection), trace one per ASGI message (zonda.asgi)",
        "Logging",
        choices=LOG_LEVELS,
    )
    access_log: bool = option(True, "log one line per response on zonda.access", "Logging")
    log_config: str | None = option(
        None, "logging config file: dictConfig (.json, .toml, .yaml) or fileConfig (.ini)", "Logging"
    )
    use_colors: bool | None = option(
        None,
        "color the level names of log lines (default: when stderr is a terminal and NO_COLOR is unset)",
        "Logging",
    )
    access_log_format: str | None = option(
        None,
        "access line from named fields, e.g. '{client} \"{method} {target}\" {status} {duration_ms:.1f}ms' "
        "(see README); written to stderr or --access-log-file, not through zonda.access",
        "Logging",
        metavar="FORMAT",
    )
    access_log_json: bool = option(
        False,
        "access log as one JSON object per line (keys: the format's fields, or a default set)",
        "Logging",
    )
    access_log_file: str | None = option(
        None, "append access lines to this file instead of stderr", "Logging", metavar="FILE"
    )
    request_id: bool = option(
        False,
        "give every request an id (a trusted peer's X-Request-ID, or a new one) in scope['state']['request_id']; "
        "on by itself when the access log shows {request_id} or is JSON",
        "Logging",
    )

    forwarded_allow_ips: str = option(
        "127.0.0.1",
        "trusted proxies: comma-separated IPs, CIDRs, 'unix' (unix-socket peers) or '*'",
        "Proxies",
        metavar="LIST",
    )
    proxy_headers: bool = option(
        True,
        "apply Forwarded / X-Forwarded-{For,Proto,Host,Port,Prefix} from trusted proxies to the scope",
        "Proxies",
    )
    proxy_protocol: str = option(
        "off",
        "expect a PROXY protocol header (v1, v2 or either) on connections from trusted proxies",
        "Proxies",
        choices=("off", "v1", "v2", "auto"),
    )

    metrics_bind: str | None = option(
        None,
        "serve Prometheus /metrics, /healthz and /readyz on this HOST:PORT (needs zonda[metrics])",
        "Metrics",
        metavar="HOST:PORT",
    )

    otel: bool = option(
        False,
        "OpenTelemetry tracing: a SERVER span per request and WebSocket session, exported over OTLP/HTTP and "
        "configured by the standard OTEL_* environment variables (needs zonda[otel])",
        "Tracing",
    )
    otel_trust_incoming: bool = option(
        False,
        "continue the trace of any client's traceparent header; by default only those of trusted peers "
        "(--forwarded-allow-ips) are continued, and other requests start a new trace",
        "Tracing",
    )

    workers: int = option(
        1,
        "worker processes under a supervisor; 0 or auto: one per CPU",
        "Workers",
        metavar="N",
        aliases={"auto": 0},
    )
    reuse_port: bool = option(
        False, "each worker binds its own listener with SO_REUSEPORT instead of sharing one", "Workers"
    )
    timeout_worker_healthcheck: float = option(
        10.0, "kill and replace a worker whose event loop is silent this many seconds", "Workers", minimum=0.1
    )
    max_requests: int | None = option(
        None,
        "recycle a worker after this many requests (replaced first, then drained)",
        "Workers",
        minimum=1,
        also=("limit-max-requests",),  # uvicorn's
    )
    max_requests_jitter: int = option(
        0,
        "add a random 0..N to --max-requests per worker, so workers do not recycle together",
        "Workers",
        also=("limit-max-requests-jitter",),
    )
    max_worker_lifetime: float | None = option(
        None, "recycle a worker after this many seconds (plus a random 0-10 percent)", "Workers", minimum=1
    )
    max_worker_memory: int | None = option(
        None,
        "recycle a worker whose resident memory passes this many MiB (checked every second)",
        "Workers",
        minimum=1,
    )
    pid: str | None = option(
        None, "write the supervisor's process id to this file", "Workers", metavar="FILE"
    )

    reload: bool = option(
        False, "restart the workers when a watched file changes (development; needs zonda[reload])", "Reload"
    )
    reload_dirs: tuple[str, ...] = option(
        (),
        "directory to watch (repeatable; default: the app directory)",
        "Reload",
        flag="reload-dir",
        metavar="DIR",
    )
    reload_includes: tuple[str, ...] = option(
        (),
        "glob of files whose changes reload (repeatable; default: *.py)",
        "Reload",
        flag="reload-include",
        metavar="GLOB",
    )
    reload_excludes: tuple[str, ...] = option(
        (),
        "glob of files or directories to ignore (repeatable)",
        "Reload",
        flag="reload-exclude",
        metavar="GLOB",
    )
    reload_delay: float = option(
        0.4, "seconds to gather further changes after the first before reloading", "Reload"
    )

    def __post_init__(self) -> None:
        hints = _field_types()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "app":
                continue
            kind = hints[f.name]
            aliases = f.metadata["aliases"]
            if aliases and isinstance(value, str) and value.strip().lower() in aliases:
                value = aliases[value.strip().lower()]
            if value is None and kind.optional:
                continue
            coerced = _check_type(f.name, value, kind)
            if coerced is not getattr(self, f.name):
                object.__setattr__(self, f.name, coerced)
            if kind.base is float and math.isnan(coerced):  # NaN passes every minimum: no comparison holds
                raise ConfigError(f"{f.name}: {coerced!r} is not a number")
            choices = f.metadata["choices"]
            if choices and coerced not in choices:
                _refuse(f.name, coerced)
                raise ConfigError(f"{f.name}: {coerced!r} is not one of {', '.join(choices)}")
            minimum = f.metadata["minimum"]
            if minimum is not None and kind.base in (int, float) and coerced < minimum:
                raise ConfigError(f"{f.name}: {coerced!r} must be at least {minimum}")
        if self.port > 65535:
            raise ConfigError(f"port: {self.port} is not a TCP port")
        if self.reload_delay > MAX_RELOAD_DELAY:  # inf passed the minimum and overflowed at the first reload
            raise ConfigError(
                f"reload_delay: {self.reload_delay!r} must be at most {MAX_RELOAD_DELAY} seconds"
            )
        for header in self.headers:
            if ":" not in header:
                raise ConfigError(f"headers: {header!r} must be NAME:VALUE")
        if self.uds_permissions is not None:
            try:
                mode = int(self.uds_permissions, 8)
            except ValueError:
                mode = -1
            if not 0 <= mode <= 0o7777:  # int() also takes "-7" and modes os.chmod overflows on
                raise ConfigError(f"uds_permissions: {self.uds_permissions!r} is not an octal mode")
        if self.quic_bind is not None:
            parse_bind(self.quic_bind, "quic_bind")
            object.__setattr__(self, "http3", True)
        if self.http3 and not self.ssl_certfile:
            raise ConfigError("http3: HTTP/3 runs over TLS only: give --ssl-certfile (and --ssl-keyfile)")
        _check_observability(self)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: str | None = None,
    ) -> Config:
        """Merge TOML file < env file < environment < CLI values over the defaults.

        The TOML file is ``config_file``, else ``ZONDA_CONFIG``, else ``./pyproject.toml`` when it has a
        ``[tool.zonda]`` table. The env file's variables are read here for zonda's options only; putting
        them into ``os.environ`` for the app is ``zonda.envfile.apply_env_file``'s job, at start-up."""
        from zonda.config_sources import find_pyproject, from_env, parse_text, read_toml

        values: dict[str, Any] = {}
        cli = cli or {}
        env = os.environ if env is None else env
        config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or find_pyproject()
        if config_file:
            values.update(read_toml(config_file))
        named = env.get(ENV_PREFIX + "ENV_FILE")  # read as the option is: "none" and "" are no file
        env_file = cli.get("env_file") or (named and parse_text("env_file", named)) or values.get("env_file")
        if env_file:
            from zonda.envfile import read_env_file

            env = {**read_env_file(str(env_file)), **env}
        values.update(from_env(env))
        values.update(cli)
        return cls(**values)


def parse_bind(text: str, name: str = "metrics_bind") -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (127.0.0.1). Raises ConfigError."""
    host, sep, port = text.rpartition(":")
    # str.isdigit() alone also takes digits int() refuses ("\xb2") and runs longer than int() converts
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or int(port) > 65535:
        raise ConfigError(f"{name}: {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_observability(config: Config) -> None:
    """Proxy, access log and metrics options: parsed here so a bad value is an error at start-up."""
    from zonda.accesslog import parse_format
    from zonda.proxy import TrustList

    TrustList(config.forwarded_allow_ips)
    if config.access_log_format is not None:
        parse_format(config.access_log_format)
    if config.metrics_bind is not None:
        parse_bind(config.metrics_bind)


class _Kind(typing.NamedTuple):
    base: type
    optional: bool


_KINDS: dict[str, _Kind] = {}


def _field_types() -> dict[str, _Kind]:
    if not _KINDS:
        for name, hint in typing.get_type_hints(Config).items():
            args = typing.get_args(hint)
            optional = type(None) in args
            base = typing.get_origin(hint) or hint
            if optional:
                base = next(a for a in args if a is not type(None))
            _KINDS[name] = _Kind(base, optional)
    return _KINDS


def _check_type(name: str, value: Any, kind: _Kind) -> Any:
    base = kind.base
    if base is float and type(value) is int:
        return float(value)
    if base is tuple and isinstance(value, list | tuple):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if base is int and type(value) is bool:
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if not isinstance(value, base):
        raise ConfigError(f"{name}: expected {base.__name__}, got {type(value).__name__} {value!r}")
    return value


def _refuse(name: str, value: Any) -> None:
    """Raise the remedy when ``value`` is another server's value for this option that zonda does not take."""
    refused = Config.__dataclass_fields__[name].metadata["refused"]
    if refused and isinstance(value, str) and value.strip().lower() in refused:
        raise ConfigError(f"{name}: {value!r} is not supported: {refused[value.strip().lower()]}")
