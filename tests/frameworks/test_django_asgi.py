"""Django over ASGI (apps/djangosite/asgi.py: ``get_asgi_application()`` under staticfiles' ASGI handler) on a
real zonda: pages, the admin's login with CSRF and a session, a form POST, static files, over HTTP/1.1 and
HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import django
import pytest

from framework_clients import (
    ClientFor,
    assert_csrf_cookie_on_the_wire,
    assert_django_login_works,
    assert_django_upload_works,
    csrf_form_token,
)
from framework_servers import ADMIN_PASSWORD, ASYNCIO_LOOPS, serve
from helpers import ZondaProcess, wait_for

ADMIN_CSS = Path(django.__file__).parent / "contrib" / "admin" / "static" / "admin" / "css" / "base.css"


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest, django_env: dict[str, str]) -> Iterator[ZondaProcess]:
    yield from serve("djangosite.asgi:application", request.param, env=django_env)


def test_page(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/hello/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == f"Hello from Django (GET /hello/, host {server.url.removeprefix('http://')})"
    assert response.headers["x-frame-options"] == "DENY"  # from the middleware stack
    assert client_for(server).get("/nope/").status_code == 404


def test_admin_login_page(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/admin/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/admin/login/?next=/admin/")
    assert 'id="login-form"' in response.text
    assert 'name="csrfmiddlewaretoken"' in response.text
    assert response.headers["cache-control"] == "max-age=0, no-cache, no-store, must-revalidate, private"


def test_admin_login_with_csrf(server: ZondaProcess, client_for: ClientFor) -> None:
    assert_django_login_works(client_for(server), ADMIN_PASSWORD)


def test_file_upload(server: ZondaProcess, client_for: ClientFor) -> None:
    assert_django_upload_works(client_for(server))


def test_form_post(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    token = csrf_form_token(client.get("/feedback/").text)
    posted = client.post("/feedback/", data={"csrfmiddlewaretoken": token, "name": "Ada", "message": "hi"})
    assert posted.status_code == 302
    assert posted.headers["location"] == "/hello/?thanks=Ada"
    assert client.get(posted.headers["location"]).text.startswith("Thanks, Ada!")
    invalid = client.post("/feedback/", data={"csrfmiddlewaretoken": token, "name": "Ada"})
    assert invalid.status_code == 400
    assert "This field is required." in invalid.text


def test_async_streaming_view(server: ZondaProcess, client_for: ClientFor, http_version: str) -> None:
    with client_for(server).stream("GET", "/countdown/", params={"from": "3"}) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        if http_version == "http1":
            assert response.headers["transfer-encoding"] == "chunked"
        assert list(response.iter_lines()) == ["3...", "2...", "1...", "liftoff"]


def test_a_stream_the_client_leaves_is_cancelled(
    server: ZondaProcess, client_for: ClientFor, http_version: str
) -> None:
    """Django hears the client go (``http.disconnect`` while it streams) and cancels the streaming view's
    generator; the connection serves on."""
    client = client_for(server)
    tag = f"{http_version}-{time.monotonic_ns()}"
    with client.stream("GET", "/ticker/", params={"id": tag}) as response:
        lines = response.iter_lines()
        assert next(lines) == "tick 0"
        assert next(lines) == "tick 1"
    client.close()  # httpx neither resets an HTTP/2 stream it stops reading nor reuses such an HTTP/1.1 connection
    wait_for(lambda: f"ticker cancelled {tag}" in server.output, timeout=10, what="the view to be cancelled")
    assert client_for(server).get("/hello/").status_code == 200


def test_static_files(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert response.content == ADMIN_CSS.read_bytes()
    assert int(response.headers["content-length"]) == ADMIN_CSS.stat().st_size
    assert response.headers["content-type"].startswith("text/css")
    assert client_for(server).get("/static/admin/css/nope.css").status_code == 404


def test_headers_on_the_wire(server: ZondaProcess, http_version: str) -> None:
    """Django names its headers ``Set-Cookie``, ``Content-Type``: they go out as valid header lines, lowercased
    on HTTP/2 (a strict HTTP/2 client rejects uppercase names; httpx does not check)."""
    assert_csrf_cookie_on_the_wire(server.port, http_version)
