"""Which of zonda's modules mypyc compiles, and whether this process runs them compiled.

The modules every request passes through are compiled from their own source at install time (setup.py): the
same code as native classes and C calls, with the source beside it. They are used all together or not at all
(compiled modules call each other directly, not through the import system), and not at all when:

- ``ZONDA_PURE_PYTHON=1`` is set (a switch for telling the two apart, and what CI runs on one Python);
- they were not built (no C compiler, or ``ZONDA_COMPILE=0`` at install);
- one of them is older than its source (an edited checkout, not rebuilt: ``make build`` or ``pip install -e .``
  compiles again). Then the source runs, slower but current; ``zonda`` logs it at startup.

``choose()`` runs once, when ``zonda`` is imported, before any of these modules is: it puts a finder first on
``sys.meta_path`` that imports each of them from its ``.py`` file when the source is to run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    # mypyc reads this decorator's arguments when it compiles a class (``allow_interpreted_subclasses``: a class
    # of the source may derive from it); at run time it does nothing, so zonda does not need mypy_extensions.
    from mypy_extensions import mypyc_attr as mypyc_attr
else:
    _Class = TypeVar("_Class")

    def mypyc_attr(*_names: str, **_values: object):
        def unchanged(cls: _Class) -> _Class:
            return cls

        return unchanged


# Read by setup.py (from this file's text) as well as here: keep it a plain tuple of names.
COMPILED = (
    "zonda.protocols.events",
    "zonda.protocols._output",
    "zonda.protocols.fields",
    "zonda.protocols.http1",
    "zonda.asgi.exchange",
    "zonda.asgi.session",
)

GROUP = "zonda__mypyc"  # the shared library mypyc builds for them all (setup.py's group_name)
# A module whose source is newer than its compiled file by more than this was edited after the build. An
# install writes both within moments (in either order), so a smaller difference is not an edit.
_EDITED_AFTER = 2.0

mode = "source"  # "compiled" or "source": what this process runs
why_source = ""  # why the source runs, if it does and it is worth telling


class _SourceFinder:
    """A meta path finder that imports the compiled modules from their ``.py`` files."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED or not path:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding zonda/


def _built_file(source: str) -> str | None:
    stem = source[: -len(".py")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


def compiled_state(root: str) -> tuple[bool, str]:
    """(every module under ``root``, the directory holding ``zonda/``, is built and current; why not).

    A compiled module's file only loads the shared library beside the package, ``zonda__mypyc``, which holds
    the code of them all and is the one rebuilt when any source changes: sources are compared with it."""
    library = _built_file(os.path.join(root, GROUP + ".py"))
    built = sum(_built_file(os.path.join(root, *name.split(".")) + ".py") is not None for name in COMPILED)
    if built == 0 and library is None:
        return False, ""  # not built here: nothing to tell
    if library is None or built < len(COMPILED):
        return False, f"only {built} of the {len(COMPILED)} compiled modules are built"
    built_at = os.path.getmtime(library) + _EDITED_AFTER
    stale = sum(
        os.path.getmtime(source) > built_at
        for source in (os.path.join(root, *name.split(".")) + ".py" for name in COMPILED)
        if os.path.isfile(source)
    )
    if stale:
        return False, f"{stale} compiled module(s) are older than their source"
    return True, ""


def choose() -> None:
    """Decide, once per process, whether the compiled modules run; if not, make the source run."""
    global mode, why_source
    if any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        return
    if os.environ.get("ZONDA_PURE_PYTHON") == "1":
        usable, why_source = False, "ZONDA_PURE_PYTHON=1"
    else:
        usable, why_source = compiled_state(_package_root())
    if usable:
        mode = "compiled"
        return
    mode = "source"
    sys.meta_path.insert(0, _SourceFinder())  # a finder by protocol, not by base class
