"""Small text formatters shared by the screens (no textual here)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bundles.timeutil import format_time

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Glyphs:
    """Every symbol the screens draw; ``ASCII`` for terminals that cannot draw the others."""

    ascii: bool
    ok: str  # a check that passed: "✓ VERIFIED"
    bad: str  # a check that failed: "✗ REFUSED"
    dot: str  # a separator between facts: "v2 · site a"
    skip: str  # a check not run
    bullet: str  # the active version
    ellipsis: str  # work under way, or text cut short
    dash: str  # between the title and the subtitle
    icon: str  # the header's icon


UNICODE = Glyphs(False, "✓", "✗", "·", "·", "●", "…", "—", "⭘")
ASCII = Glyphs(True, "OK", "X", "-", "-", "*", "...", "-", "*")

# Terminals whose font cannot draw the symbols above (the Linux console, a serial line).
ASCII_TERMS = frozenset({"linux", "vt100", "vt102", "vt220", "ansi", "dumb"})

_chosen = UNICODE


def choose(env: Mapping[str, str] | None = None) -> Glyphs:
    """Decide once, at start-up: ASCII when ``APPLIANCE_ASCII=1`` or ``TERM`` is the Linux
    console (or another terminal of ``ASCII_TERMS``), else Unicode. ``APPLIANCE_ASCII=0``
    forces Unicode."""
    global _chosen
    e = os.environ if env is None else env
    flag = e.get("APPLIANCE_ASCII", "")
    if flag in ("0", "1"):
        _chosen = ASCII if flag == "1" else UNICODE
    else:
        _chosen = ASCII if e.get("TERM", "") in ASCII_TERMS else UNICODE
    return _chosen


def glyphs() -> Glyphs:
    """The glyphs chosen at start-up (``choose``); every screen draws with these."""
    return _chosen


def size(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 MiB``, ``64.0 GiB``."""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def rate(bytes_per_s: float) -> str:
    return f"{size(int(bytes_per_s))}/s"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``, ``4d3h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def short_id(keyid: str, n: int = 16) -> str:
    return keyid[:n]


def when(dt: datetime) -> str:
    return format_time(dt)


def relative(dt: datetime, now: datetime) -> str:
    """``in 29d23h`` or ``3m05s ago``."""
    delta = (dt - now).total_seconds()
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"


def tail(text: str, n: int) -> str:
    """The end of ``text`` in at most ``n`` characters: ``…/media/usb0``."""
    cut = glyphs().ellipsis
    return text if len(text) <= n else cut + text[-(n - len(cut)) :]


def stamp(text: str) -> str:
    """A stored ``YYYY-MM-DDTHH:MM:SSZ`` as ``YYYY-MM-DD HH:MM`` (UTC) for narrow tables."""
    return text.replace("T", " ")[:16]


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def value(v: object) -> str:
    """A stored value for the screen: strings as they are, the rest as JSON; control
    characters escaped, and in the ASCII mode anything above U+007F as ``\\uXXXX``."""
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text.encode("ascii", "backslashreplace").decode() if glyphs().ascii else text


def event_fields(event: Mapping[str, object], detail_first: bool = False) -> list[tuple[str, str]]:
    """Every field of an audit or history event as ``(label, text)`` rows: the top-level
    fields that hold a value, in the event's order, and each field of ``detail`` (all of
    them, nulls included) as ``detail.KEY`` (first with ``detail_first``). Nothing is cut:
    the pane wraps and scrolls."""
    top = [(k, value(v)) for k, v in event.items() if k != "detail" and v is not None]
    detail = event.get("detail")
    inner: list[tuple[str, str]] = []
    if isinstance(detail, Mapping):
        inner = [(f"detail.{k}", value(detail[k])) for k in sorted(detail)]
    elif detail is not None:
        inner = [("detail", value(detail))]
    return inner + top if detail_first else top + inner
