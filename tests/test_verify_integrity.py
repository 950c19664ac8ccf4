"""``verify`` checks every page of the state database, not only the rows it judges.

A destroyed page of a table that no record check reads (the streams' sequences, the used
rollback authorizations, the trust documents) let ``verify`` report every artifact
verified, exit 0. Now SQLite's own check (``PRAGMA quick_check``) runs first: the
command refuses with ``store_corrupt`` (exit 4) and writes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from import_env import Env


def _root_page(db: Path, table: str) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return int(root), int(size)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    env = Env(tmp_path)
    env.expect_ok("import", env.bundle({"model@1": b"weights " * 512}))
    return env


def test_verify_of_an_intact_database_passes(env: Env) -> None:
    doc = env.expect_ok("verify")
    assert doc["checked"] == 1 and doc["tampered"] == 0


@pytest.mark.parametrize("table", ["streams", "used_authorizations", "trust_documents"])
def test_a_destroyed_page_of_a_table_verify_does_not_judge_is_store_corrupt(
    env: Env, table: str
) -> None:
    db = env.home / "appliance.db"
    page, size = _root_page(db, table)
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xee" * size)
    before = _digest(db)
    objects = sorted(p.name for p in (env.home / "objects").rglob("*"))
    doc = env.expect_refusal("store_corrupt", "verify", exit_code=4)
    assert "corrupt" in doc["error"]["message"]
    assert _digest(db) == before
    assert sorted(p.name for p in (env.home / "objects").rglob("*")) == objects
