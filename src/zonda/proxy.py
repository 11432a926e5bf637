"""Behind a proxy: the trust list, forwarded headers and the PROXY protocol (v1 and v2). Sans-io throughout.

Invariants:
- ``TrustList`` is parsed once at start-up; a connection's peer is judged once, when the connection opens
  (``ProxySettings.rewriter``). Connections from untrusted peers, and all connections when proxy headers and
  request ids are off, get no rewriter: zero work per request.
- ``resolve_forwarded`` is a pure function of (headers, client, scheme, server): it reads every forwarded
  value first and returns the whole result at once, so nothing is ever half-applied.
- ``parse_proxy_header`` takes the first bytes of a connection and returns a ``ProxyHeader``, ``None`` (need
  more bytes) or raises ``ProxyProtocolError``; the driver only calls it, and closes on an error.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import struct
from collections.abc import Callable, Iterator
from random import getrandbits
from typing import Any
from urllib.parse import unquote

from zonda.errors import ConfigError, ProxyProtocolError

Headers = list[tuple[bytes, bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = Any  # a MutableMapping[str, Any]; kept loose so this module imports nothing from the ASGI layer

PROXY_MODES = ("off", "v1", "v2", "auto")

# --------------------------------------------------------------------------- the trust list


class TrustList:
    """``--forwarded-allow-ips``: IP addresses, CIDR networks, ``unix`` (unix-socket peers) and ``*`` (all)."""

    __slots__ = ("_all", "_cache", "_networks", "_unix", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._all = False
        self._unix = False
        self._networks: list[Network] = []
        self._cache: dict[str, bool] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == "*":
                self._all = True
            elif item == "unix":
                self._unix = True
            else:
                try:
                    self._networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                except ValueError:
                    raise ConfigError(
                        f"forwarded_allow_ips: {item!r} is not an IP address, a CIDR network, 'unix' or '*'"
                    ) from None

    def is_trusted(self, host: str | None) -> bool:
        """Is the peer at ``host`` (an IP address as text; None for a unix-socket peer) a trusted proxy?"""
        if self._all:
            return True
        if host is None:
            return self._unix
        trusted = self._cache.get(host)
        if trusted is None:
            trusted = self._check(host)
            if len(self._cache) < 4096:
                self._cache[host] = trusted
        return trusted

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return False  # "unknown", an obfuscated identifier, a name: never a trusted hop
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(address in net or (mapped is not None and mapped in net) for net in self._networks)


# --------------------------------------------------------------------------- forwarded headers

_PROTOS = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# Matched whole (fullmatch): "$" would also match before a final newline.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::([0-9]{1,5}))?")
_NODE = re.compile(r"[A-Za-z0-9._:%\[\]-]+")
_PREFIX = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_REQUEST_ID = re.compile(r"[!-~]{1,200}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORWARDED_NAMES = frozenset(
    (
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-request-id",
    )
)


class Forwarded:
    """What the proxies said about the original request; ``None`` fields were not forwarded (or invalid)."""

    __slots__ = ("client", "headers", "raw_root_path", "root_path", "scheme", "server")

    def __init__(
        self,
        client: tuple[str, int] | None,
        scheme: str,
        server: tuple[str, int | None] | None,
        headers: Headers,
        root_path: str | None,
        raw_root_path: bytes = b"",
    ) -> None:
        self.client = client
        self.scheme = scheme
        self.server = server
        self.headers = headers
        self.root_path = root_path  # percent-decoded, as ``path`` is
        self.raw_root_path = raw_root_path  # as received, as ``raw_path`` is


def split_node(node: str) -> tuple[str, int] | None:
    """A node from X-Forwarded-For or Forwarded ``for=``/``by=``: ``1.2.3.4``, ``1.2.3.4:80``,
    ``[::1]:80``, ``::1``, ``unknown`` or ``_hidden``. Returns (host, port; 0 when unknown) or None."""
    node = node.strip()
    # RFC 7239 §6's characters (addresses, "unknown", obfuscated "_names", a zone after "%"): anything else,
    # "/", "@", quotes, control bytes such as ESC, is no node, and would reach apps and the access log as a host
    if not _NODE.fullmatch(node):
        return None
    if node.startswith("["):
        host, sep, rest = node[1:].partition("]")
        if not sep:
            return None
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""  # bare IPv6 (XFF commonly carries it unbracketed), or no port
    number = _port_number(port)
    if number is not None and number < 65536:
        return host, number
    if port and not port.startswith("_"):  # RFC 7239 §6.3: an obfuscated port starts with "_"
        return None
    return host, 0


def _port_number(text: str) -> int | None:
    """One to five ASCII digits as a number, else None. ``str.isdigit`` alone also takes the digits ``int``
    refuses (latin-1 "\xb2", superscript two) and runs longer than ``int`` converts."""
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """RFC 7239 §4: ``for=a;proto=https, for="[::1]:80"``. Returns the elements (parameter names lowercased),
    or None when the header is malformed, in which case the whole header is ignored."""
    elements: list[dict[str, str]] = [{}]
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t":
            i += 1
            continue
        if c == ",":
            elements.append({})
            i += 1
            continue
        if c == ";":
            i += 1
            continue
        match = _TOKEN.match(value, i)
        if match is None or match.end() >= n or value[match.end()] != "=":
            return None
        name = match.group().lower()
        i = match.end() + 1
        if i < n and value[i] == '"':  # quoted-string, RFC 9110 §5.6.4
            chars: list[str] = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= n:
                return None
            i += 1
            text = "".join(chars)
        else:
            match = _TOKEN.match(value, i)
            if match is None:
                return None
            text = match.group()
            i = match.end()
        if name in elements[-1]:
            return None  # §4: each parameter at most once per element
        elements[-1][name] = text
        if i < n and value[i] not in " \t,;":
            return None
    return elements


def _pick_hop(nodes: list[str], trust: TrustList) -> int:
    """Index of the client in a proxy chain: right to left past trusted hops; the leftmost if all are."""
    for index in range(len(nodes) - 1, 0, -1):
        node = split_node(nodes[index])
        if node is None or not trust.is_trusted(node[0]):
            return index
    return 0


def resolve_forwarded(
    headers: Headers,
    client: tuple[str, int] | None,
    scheme: str,
    server: tuple[str, int | None] | None,
    trust: TrustList,
) -> Forwarded | None:
    """Apply a trusted peer's forwarded headers; None when they change nothing.

    A ``Forwarded`` header (RFC 7239) wins over the ``X-Forwarded-*`` family for client, scheme and host;
    ``X-Forwarded-Prefix`` becomes ``root_path`` either way. Invalid values are ignored one header at a time.
    """
    found: dict[bytes, str] = {}
    host_header: str | None = None
    for name, raw in headers:
        if name in _FORWARDED_NAMES:
            value = raw.decode("latin-1")
            found[name] = found[name] + "," + value if name in found else value  # repeated lines: a list
        elif name == b"host":
            host_header = raw.decode("latin-1")
    if not found or found.keys() == {b"x-request-id"}:
        return None
    new_host: str | None = None
    port: int | None = None
    by: tuple[str, int] | None = None
    elements = parse_forwarded(found[b"forwarded"]) if b"forwarded" in found else None
    if elements is not None:
        nodes = [e.get("for", "") for e in elements]
        element = elements[_pick_hop(nodes, trust)]
        node = split_node(element["for"]) if "for" in element else None
        if node is not None:
            client = node
        proto = _PROTOS.get(element.get("proto", "").lower())
        if proto is not None:
            scheme = proto
        new_host = element.get("host")
        by = split_node(element["by"]) if "by" in element else None
    else:
        if b"x-forwarded-for" in found:
            nodes = found[b"x-forwarded-for"].split(",")
            node = split_node(nodes[_pick_hop(nodes, trust)])
            if node is not None:
                client = node
        if b"x-forwarded-proto" in found:
            proto = _PROTOS.get(found[b"x-forwarded-proto"].rsplit(",", 1)[-1].strip().lower())
            if proto is not None:
                scheme = proto
        if b"x-forwarded-host" in found:
            new_host = found[b"x-forwarded-host"].rsplit(",", 1)[-1].strip()
        if b"x-forwarded-port" in found:
            text = found[b"x-forwarded-port"].rsplit(",", 1)[-1].strip()
            number = _port_number(text)
            if number is not None and 0 < number < 65536:
                port = number
    server, headers = _forwarded_host(headers, host_header, new_host, port, by, scheme, server)
    root_path = None
    raw_root_path = b""
    if b"x-forwarded-prefix" in found:
        prefix = found[b"x-forwarded-prefix"].rsplit(",", 1)[-1].strip().rstrip("/")
        if prefix == "" or _PREFIX.fullmatch(prefix):
            root_path = unquote(prefix)
            raw_root_path = prefix.encode("ascii")  # the pattern takes ASCII only
    return Forwarded(client, scheme, server, headers, root_path, raw_root_path)


def _forwarded_host(
    headers: Headers,
    host_header: str | None,
    new_host: str | None,
    port: int | None,
    by: tuple[str, int] | None,
    scheme: str,
    server: tuple[str, int | None] | None,
) -> tuple[tuple[str, int | None] | None, Headers]:
    """The scope's ``server`` and a ``host`` header for the forwarded host and port."""
    host = _split_host(new_host)
    if host is None:
        if by is not None and by[1] and _is_address(by[0]):
            server = by  # RFC 7239 §5.1: the interface the request came in on, when no host was forwarded
        if port is None:
            return server, headers
        host = _split_host(host_header)
        if host is None:  # a port alone: keep the address we listen on, unless it is a unix socket's path
            return ((server[0] if server and server[1] is not None else "localhost"), port), headers
    name, host_port = host
    default = 443 if scheme == "https" else 80
    if port is None:
        port = default if host_port is None else host_port
    host_value = name if port == default else f"{name}:{port}"
    rewritten = [(n, v) for n, v in headers if n != b"host"]
    rewritten.append((b"host", host_value.encode("latin-1")))
    return (name.strip("[]"), port), rewritten


def _is_address(host: str) -> bool:
    """An IP address without a zone: ``by=`` may also be "unknown", an obfuscated name or (quoted) any text
    but '"', and only an address names the interface a request came in on."""
    if "%" in host:
        return False  # a zone may hold any character, "/" and "?" too
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host(text: str | None) -> tuple[str, int | None] | None:
    """A ``host[:port]`` value as (host, port or None); None when it is not one, or its port is outside
    1..65535 (the pattern takes five digits: 99999 too)."""
    match = _HOST.fullmatch(text) if text else None
    if match is None:
        return None
    digits = match.group(2)
    if digits is None:
        return match.group(1), None
    port = int(digits)
    return (match.group(1), port) if 0 < port < 65536 else None


def apply_forwarded(scope: Scope, forwarded: Forwarded) -> None:
    """Write a ``Forwarded`` result into an HTTP scope built by ``build_scope``."""
    scope["client"] = forwarded.client
    scope["scheme"] = forwarded.scheme
    scope["server"] = forwarded.server
    scope["headers"] = forwarded.headers
    root_path = forwarded.root_path
    if root_path is not None:
        old = scope["root_path"]
        path, raw_path = scope["path"], scope["raw_path"]
        if old:  # the forwarded prefix takes the configured root_path's place
            path, raw_path = path[len(old) :], raw_path[len(old.encode()) :]
        scope["root_path"] = root_path
        scope["path"] = root_path + path
        scope["raw_path"] = forwarded.raw_root_path + raw_path


_ID_TAILS = [f"{low:02x}" for low in range(256)]


def _id_source() -> Iterator[str]:
    """Request ids, 256 at a time: 16 random hex digits fixed per process, then a 16-digit counter from a
    random start. Each block formats its first 30 digits once and adds the last two from a table, so an id
    costs about 0.06 µs, where formatting a prefix and a counter per id cost 0.23 (``"%032x"`` of a 128-bit
    counter 0.13) and ``random.getrandbits(128)`` 0.6 (``os.urandom`` and ``uuid4`` more). Unique, not
    secret. Only C iterators run per id; the Python ``block`` runs once per 256, so threads sharing the source
    at worst skip ids, never repeat one."""
    prefix = getrandbits(64) << 56

    def block(high: int) -> Iterator[str]:
        return map(("%030x" % (prefix | high)).__add__, _ID_TAILS)

    return itertools.chain.from_iterable(map(block, itertools.count(getrandbits(24))))


_IDS: Iterator[str] = iter(())  # the Python source, used only without the C module

try:  # the same ids from C, at a third of the cost (built with zonda's optional C module)
    from zonda._accesslog import next_request_id as _next_id
    from zonda._accesslog import seed_request_ids as _seed_ids
except ImportError:
    _seed_ids = None  # type: ignore[assignment]

    def _next_id() -> str:
        return next(_IDS)


def new_request_id() -> str:
    """32 hex digits, unique in this process and (after ``reseed_request_ids``) across workers."""
    return _next_id()


def reseed_request_ids() -> None:
    """A new random half for this process (after a fork, so workers never share ids)."""
    global _IDS
    if _seed_ids is not None:
        _seed_ids(getrandbits(64), getrandbits(24) << 8)
    else:
        _IDS = _id_source()


reseed_request_ids()


def incoming_request_id(headers: Headers) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


class ProxySettings:
    """The proxy options, resolved once at start-up; ``rewriter()`` judges one connection's peer."""

    __slots__ = (
        "_honour_ids",
        "_ids_only",
        "_rewrite",
        "proxy_headers",
        "proxy_protocol",
        "request_id",
        "trust",
    )

    def __init__(
        self, trust: TrustList, proxy_headers: bool, proxy_protocol: str = "off", request_id: bool = False
    ) -> None:
        self.trust = trust
        self.proxy_headers = proxy_headers
        self.proxy_protocol = proxy_protocol
        self.request_id = request_id
        if request_id:
            reseed_request_ids()  # built in each worker process: forked workers must not share ids
        self._rewrite = self._make_rewrite()
        self._honour_ids = _assign_request_id(honour=True)
        self._ids_only = _assign_request_id(honour=False)

    def expects_proxy_header(self, host: str | None) -> bool:
        """Must this connection start with a PROXY header? Only from trusted peers, when it is on."""
        return self.proxy_protocol != "off" and self.trust.is_trusted(host)

    def rewriter(self, host: str | None) -> Callable[[Scope], None] | None:
        """The per-request work for a connection from ``host`` (None: unix socket), or None for none."""
        trusted = self.trust.is_trusted(host)
        if trusted and self.proxy_headers:
            return self._rewrite
        if self.request_id:
            return self._honour_ids if trusted else self._ids_only
        return None

    def _make_rewrite(self) -> Callable[[Scope], None]:
        trust, request_id = self.trust, self.request_id

        def rewrite(scope: Scope) -> None:
            headers = scope["headers"]
            for name, _ in headers:
                if name in _FORWARDED_NAMES:
                    break
            else:  # the usual request: nothing forwarded, nothing to resolve
                if request_id:
                    scope["state"]["request_id"] = _next_id()  # new_request_id(), inlined
                return
            forwarded = resolve_forwarded(headers, scope["client"], scope["scheme"], scope["server"], trust)
            if forwarded is not None:
                apply_forwarded(scope, forwarded)
            if request_id:
                scope["state"]["request_id"] = incoming_request_id(headers) or new_request_id()

        return rewrite


def _assign_request_id(honour: bool) -> Callable[[Scope], None]:
    if honour:

        def assign(scope: Scope) -> None:
            scope["state"]["request_id"] = incoming_request_id(scope["headers"]) or new_request_id()

    else:

        def assign(scope: Scope) -> None:
            scope["state"]["request_id"] = _next_id()  # new_request_id(), inlined

    return assign


# --------------------------------------------------------------------------- the PROXY protocol

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included (spec §2.1)
PP2_TYPE_SSL = 0x20
PP2_CLIENT_SSL = 0x01
_V1_PROTOS = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}


class ProxyHeader:
    """A parsed PROXY header. ``client``/``server`` are None when it carried no addresses (v1 UNKNOWN, v2
    LOCAL or AF_UNSPEC): the connection's own addresses stand. ``length`` is the bytes it took."""

    __slots__ = ("client", "length", "local", "server", "ssl", "tlvs", "version")

    def __init__(
        self,
        version: int,
        length: int,
        client: tuple[str, int] | None = None,
        server: tuple[str, int | None] | None = None,
        local: bool = False,
        tlvs: tuple[tuple[int, bytes], ...] = (),
    ) -> None:
        self.version = version
        self.length = length
        self.client = client
        self.server = server
        self.local = local
        self.tlvs = tlvs
        ssl = next((value for kind, value in tlvs if kind == PP2_TYPE_SSL), b"")
        self.ssl = bool(ssl) and bool(ssl[0] & PP2_CLIENT_SSL)  # the client spoke TLS to the proxy


def parse_proxy_header(data: bytes, accept: str = "auto") -> ProxyHeader | None:
    """Parse the PROXY header at the start of ``data``; None if more bytes are needed.

    ``accept`` is ``v1``, ``v2`` or ``auto`` (either). Raises ProxyProtocolError for anything else.
    """
    if accept != "v1" and data[:12] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data) if len(data) >= 16 else None
    if accept != "v2" and data[:6] == b"PROXY "[: len(data)]:
        return _parse_v1(data)
    wanted = {"v1": "a PROXY v1 line", "v2": "a PROXY v2 header"}.get(accept, "a PROXY header")
    raise ProxyProtocolError(f"expected {wanted}, got {bytes(data[:16])!r}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
        return None
    parts = data[:end].split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(1, end + 2)  # spec §2.1: the receiver ignores the rest of the line
    family = _V1_PROTOS.get(parts[1]) if len(parts) == 6 else None
    if family is None:
        raise ProxyProtocolError(f"malformed PROXY v1 line {bytes(data[:end])!r}")
    try:
        source = family(parts[2].decode("ascii"))
        dest = family(parts[3].decode("ascii"))
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY v1 line {bytes(data[:end])!r}") from None
    ports = []
    for text in parts[4:6]:
        if not text.isdigit() or len(text) > 5 or (text[0:1] == b"0" and text != b"0") or int(text) > 65535:
            raise ProxyProtocolError(f"bad port in PROXY v1 line {bytes(data[:end])!r}")
        ports.append(int(text))
    return ProxyHeader(1, end + 2, (str(source), ports[0]), (str(dest), ports[1]))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    version, command = data[12] >> 4, data[12] & 0x0F
    family, transport = data[13] >> 4, data[13] & 0x0F
    (size,) = struct.unpack_from("!H", data, 14)
    if version != 2 or command > 1:
        raise ProxyProtocolError(f"PROXY v2: bad version/command byte 0x{data[12]:02x}")
    if len(data) < 16 + size:
        return None
    length = 16 + size
    block = bytes(data[16:length])
    if command == 0:  # LOCAL: the proxy's own connection (a health check); the real addresses stand
        return ProxyHeader(2, length, local=True)
    if family == 0:
        return ProxyHeader(2, length)  # AF_UNSPEC: unknown addresses
    need = _V2_ADDRESS_SIZES.get(family)
    if need is None or transport not in (0, 1, 2):
        raise ProxyProtocolError(f"PROXY v2: unknown address family byte 0x{data[13]:02x}")
    if transport != 1:
        raise ProxyProtocolError("PROXY v2: only STREAM (TCP) connections can carry HTTP")
    if size < need:
        raise ProxyProtocolError(f"PROXY v2: address block of {size} bytes, need {need}")
    tlvs = _parse_tlvs(block[need:])
    if family == 0x1:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", block)
        client: tuple[str, int] | None = (str(ipaddress.IPv4Address(src)), sport)
        server: tuple[str, int | None] | None = (str(ipaddress.IPv4Address(dst)), dport)
    elif family == 0x2:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", block)
        client = (str(ipaddress.IPv6Address(src)), sport)
        server = (str(ipaddress.IPv6Address(dst)), dport)
    else:  # AF_UNIX: no client address in ASGI terms; the server is the socket path
        client = None
        server = (block[108:216].split(b"\x00", 1)[0].decode("utf-8", "replace"), None)
    return ProxyHeader(2, length, client, server, tlvs=tlvs)


def _parse_tlvs(block: bytes) -> tuple[tuple[int, bytes], ...]:
    """Type-length-value records after the addresses: kept whole, read only for PP2_TYPE_SSL."""
    tlvs = []
    offset = 0
    while offset < len(block):
        if offset + 3 > len(block):
            raise ProxyProtocolError("PROXY v2: truncated TLV")
        kind, size = block[offset], struct.unpack_from("!H", block, offset + 1)[0]
        if offset + 3 + size > len(block):
            raise ProxyProtocolError("PROXY v2: TLV runs past the header")
        tlvs.append((kind, block[offset + 3 : offset + 3 + size]))
        offset += 3 + size
    return tuple(tlvs)
