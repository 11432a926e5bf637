"""zonda.proxy without sockets: the trust list, every forwarded-header form, spoofing, PROXY v1/v2 parsing."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonda.errors import ConfigError, ProxyProtocolError
from zonda.proxy import (
    V2_SIGNATURE,
    ProxySettings,
    TrustList,
    apply_forwarded,
    incoming_request_id,
    parse_forwarded,
    parse_proxy_header,
    resolve_forwarded,
    split_node,
)

PEER = ("10.0.0.2", 40000)
SERVER = ("10.0.0.9", 8000)

# --------------------------------------------------------------------------- the trust list


def test_trust_list_forms() -> None:
    trust = TrustList("127.0.0.1, 10.0.0.0/8,::1, 2001:db8::/32 ,unix")
    assert trust.is_trusted("127.0.0.1")
    assert trust.is_trusted("10.200.3.4")
    assert trust.is_trusted("::1")
    assert trust.is_trusted("[::1]")
    assert trust.is_trusted("2001:db8:1::5")
    assert trust.is_trusted("::ffff:10.1.2.3")  # IPv4-mapped, as a dual-stack socket reports it
    assert trust.is_trusted(None)  # a unix-socket peer
    assert not trust.is_trusted("127.0.0.2")
    assert not trust.is_trusted("11.0.0.1")
    assert not trust.is_trusted("unknown")
    assert not trust.is_trusted("_hidden")
    assert not trust.is_trusted("example.com")


def test_trust_list_default_and_star() -> None:
    default = TrustList("127.0.0.1")
    assert default.is_trusted("127.0.0.1")
    assert not default.is_trusted(None)
    assert not default.is_trusted("192.168.1.1")
    everyone = TrustList("*")
    assert everyone.is_trusted("203.0.113.9") and everyone.is_trusted(None) and everyone.is_trusted("x")
    assert not TrustList("").is_trusted("127.0.0.1")


@pytest.mark.parametrize("bad", ["localhost", "10.0.0.0/33", "1.2.3", "unix:/tmp/x"])
def test_trust_list_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        TrustList(bad)


# --------------------------------------------------------------------------- helpers


def headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


def resolve(*pairs: tuple[str, str], trust: str = "10.0.0.0/8", scheme: str = "http") -> Any:
    return resolve_forwarded(headers(*pairs), PEER, scheme, SERVER, TrustList(trust))


def scope_for(*pairs: tuple[str, str], path: str = "/x", root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "client": PEER,
        "server": SERVER,
        "scheme": "http",
        "headers": headers(*pairs),
        "root_path": root_path,
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "state": {},
    }


def header(result: Any, name: bytes) -> bytes | None:
    values = [v for n, v in result.headers if n == name]
    assert len(values) <= 1
    return values[0] if values else None


# --------------------------------------------------------------------------- X-Forwarded-*


def test_no_forwarded_headers_changes_nothing() -> None:
    assert resolve(("host", "a"), ("user-agent", "b")) is None
    assert resolve(("x-request-id", "abc")) is None


def test_x_forwarded_for_single() -> None:
    result = resolve(("x-forwarded-for", "203.0.113.7"))
    assert result.client == ("203.0.113.7", 0)
    assert (result.scheme, result.server) == ("http", SERVER)


def test_x_forwarded_for_right_to_left_through_trusted_hops() -> None:
    # spoofed by the client, then the real client, then two of our proxies
    result = resolve(("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.5, 10.1.1.1"))
    assert result.client == ("203.0.113.7", 0)


def test_x_forwarded_for_all_trusted_takes_the_leftmost() -> None:
    assert resolve(("x-forwarded-for", "10.9.9.9, 10.0.0.5")).client == ("10.9.9.9", 0)


@pytest.mark.parametrize(
    "node", ["\x1b[31mred", "evil/../x", "user@host", "a'b", "caf\xe9", "a=b", "1.2.3.4\x7f"]
)
def test_a_node_outside_rfc_7239s_characters_is_no_client(node: str) -> None:
    """Any text but a separator passed as a client host, which apps and the access log then showed as the
    client's address: ESC sequences, quotes, "/" and "@"."""
    assert resolve(("x-forwarded-for", node)).client == PEER
    assert resolve(("forwarded", f'for="{node}"')).client == PEER


@pytest.mark.parametrize(
    ("node", "client"),
    [("unknown", ("unknown", 0)), ("_hidden", ("_hidden", 0)), ("[2001:db8::1]:4711", ("2001:db8::1", 4711))],
)
def test_rfc_7239_nodes_are_clients(node: str, client: tuple[str, int]) -> None:
    assert resolve(("forwarded", f'for="{node}"')).client == client
    assert resolve(("x-forwarded-for", "fe80::1%eth0")).client == ("fe80::1%eth0", 0)


def test_x_forwarded_for_repeated_lines_are_one_list() -> None:
    result = resolve(("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.0.0.5"))
    assert result.client == ("203.0.113.7", 0)


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("203.0.113.7:4711", ("203.0.113.7", 4711)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("unknown", ("unknown", 0)),
        ("_hidden:_port", ("_hidden", 0)),
        ("1.2.3.4:99999", None),
        ("a b", None),
        ("[::1", None),
    ],
)
def test_nodes(node: str, expected: tuple[str, int] | None) -> None:
    assert split_node(node) == expected


@pytest.mark.parametrize("port", ["\xb2", "8\xb9", "\xb3" * 5, "9" * 5000])
def test_a_port_of_other_digits_is_no_port(port: str) -> None:
    """Latin-1 superscript digits pass ``str.isdigit`` but not ``int``, and int refuses 5000 digits: a port
    like these is invalid (the node or header ignored), never a ValueError out of the rewriter."""
    assert split_node("203.0.113.7:" + port) is None
    raw = port.encode("latin-1")  # as the header bytes arrive: obs-text is allowed in field values
    fields = [
        (b"host", b"backend:8000"),
        (b"x-forwarded-for", b"203.0.113.7:" + raw),
        (b"x-forwarded-port", raw),
        (b"x-forwarded-proto", b"https"),
    ]
    result = resolve_forwarded(fields, PEER, "http", SERVER, TrustList("10.0.0.0/8"))
    assert result is not None
    assert (result.client, result.scheme, result.server) == (PEER, "https", SERVER)


@pytest.mark.parametrize(
    ("proto", "scheme"), [("https", "https"), ("HTTP", "http"), ("wss", "https"), ("ws", "http")]
)
def test_x_forwarded_proto(proto: str, scheme: str) -> None:
    assert resolve(("x-forwarded-proto", proto)).scheme == scheme


def test_x_forwarded_proto_invalid_is_ignored_and_the_rightmost_counts() -> None:
    assert resolve(("x-forwarded-proto", "gopher")).scheme == "http"
    assert resolve(("x-forwarded-proto", "http, https")).scheme == "https"


def test_x_forwarded_host_rewrites_host_header_and_server() -> None:
    result = resolve(("host", "backend:8000"), ("x-forwarded-host", "example.com"))
    assert header(result, b"host") == b"example.com"
    assert result.server == ("example.com", 80)
    https = resolve(("x-forwarded-host", "example.com"), ("x-forwarded-proto", "https"))
    assert https.server == ("example.com", 443)
    assert header(https, b"host") == b"example.com"


def test_x_forwarded_host_with_port_and_x_forwarded_port() -> None:
    result = resolve(("x-forwarded-host", "example.com:8443"), ("x-forwarded-proto", "https"))
    assert result.server == ("example.com", 8443)
    assert header(result, b"host") == b"example.com:8443"
    result = resolve(("host", "backend"), ("x-forwarded-host", "example.com"), ("x-forwarded-port", "8080"))
    assert result.server == ("example.com", 8080)
    assert header(result, b"host") == b"example.com:8080"


def test_x_forwarded_port_alone_keeps_the_host_name() -> None:
    result = resolve(
        ("host", "example.com:8000"), ("x-forwarded-port", "443"), ("x-forwarded-proto", "https")
    )
    assert result.server == ("example.com", 443)
    assert header(result, b"host") == b"example.com"


@pytest.mark.parametrize("bad", ["exa mple.com", "example.com/evil", "a:b:c", "[zz]"])
def test_x_forwarded_host_invalid_is_ignored(bad: str) -> None:
    result = resolve(("host", "backend"), ("x-forwarded-host", bad), ("x-forwarded-for", "1.2.3.4"))
    assert header(result, b"host") == b"backend"
    assert result.server == SERVER
    assert result.client == ("1.2.3.4", 0)  # the other headers still apply


@pytest.mark.parametrize("host", ["example.com:99999", "example.com:65536", "example.com:0", "[::1]:70000"])
def test_a_forwarded_host_with_a_port_out_of_range_is_ignored(host: str) -> None:
    """The host pattern takes up to five digits; a port past 65535 (or 0) made a scope server the ASGI spec
    has no room for, and a Host header that names no reachable port."""
    result = resolve(("host", "backend"), ("x-forwarded-host", host), ("x-forwarded-for", "1.2.3.4"))
    assert (result.server, header(result, b"host")) == (SERVER, b"backend")
    assert result.client == ("1.2.3.4", 0)
    forwarded = resolve(("host", "backend"), ("forwarded", f'for=1.2.3.4;host="{host}"'))
    assert (forwarded.server, header(forwarded, b"host")) == (SERVER, b"backend")
    assert resolve(("x-forwarded-host", "example.com:65535")).server == ("example.com", 65535)


def test_x_forwarded_port_without_a_host_on_a_unix_socket() -> None:
    """With no host to go with the port, the listening address stays, but a unix socket's path is no host:
    ("/run/zonda.sock", 443) was a server no URL can be built from."""
    fields = [(b"x-forwarded-port", b"443"), (b"x-forwarded-proto", b"https")]
    unix = resolve_forwarded(fields, None, "http", ("/run/zonda.sock", None), TrustList("unix"))
    assert unix is not None and unix.server == ("localhost", 443)
    assert resolve(*[(n.decode(), v.decode()) for n, v in fields]).server == (SERVER[0], 443)


def test_x_forwarded_prefix_becomes_root_path() -> None:
    scope = scope_for(("x-forwarded-prefix", "/api/"))
    forwarded = resolve_forwarded(scope["headers"], PEER, "http", SERVER, TrustList("10.0.0.0/8"))
    assert forwarded is not None
    apply_forwarded(scope, forwarded)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", "/api/x", b"/api/x")


def test_x_forwarded_prefix_replaces_the_configured_root_path() -> None:
    scope = scope_for(("x-forwarded-prefix", "/my%20app"), root_path="/old")
    forwarded = resolve_forwarded(scope["headers"], PEER, "http", SERVER, TrustList("10.0.0.0/8"))
    assert forwarded is not None
    apply_forwarded(scope, forwarded)
    # raw_path keeps the bytes as received: the prefix percent-encoded, as the client's own path would be
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/my app", "/my app/x", b"/my%20app/x")


@pytest.mark.parametrize("bad", ["api", "/a b", "/a?b", "/a#b"])
def test_x_forwarded_prefix_invalid_is_ignored(bad: str) -> None:
    assert resolve(("x-forwarded-prefix", bad)).root_path is None


# --------------------------------------------------------------------------- Forwarded (RFC 7239)


def test_parse_forwarded_forms() -> None:
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [{"for": "[2001:db8:cafe::17]:4711"}]
    assert parse_forwarded("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]
    assert parse_forwarded('for="a\\"b";host="x,y"') == [{"for": 'a"b', "host": "x,y"}]


@pytest.mark.parametrize(
    "bad", ["for", "for=", 'for="open', "for=a;for=b", "for=a b", "=x", "for=a;;proto=http https"]
)
def test_parse_forwarded_malformed(bad: str) -> None:
    assert parse_forwarded(bad) is None


def test_forwarded_for_proto_host() -> None:
    result = resolve(("forwarded", "for=203.0.113.7;proto=https;host=example.com"))
    assert result.client == ("203.0.113.7", 0)
    assert result.scheme == "https"
    assert result.server == ("example.com", 443)
    assert header(result, b"host") == b"example.com"


def test_forwarded_quoted_ipv6_with_port() -> None:
    result = resolve(("forwarded", 'for="[2001:db8:cafe::17]:4711";proto=http'))
    assert result.client == ("2001:db8:cafe::17", 4711)


def test_forwarded_multiple_elements_right_to_left() -> None:
    value = "for=1.1.1.1;proto=http, for=203.0.113.7;proto=https;host=shop.example, for=10.0.0.5"
    result = resolve(("forwarded", value))
    assert result.client == ("203.0.113.7", 0)
    assert result.scheme == "https"
    assert header(result, b"host") == b"shop.example"


def test_forwarded_over_several_lines() -> None:
    result = resolve(("forwarded", "for=203.0.113.7"), ("forwarded", "for=10.0.0.5"))
    assert result.client == ("203.0.113.7", 0)


def test_forwarded_by_sets_server_when_no_host() -> None:
    result = resolve(("forwarded", 'for=203.0.113.7;by="[2001:db8::9]:8443"'))
    assert result.server == ("2001:db8::9", 8443)


@pytest.mark.parametrize("by", ['"evil.example/x?:80"', '"unknown:80"', '"_hidden:80"', '"[fe80::1%a/b]:80"'])
def test_forwarded_by_that_is_no_address_leaves_the_server(by: str) -> None:
    """A quoted by= may hold '/', '?' or '@', which the scope's server then carried into every URL an app
    builds from it; "unknown" and obfuscated names name no interface either."""
    result = resolve(("forwarded", f"for=203.0.113.7;by={by}"))
    assert (result.client, result.server) == (("203.0.113.7", 0), SERVER)


def test_forwarded_wins_over_x_forwarded() -> None:
    result = resolve(
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=203.0.113.7;proto=https"),
    )
    assert (result.client, result.scheme) == (("203.0.113.7", 0), "https")


def test_forwarded_malformed_is_ignored_whole() -> None:
    result = resolve(("forwarded", "for=203.0.113.7;proto=https;oops"))
    assert (result.client, result.scheme) == (PEER, "http")


# --------------------------------------------------------------------------- spoofing and request ids


def apply(settings: ProxySettings, host: str | None, scope: dict[str, Any]) -> dict[str, Any]:
    rewrite = settings.rewriter(host)
    if rewrite is not None:
        rewrite(scope)
    return scope


SPOOF = (
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-prefix", "/evil"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-request-id", "spoofed-id"),
    ("host", "backend"),
)


def test_untrusted_peer_gets_no_rewriter_at_all() -> None:
    settings = ProxySettings(TrustList("127.0.0.1"), proxy_headers=True)
    assert settings.rewriter("203.0.113.7") is None
    assert settings.rewriter(None) is None  # a unix peer, not listed
    assert settings.rewriter("127.0.0.1") is not None


def test_spoofed_headers_from_an_untrusted_peer_change_nothing() -> None:
    settings = ProxySettings(TrustList("127.0.0.1"), proxy_headers=True, request_id=True)
    scope = apply(settings, "203.0.113.7", scope_for(*SPOOF))
    assert scope["client"] == PEER and scope["scheme"] == "http" and scope["server"] == SERVER
    assert scope["root_path"] == "" and scope["path"] == "/x"
    assert dict(scope["headers"])[b"host"] == b"backend"
    assert scope["state"]["request_id"] != "spoofed-id"  # a fresh one instead
    assert len(scope["state"]["request_id"]) == 32


def test_trusted_peer_gets_everything_applied() -> None:
    settings = ProxySettings(TrustList("10.0.0.0/8"), proxy_headers=True, request_id=True)
    scope = apply(settings, "10.0.0.2", scope_for(*SPOOF[1:]))  # X-Forwarded-For left out: Forwarded wins
    assert scope["client"] == ("6.6.6.6", 0)
    assert scope["scheme"] == "https"
    assert scope["root_path"] == "/evil"
    assert scope["state"]["request_id"] == "spoofed-id"


def test_proxy_headers_off_applies_nothing_but_honours_request_ids_from_trusted_peers() -> None:
    settings = ProxySettings(TrustList("10.0.0.0/8"), proxy_headers=False, request_id=True)
    scope = apply(settings, "10.0.0.2", scope_for(*SPOOF))
    assert scope["client"] == PEER and scope["scheme"] == "http"
    assert scope["state"]["request_id"] == "spoofed-id"
    off = ProxySettings(TrustList("10.0.0.0/8"), proxy_headers=False)
    assert off.rewriter("10.0.0.2") is None


@pytest.mark.parametrize("bad", ["", "a b", "x" * 201, "é"])
def test_invalid_incoming_request_id_is_replaced(bad: str) -> None:
    settings = ProxySettings(TrustList("*"), proxy_headers=False, request_id=True)
    scope = scope_for()
    scope["headers"] = [(b"x-request-id", bad.encode("utf-8"))]
    apply(settings, "10.0.0.2", scope)
    assert scope["state"]["request_id"] != bad and len(scope["state"]["request_id"]) == 32


def test_a_final_newline_is_no_part_of_a_request_id_or_prefix() -> None:
    """The patterns were anchored with "$", which also matches before a final newline. The HTTP/1.1 and
    HTTP/2 cores refuse CR and LF in field values, so only a direct caller could pass one."""
    assert incoming_request_id([(b"x-request-id", b"abc\n")]) is None
    assert incoming_request_id([(b"x-request-id", b"abc")]) == "abc"
    assert resolve(("x-forwarded-prefix", "/api\n/")).root_path is None
    assert resolve(("forwarded", 'host="example.com\n"'), ("host", "backend")).server == SERVER


def test_proxy_protocol_expected_only_from_trusted_peers() -> None:
    settings = ProxySettings(TrustList("10.0.0.0/8,unix"), proxy_headers=True, proxy_protocol="v2")
    assert settings.expects_proxy_header("10.0.0.2")
    assert settings.expects_proxy_header(None)
    assert not settings.expects_proxy_header("203.0.113.7")
    off = ProxySettings(TrustList("*"), proxy_headers=True, proxy_protocol="off")
    assert not off.expects_proxy_header("10.0.0.2")


# --------------------------------------------------------------------------- PROXY v1


def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse_proxy_header(data, "v1")
    assert header is not None
    assert (header.version, header.client, header.server) == (1, ("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert data[header.length :] == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6_and_unknown() -> None:
    header = parse_proxy_header(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n", "auto")
    assert header is not None and header.client == ("2001:db8::1", 1) and header.server == ("::1", 65535)
    unknown = parse_proxy_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest", "v1")
    assert unknown is not None and unknown.client is None and unknown.server is None
    assert unknown.length == len(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")


def test_v1_needs_more() -> None:
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    for end in range(len(line)):
        assert parse_proxy_header(line[:end], "v1") is None, end
    assert parse_proxy_header(line, "v1") is not None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 080 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 999.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY " + b"x" * 120,
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line, "v1")


# --------------------------------------------------------------------------- PROXY v2


def v2(
    command: int = 1,
    family: int = 0x11,
    addresses: bytes = b"",
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    block = addresses + tlvs
    return V2_SIGNATURE + bytes([(version << 4) | command, family]) + struct.pack("!H", len(block)) + block


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def test_v2_tcp4() -> None:
    data = v2(addresses=inet("192.0.2.1", "198.51.100.2", 56324, 443)) + b"GET /"
    header = parse_proxy_header(data, "v2")
    assert header is not None
    assert (header.version, header.client, header.server) == (2, ("192.0.2.1", 56324), ("198.51.100.2", 443))
    assert data[header.length :] == b"GET /"
    assert not header.ssl and not header.local


def test_v2_tcp6() -> None:
    header = parse_proxy_header(v2(family=0x21, addresses=inet6("2001:db8::1", "::1", 5, 80)), "auto")
    assert header is not None and header.client == ("2001:db8::1", 5) and header.server == ("::1", 80)


def test_v2_unix() -> None:
    path = b"/run/app.sock"
    addresses = b"/run/client".ljust(108, b"\x00") + path.ljust(108, b"\x00")
    header = parse_proxy_header(v2(family=0x31, addresses=addresses), "v2")
    assert header is not None and header.client is None and header.server == ("/run/app.sock", None)


def test_v2_local_and_unspec_keep_the_connection_addresses() -> None:
    local = parse_proxy_header(v2(command=0, family=0x00), "v2")
    assert local is not None and local.local and local.client is None and local.server is None
    unspec = parse_proxy_header(v2(family=0x00, addresses=b"ignored"), "v2")
    assert unspec is not None and unspec.client is None and unspec.length == 16 + len(b"ignored")


def test_v2_tlvs_are_skipped_and_ssl_noticed() -> None:
    tlvs = (
        tlv(0x05, b"unique-id")
        + tlv(0x20, b"\x01" + b"\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))
        + tlv(0xEE, b"")
    )
    header = parse_proxy_header(v2(addresses=inet("192.0.2.1", "198.51.100.2", 1, 443), tlvs=tlvs), "v2")
    assert header is not None
    assert [kind for kind, _ in header.tlvs] == [0x05, 0x20, 0xEE]
    assert header.ssl
    assert header.client == ("192.0.2.1", 1)


def test_v2_needs_more() -> None:
    data = v2(addresses=inet("192.0.2.1", "198.51.100.2", 1, 2), tlvs=tlv(0x05, b"abc"))
    for end in range(len(data)):
        assert parse_proxy_header(data[:end], "v2") is None, end
    assert parse_proxy_header(data, "v2") is not None


@pytest.mark.parametrize(
    "data",
    [
        v2(version=1, addresses=inet("1.2.3.4", "1.2.3.4", 1, 2)),
        v2(command=2, addresses=inet("1.2.3.4", "1.2.3.4", 1, 2)),
        v2(family=0x12, addresses=inet("1.2.3.4", "1.2.3.4", 1, 2)),  # UDP
        v2(family=0x41, addresses=b"x" * 12),
        v2(family=0x11, addresses=b"short"),
        v2(addresses=inet("1.2.3.4", "1.2.3.4", 1, 2), tlvs=b"\x05\x00"),  # truncated TLV
        v2(addresses=inet("1.2.3.4", "1.2.3.4", 1, 2), tlvs=b"\x05\x00\x09abc"),  # TLV past the end
    ],
)
def test_v2_malformed(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data, "v2")


def test_modes_accept_only_their_version() -> None:
    one = b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n"
    two = v2(addresses=inet("1.2.3.4", "1.2.3.4", 1, 2))
    with pytest.raises(ProxyProtocolError, match="v2"):
        parse_proxy_header(one, "v2")
    with pytest.raises(ProxyProtocolError, match="v1"):
        parse_proxy_header(two, "v1")
    assert parse_proxy_header(one, "auto") is not None and parse_proxy_header(two, "auto") is not None
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"GET / HTTP/1.1\r\n", "auto")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["v1", "v2", "auto"]))
def test_parser_never_fails_otherwise(data: bytes, mode: str) -> None:
    for candidate in (data, b"PROXY " + data, V2_SIGNATURE + data):
        try:
            header = parse_proxy_header(candidate, mode)
        except ProxyProtocolError:
            continue
        if header is not None:
            assert 0 < header.length <= len(candidate)


def test_request_ids_are_unique_and_reseeded() -> None:
    from zonda import proxy

    ids = {proxy.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    before = proxy.new_request_id()
    proxy.reseed_request_ids()
    assert proxy.new_request_id()[:16] != before[:16]


def test_the_python_request_id_source_without_the_c_module() -> None:
    """The ids zonda makes when its C module is not built: the same shape, unique across blocks of 256."""
    from zonda import proxy

    source = proxy._id_source()
    ids = [next(source) for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len({i[:16] for i in ids}) == 1  # the per-process half
    assert proxy._id_source().__next__()[:16] != ids[0][:16]
