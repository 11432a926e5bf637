"""A tiny HTTP/1.1 client over a raw socket for wire-level tests: send exact bytes, read responses one by one
(content-length, chunked or close-delimited), keeping whatever arrived beyond each response for the next."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The value of the one header called ``name`` (None when absent; fails when repeated)."""
        values = [value for key, value in self.headers if key == name.lower()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class Closed(Exception):
    """The server closed the connection before a whole response arrived."""


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and the headers (names lowercased, in order) of a response head without its blank line."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(status_line.split(" ")[1]), headers


def recv_within(sock: socket.socket, timeout: float, restore: float) -> bytes | None:
    """One read that waits at most ``timeout`` seconds: what came, b"" if the server closed or reset the
    connection, None if nothing came; the socket's timeout is ``restore`` again after."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.settimeout(restore)


class Wire:
    """One client connection to 127.0.0.1:port."""

    def __init__(
        self, port: int, timeout: float = 5.0, rcvbuf: int | None = None, sndbuf: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.timeout = timeout
        self.buffer = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(self.buffer)
        self.buffer += chunk

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_head(self) -> tuple[int, list[tuple[str, str]], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        return status, headers, head + b"\r\n\r\n"

    def read_response(self, head_request: bool = False) -> Response:
        """The next response; 1xx interim responses are returned too."""
        status, headers, raw = self.read_head()
        response = Response(status, headers, b"", raw)
        if head_request or status < 200 or status in (204, 304):
            return response
        length = response.header("content-length")
        if response.header("transfer-encoding") == "chunked":
            assert length is None, "content-length with chunked"
            body = b""
            while True:
                size = int(self._take_line().split(b";")[0], 16)
                if size == 0:
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            while line := self._take_line():
                name, _, value = line.decode("latin-1").partition(":")
                response.trailers.append((name.strip().lower(), value.strip()))
            response.body = body
        elif length is not None:
            response.body = self._take(int(length))
        else:
            response.body = self.read_until_closed()
        return response

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes; fails if it does not within ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the server did not close the connection"
            self.sock.settimeout(remaining)
            try:
                self._fill()
            except Closed:
                break
            except ConnectionResetError:
                break
        self.sock.settimeout(self.timeout)
        data, self.buffer = self.buffer, b""
        return data

    def is_closed(self, timeout: float) -> bool:
        """Whether the server closes within ``timeout`` seconds, sending nothing more."""
        chunk = recv_within(self.sock, timeout, self.timeout)
        if chunk is None:
            return False
        assert not chunk, f"unexpected bytes {chunk[:200]!r}"
        return True

    def nothing_arrives(self, within: float) -> bool:
        """True if the server sends nothing (and keeps the connection) for ``within`` seconds."""
        if self.buffer:
            return False
        chunk = recv_within(self.sock, within, self.timeout)
        if chunk is None:
            return True
        self.buffer += chunk
        return False


def get(path: str = "/", *lines: str, method: str = "GET", version: str = "1.1") -> bytes:
    """A request head with a Host header and the extra header ``lines``."""
    extra = "".join(line + "\r\n" for line in lines)
    return f"{method} {path} HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode("latin-1")
