"""Only the optional C part of zonda; everything else is in pyproject.toml.

``zonda._accesslog`` builds the default access log lines; without a C compiler it is skipped (``optional``)
and zonda uses the same lines built in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("zonda._accesslog", ["src/zonda/_accesslog.c"], optional=True)])
