"""Only the optional C parts of zonda; everything else is in pyproject.toml.

``zonda._accesslog`` builds the default access log lines, ``zonda._metrics`` is the metrics' per-response
hook; without a C compiler they are skipped (``optional``) and zonda does the same in Python."""

from setuptools import Extension, setup

SLOTS_HEADER = "src/zonda/_cycle_slots.h"  # both read a cycle's slots through it

setup(
    ext_modules=[
        Extension("zonda._accesslog", ["src/zonda/_accesslog.c"], depends=[SLOTS_HEADER], optional=True),
        Extension("zonda._metrics", ["src/zonda/_metrics.c"], depends=[SLOTS_HEADER], optional=True),
    ]
)
