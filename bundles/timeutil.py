"""Time stamps in signed documents: UTC, second precision, ``YYYY-MM-DDTHH:MM:SSZ``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def format_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    """Parse a signed time stamp strictly; raises ``ValueError``."""
    if not isinstance(text, str) or not _STAMP.match(text):
        raise ValueError(f"time stamp {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time given by a person (no zone means UTC); raises ``ValueError``."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z)") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``--expires``: a duration (90s, 15m, 12h, 30d, 2w) or ISO 8601 (no zone = UTC)."""
    now = now or utcnow()
    m = _DURATION.match(text.strip())
    if m:
        return now + timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"--expires {text!r}: use a duration like 30d or an ISO 8601 time") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)
