"""Strict field validators for untrusted, parsed JSON documents."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bundles.errors import ManifestFormatError
from bundles.timeutil import parse_stamp

MAX_INT = 2**53 - 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX64 = re.compile(r"[0-9a-f]{64}")  # a BLAKE3 or SHA-256 digest, with ``fullmatch``


def fail(msg: str) -> ManifestFormatError:
    return ManifestFormatError(msg)


def require_object(
    value: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"{what} must be an object")
    keys = set(value)
    missing = required - keys
    if missing:
        raise fail(f"{what} lacks {', '.join(sorted(missing))}")
    extra = keys - required - optional
    if extra:
        raise fail(f"{what} has unknown field(s) {', '.join(sorted(extra))}")
    return value


def as_int(value: Any, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
        raise fail(f"{what} must be an integer in [{minimum}, 2^53-1]")
    return value


def as_str(value: Any, what: str, max_len: int = 1024) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise fail(f"{what} must be a string of at most {max_len} characters")
    return value


def as_time(value: Any, what: str) -> datetime:
    try:
        return parse_stamp(value)
    except ValueError as e:
        raise fail(f"{what}: {e}") from e


def as_hex(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise fail(f"{what} must be 64 lowercase hex characters")
    return value
