"""The reviews service: an ordinary HTTP service with its own URL layout (see app.py)."""
