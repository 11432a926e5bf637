import httpx

from helpers import assert_still_serving, run_server, simple_app, zonda_process


def test_serves_simple_app() -> None:
    with run_server(simple_app) as server:
        response = httpx.get(server.url + "/hello")
        assert response.status_code == 200
        assert response.text == "GET /hello"
        assert response.headers["server"] == "zonda"
        assert "date" in response.headers
        assert_still_serving(server.port)


def test_cli_serves_demo_app() -> None:
    with zonda_process("examples.hello:app", "--port", "0") as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/json").json()["hello"] == "world"
