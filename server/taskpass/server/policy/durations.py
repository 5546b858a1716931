"""Durations as policy authors write them: 90s, 15m, 1h, 1h30m."""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"(?:(\d{1,5})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?")
MAX_DURATION = dt.timedelta(hours=24)


def parse_duration(text: object) -> dt.timedelta:
    """Parse `1h30m`-style text into a positive timedelta of at most 24 hours.

    Raises ValueError with a message that says which forms are accepted.
    """
    forms = "use forms like 90s, 15m, 1h or 1h30m"
    if not isinstance(text, str):
        raise ValueError(f"must be a duration string; {forms}")
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text[:32]!r} is not a duration; {forms}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    value = dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if value <= dt.timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    if value > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 24h, the longest task lifetime")
    return value


def format_duration(value: dt.timedelta) -> str:
    """The inverse of parse_duration for messages: 5400s -> '1h30m'."""
    total = int(value.total_seconds())
    if total <= 0:
        return f"{total}s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds else "",
    ]
    return "".join(parts)
