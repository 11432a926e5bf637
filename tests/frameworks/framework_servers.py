"""The zonda processes the framework suite runs: one per (app, event loop), started once per test module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path

from helpers import ZondaProcess, zonda_process

APPS = str(Path(__file__).parent / "apps")
LOG_ERRORS = ("Traceback", "Exception")

running: list[ZondaProcess] = []  # the processes serving now, whose logs each test is checked against


# The loops each framework runs on: anyio-based frameworks and WSGI apps on all three, the rest on asyncio's two
# (Django's async views, Channels and Quart are asyncio code).
EVERY_LOOP = ["asyncio", "uvloop", "trio"]
ASYNCIO_LOOPS = ["asyncio", "uvloop"]


def serve(
    app: str, loop: str, *args: str, env: dict[str, str] | None = None
) -> Generator[ZondaProcess, None, ZondaProcess]:
    """``python -m zonda APP`` from tests/frameworks/apps on ``loop``; yields it listening, and after the last
    test stops it with SIGTERM and holds it to a clean exit with no traceback in its whole log. Returns it
    stopped, for a fixture to read what the app said on its way out."""
    with zonda_process(
        app, "--app-dir", APPS, "--port", "0", "--loop", loop, "--no-access-log", *args, env=env
    ) as process:
        process.wait_listening(30)  # Django and Litestar take a while to import on a busy machine
        running.append(process)
        try:
            yield process
        finally:
            running.remove(process)
        process.signal(signal.SIGTERM)
        code = process.wait(30)
        assert code == 0, f"zonda exited with {code}:\n{process.output}"
        assert_clean(process.output, "the log")
    return process


def assert_clean(text: str, where: str) -> None:
    found = [word for word in LOG_ERRORS if word in text]
    assert not found, f"{' and '.join(found)} in {where}:\n{text}"


ADMIN_PASSWORD = "correct horse battery staple"
DJANGO_SETUP = """
import django
from django.core.management import call_command

django.setup()
call_command("migrate", interactive=False, verbosity=0)
call_command("createsuperuser", interactive=False, username="admin", email="admin@example.com", verbosity=0)
"""


def make_django_db(directory: Path) -> dict[str, str]:
    """A migrated sqlite database with a superuser in ``directory``, made by a child process (the test process
    keeps its own Django settings, if any test configured one); the environment that points the project at it."""
    env = {
        "DJANGO_SETTINGS_MODULE": "djangosite.settings",
        "DJANGO_DB_PATH": str(directory / "db.sqlite3"),
    }
    subprocess.run(
        [sys.executable, "-c", DJANGO_SETUP],
        cwd=APPS,
        env={**os.environ, **env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        check=True,
        timeout=120,
    )
    return env
