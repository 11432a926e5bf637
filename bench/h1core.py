"""The HTTP/1.1 core's own CPU cost per request, with no server: feed ``H1Connection`` one request at a time and
answer each with the hello response, as the bridge does (``send_response``, ``send_body``, ``data_to_send``).

It isolates the parser callbacks and the response framing from the event loop, the socket and the bridge, so a
change to the core's hot path shows up as a change of tens of nanoseconds rather than vanishing in wrk's noise.
Run by hand (best of ``--rounds``; thread CPU time, so other processes on the core hardly count)::

    .venv/bin/python -m bench.h1core                     # wrk's request: a Host header only
    .venv/bin/python -m bench.h1core --request browser   # a browser's ten headers
"""

from __future__ import annotations

import argparse
import gc
import time

from zonda.protocols.http1 import DefaultHeaders, H1Connection, H1Limits

REQUESTS = {
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "browser": (
        b"GET /index.html?lang=en HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: session=0123456789abcdef; theme=dark\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\n"
        b"Sec-Fetch-Mode: navigate\r\n\r\n"
    ),
}
RESPONSE_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
BODY = b"Hello, world!"


def per_request(request: bytes, count: int) -> float:
    """Thread CPU seconds per request over ``count`` requests on one connection."""
    defaults = DefaultHeaders()
    defaults.set_date(b"Thu, 01 Jan 2026 00:00:00 GMT")
    conn = H1Connection(H1Limits(), defaults, time.monotonic)
    receive, respond, body, drain = conn.receive_data, conn.send_response, conn.send_body, conn.data_to_send
    gc.collect()
    start = time.thread_time()
    for _ in range(count):
        stream_id = receive(request)[0].stream_id  # type: ignore[union-attr]
        respond(stream_id, 200, RESPONSE_HEADERS)
        body(stream_id, BODY, True)
        drain()
    return (time.thread_time() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--request", choices=sorted(REQUESTS), default="wrk")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    request = REQUESTS[args.request]
    per_request(request, 10_000)  # warm up
    best = min(per_request(request, args.count) for _ in range(args.rounds))
    print(f"{args.request}: {best * 1e9:.0f} ns per request (best of {args.rounds} x {args.count})")


if __name__ == "__main__":
    main()
