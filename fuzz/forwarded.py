"""Forwarded headers (``zonda.proxy``): a trust list, a peer and a request's headers go through the rewriter
the connection layer installs (``ProxySettings.rewriter``) on the scope ``build_scope`` makes, as
``_on_request`` does; the parsers it uses are also called alone on every header value.

Invariants: ``TrustList`` raises only ``ConfigError`` (naming ``forwarded_allow_ips``); nothing else raises;
an untrusted peer (or ``proxy_headers`` off) changes nothing but ``state["request_id"]``, and never takes the
peer's X-Request-ID; a trusted peer's scope is ``resolve_forwarded`` + ``apply_forwarded`` and well-formed:
client None or (str, 0..65535), scheme http/https (ws/wss once the bridge turns it into a WebSocket scope),
server None or (str, None or 1..65535), headers the same (bytes, bytes) pairs but one rewritten ``host``,
whose value and the server's host name are a host name, an IPv4 address or a bracketed IPv6 literal (nothing
that splits a header line or a URL); a forwarded client host has none of the bytes ``split_node`` refuses;
``root_path`` is "" or a path the scope's ``path`` and ``raw_path`` start with, their rest unchanged; the same
input gives the same scope twice; a request id is 1-200 visible ASCII characters.

Input layout (``fuzz._harness.Reader``): the trust list (a table entry, or drawn text when the byte's top bit
is set), the peer (a table entry or drawn text, and a port), flags (bit 0 TLS, bit 1 a configured root_path,
bit 2 proxy headers on, bit 3 request ids on), the server address, the path, then up to 8 headers: a byte
naming the header (its top bit: the value from a table of likely values, else drawn bytes) and its value.
"""

from __future__ import annotations

import copy
import re
from urllib.parse import unquote

from fuzz._harness import Reader, main, pack
from zonda.asgi.http import build_scope
from zonda.asgi.seams import ConnectionInfo
from zonda.asgi.types import Scope
from zonda.errors import ConfigError
from zonda.protocols.events import Request
from zonda.proxy import (
    ProxySettings,
    TrustList,
    apply_forwarded,
    incoming_request_id,
    parse_forwarded,
    resolve_forwarded,
    split_node,
)

_TRUSTS = (
    "127.0.0.1",
    "10.0.0.0/8",
    "*",
    "unix",
    "10.0.0.0/8, ::1, unix",
    "",
    "192.0.2.0/24,2001:db8::/32",
    "::ffff:10.0.0.0/104",
    "[::1], 203.0.113.7",
    " , ,10.0.0.0/8,",
)
_PEERS = ("10.0.0.2", "127.0.0.1", "203.0.113.7", "::1", "::ffff:10.1.2.3", "2001:db8::5", None)
_SERVERS: tuple[tuple[str, int | None] | None, ...] = (
    ("10.0.0.9", 8000),
    ("127.0.0.1", 443),
    ("/run/zonda.sock", None),
    None,
)
_PATHS = (b"/x", b"/", b"/a%2Fb", b"/caf%C3%A9/", b"/%ff")
_NAMES = (
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-request-id",
    b"host",
    b"user-agent",
)
_VALUES = (
    b"203.0.113.7",
    b"10.0.0.5",
    b"1.1.1.1, 203.0.113.7, 10.0.0.5",
    b"[2001:db8::1]:443",
    b"2001:db8::1",
    b"unknown",
    b"_hidden:_port",
    b"https",
    b"wss",
    b"HTTP",
    b"example.com",
    b"example.com:8443",
    b"[::1]:8080",
    b"8443",
    b"/api/",
    b"/my%20app",
    b"for=203.0.113.7;proto=https;host=shop.example",
    b'for="[2001:db8:cafe::17]:4711";by="[2001:db8::9]:8443"',
    b"for=10.0.0.5, for=203.0.113.7;proto=wss",
    b'for=_x;host="a.example:81"',
    b"req-42",
    b"backend:8000",
    b"",
)

# An RFC 3986 host (a reg-name, an IPv4 address or a bracketed IPv6 literal) with an optional port: nothing
# that ends a header line (CR, LF, NUL, other controls) or a URL's authority ('/', '?', '#', '@', '\\', space).
_SAFE_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(:[0-9]{1,5})?")
_NODE_REFUSED = set('\x00\r\n\t ,;"\\')
_REQUEST_ID = re.compile(r"[!-~]{1,200}")
_SCHEMES = ("http", "https")


def one_input(data: bytes) -> None:
    draw = Reader(data)
    choice = draw.byte()
    trust_text = draw.chunk(40).decode("latin-1") if choice & 0x80 else _TRUSTS[choice % len(_TRUSTS)]
    try:
        trust = TrustList(trust_text)
    except ConfigError as exc:
        assert str(exc).startswith("forwarded_allow_ips: "), exc
        return
    peer_choice = draw.byte()
    peer = draw.chunk(40).decode("latin-1") if peer_choice & 0x80 else _PEERS[peer_choice % len(_PEERS)]
    port = draw.byte() << 8 | draw.byte()
    client = None if peer is None else (peer, port)
    flags = draw.byte()
    server = draw.pick(_SERVERS)
    path = draw.pick(_PATHS)
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(draw.below(9)):
        kind = draw.byte()
        value = draw.pick(_VALUES) if kind & 0x80 else draw.chunk(64)
        headers.append((_NAMES[kind % len(_NAMES)], value))
    for _, value in headers:
        _check_parsers(value.decode("latin-1"))

    settings = ProxySettings(trust, proxy_headers=bool(flags & 4), request_id=bool(flags & 8))
    scheme = "https" if flags & 1 else "http"
    root_path = "/old" if flags & 2 else ""
    trusted = trust.is_trusted(peer)
    assert trusted is trust.is_trusted(peer)  # the cached answer is the same
    assert isinstance(trusted, bool)
    first = _rewritten(settings, client, server, scheme, root_path, path, headers)
    second = _rewritten(settings, client, server, scheme, root_path, path, headers)
    before = build_scope(_request(path, headers), _info(client, server, scheme, root_path), {})
    _check_request_id(settings, trusted, headers, first)
    _check_request_id(settings, trusted, headers, second)
    first["state"].pop("request_id", None)
    second["state"].pop("request_id", None)
    assert first == second, (first, second)
    if not (trusted and settings.proxy_headers):
        assert first == before, (first, before)  # an untrusted peer never changes the scope
        return
    forwarded = resolve_forwarded(headers, client, scheme, server, trust)
    if forwarded is None:
        assert first == before, (first, before)
        return
    expected = copy.deepcopy(before)
    apply_forwarded(expected, forwarded)
    assert first == expected, (first, expected)
    _check_scope(first, before)


def _info(
    client: tuple[str, int] | None, server: tuple[str, int | None] | None, scheme: str, root_path: str
) -> ConnectionInfo:
    return ConnectionInfo(client, server, scheme, root_path)


def _request(path: bytes, headers: list[tuple[bytes, bytes]]) -> Request:
    return Request(1, b"GET", path, b"q=1", list(headers), "1.1", end_stream=True)


def _rewritten(
    settings: ProxySettings,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    scheme: str,
    root_path: str,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
) -> Scope:
    """The scope of one request on a fresh connection from ``client``, as ``_on_request`` makes it."""
    info = _info(client, server, scheme, root_path)
    info.rewrite = settings.rewriter(client[0] if client else None)
    scope = build_scope(_request(path, headers), info, {})
    if info.rewrite is not None:
        info.rewrite(scope)
    return scope


def _check_request_id(
    settings: ProxySettings, trusted: bool, headers: list[tuple[bytes, bytes]], scope: Scope
) -> None:
    if not settings.request_id:
        assert "request_id" not in scope["state"]
        return
    request_id = scope["state"]["request_id"]
    assert isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id), request_id
    incoming = incoming_request_id(headers)
    if incoming is not None:
        assert _REQUEST_ID.fullmatch(incoming), incoming
    if trusted and incoming is not None:
        assert request_id == incoming
    else:
        assert len(request_id) == 32 and request_id != incoming  # a fresh one, never the peer's


def _check_scope(scope: Scope, before: Scope) -> None:
    """What a trusted peer's forwarded headers may change, and the shape they leave."""
    changed = {key for key in scope if scope[key] != before[key]}
    assert changed <= {"client", "scheme", "server", "headers", "root_path", "path", "raw_path"}, changed
    assert scope.keys() == before.keys()
    client = scope["client"]
    if client is not None:
        assert isinstance(client, tuple) and len(client) == 2, client
        assert isinstance(client[0], str) and type(client[1]) is int and 0 <= client[1] <= 65535, client
        if client != before["client"]:
            assert not _NODE_REFUSED & set(client[0]), client
    assert scope["scheme"] in _SCHEMES, scope["scheme"]
    server = scope["server"]
    if server is not None:
        assert isinstance(server, tuple) and len(server) == 2 and isinstance(server[0], str), server
        assert server[1] is None or (type(server[1]) is int and 0 <= server[1] <= 65535), server
        if server != before["server"]:
            assert type(server[1]) is int and server[1] > 0, server
            name = f"[{server[0]}]" if ":" in server[0] else server[0]
            assert _SAFE_HOST.fullmatch(name), server
    _check_headers(scope, before)
    _check_paths(scope, before)


def _check_headers(scope: Scope, before: Scope) -> None:
    headers = scope["headers"]
    assert isinstance(headers, list), headers
    assert all(
        isinstance(pair, tuple) and len(pair) == 2 and type(pair[0]) is bytes and type(pair[1]) is bytes
        for pair in headers
    ), headers
    if headers == before["headers"]:
        return
    others = [(n, v) for n, v in headers if n != b"host"]
    assert others == [(n, v) for n, v in before["headers"] if n != b"host"], headers
    hosts = [v for n, v in headers if n == b"host"]
    assert len(hosts) == 1, headers
    text = hosts[0].decode("latin-1")
    assert _SAFE_HOST.fullmatch(text), text
    server = scope["server"]
    assert server is not None and server[1] is not None, server
    name, _, port = text.rpartition(":") if not text.endswith("]") and ":" in text else (text, "", "")
    assert name.strip("[]") == server[0], (text, server)
    default = 443 if scope["scheme"] == "https" else 80
    assert (int(port) if port else default) == server[1], (text, server)


def _check_paths(scope: Scope, before: Scope) -> None:
    root_path = scope["root_path"]
    assert isinstance(root_path, str) and (root_path == "" or root_path.startswith("/")), root_path
    assert scope["path"].startswith(root_path), scope
    old = before["root_path"]
    assert scope["path"][len(root_path) :] == before["path"][len(old) :], scope
    # raw_path: the request's own raw bytes after a prefix that is the configured root_path, or the forwarded
    # prefix as received (percent-encoded, ASCII), which decodes to root_path
    raw_path, tail = scope["raw_path"], before["raw_path"][len(old.encode()) :]
    assert raw_path.endswith(tail), scope
    raw_prefix = raw_path[: len(raw_path) - len(tail)]
    assert raw_prefix == old.encode() or (
        raw_prefix.isascii() and unquote(raw_prefix.decode()) == root_path
    ), scope


def _check_parsers(value: str) -> None:
    """The parsers alone, on any text: answers of the documented shapes, never an exception."""
    for part in (value, *value.split(",")):
        node = split_node(part)
        if node is not None:
            host, port = node
            assert isinstance(host, str) and not _NODE_REFUSED & set(host), node
            assert type(port) is int and 0 <= port <= 65535, node
    elements = parse_forwarded(value)
    if elements is not None:
        assert elements and all(isinstance(element, dict) for element in elements), elements
        for element in elements:
            assert all(name == name.lower() and name for name in element), element
    found = incoming_request_id([(b"x-request-id", value.encode("latin-1"))])
    assert found is None or _REQUEST_ID.fullmatch(found), found


def _headers(*pairs: tuple[int, bytes | int]) -> list[int | bytes]:
    """Seed headers: (name index, value bytes) drawn, or (name index, index into the value table)."""
    parts: list[int | bytes] = [len(pairs)]
    for name, value in pairs:
        if isinstance(value, int):
            parts += [0x80 | name, value]
        else:
            parts += [name, value]
    return parts


_TRUST_10 = 1  # "10.0.0.0/8" in _TRUSTS
_PEER_10 = 0  # "10.0.0.2" in _PEERS

SEEDS = [
    pack(trust, peer, 0x9C, 0x40, flags, server, path, *_headers(*headers))
    for trust, peer in ((_TRUST_10, _PEER_10), (2, 6), (0, 2), (4, 3))
    for flags in (0b0100, 0b1111, 0b1000)
    for server, path, headers in (
        (0, 0, ((1, 2), (2, 7), (3, 11), (7, 21))),
        (1, 3, ((0, 16), (1, 0), (6, 20))),
        (2, 1, ((0, 17), (4, 13))),
        (3, 2, ((5, 14), (7, 11), (4, 13), (2, 9))),
        (0, 4, ((0, b'for=1.1.1.1, for="203.0.113.7:80";host="[::1]:99999"'), (1, b"1.2.3.4:\xb2"))),
        (0, 0, ((3, b"ex\xe4mple.com/evil"), (5, b"/a%0d%0ab/"), (6, b"id with space"))),
    )
] + [
    pack(0x80, "10.0.0.0/8, bogus", 0),
    pack(0x80, "2001:db8::/129", 0),
    pack(_TRUST_10, 0x80, "not-an-ip", 0, 80, 0b0100, 0, 0, *_headers((1, 0))),
]

if __name__ == "__main__":
    main("forwarded", one_input, SEEDS)
