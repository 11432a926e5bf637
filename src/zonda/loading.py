"""Import the app (``module:attr`` or ``module:attr.sub``), call factories, and tell ASGI 2 from ASGI 3.

Detection rule (``--interface auto``): a class, or a callable whose ``__call__`` takes a single parameter
(``scope``), is an ASGI 2 double-callable; a coroutine function (or an object whose ``__call__`` is one) is
ASGI 3. Anything else is treated as ASGI 3. The flag always wins over detection.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from zonda.asgi.types import ASGIApp, Receive, Scope, Send
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
        raise AppLoadError(f"importing module {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise AppLoadError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AppLoadError(f"attribute {attrs!r} not found in module {module_name!r}") from None
    return obj


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
        return True
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None)):  # noqa: B004
        return False
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004
    return call is not None and _takes_one_argument(call)


class ASGI2Adapter:
    """Runs an ASGI 2 double-callable as an ASGI 3 app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def load_app(
    app: Any, *, factory: bool = False, interface: str = "auto", app_dir: str | None = None
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
        except TypeError as exc:
            raise AppLoadError(f"calling the app factory failed: {exc}") from exc
    elif inspect.isfunction(app) and not inspect.iscoroutinefunction(app) and _takes_no_arguments(app):
        raise AppLoadError(f"{app.__qualname__} takes no arguments: is it a factory? (use --factory)")
    if not callable(app):
        raise AppLoadError(f"the app {app!r} is not callable")
    if interface == "asgi2" or (interface == "auto" and is_asgi2(app)):
        return ASGI2Adapter(app)
    return app  # type: ignore[no-any-return]


def _takes_no_arguments(func: Any) -> bool:
    try:
        return not inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
