"""The WSGI benchmark app: the same hello response from every server."""

HELLO = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [HELLO]
