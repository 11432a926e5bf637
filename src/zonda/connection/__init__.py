"""Loop-neutral connection logic: between a driver's byte stream and the ASGI bridge (see base.py)."""
