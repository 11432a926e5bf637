"""Listening sockets: bind what the config asks for (TCP, a unix socket, an inherited fd), and name addresses.

A socket that cannot be opened is a ``ListenError`` whose one line names the address and the cause; the
server, the supervisor and ``--reuse-port`` workers all raise it, before any lifespan startup runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from zonda.config import Config, parse_bind
from zonda.errors import ConfigError, ListenError

_LISTEN_CAUSES = {
    errno.EADDRINUSE: "address already in use (another process listens there: stop it or choose another port)",
    errno.EACCES: "permission denied (ports below 1024 need privileges; a unix socket, a writable directory)",
    errno.EADDRNOTAVAIL: "address not available (it is not an address of this machine)",
    errno.ENOENT: "no such directory",
    errno.EBADF: "not an open file descriptor",
    errno.ENOTSOCK: "not a socket",
}


def listen_address(config: Config, port: int | None = None) -> str:
    """The address the config asks to listen on, as a person writes it: ``host:port``, ``unix:PATH``, ``fd N``."""
    if config.fd is not None:
        return f"fd {config.fd}"
    if config.uds:
        return f"unix:{config.uds}"
    host = config.host.strip("[]")
    port = config.port if port is None else port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(address: str, exc: OSError | UnicodeError) -> ListenError:
    """One line naming the address and the cause, for an error raised while resolving or binding."""
    host = address.rsplit(":", 1)[0]
    if isinstance(exc, UnicodeError):  # the IDNA codec refuses the name before any lookup
        cause = f"{host} is not a valid host name"
    elif isinstance(exc, socket.gaierror):
        cause = f"cannot resolve the host name {host} ({exc.strerror})"
    else:
        cause = _LISTEN_CAUSES.get(exc.errno or 0) or exc.strerror or str(exc)
    return ListenError(f"could not listen on {address}: {cause}")


def bind_socket(config: Config) -> socket.socket:
    """Create the listening socket the config asks for. Raises ListenError (naming the address) or ConfigError."""
    try:
        return _bind_socket(config)
    except (OSError, UnicodeError) as exc:
        if isinstance(exc, ListenError):
            raise
        raise listen_error(listen_address(config), exc) from None


def _bind_socket(config: Config) -> socket.socket:
    if config.fd is not None:
        sock = socket.socket(fileno=config.fd)
        if sock.type != socket.SOCK_STREAM:
            raise ConfigError(f"fd: file descriptor {config.fd} is not a stream socket")
    elif config.uds:
        path = config.uds
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        if config.uds_permissions is not None:
            try:
                mode = int(config.uds_permissions, 8)
            except ValueError:
                raise ConfigError(
                    f"uds_permissions: {config.uds_permissions!r} is not an octal mode"
                ) from None
            os.chmod(path, mode)
    else:
        host = config.host.strip("[]")
        infos = socket.getaddrinfo(host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    sock.listen(config.backlog)
    sock.setblocking(False)
    return sock


def bind_quic_socket(config: Config, tcp: socket.socket) -> socket.socket:
    """The UDP socket for HTTP/3: ``--quic-bind``, else the TCP listener's host and port. Every worker binds
    its own with SO_REUSEPORT; the kernel hashes a datagram's addresses to pick one, so a client's datagrams
    keep reaching the worker that holds its connection while its address stays the same."""
    if config.quic_bind:
        host, port = parse_bind(config.quic_bind, "quic_bind")
    elif tcp.family in (socket.AF_INET, socket.AF_INET6):
        host, port = tcp.getsockname()[:2]
    else:
        raise ConfigError("http3: a unix socket or fd listener has no UDP twin: give --quic-bind HOST:PORT")
    address = f"udp [{host}]:{port}" if ":" in host else f"udp {host}:{port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
    except (OSError, UnicodeError) as exc:
        raise listen_error(address, exc) from None
    sock.setblocking(False)
    return sock


def describe_address(sock: socket.socket, scheme: str = "http") -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{address[0]}]:{address[1]}"
    return f"{scheme}://{address[0]}:{address[1]}"
