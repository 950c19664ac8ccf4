"""``appliance.db.transaction``: the schema check under the write lock, and errors that
leave it as the appliance's stable errors, never as bare ``sqlite3`` exceptions."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from appliance.db import (
    SCHEMA_VERSION,
    Database,
    check_schema,
    connect,
    foreign_objects,
    set_meta,
    transaction,
)
from appliance.errors import IOFailedError, SchemaTamperedError


def _home_db(tmp_path: Path) -> Database:
    db = connect(tmp_path / "appliance.db", create=True)
    with transaction(db):
        set_meta(db, "schema", str(SCHEMA_VERSION))
    return db


def test_a_new_database_has_exactly_the_appliance_schema(tmp_path: Path) -> None:
    db = _home_db(tmp_path)
    assert foreign_objects(db) == []
    check_schema(db)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        (
            "CREATE TRIGGER t AFTER INSERT ON meta BEGIN DELETE FROM active; END",
            "trigger t on meta",
        ),
        ("CREATE TEMP TABLE scratch (x)", None),  # this connection's own: not the file's
        ("DROP INDEX audit_name", "index audit_name missing"),
        ("ALTER TABLE meta ADD COLUMN x", "table meta"),
    ],
)
def test_a_write_checks_the_schema_under_the_lock_and_writes_nothing(
    tmp_path: Path, sql: str, named: str | None
) -> None:
    db = _home_db(tmp_path)
    db.execute(sql)
    if named is None:
        with transaction(db):
            set_meta(db, "k", "v")
        return
    with pytest.raises(SchemaTamperedError) as e, transaction(db):
        set_meta(db, "k", "v")
    assert named in e.value.message
    assert not db.conn.in_transaction
    assert db.execute("SELECT count(*) FROM meta WHERE key = 'k'").fetchone() == (0,)


class _RollbackFails(sqlite3.Connection):
    """A connection whose ROLLBACK fails as a disk error would make it fail."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


def test_a_rollback_that_fails_is_a_stable_error_not_a_bare_sqlite_one(tmp_path: Path) -> None:
    _home_db(tmp_path).conn.close()
    conn = sqlite3.connect(tmp_path / "appliance.db", isolation_level=None, factory=_RollbackFails)
    db = Database(conn)
    with pytest.raises(IOFailedError) as e, transaction(db):
        set_meta(db, "k", "v")
        raise ValueError("the work failed")
    assert "disk I/O error" in e.value.message
    cause = e.value.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert isinstance(cause.__context__, ValueError)  # what made it roll back is kept
