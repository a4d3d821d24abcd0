"""The one format for times in the admin API and logs: ``2026-11-27T06:31:57Z``."""

from __future__ import annotations

import datetime


def iso_time(timestamp: float) -> str:
    """A Unix time as the admin API writes times."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
