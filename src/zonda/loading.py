"""Import the app (``module:attr`` or ``module:attr.sub``), call factories, tell WSGI, ASGI 2 and ASGI 3 apart.

Detection rule (``--interface auto``): a class (unless awaitable, as uvicorn decides), or a callable whose
``__call__`` takes a single parameter (``scope``), is an ASGI 2 double-callable; a coroutine function (or an
object whose ``__call__`` is one) is ASGI 3. Anything else is treated as ASGI 3. The flag always wins over detection.

WSGI (checked first): a callable that is not a coroutine function and takes exactly two positional parameters
without defaults, ``(environ, start_response)`` (a function, a method, an object's ``__call__`` as for Flask
and Django, or a class's ``__init__`` as in PEP 3333's ``AppClass``). Limits: a WSGI callable that hides its
signature (``*args``, a C callable, a decorator without ``functools.wraps``) is taken for ASGI 3, and a sync
ASGI 3 callable with a third parameter defaulted looks like WSGI; name the interface (``--interface wsgi``
or ``asgi3``) for those. A WSGI app is served through ``zonda.asgi.wsgi.WSGIAdapter``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from types import TracebackType
from typing import Any

from zonda.asgi.types import ASGIApp, Receive, Scope, Send
from zonda.asgi.wsgi import DEFAULT_THREADS, WSGIAdapter
from zonda.errors import AppLoadError


def import_from_string(target: str) -> Any:
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f'app {target!r} must be given as "module:attribute"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise AppLoadError(
                f"could not import module {module_name!r}: no module named {exc.name!r}"
            ) from None
        raise AppLoadError(f"importing module {module_name!r} failed: {exc}", app_traceback(exc)) from None
    except Exception as exc:
        raise AppLoadError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}", app_traceback(exc)
        ) from None
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    return obj


_IMPORT_MACHINERY = (os.path.dirname(importlib.__file__) + os.sep, "<frozen importlib", __file__)


def app_traceback(exc: BaseException) -> str:
    """``exc``'s traceback from the first frame of the app's own code on, as a block to log after the error
    line (starting with a newline): the frames of zonda and of the import machinery above it say nothing
    the user can act on. A SyntaxError shows its file, line and caret."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return "\n" + text.rstrip("\n")


def _takes_one_argument(func: Any) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return False
    return len(params) == 1


def is_asgi2(app: Any) -> bool:
    if inspect.isclass(app):
        return not hasattr(app, "__await__")  # an awaitable class is ASGI 3: App(scope, receive, send)
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None)):  # noqa: B004
        return False
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004
    return call is not None and _takes_one_argument(call)


def is_wsgi(app: Any) -> bool:
    """A plain callable of two positional parameters, ``(environ, start_response)``: see the module docstring."""
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None)):  # noqa: B004
        return False
    if inspect.isclass(app) and hasattr(app, "__await__"):
        return False
    try:
        parameters = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) == 2


class ASGI2Adapter:
    """Runs an ASGI 2 double-callable as an ASGI 3 app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def load_app(
    app: Any,
    *,
    factory: bool = False,
    interface: str = "auto",
    app_dir: str | None = None,
    wsgi_threads: int = DEFAULT_THREADS,
) -> ASGIApp:
    """Turn the configured app (a string or an object) into an ASGI 3 callable. Raises AppLoadError."""
    if isinstance(app, str):
        if app_dir is not None:
            sys.path.insert(0, app_dir)
        app = import_from_string(app)
    if factory:
        if not callable(app):
            raise AppLoadError(f"--factory was given but {app!r} is not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(
                f"calling the app factory failed: {type(exc).__name__}: {exc}", app_traceback(exc)
            ) from None
    elif inspect.isfunction(app) and not inspect.iscoroutinefunction(app) and _takes_no_arguments(app):
        raise AppLoadError(f"{app.__qualname__} takes no arguments: is it a factory? (use --factory)")
    if not callable(app):
        raise AppLoadError(f"the app {app!r} is not callable")
    if interface == "wsgi" or (interface == "auto" and is_wsgi(app)):
        return WSGIAdapter(app, wsgi_threads)
    if interface == "asgi2" or (interface == "auto" and is_asgi2(app)):
        return ASGI2Adapter(app)
    return app  # type: ignore[no-any-return]


def _takes_no_arguments(func: Any) -> bool:
    try:
        return not inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
