"""The database overwritten outside SQLite under a running service, then put back.

While the bytes are not a database every load is refused (exit 4, nothing handed
over) and the service stays up; once the operator restores the file, loads are
served again. Nothing from the failed looks may linger (an open read
transaction would hold the database's lock against the appliance's own writes).
"""

from __future__ import annotations

import sqlite3
import time

from service_world import World, ask

from bundles.documents import AllowLoader


def test_loads_are_refused_while_the_database_is_garbage_and_served_after_a_restore(
    root_world: World,
) -> None:
    w = root_world
    db_path = w.serving_root()
    saved = db_path.read_bytes()
    with open(db_path, "r+b") as f:
        f.write(b"\xff" * 100)
    for _ in range(3):
        r = ask(w.sock, "model")
        assert r.fds == [], r.doc
        assert r.doc["exit_code"] == 4, r.doc
        assert r.code in ("store_corrupt", "state_unauthorized"), r.doc
    assert w.proc is not None and w.proc.poll() is None
    db_path.write_bytes(saved)
    r = ask(w.sock, "model")
    assert r.code is None and len(r.fds) == 1, r.doc
    r.close()
    # No lock is left behind: an appliance write (here a plain one) goes through at once.
    conn = sqlite3.connect(db_path, timeout=0.5)
    with conn:
        conn.execute("SELECT 1 FROM meta").fetchall()
        conn.execute("BEGIN IMMEDIATE")
    conn.close()
    assert w.stop() == 0


def test_a_witness_that_cannot_be_brought_forward_is_its_own_error_not_internal(
    root_world: World,
) -> None:
    """The load's event is committed, then the witness write fails (here: a FIFO planted
    at its lock's name): the loader gets witness_unreadable (exit 4) and no descriptor,
    never internal_error."""
    import os

    from appliance import witness
    from appliance.home import Home

    w = root_world
    w.apply(AllowLoader("root", "models"))
    path = w.tmp / "witness" / "w.json"
    db = Home(w.home).db()
    try:
        witness.write(db, path, adopt=True)
    finally:
        db.conn.close()
    w.start("--witness", str(path))
    r = ask(w.sock, "model")
    assert r.code is None and len(r.fds) == 1, r.doc
    r.close()
    lock = path.parent / ".w.json.lock"
    lock.unlink()
    os.mkfifo(lock)
    r = ask(w.sock, "model")
    assert r.fds == [] and r.code == "witness_unreadable" and r.doc["exit_code"] == 4, r.doc
    # The load is on record (verified), and so is that it never reached the loader (that
    # event is queued right after the reply: the journal commits it next).
    deadline = time.monotonic() + 10
    while not w.events("load_undelivered") and time.monotonic() < deadline:
        time.sleep(0.02)
    last = w.events("load")[-1]
    [undelivered] = w.events("load_undelivered")
    assert last["outcome"] == "verified"
    assert (undelivered["outcome"], undelivered["code"]) == ("failed", "witness_unreadable")
    assert undelivered["seq"] > last["seq"]
    lock.unlink()
    r = ask(w.sock, "model")
    assert r.code is None and len(r.fds) == 1, r.doc
    r.close()
    assert w.stop() == 0
