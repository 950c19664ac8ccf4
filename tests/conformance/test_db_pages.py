"""A writer of the home overwrites one page of the database outside SQLite.

The file still opens (its header and ``meta`` are intact), so the damage shows only
when a command reads that table. Every command then refuses with ``store_corrupt``
(exit 4) or, if it never reads that page, goes on; never an internal error (exit 3,
"this is a bug"), and a refused command changes nothing in the home.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from . import test_db_values
from .driver import Site, cli, home_files, outside_db

TABLES = ["artifacts", "active", "manifests", "audit", "keys", "trust_documents", "streams"]
COMMANDS = [*test_db_values.COMMANDS, ("audit", "show")]


def _overwrite_root_page(db_file: Path, table: str) -> None:
    conn = sqlite3.connect(db_file)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    [root] = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
    ).fetchone()
    conn.close()
    with open(db_file, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


@pytest.mark.parametrize("table", TABLES)
def test_a_page_overwritten_outside_sqlite_is_store_corrupt_never_a_bug(
    site: Site, home: Path, tmp_path: Path, table: str
) -> None:
    _overwrite_root_page(home / "appliance.db", table)
    before = home_files(home)
    refused = 0
    for args in (*COMMANDS, ("load", "m", "-o", tmp_path / "out.bin")):
        r = cli(home, *args)
        what = " ".join(map(str, args))
        assert r.code != "internal_error", f"{what}: {r}"
        assert r.rc in (0, 4), f"{what}: {r}"
        if args[0] in ("verify", "load") and table != "streams":
            # Both read every table but streams (high-water marks are derived from the
            # stored manifests; trust show and audit verify compare the table with them).
            assert r.rc == 4, f"{what}: {r}"
        if r.rc == 4:
            refused += 1
            assert r.code == "store_corrupt", f"{what}: {r}"
        if args[0] != "load":
            assert home_files(home) == before, f"{what} wrote to the home"
    assert refused, "no command read the overwritten page"
    if r.rc != 0:  # a refused load hands nothing over and touches no object
        assert not (tmp_path / "out.bin").exists()
        assert outside_db(home_files(home)) == outside_db(before)
