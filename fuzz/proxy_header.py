"""The PROXY protocol parser (``zonda.proxy.parse_proxy_header``), v1 and v2, in each ``accept`` mode.

Invariants: the only exception is ``ProxyProtocolError``; a parsed header's ``length`` is within the bytes
given, and parsing exactly those bytes gives the same header; a header that parses whole never fails when it
arrives in pieces (every shorter prefix answers None, "need more bytes"); addresses and ports are valid.

Input layout: byte 0 picks ``accept`` (auto, v1, v2), the rest is the connection's first bytes.
"""

from __future__ import annotations

import ipaddress
import struct

from fuzz._harness import main
from zonda.errors import ProxyProtocolError
from zonda.proxy import V2_SIGNATURE, ProxyHeader, parse_proxy_header

_MODES = ("auto", "v1", "v2")


def _parse(data: bytes, accept: str) -> ProxyHeader | ProxyProtocolError | None:
    try:
        return parse_proxy_header(data, accept)
    except ProxyProtocolError as exc:
        return exc


def _same(a: ProxyHeader, b: ProxyHeader) -> bool:
    return (a.version, a.length, a.client, a.server, a.local, a.tlvs, a.ssl) == (
        b.version,
        b.length,
        b.client,
        b.server,
        b.local,
        b.tlvs,
        b.ssl,
    )


def one_input(data: bytes) -> None:
    if not data:
        return
    accept, stream = _MODES[data[0] % 3], data[1:]
    result = _parse(stream, accept)
    if not isinstance(result, ProxyHeader):
        return
    assert result.version in (1, 2)
    assert 0 < result.length <= len(stream), (result.length, stream)
    again = _parse(stream[: result.length], accept)
    assert isinstance(again, ProxyHeader) and _same(again, result), (again, stream)
    for cut in range(result.length):
        assert _parse(stream[:cut], accept) is None, (cut, stream)
    for address in (result.client, result.server):
        if address is not None and result.version == 1:
            ipaddress.ip_address(address[0])
            assert address[1] is not None and 0 <= address[1] <= 65535


def _v2(command: int, family: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes((0x20 | command, family)) + struct.pack("!H", len(block)) + block


SEEDS = [
    bytes((mode,)) + stream
    for mode in range(3)
    for stream in (
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        b"PROXY UNKNOWN\r\n",
        _v2(1, 0x11, bytes(range(12)) + b"\x20\x00\x01\x01"),
        _v2(1, 0x21, bytes(36)),
        _v2(1, 0x31, b"/run/x.sock".ljust(216, b"\x00")),
        _v2(0, 0x00, b""),
    )
]

if __name__ == "__main__":
    main("proxy_header", one_input, SEEDS)
