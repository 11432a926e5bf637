"""A FastAPI app with a Flask app mounted under /legacy through a2wsgi, as FastAPI's docs now show for moving
a WSGI app over piece by piece: the WSGI app runs in a2wsgi's own threads inside zonda's ASGI request."""

from __future__ import annotations

from a2wsgi import WSGIMiddleware
from fastapi import FastAPI
from flask_app import app as flask_app

app = FastAPI()


@app.get("/api/status")
async def status() -> dict[str, str]:
    return {"status": "ok", "served_by": "fastapi"}


app.mount("/legacy", WSGIMiddleware(flask_app))
