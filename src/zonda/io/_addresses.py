"""A connection's two addresses as the connection layer takes them, from the socket's names (both drivers)."""

from __future__ import annotations

Address = tuple[str, int]


def peer_address(peername: object) -> Address | None:
    """The client's (host, port); None on a Unix socket (its peer has no useful name)."""
    return (peername[0], peername[1]) if isinstance(peername, tuple) else None


def local_address(sockname: object) -> tuple[str, int | None] | None:
    """The server's (host, port), or (path, None) on a Unix socket."""
    if isinstance(sockname, tuple):
        return (sockname[0], sockname[1])
    if sockname:
        return (sockname if isinstance(sockname, str) else sockname.decode(), None)  # type: ignore[attr-defined]
    return None
