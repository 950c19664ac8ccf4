"""``audit verify_chain``: the fast encoder path gives the reference rule's verdict."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from conftest_load import make_site

from appliance import audit
from appliance.db import Database, transaction
from appliance.errors import AuditChainError


def _append(db: Database, detail: dict[str, object], name: str | None) -> None:
    with transaction(db):
        audit.append(db, "load", outcome="verified", name=name, detail=detail)


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("model", {"digest": "ab" * 32}),
        ("mod\u00e8le-\U0001f600", {"note": "caf\u00e9 \u2028 \x00 \x1f"}),  # the fallback
        ("m\x7f", {"k": 'quote " and backslash \\'}),
    ],
)
def test_verifies_what_append_wrote(tmp_path: Path, name: str, detail: dict[str, object]) -> None:
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for _ in range(3):
            _append(db, detail, name)
        count, head = audit.verify_chain(db)
        assert (count, head) == audit.head(db)
    finally:
        db.conn.close()


@pytest.mark.parametrize("column", ["detail", "name", "ts", "hash", "prev_hash"])
def test_an_edited_event_breaks_the_chain(tmp_path: Path, column: str) -> None:
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for i in range(4):
            _append(db, {"i": i}, "model")
        seq = audit.head(db)[0] - 1
        value = (
            json.dumps({"i": 99}) if column == "detail" else ("x" * 64 if "hash" in column else "y")
        )
        db.execute(f"UPDATE audit SET {column} = ? WHERE seq = ?", [value, seq])
        with pytest.raises(AuditChainError) as exc:
            audit.verify_chain(db)
        assert exc.value.code == "audit_chain_broken"
    finally:
        db.conn.close()


def test_a_removed_event_breaks_the_chain(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for i in range(4):
            _append(db, {"i": i}, "model")
        db.execute("DELETE FROM audit WHERE seq = ?", [audit.head(db)[0] - 2])
        with pytest.raises(AuditChainError):
            audit.verify_chain(db)
    finally:
        db.conn.close()


def test_sqlite_writes_the_event_bytes_the_encoder_writes(tmp_path: Path) -> None:
    """``verify_chain``'s SQL (``_SQL_BODY``) gives ``_fast_body``'s bytes, escapes too."""
    rng = random.Random(7)
    alphabet = string.printable + "\u00e9\u2028\x00\x1f\x7f\U0001f600\"\\{}%'"
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for _ in range(200):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
            _append(db, {"note": text}, text or None)
        cols = ", ".join(audit.FIELDS)
        rows = db.execute(f"SELECT {audit._SQL_BODY}, {cols} FROM audit ORDER BY seq").fetchall()
        for body, *values in rows:
            assert body.encode() == audit._fast_body(dict(zip(audit.FIELDS, values, strict=True)))
        assert audit.verify_chain(db) == audit.head(db)
    finally:
        db.conn.close()


@pytest.mark.parametrize("value", [b"\x00blob", 1.5, 7])
def test_a_value_of_another_type_is_judged_not_crashed_on(tmp_path: Path, value: object) -> None:
    """A column edited to a BLOB (SQLite's json_quote refuses it: the Python walk
    decides), a real or an integer: ``audit verify`` exits 4 ``audit_chain_broken``
    with a one-line message, never a traceback, and changes nothing."""
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for i in range(4):
            _append(db, {"i": i}, "model")
        db.execute("UPDATE audit SET name = ? WHERE seq = ?", [value, audit.head(db)[0] - 1])
    finally:
        db.conn.close()
    before = (site.h.db_path).read_bytes()
    res = site.cli("--json", "audit", "verify")
    assert res.code == 4, res
    assert res.json["error"]["code"] == "audit_chain_broken", res.json
    assert "Traceback" not in res.stderr
    assert site.h.db_path.read_bytes() == before


def _relink(db: Database) -> None:
    """Recompute every event's links (the chain has no key: a database writer can)."""
    prev = audit.GENESIS
    cols = ", ".join(audit.FIELDS)
    for row in db.execute(f"SELECT {cols} FROM audit ORDER BY seq").fetchall():
        event = dict(zip(audit.FIELDS, row, strict=True))
        digest = audit.event_hash(prev, event)
        db.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, digest, event["seq"]]
        )
        prev = digest


@pytest.mark.parametrize("walk", ["_verify_chain_sql", "_verify_chain_rows"])
@pytest.mark.parametrize("detail", ["not json {", "[1, 2]", "null", '"text"'])
def test_a_relinked_detail_that_is_not_an_object_is_refused(
    tmp_path: Path, walk: str, detail: str
) -> None:
    """Both walks (SQLite's and the Python one it falls back to) refuse an event whose
    detail is not a JSON object even when every later hash was recomputed around it."""
    site = make_site(tmp_path)
    db = site.h.db()
    try:
        for i in range(4):
            _append(db, {"i": i}, "model")
        seq = audit.head(db)[0] - 1
        db.execute("UPDATE audit SET detail = ? WHERE seq = ?", [detail, seq])
        _relink(db)
        with pytest.raises(AuditChainError) as exc:
            getattr(audit, walk)(db)
        assert exc.value.seq == seq
        assert "has a detail that is not a JSON object" in str(exc.value)
    finally:
        db.conn.close()
