"""Only the optional C parts of zonda; everything else is in pyproject.toml.

``zonda._accesslog`` builds the default access log lines, ``zonda._metrics`` is the metrics' per-response
hook; without a C compiler they are skipped (``optional``) and zonda does the same in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("zonda._accesslog", ["src/zonda/_accesslog.c"], optional=True),
        Extension("zonda._metrics", ["src/zonda/_metrics.c"], optional=True),
    ]
)
