"""RFC 8785 canonical JSON: the only serializer whose bytes get signed."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from bundles.errors import (
    ManifestFormatError,
    ManifestTooLargeError,
    NestingTooDeepError,
    RejectedError,
)

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_NESTING = 32


def canonical_bytes(obj: Any) -> bytes:
    """Serialize ``obj`` as RFC 8785 canonical JSON (UTF-8 bytes)."""
    try:
        return bytes(rfc8785.dumps(obj))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise ValueError(f"cannot canonicalize: {e}") from e


def pretty(obj: Any) -> str:
    """Human-readable JSON; never signed."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def check_nesting(data: bytes, limit: int = MAX_NESTING) -> None:
    """Refuse JSON nested deeper than ``limit`` by scanning bytes, before parsing.

    Brackets inside strings do not count; escapes inside strings are skipped.
    """
    depth = 0
    in_string = False
    escape = False
    for byte in data:
        if in_string:
            if escape:
                escape = False
            elif byte == 0x5C:  # backslash
                escape = True
            elif byte == 0x22:  # quote
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                raise NestingTooDeepError(f"JSON nested deeper than {limit} levels")
        elif byte in (0x7D, 0x5D):
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise ManifestFormatError(f"JSON constant {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestFormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def parse_json(
    data: bytes,
    *,
    what: str = "document",
    max_bytes: int = MAX_DOCUMENT_BYTES,
    error: type[RejectedError] = ManifestFormatError,
) -> Any:
    """Parse untrusted JSON with the limits checked first.

    Size, then nesting depth, then a strict parse (UTF-8 only, no duplicate
    keys, no NaN/Infinity). Raises only ``RejectedError`` subclasses.
    """
    if len(data) > max_bytes:
        raise ManifestTooLargeError(f"{what} is {len(data)} bytes, over the {max_bytes} limit")
    check_nesting(data)
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8: {e.reason}") from e
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError as e:
        raise NestingTooDeepError(f"{what} nested too deeply") from e
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON: {e.msg} at byte {e.pos}") from e
    except ValueError as e:  # e.g. an integer over Python's 4,300-digit conversion limit
        raise error(f"{what} is not acceptable JSON: {e}") from e
