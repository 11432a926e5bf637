"""``--log-level debug``: a line on ``zonda.connection`` when a connection opens and when it closes.

Connections call these only when ``ServerShared.log_connections`` was true at start-up: one attribute test
per connection, none per request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zonda.logging import describe_peer

if TYPE_CHECKING:
    from zonda.connection.base import Connection

connection_log = logging.getLogger("zonda.connection")


def log_opened(client: tuple[str, int] | None, server: tuple[str, int | None] | None, tls: bool) -> None:
    connection_log.debug(
        "Connection from %s to %s opened%s",
        describe_peer(client),
        describe_peer(server),
        " (TLS)" if tls else "",
    )


def log_closed(connection: Connection, exc: BaseException | None) -> None:
    how = f"lost ({type(exc).__name__}: {exc})" if exc is not None else "closed"
    client = describe_peer(connection.session.info.client)
    connection_log.debug("Connection from %s %s (%s)", client, how, connection.protocol_label)
