"""Manifest parsing: limits on bytes first, then strict validation, each with its code."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import make_bundle, resign, sign_payload, write_manifest

from bundles.canonical import canonical_bytes
from bundles.errors import (
    ApplianceError,
    BadNameError,
    DuplicateNameError,
    ManifestFormatError,
    ManifestTooLargeError,
    NestingTooDeepError,
    PathTooLongError,
    TooManyArtifactsError,
    UnsafePathError,
)
from bundles.manifest import (
    MAX_ARTIFACTS,
    MAX_MANIFEST_BYTES,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Manifest,
)
from bundles.reader import open_bundle

B3 = "ab" * 32


def _doc(n: int = 1) -> dict[str, Any]:
    names = [f"art{i}" for i in range(n)]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": a, "digest": {"blake3": B3}} for a in names],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "stream": "main",
            "sequence": 1,
            "issued_at": "2025-01-01T00:00:00Z",
            "expires": "2025-02-01T00:00:00Z",
            "sites": [],
            "any_site": True,
            "artifacts": [
                {
                    "name": a,
                    "version": "1.0",
                    "release": 1,
                    "size": 3,
                    "media_type": "application/octet-stream",
                    "path": f"artifacts/{a}/1.0/data",
                }
                for a in names
            ],
        },
    }


def _parse(doc: Any) -> Manifest:
    return Manifest.from_payload(json.dumps(doc).encode())


def _refused(payload: bytes, cls: type[ApplianceError], code: str) -> ApplianceError:
    with pytest.raises(cls) as info:
        Manifest.from_payload(payload)
    assert info.type is cls, info.value
    assert info.value.code == code
    return info.value


def _edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
    doc = copy.deepcopy(_doc(2))
    edit(doc)
    return json.dumps(doc).encode()


def _art(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = doc["predicate"]["artifacts"][i]
    return entry


def test_round_trip_is_canonical() -> None:
    m = _parse(_doc(3))
    assert Manifest.from_payload(m.to_payload()) == m
    assert m.to_payload() == canonical_bytes(_doc(3))
    assert m.issued_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert m.allows_site("anything") and m.artifact("art1") is not None


# --- limits ------------------------------------------------------------------------


def test_over_the_manifest_cap() -> None:
    doc = _doc()
    doc["predicate"]["stream"] = "x" * MAX_MANIFEST_BYTES
    _refused(json.dumps(doc).encode(), ManifestTooLargeError, "manifest_too_large")


def test_nesting_deeper_than_32() -> None:
    _refused(b"[" * 33 + b"]" * 33, NestingTooDeepError, "nesting_too_deep")
    # 32 levels parse (and fail later for being the wrong shape)
    _refused(b"[" * 32 + b"]" * 32, ManifestFormatError, "malformed_manifest")


def test_brackets_inside_strings_do_not_count() -> None:
    doc = _doc()
    doc["predicate"]["artifacts"][0]["media_type"] = "[" * 100
    _refused(json.dumps(doc).encode(), ManifestFormatError, "malformed_manifest")


def test_more_than_100000_artifacts() -> None:
    doc = _doc()
    doc["subject"] = [{"name": "a", "digest": {"blake3": B3}}] * (MAX_ARTIFACTS + 1)
    _refused(json.dumps(doc).encode(), TooManyArtifactsError, "too_many_artifacts")


def test_path_over_1024_bytes() -> None:
    def edit(doc: dict[str, Any]) -> None:
        _art(doc)["path"] = "artifacts/" + "/".join(["p" * 100] * 11)

    _refused(_edited(edit), PathTooLongError, "path_too_long")


def test_limits_apply_after_signature_in_a_bundle(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    write_manifest(b.path, sign_payload(b"[" * 40 + b"]" * 40, b.keys))
    with pytest.raises(NestingTooDeepError):
        open_bundle(b.path, b.resolver())
    big = json.dumps(_doc()).encode() + b" " * MAX_MANIFEST_BYTES
    write_manifest(b.path, sign_payload(big, b.keys))
    with pytest.raises(ManifestTooLargeError):
        open_bundle(b.path, b.resolver())


# --- names and paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "cls", "code"),
    [
        ("path", "/etc/passwd", UnsafePathError, "unsafe_path"),
        ("path", "artifacts/../../etc/passwd", UnsafePathError, "unsafe_path"),
        ("path", "artifacts\\x", UnsafePathError, "unsafe_path"),
        ("path", "artifacts//x", UnsafePathError, "unsafe_path"),
        ("path", "artifacts/a\x00b", BadNameError, "bad_name"),
        ("path", "artifacts/a\u2028b", BadNameError, "bad_name"),
        ("path", "artifacts/cafe\u0301", BadNameError, "bad_name"),
        ("path", "artifacts/a\u202eb", BadNameError, "bad_name"),
        ("name", "art\x1b0", BadNameError, "bad_name"),
        ("name", "../art0", BadNameError, "bad_name"),
        ("name", "/art0", BadNameError, "bad_name"),
        ("name", "caf\u00e9", BadNameError, "bad_name"),
        ("version", "1.0\n", BadNameError, "bad_name"),
        ("version", "1.0/x", BadNameError, "bad_name"),
    ],
    ids=[
        "path-absolute", "path-dotdot", "path-backslash", "path-empty-segment", "path-nul",
        "path-line-separator", "path-not-nfc", "path-bidi-override", "name-control-char",
        "name-dotdot", "name-absolute", "name-non-ascii", "version-newline", "version-slash",
    ],
)  # fmt: skip
def test_bad_names(field: str, value: str, cls: type[ApplianceError], code: str) -> None:
    def edit(doc: dict[str, Any]) -> None:
        _art(doc)[field] = value
        if field == "name":
            doc["subject"][0]["name"] = value

    _refused(_edited(edit), cls, code)


def test_not_nfc_name_in_subject() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["subject"][0]["name"] = "e\u0301"

    _refused(_edited(edit), BadNameError, "bad_name")


def test_case_fold_collision_between_artifact_names() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["subject"][1]["name"] = _art(doc, 1)["name"] = "ART0"
        _art(doc, 1)["path"] = "artifacts/ART0/1.0/data"

    e = _refused(_edited(edit), DuplicateNameError, "duplicate_name")
    assert "ART0" in e.message


def test_case_fold_collision_between_paths() -> None:
    def edit(doc: dict[str, Any]) -> None:
        _art(doc, 1)["path"] = _art(doc, 0)["path"].upper().replace("ARTIFACTS", "artifacts")

    _refused(_edited(edit), DuplicateNameError, "duplicate_name")


def test_duplicate_site_ids() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"].update(sites=["Site", "site"], any_site=False)

    _refused(_edited(edit), DuplicateNameError, "duplicate_name")


# --- strict shape --------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = doc
        for key in head:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("_type", "https://in-toto.io/Statement/v0.1"),
        ("predicateType", "other"),
        ("extra", 1),
        ("predicate.extra", 1),
        ("predicate.sequence", 0),
        ("predicate.sequence", True),
        ("predicate.sequence", 1.5),
        ("predicate.sequence", 2**53),
        ("predicate.expires", "2024-12-31T00:00:00Z"),
        ("predicate.expires", "2025-02-01 00:00:00"),
        ("predicate.issued_at", "2025-13-01T00:00:00Z"),
        ("predicate.any_site", False),
        ("predicate.sites", ["a"]),
        ("predicate.sites", "a"),
        ("predicate.artifacts", []),
        ("predicate.artifacts.0.size", -1),
        ("predicate.artifacts.0.release", 0),
        ("predicate.artifacts.0.media_type", "text"),
        ("predicate.artifacts.0.path", "elsewhere/data"),
        ("predicate.artifacts.0.parts", []),
        ("predicate.artifacts.0.parts", [{"path": "artifacts/p0", "size": 2}]),
        ("predicate.artifacts.0.parts", [{"path": "other/p0", "size": 3}]),
        ("predicate.artifacts.0.parts", [{"path": "artifacts/p0", "size": 3, "x": 1}]),
        ("predicate.artifacts.0.version", _DELETE),
        ("subject.0.digest.blake3", "AB" * 32),
        ("subject.0.digest.blake3", "ab" * 31),
        ("subject.0.digest.md5", "ab" * 32),
        ("subject.0.name", "other"),
        ("subject", [{"name": "art0", "digest": {"blake3": B3}}]),
    ],
)
def test_malformed(path: str, value: Any) -> None:
    _refused(_edited(_set(path, value)), ManifestFormatError, "malformed_manifest")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"\xff\xfe",
        b'{"a": 1, "a": 2}',
        b"[NaN]",
        b"[Infinity]",
        b"[" + b"1" * 5000 + b"]",
        b'"\\ud800"',
    ],
)
def test_malformed_bytes(raw: bytes) -> None:
    _refused(raw, ManifestFormatError, "malformed_manifest")


def test_parts_that_add_up_are_fine() -> None:
    def edit(doc: dict[str, Any]) -> None:
        _art(doc)["parts"] = [
            {"path": "artifacts/art0/1.0/data.part0000", "size": 2},
            {"path": "artifacts/art0/1.0/data.part0001", "size": 1},
        ]

    m = Manifest.from_payload(_edited(edit))
    art = m.artifact("art0")
    assert art is not None and [p.size for p in art.files] == [2, 1]


def test_signed_bad_name_in_bundle(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["artifacts"][0]["path"] = "/etc/shadow"

    resign(b.path, edit, b.keys)
    with pytest.raises(UnsafePathError):
        open_bundle(b.path, b.resolver())
