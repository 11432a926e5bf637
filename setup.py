"""Only the optional compiled parts of zonda; everything else is in pyproject.toml.

``zonda._accesslog`` builds the default access log lines, ``zonda._metrics`` is the metrics' per-response
hook (both hand-written C). The modules of the per-request path (``zonda._compiled.COMPILED``) are compiled
from their own Python source by mypyc: the same code, with native classes and calls. Without a C compiler all
of them are skipped (``optional``) and zonda runs the same source as Python; ``ZONDA_COMPILE=0`` at install
skips mypyc on purpose, and ``ZONDA_PURE_PYTHON=1`` at run time ignores what was compiled."""

import os
import sys

from setuptools import Extension, setup

SLOTS_HEADER = "src/zonda/_cycle_slots.h"  # both read a cycle's slots through it

extensions = [
    Extension("zonda._accesslog", ["src/zonda/_accesslog.c"], depends=[SLOTS_HEADER], optional=True),
    Extension("zonda._metrics", ["src/zonda/_metrics.c"], depends=[SLOTS_HEADER], optional=True),
]


def compiled_modules() -> list[Extension]:
    """mypyc's extensions for the modules ``zonda._compiled`` lists (read from its source, not imported: the
    package's dependencies may not be installed yet)."""
    if os.environ.get("ZONDA_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without the build-system's requirements (setup.py run by hand)
        return []
    namespace: dict[str, object] = {}
    with open("src/zonda/_compiled.py", encoding="utf-8") as source:
        exec(compile(source.read(), "src/zonda/_compiled.py", "exec"), namespace)
    names, group = namespace["COMPILED"], namespace["GROUP"]
    assert isinstance(names, tuple) and isinstance(group, str) and group.endswith("__mypyc")
    paths = ["src/" + name.replace(".", "/") + ".py" for name in names]
    # pip builds in an environment of the build requirements alone: the modules mypy follows from these may
    # import packages that are not there (trio, websockets), so only the compiled modules' own errors count.
    # httptools is a build requirement, so they are typed alike wherever they are built.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    try:
        modules = mypycify([*options, *paths], opt_level="3", group_name=group.removesuffix("__mypyc"))
    except SystemExit as exc:  # mypy found errors: install the source rather than fail (CI fails on it)
        print(f"zonda: not compiling the request path (mypyc: {exc})", file=sys.stderr)
        return []
    for module in modules:
        module.optional = True  # no compiler: the same modules run as Python
    return modules


setup(ext_modules=extensions + compiled_modules())
