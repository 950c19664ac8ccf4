"""No descriptor of the state database is closed under SQLite's locks (POSIX locks are per
process: closing any descriptor of the file drops them all, SQLite's included)."""

from __future__ import annotations

import subprocess
import sys

from service_world import World

from appliance import provenance
from appliance.home import Home

_WRITER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0.3, isolation_level=None)
try:
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', 'x')")
    c.execute("COMMIT")
except sqlite3.OperationalError as e:
    print(e)
    sys.exit(7)
"""


def _other_process_commits(path: str) -> bool:
    p = subprocess.run([sys.executable, "-c", _WRITER, path], capture_output=True, timeout=60)
    assert p.returncode in (0, 7), p.stderr
    return p.returncode == 0


def test_a_db_token_taken_beside_a_read_snapshot_keeps_its_lock(root_world: World):
    home = Home(root_world.home)
    reader, other = home.db(), home.db()
    try:
        reader.conn.execute("BEGIN")
        reader.execute("SELECT count(*) FROM audit").fetchone()  # SHARED held
        assert not _other_process_commits(str(home.db_path))  # the snapshot holds
        for _ in range(3):  # the service's workers take tokens while the journal commits
            assert provenance.db_token(other) is not None
        assert not _other_process_commits(str(home.db_path))  # ... and still holds
        reader.conn.execute("COMMIT")
        assert _other_process_commits(str(home.db_path))
    finally:
        reader.conn.close()
        other.conn.close()
