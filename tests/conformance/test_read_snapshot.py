"""The evidence is read from one state of the database, never from two.

``appliance.evidence`` reads the audit log and then the stored manifests. Outside a
transaction each statement sees the database as it is at that moment, so an import
that committed between the two reads showed its manifest without its import event:
a rollback beside a running import failed with ``trust_state_unauthorized`` ("stored
manifest ... has no import event", seen in tests/service/test_concurrency_cache.py).
Here a second connection tries to commit a manifest and its import event exactly
between the two reads: the read must either not see it at all or see both, and the
evidence must stay the same as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance import evidence
from appliance.db import connect


def _writer_between_reads(db: Any, home: Path) -> list[str]:
    """Wrap ``db.execute``: just before the manifests are read, a second connection
    commits a new manifest row with its import event. Returns what the writer saw."""
    seen: list[str] = []
    real: Callable[..., Any] = db.execute

    def execute(sql: str, *args: Any) -> Any:
        if "FROM manifests" in sql and not seen:
            other = sqlite3.connect(home / "appliance.db", timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                env = other.execute("SELECT envelope FROM manifests LIMIT 1").fetchone()[0]
                other.execute(
                    "INSERT INTO manifests VALUES ('models', 99, ?, '2026-01-01T00:00:00Z')",
                    [env],
                )
                other.execute(
                    "INSERT INTO audit (ts, type, outcome, detail, prev_hash, hash) VALUES "
                    "('t', 'bundle_import', 'accepted', "
                    "'{\"stream\": \"models\", \"sequence\": 99}', '', '')"
                )
                other.execute("COMMIT")
                seen.append("committed")
            except sqlite3.OperationalError as e:
                seen.append(f"refused: {e}")
            finally:
                other.close()
        return real(sql, *args)

    db.execute = execute
    return seen


@pytest.mark.parametrize(
    "read",
    [evidence.stream_marks, evidence.name_owners, evidence.time_floors],
    ids=["stream_marks", "name_owners", "time_floors"],
)
def test_a_commit_between_the_reads_is_not_seen_half(
    home: Path, read: Callable[[Any], object]
) -> None:
    db = connect(home / "appliance.db")
    try:
        expected = read(db)
        seen = _writer_between_reads(db, home)
        got = read(db)  # without one snapshot: "stored manifest ... has no import event"
    finally:
        db.conn.close()
    assert seen and seen[0].startswith("refused"), seen  # the read held its snapshot
    assert "locked" in seen[0], seen
    assert got == expected
