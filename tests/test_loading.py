"""Loading the app: ``module:attr``, ``module:attr.sub``, factories, ``--app-dir``, ASGI 2/3 detection.

Each test writes its app module under a unique name in a tmp dir and loads it through ``app_dir``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import run_server, zonda_process
from zonda.errors import AppLoadError
from zonda.loading import ASGI2Adapter, import_from_string, is_asgi2, load_app

_counter = itertools.count()

APP_SOURCE = """
async def _reply(send, text):
    body = text.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "http":
        await _reply(send, "asgi3-function")


class Asgi3Object:
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await _reply(send, "asgi3-object")


class Holder:
    inner = Asgi3Object()


obj = Asgi3Object()
holder = Holder()


class Asgi2Class:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "http":
            await _reply(send, "asgi2-class")


def asgi2_function(scope):
    async def instance(receive, send):
        if scope["type"] == "http":
            await _reply(send, "asgi2-function")

    return instance


def create_app():
    return Asgi3Object()


def create_asgi2():
    return Asgi2Class


def needs_args(a, b):
    return app


not_callable = 42
"""


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh, uniquely named app module in tmp_path: (module name, app_dir)."""
    name = f"zonda_test_app_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE))
    saved_path = list(sys.path)
    try:
        yield name, str(tmp_path)
    finally:
        sys.path[:] = saved_path
        sys.modules.pop(name, None)


def serve_text(app: Any, **options: Any) -> str:
    """Serve ``app`` for real, GET / and return the body."""
    with run_server(app, lifespan="off", **options) as server:
        response = httpx.get(server.url + "/")
        assert response.status_code == 200
        return response.text


# ------------------------------------------------------------------ import_from_string / load_app


def test_module_attr(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    app = load_app(f"{name}:app", app_dir=app_dir)
    assert app is sys.modules[name].app


def test_module_attr_sub(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    app = load_app(f"{name}:holder.inner", app_dir=app_dir)
    assert app is sys.modules[name].Holder.inner


def test_dotted_module(tmp_path: Path) -> None:
    package = tmp_path / "zonda_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "web.py").write_text("async def app(scope, receive, send):\n    pass\n")
    saved = list(sys.path)
    try:
        app = load_app("zonda_test_pkg.web:app", app_dir=str(tmp_path))
        assert app is sys.modules["zonda_test_pkg.web"].app
    finally:
        sys.path[:] = saved
        sys.modules.pop("zonda_test_pkg.web", None)
        sys.modules.pop("zonda_test_pkg", None)


def test_factory(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    app = load_app(f"{name}:create_app", factory=True, app_dir=app_dir)
    assert type(app).__name__ == "Asgi3Object"


def test_factory_returning_an_asgi2_class(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    app = load_app(f"{name}:create_asgi2", factory=True, app_dir=app_dir)
    assert isinstance(app, ASGI2Adapter)


def test_zero_argument_function_without_factory_hints_at_factory(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    with pytest.raises(AppLoadError, match="--factory"):
        load_app(f"{name}:create_app", app_dir=app_dir)


def test_factory_that_needs_arguments(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    with pytest.raises(AppLoadError, match="factory"):
        load_app(f"{name}:needs_args", factory=True, app_dir=app_dir)


def test_not_callable(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    with pytest.raises(AppLoadError, match="not callable"):
        load_app(f"{name}:not_callable", app_dir=app_dir)


@pytest.mark.parametrize("target", ["nocolon", ":app", "module:", ""])
def test_malformed_target(target: str) -> None:
    with pytest.raises(AppLoadError, match="module:attribute"):
        import_from_string(target)


def test_missing_module_names_it() -> None:
    with pytest.raises(AppLoadError, match="'zonda_no_such_module'"):
        import_from_string("zonda_no_such_module:app")


def test_missing_attribute_names_module_and_attribute(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    with pytest.raises(AppLoadError) as info:
        load_app(f"{name}:holder.nope", app_dir=app_dir)
    assert name in str(info.value)
    assert "holder.nope" in str(info.value)


def test_import_error_inside_the_module(tmp_path: Path) -> None:
    (tmp_path / "zonda_test_broken_import.py").write_text("import zonda_no_such_dependency\n")
    saved = list(sys.path)
    try:
        with pytest.raises(AppLoadError) as info:
            load_app("zonda_test_broken_import:app", app_dir=str(tmp_path))
    finally:
        sys.path[:] = saved
    assert "zonda_test_broken_import" in str(info.value)
    assert "zonda_no_such_dependency" in str(info.value)


def test_exception_inside_the_module(tmp_path: Path) -> None:
    (tmp_path / "zonda_test_raises.py").write_text("raise RuntimeError('no config here')\n")
    saved = list(sys.path)
    try:
        with pytest.raises(AppLoadError, match="RuntimeError: no config here"):
            load_app("zonda_test_raises:app", app_dir=str(tmp_path))
    finally:
        sys.path[:] = saved
        sys.modules.pop("zonda_test_raises", None)


# ------------------------------------------------------------------ interface detection


def test_detection(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    load_app(f"{name}:app", app_dir=app_dir)
    module = sys.modules[name]
    assert not is_asgi2(module.app)
    assert not is_asgi2(module.obj)
    assert is_asgi2(module.Asgi2Class)
    assert is_asgi2(module.asgi2_function)


class AwaitableAsgi3:
    """The ASGI 3 class form: instantiated with (scope, receive, send), then awaited."""

    def __init__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope, self.send = scope, send

    def __await__(self) -> Any:
        return self.respond().__await__()

    async def respond(self) -> None:
        if self.scope["type"] != "http":
            return
        await self.send({"type": "http.response.start", "status": 200, "headers": []})
        await self.send({"type": "http.response.body", "body": b"awaitable-class"})


def test_awaitable_class_is_asgi3() -> None:
    assert not is_asgi2(AwaitableAsgi3)
    assert load_app(AwaitableAsgi3) is AwaitableAsgi3
    assert serve_text(AwaitableAsgi3) == "awaitable-class"


def test_detection_of_callables_defined_here() -> None:
    async def asgi3(scope: Any, receive: Any, send: Any) -> None: ...

    def asgi2(scope: Any) -> Any:
        return asgi3

    class Asgi3:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    class Asgi2Instance:
        def __call__(self, scope: Any) -> Any:
            return asgi3

    assert not is_asgi2(asgi3)
    assert is_asgi2(asgi2)
    assert not is_asgi2(Asgi3())
    assert is_asgi2(Asgi2Instance())
    assert isinstance(load_app(asgi2), ASGI2Adapter)
    assert load_app(asgi3) is asgi3


@pytest.mark.parametrize(
    ("attr", "interface", "expected"),
    [
        ("app", "auto", "asgi3-function"),
        ("obj", "auto", "asgi3-object"),
        ("holder.inner", "auto", "asgi3-object"),
        ("Asgi2Class", "auto", "asgi2-class"),
        ("asgi2_function", "auto", "asgi2-function"),
        ("Asgi2Class", "asgi2", "asgi2-class"),
        ("asgi2_function", "asgi2", "asgi2-function"),
        ("app", "asgi3", "asgi3-function"),
    ],
)
def test_served_for_real(app_module: tuple[str, str], attr: str, interface: str, expected: str) -> None:
    name, app_dir = app_module
    assert serve_text(f"{name}:{attr}", app_dir=app_dir, interface=interface) == expected


def test_factory_served_for_real(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    assert serve_text(f"{name}:create_app", app_dir=app_dir, factory=True) == "asgi3-object"


def test_interface_flag_wins_over_detection(app_module: tuple[str, str]) -> None:
    name, app_dir = app_module
    assert isinstance(load_app(f"{name}:app", interface="asgi2", app_dir=app_dir), ASGI2Adapter)
    app = load_app(f"{name}:Asgi2Class", interface="asgi3", app_dir=app_dir)
    assert app is sys.modules[name].Asgi2Class


def test_asgi2_adapter_passes_scope_receive_send() -> None:
    seen: list[Any] = []

    class App:
        def __init__(self, scope: Any) -> None:
            seen.append(scope)

        async def __call__(self, receive: Any, send: Any) -> None:
            seen.append(await receive())
            await send("sent")

    async def receive() -> Any:
        return "received"

    async def send(message: Any) -> None:
        seen.append(message)

    asyncio.run(ASGI2Adapter(App)({"type": "http"}, receive, send))
    assert seen == [{"type": "http"}, "received", "sent"]


# ------------------------------------------------------------------ the CLI: one clear line, exit 1


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 1, output
    return errors[0]


def test_cli_import_error_is_one_line(tmp_path: Path) -> None:
    with zonda_process("zonda_no_such_module:app", "--port", "0", "--app-dir", str(tmp_path)) as proc:
        assert proc.wait(10) == 1
    line = _one_line_error(proc.output)
    assert "zonda_no_such_module" in line


def test_cli_missing_attribute_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "zonda_cli_app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    with zonda_process("zonda_cli_app:nope", "--port", "0", "--app-dir", str(tmp_path)) as proc:
        assert proc.wait(10) == 1
    line = _one_line_error(proc.output)
    assert "zonda_cli_app" in line
    assert "'nope'" in line


def test_cli_broken_module_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "zonda_cli_broken.py").write_text("def app(:\n")
    with zonda_process("zonda_cli_broken:app", "--port", "0", "--app-dir", str(tmp_path)) as proc:
        assert proc.wait(10) == 1
    line = _one_line_error(proc.output)
    assert "zonda_cli_broken" in line
    assert "SyntaxError" in line


def test_cli_app_dir_and_factory(tmp_path: Path) -> None:
    (tmp_path / "zonda_cli_factory.py").write_text(textwrap.dedent(APP_SOURCE))
    with zonda_process(
        "zonda_cli_factory:create_asgi2", "--factory", "--port", "0", "--app-dir", str(tmp_path)
    ) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").text == "asgi2-class"
        assert "(ASGI 2)" in proc.output
