"""Django over WSGI (apps/djangosite/wsgi.py, ``--interface wsgi``) on a real zonda: a page, the admin's login
with CSRF and a session, a form POST, and Set-Cookie values without the leading space Django's WSGI handler
puts there; over HTTP/1.1 and HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import (
    ClientFor,
    assert_csrf_cookie_on_the_wire,
    assert_django_login_works,
    assert_django_upload_works,
    csrf_form_token,
)
from framework_servers import ADMIN_PASSWORD, EVERY_LOOP, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=EVERY_LOOP)
def server(request: pytest.FixtureRequest, django_env: dict[str, str]) -> Iterator[ZondaProcess]:
    yield from serve("djangosite.wsgi:application", request.param, "--interface", "wsgi", env=django_env)


def test_page(server: ZondaProcess, client_for: ClientFor) -> None:
    assert server.url is not None
    response = client_for(server).get("/hello/")
    assert response.status_code == 200
    assert response.text == f"Hello from Django (GET /hello/, host {server.url.removeprefix('http://')})"
    assert client_for(server).get("/nope/").status_code == 404


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
    assert client.post("/feedback/", data={"name": "Ada", "message": "hi"}).status_code == 403  # no token


def test_set_cookie_has_no_leading_space(server: ZondaProcess, http_version: str) -> None:
    """Django's WSGI handler sends ``("Set-Cookie", " csrftoken=...")``: the space is not part of the value."""
    assert_csrf_cookie_on_the_wire(server.port, http_version)
