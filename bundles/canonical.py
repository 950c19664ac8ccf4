"""RFC 8785 canonical JSON: the only serializer whose bytes get signed."""

from __future__ import annotations

import json
import re
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


_MAX_SAFE_INT = 2**53 - 1
_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def _plain(obj: Any) -> bool:
    """Only dicts with string keys, lists, strings, booleans, None and integers within
    I-JSON's range: the values for which the C encoder below writes RFC 8785 bytes."""
    stack = [obj]
    while stack:
        o = stack.pop()
        t = type(o)
        if t is str or t is bool or o is None:
            continue
        if t is dict:
            for k, v in o.items():
                if type(k) is not str:
                    return False
                stack.append(v)
        elif t is list:
            stack.extend(o)
        elif t is int:
            if not -_MAX_SAFE_INT <= o <= _MAX_SAFE_INT:
                return False
        else:
            return False
    return True


def canonical_bytes(obj: Any) -> bytes:
    """Serialize ``obj`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Fast path: for plain values (``_plain``) whose text is all ASCII, Python's C JSON
    encoder with sorted keys and no spaces writes exactly the RFC 8785 bytes (same
    escapes: ``\\"``, ``\\\\``, ``\\b\\f\\n\\r\\t``, other controls as
    lowercase ``\\u00xx``; for ASCII keys code-point order is UTF-16 order; integers
    in I-JSON's range print alike). Anything else (floats, non-ASCII text, big
    integers, other types) goes through the ``rfc8785`` package.
    """
    if _plain(obj):
        text = _encode(obj)
        if text.isascii():
            return text.encode("ascii")
    try:
        return bytes(rfc8785.dumps(obj))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise ValueError(f"cannot canonicalize: {e}") from e


def pretty(obj: Any) -> str:
    """Human-readable JSON; never signed."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTED = re.compile(rb'"[^"]*"')
_KEEP = bytes(b for b in range(256) if b not in b'[]{}"')  # deleted: all but these five
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def check_nesting(data: bytes, limit: int = MAX_NESTING) -> None:
    """Refuse JSON nested deeper than ``limit`` by scanning bytes, before parsing.

    Brackets inside strings do not count; escapes inside strings are skipped; an
    unterminated string runs to the end. No Python loop over the bytes, only a few
    scans in C: escape pairs are cut out (when there is a backslash at all);
    everything but brackets and quotes is deleted (``bytes.translate``); adjacent
    quote pairs are deleted (which never changes whether a bracket is inside a
    string); the few strings left that hold brackets are cut out. Then each pass
    deletes every innermost pair (a leaf of the nesting tree, one ``bytes.replace``):
    after ``limit`` passes a pair still left belongs to a tree deeper than ``limit``.
    (On malformed JSON the verdict may differ from a byte-by-byte counter; the
    parser refuses such input anyway.)
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    kept = data.translate(_ONE_KIND, _KEEP).replace(b'""', b"")
    if b'"' in kept:
        kept = _QUOTED.sub(b"", kept)
        cut = kept.find(b'"')  # an unterminated string: nothing after it counts
        if cut >= 0:
            kept = kept[:cut]
    for _ in range(limit):
        if b"[]" not in kept:
            return
        kept = kept.replace(b"[]", b"")
    if b"[]" in kept:
        raise NestingTooDeepError(f"JSON nested deeper than {limit} levels")


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
