"""Validation of artifact names, versions, streams, sites and bundle paths.

Everything here is applied to untrusted, already authenticated manifests and
to archive member names; each failure raises its own ``RejectedError``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bundles.errors import BadNameError, DuplicateNameError, PathTooLongError, UnsafePathError

MAX_PATH_BYTES = 1024
MAX_NAME_CHARS = 128

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadNameError(f"{what} must be a non-empty string")
    if value.isascii() and value.isprintable():  # fast path: no control character, NFC
        return value
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in value):
        raise BadNameError(f"{what} {value!r} contains control or unassigned characters")
    if unicodedata.normalize("NFC", value) != value:
        raise BadNameError(f"{what} {value!r} is not in Unicode NFC form")
    return value


def check_identifier(value: object, what: str) -> str:
    """Streams, sites, versions: ASCII letters, digits and ``._+-``."""
    text = _check_text(value, what)
    if len(text) > MAX_NAME_CHARS or not _IDENT.match(text):
        raise BadNameError(
            f"{what} {text!r} must match [A-Za-z0-9][A-Za-z0-9._+-]* "
            f"(at most {MAX_NAME_CHARS} characters)"
        )
    return text


def check_artifact_name(value: object) -> str:
    """Artifact names: ASCII segments separated by ``/``; no ``..``."""
    text = _check_text(value, "artifact name")
    if len(text) > MAX_NAME_CHARS or not _NAME.match(text) or ".." in text.split("/"):
        raise BadNameError(
            f"artifact name {text!r} must be /-separated segments of [A-Za-z0-9][A-Za-z0-9._-]*"
        )
    return text


def check_relative_path(value: object, what: str = "path") -> str:
    """A relative POSIX path: NFC, no control characters, no absolute, no ``..``."""
    if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathTooLongError(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    if isinstance(value, str) and value.startswith("/"):
        raise UnsafePathError(f"{what} {value!r} is absolute")
    text = _check_text(value, what)
    if "\\" in text:
        raise UnsafePathError(f"{what} {text!r} contains a backslash")
    parts = text.split("/")
    for part in parts:
        if part == "..":
            raise UnsafePathError(f"{what} {text!r} climbs out with '..'")
        if part in ("", "."):
            raise UnsafePathError(f"{what} {text!r} has an empty or '.' segment")
    return text


def fold(value: str) -> str:
    """The key under which two names count as the same (NFKC, case folded)."""
    return unicodedata.normalize("NFKC", value).casefold()


def check_unique(values: Iterable[str], what: str) -> None:
    seen: dict[str, str] = {}
    for v in values:
        k = fold(v)
        if k in seen:
            raise DuplicateNameError(f"{what} {v!r} collides with {seen[k]!r}")
        seen[k] = v
