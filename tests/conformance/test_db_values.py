"""A writer of the database puts a value of the wrong type or shape in a column.

Whatever it is (text where a number belongs, bytes where text belongs, a number where a key
id belongs), every command answers with a clear error and its exit code, or goes on;
never an internal error (exit 3, "this is a bug"). One case per column of the tables the
commands read, the same commands each time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .driver import Site, cli, home_files, outside_db

# (table, column, the row it changes): the rows of m, the active model, where it has them
COLUMNS = [
    ("artifacts", "digest", "name = 'm'"),
    ("artifacts", "size", "name = 'm'"),
    ("artifacts", "release", "name = 'm'"),
    ("artifacts", "sequence", "name = 'm'"),
    ("artifacts", "stream", "name = 'm'"),
    ("artifacts", "version", "name = 'm' AND version = '2.0'"),
    ("artifacts", "imported_at", "name = 'm'"),
    ("active", "version", "name = 'm'"),
    ("active", "moved_at", "name = 'm'"),
    ("names", "release", "name = 'm'"),
    ("names", "stream", "name = 'm'"),
    ("streams", "sequence", "rowid = (SELECT min(rowid) FROM {table})"),
    ("manifests", "envelope", "rowid = (SELECT min(rowid) FROM {table})"),
    ("manifests", "sequence", "rowid = (SELECT min(rowid) FROM {table})"),
    ("keys", "public_pem", "rowid = (SELECT min(rowid) FROM {table})"),
    ("keys", "added_version", "rowid = (SELECT min(rowid) FROM {table})"),
    ("keys", "revoked_version", "rowid = (SELECT min(rowid) FROM {table})"),
    ("keys", "role", "rowid = (SELECT min(rowid) FROM {table})"),
    ("thresholds", "threshold", "rowid = (SELECT min(rowid) FROM {table})"),
    ("trust_documents", "envelope", "rowid = (SELECT min(rowid) FROM {table})"),
    ("audit", "ts", "seq = 3"),
    ("audit", "prev_hash", "seq = 3"),
    ("audit", "hash", "seq = 3"),
    ("audit", "version", "seq = 3"),
]
VALUES = {"text": "x", "bytes": b"\x00\xff", "real": 1.5}
COMMANDS = [
    ("list",),
    ("verify",),
    ("history", "m"),
    ("trust", "show"),
    ("audit", "verify"),
]


@pytest.mark.parametrize("value", list(VALUES), ids=list(VALUES))
@pytest.mark.parametrize(
    ("table", "column", "where"), COLUMNS, ids=[f"{t}.{c}" for t, c, _ in COLUMNS]
)
def test_a_value_no_writer_writes_is_never_an_internal_error(
    site: Site, home: Path, tmp_path: Path, table: str, column: str, where: str, value: str
) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        conn.execute(
            f"UPDATE {table} SET {column} = ? WHERE {where.format(table=table)}", [VALUES[value]]
        )
    conn.close()
    before = home_files(home)
    for args in (*COMMANDS, ("load", "m", "-o", tmp_path / "out.bin")):
        r = cli(home, *args)
        assert r.code != "internal_error", f"{' '.join(map(str, args))}: {r}"
        assert r.rc in (0, 4), f"{' '.join(map(str, args))}: {r}"  # goes on, or state suspect
        if args[0] != "load":
            assert home_files(home) == before, f"{' '.join(map(str, args))} wrote to the home"
    if r.rc != 0:  # a refused load hands nothing over and touches no object
        assert not (tmp_path / "out.bin").exists()
        assert outside_db(home_files(home)) == outside_db(before)
