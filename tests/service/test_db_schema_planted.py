"""A trigger planted in the state database under a running service.

SQLite would run it inside the service's own audit commits, with the service's authority.
Each commit checks the schema under the write lock first, so from the first batch after
the plant every load is refused (``schema_tampered``, exit 4, no descriptor), the trigger
never runs, and the service stays up; once the trigger is dropped, loads are served again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service_world import World, ask

TRIGGER = "CREATE TRIGGER t AFTER INSERT ON audit BEGIN UPDATE active SET moved_at = 'planted'; END"


def _sql(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_loads_are_refused_while_a_trigger_is_planted_and_served_once_it_is_gone(
    root_world: World,
) -> None:
    w = root_world
    db_path = w.serving_root()
    active = _sql(db_path, "SELECT * FROM active ORDER BY name")
    events = _sql(db_path, "SELECT count(*) FROM audit")
    _sql(db_path, TRIGGER)
    for _ in range(3):
        r = ask(w.sock, "model")
        assert r.fds == [], r.doc
        assert (r.code, r.doc["exit_code"]) == ("schema_tampered", 4), r.doc
    assert w.proc is not None and w.proc.poll() is None
    assert _sql(db_path, "SELECT * FROM active ORDER BY name") == active  # it never ran
    assert _sql(db_path, "SELECT count(*) FROM audit") == events  # nothing was committed
    _sql(db_path, "DROP TRIGGER t")
    r = ask(w.sock, "model")
    assert r.code is None and len(r.fds) == 1, r.doc
    r.close()
    assert w.stop() == 0
