"""The project's ASGI entry point as ``startproject`` writes it, with static files served by staticfiles'
ASGI handler (what ``runserver`` does in development)."""

from __future__ import annotations

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangosite.settings")

application = ASGIStaticFilesHandler(get_asgi_application())
