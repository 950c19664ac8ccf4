"""``audit verify_chain``: the fast encoder path gives the reference rule's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlite_utils
from conftest_load import make_site

from appliance import audit
from appliance.db import transaction
from appliance.errors import AuditChainError


def _append(db: sqlite_utils.Database, detail: dict[str, object], name: str | None) -> None:
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
