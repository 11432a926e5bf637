"""A connection's two addresses as the connection layer takes them, from the socket's names (both drivers)."""

from __future__ import annotations

Address = tuple[str, int]

# The last server address made: every connection of a listener has the same one, and holds it for its life (in
# each request's scope too), so they share one tuple instead of a copy each (~140 bytes an idle connection).
_last_local: tuple[str, int | None] | None = None


def peer_address(peername: object) -> Address | None:
    """The client's (host, port); None on a Unix socket (its peer has no useful name)."""
    return (peername[0], peername[1]) if isinstance(peername, tuple) else None


def local_address(sockname: object) -> tuple[str, int | None] | None:
    """The server's (host, port), or (path, None) on a Unix socket."""
    global _last_local
    if isinstance(sockname, tuple):
        address: tuple[str, int | None] = (sockname[0], sockname[1])
    elif sockname:
        address = (sockname if isinstance(sockname, str) else sockname.decode(), None)  # type: ignore[attr-defined]
    else:
        return None
    if address == _last_local:
        return _last_local
    _last_local = address
    return address
