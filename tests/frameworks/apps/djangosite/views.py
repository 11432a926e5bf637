"""Plain Django views: a page, a form handled the way Django's forms docs show (a CSRF-protected POST, a
redirect after success, the form again with its errors otherwise), and an async streaming view (ASGI only)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from django import forms
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.views.decorators.http import require_POST


def hello(request: HttpRequest) -> HttpResponse:
    thanks = request.GET.get("thanks")
    greeting = f"Thanks, {thanks}!" if thanks else "Hello from Django"
    return HttpResponse(f"{greeting} ({request.method} {request.path}, host {request.get_host()})")


class FeedbackForm(forms.Form):
    name = forms.CharField(max_length=100)
    message = forms.CharField(widget=forms.Textarea)


def feedback(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = FeedbackForm(request.POST)
        if form.is_valid():
            return HttpResponseRedirect(f"/hello/?thanks={form.cleaned_data['name']}")
    else:
        form = FeedbackForm()
    return render(request, "feedback.html", {"form": form}, status=400 if form.errors else 200)


@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    """A file upload as a script sends it: multipart, the CSRF token in the X-CSRFToken header."""
    uploaded = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in uploaded.chunks():
        digest.update(chunk)
    return JsonResponse(
        {
            "name": uploaded.name,
            "size": uploaded.size,
            "sha256": digest.hexdigest(),
            "note": request.POST["note"],
        }
    )


async def countdown(request: HttpRequest) -> StreamingHttpResponse:
    async def lines() -> AsyncIterator[str]:
        for number in range(int(request.GET.get("from", "3")), 0, -1):
            yield f"{number}...\n"
            await asyncio.sleep(0.01)
        yield "liftoff\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")


async def ticker(request: HttpRequest) -> StreamingHttpResponse:
    """Ticks until the client goes: Django (5.0+) listens for ``http.disconnect`` while it streams and cancels
    the response; what the generator saw goes to the log for the test."""

    async def ticks() -> AsyncIterator[str]:
        try:
            for number in range(100_000):
                yield f"tick {number}\n"
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            print("ticker cancelled", request.GET.get("id", ""), flush=True)
            raise

    return StreamingHttpResponse(ticks(), content_type="text/plain")
