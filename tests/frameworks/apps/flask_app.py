"""A Flask app as its docs write one: a page, a form POST, a JSON route and a session cookie.
Served over WSGI by tests/frameworks/test_flask.py in a real zonda process, and mounted in a FastAPI app by
tests/frameworks/test_mounted_wsgi.py."""

from __future__ import annotations

from typing import Any

from flask import Flask, redirect, request, session, url_for
from werkzeug.wrappers import Response

app = Flask(__name__)
app.secret_key = "zonda-framework-tests-only"  # a test app on loopback


@app.get("/")
def index() -> str:
    session["visits"] = session.get("visits", 0) + 1
    return f"Hello from Flask, visit {session['visits']}"


@app.route("/signup", methods=["GET", "POST"])
def signup() -> str | Response:
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        if not name:
            return "a name is required", 400
        return redirect(url_for("welcome", name=name))
    return '<form method="post"><input name="name"><button>Sign up</button></form>'


@app.get("/welcome/<name>")
def welcome(name: str) -> str:
    return f"Welcome, {name}!"


@app.post("/api/sum")
def api_sum() -> dict[str, Any]:
    numbers = request.get_json()["numbers"]
    return {"sum": sum(numbers), "count": len(numbers)}
