"""A stored manifest is validated at once, never entry by entry (counted, not timed).

* A tiny load from a bundle of N artifacts validates no entry one by one, whatever N: the
  document's entries are shown valid by whole-list checks (``all_entries_valid``) and an
  artifact is made only for the name loaded.
* ``verify`` of N records does the same: one whole-document check, no entry one by one.
* Whatever the whole-list checks cannot show valid is checked entry by entry: each
  malformed document is refused by ``parse_stored`` exactly as by
  ``Manifest.from_payload`` (same error, code and message).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from test_manifest import _doc as manifest_doc

import appliance
from appliance import provenance
from appliance.importer import import_bundle
from appliance.store import records
from appliance.truststore import load_trust
from appliance.verify import verify_records
from bundles import manifest
from bundles.canonical import parse_json
from bundles.errors import RejectedError
from bundles.manifest import Manifest, parse_stored


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    for table in (
        provenance._memo,
        provenance._memo_keyids,
        provenance._row_digests,
        provenance._manifest_cache,
    ):
        table.clear()
    yield


def _site(tmp_path: Path, n: int) -> Site:
    site = make_site(tmp_path)
    import_bundle(site.h, site.bundle({f"a{i}@1": f"a {i}".encode() * 50 for i in range(n)}))
    provenance._manifest_cache.clear()  # the parse the import left
    return site


def _counts() -> tuple[int, int]:
    return manifest.counters["entries_validated"], manifest.counters["entries_valid_at_once"]


@pytest.mark.parametrize("n", [3, 60])
def test_a_tiny_load_validates_no_entry_one_by_one(tmp_path: Path, n: int) -> None:
    site = _site(tmp_path, n)
    one_by_one, at_once = _counts()
    with appliance.load("a1", home=site.home) as art:
        assert art.read() == b"a 1" * 50
    assert _counts() == (one_by_one, at_once + 1)  # the same for 3 and 60 artifacts


@pytest.mark.parametrize("n", [3, 60])
def test_verify_of_n_records_validates_the_entries_at_once(tmp_path: Path, n: int) -> None:
    site = _site(tmp_path, n)
    one_by_one, at_once = _counts()
    db = site.h.db()
    try:
        statuses = [r.status for r in verify_records(site.h, db, load_trust(db), records(db))]
    finally:
        db.conn.close()
    assert statuses == ["ok"] * n
    assert _counts() == (one_by_one, at_once + 1)


B3 = "ab" * 32  # as in tests/test_manifest.py


def _doc() -> dict[str, Any]:
    return manifest_doc(2)  # the unit tests' manifest, two artifacts


def _entry(field: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["artifacts"][0][field] = value

    return edit


def _subject(field: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["subject"][0][field] = value

    return edit


def _digest(value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["subject"][0]["digest"] = value

    return edit


def _both_names(value: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["artifacts"][0]["name"] = doc["subject"][0]["name"] = value

    return edit


EDITS = {
    "path-absolute": _entry("path", "/etc/passwd"),
    "path-dotdot": _entry("path", "artifacts/../x"),
    "path-dot": _entry("path", "artifacts/./x"),
    "path-trailing-slash": _entry("path", "artifacts/x/"),
    "path-only-prefix": _entry("path", "artifacts/"),
    "path-backslash": _entry("path", "artifacts\\x"),
    "path-empty-segment": _entry("path", "artifacts//x"),
    "path-newline": _entry("path", "artifacts/a\nb"),
    "path-nul": _entry("path", "artifacts/a\x00b"),
    "path-not-nfc": _entry("path", "artifacts/cafe\u0301"),
    "path-elsewhere": _entry("path", "elsewhere/data"),
    "path-long": _entry("path", "artifacts/" + "x" * 1100),
    "path-collides": _entry("path", "artifacts/ART1/1.0/DATA"),
    "path-number": _entry("path", 7),
    "name-dotdot": _both_names("../art0"),
    "name-newline": _both_names("art\n0"),
    "name-non-ascii": _both_names("caf\u00e9"),
    "name-long": _both_names("a" * 129),
    "name-collides": _both_names("ART1"),
    "name-entry-only": _entry("name", "other"),
    "name-subject-only": _subject("name", "other"),
    "name-subject-twice": _subject("name", "art1"),
    "version-newline": _entry("version", "1.0\n"),
    "version-slash": _entry("version", "1.0/x"),
    "version-number": _entry("version", 1),
    "release-zero": _entry("release", 0),
    "release-bool": _entry("release", True),
    "release-big": _entry("release", 2**53),
    "size-negative": _entry("size", -1),
    "size-float": _entry("size", 3.0),
    "media-type-bare": _entry("media_type", "text"),
    "media-type-newline": _entry("media_type", "text/plain\n"),
    "media-type-long": _entry("media_type", "a/" + "b" * 300),
    "parts-short": _entry("parts", [{"path": "artifacts/p0", "size": 2}]),
    "parts-fine": _entry("parts", [{"path": "artifacts/p0", "size": 3}]),
    "extra-field": _entry("extra", 1),
    "digest-upper": _digest({"blake3": "AB" * 32}),
    "digest-short": _digest({"blake3": "ab" * 31}),
    "digest-newline": _digest({"blake3": B3 + "\n"}),
    "digest-md5": _digest({"blake3": B3, "md5": B3}),
    "digest-sha256": _digest({"blake3": B3, "sha256": "cd" * 32}),
    "digest-sha256-bad": _digest({"blake3": B3, "sha256": "cd"}),
    "digest-list": _digest([B3]),
    "entry-not-object": lambda doc: doc["predicate"]["artifacts"].__setitem__(0, "x"),
    "subject-not-object": lambda doc: doc["subject"].__setitem__(0, None),
    "no-edit": lambda doc: None,
}


def _outcome(parse: Any, payload: bytes) -> tuple[str, str, str] | tuple[str, Any, Any]:
    try:
        m = parse(payload)
    except RejectedError as e:
        return (type(e).__name__, e.code, e.message)
    names = ("art0", "art1")
    return ("ok", m.stream, [m.artifact(n) for n in names])


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_parse_stored_refuses_and_accepts_as_from_payload(edit: str) -> None:
    doc = copy.deepcopy(_doc())
    EDITS[edit](doc)
    # sorted keys, no spaces (as canonical_bytes writes where it can)
    payload = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert _outcome(parse_stored, payload) == _outcome(Manifest.from_payload, payload)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"b":1,"a":2,"b":3}',
        b"[NaN]",
        b"[Infinity]",
        b"[" + b"1" * 5000 + b"]",
        b"\xff",
        b"[" * 40 + b"]" * 40,
    ],
)
def test_a_stored_payload_is_refused_as_any_document_is(raw: bytes) -> None:
    """Duplicate keys (either of them could be what the signer meant), NaN and
    Infinity, an integer Python will not convert, bytes that are not UTF-8 and deep
    nesting: refused by ``parse_stored`` with ``parse_json``'s own error."""
    with pytest.raises(RejectedError) as info:
        parse_stored(raw)
    with pytest.raises(RejectedError) as reference:
        parse_json(raw, what="manifest")
    assert (type(info.value), info.value.code, info.value.message) == (
        type(reference.value),
        reference.value.code,
        reference.value.message,
    )


@pytest.mark.parametrize("n", [3, 60])
def test_verify_hashes_the_pointer_events_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """The pointer-moving events' hashes are checked from SQLite's bytes in one pass
    (``audit.pointer_rows_linked``): no event is rebuilt in Python to be hashed."""
    from appliance import audit

    site = _site(tmp_path, n)
    rebuilt = {"events": 0}
    real = audit._fast_body

    def fast_body(event: dict[str, Any]) -> bytes:
        rebuilt["events"] += 1
        return real(event)

    monkeypatch.setattr(audit, "_fast_body", fast_body)
    db = site.h.db()
    try:
        statuses = [r.status for r in verify_records(site.h, db, load_trust(db), records(db))]
    finally:
        db.conn.close()
    assert statuses == ["ok"] * n
    assert rebuilt["events"] == 0
