"""Database and witness tampering raise their alarm within 2 s; the appliance's own work none."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from conftest_load import Site
from watch_world import DEADLINE, MARGIN, Watched

import appliance
from appliance import audit
from appliance.rollback import apply_rollback, authorize_rollback
from appliance.watch import Watcher, unacknowledged


def _only(w: Watched, code: str, since: float, also: frozenset[str] = frozenset()) -> None:
    _, took = w.wait(code, since)
    time.sleep(0.3)
    assert w.codes() == {code} | also, w.codes()
    assert took < DEADLINE - MARGIN, f"{code} after {took:.3f}s"


def _attacker(w: Watched) -> sqlite3.Connection:
    return sqlite3.connect(w.site.h.db_path, isolation_level=None)


def test_pointer_moved_with_sqlite3(watched: Watched) -> None:
    conn = _attacker(watched)
    t = time.monotonic()
    conn.execute("UPDATE active SET version = '1.0' WHERE name = 'model'")
    conn.close()
    _only(watched, "pointer_unauthorized", t)


def test_audit_event_edited(watched: Watched) -> None:
    conn = _attacker(watched)
    seq = conn.execute("SELECT max(seq) FROM audit WHERE type = 'bundle_import'").fetchone()[0]
    t = time.monotonic()
    conn.execute("UPDATE audit SET ts = '2020-01-01T00:00:00Z' WHERE seq = ?", [seq])
    conn.close()
    _only(watched, "audit_chain_broken", t)


def test_audit_tail_removed_and_alarm_does_not_explain_it(watched: Watched) -> None:
    conn = _attacker(watched)
    t = time.monotonic()
    conn.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    conn.close()
    # The home is now also behind its witness (which saw the removed event).
    _only(watched, "audit_chain_broken", t, frozenset({"state_rolled_back"}))
    # The alarm event chains onto the shortened log, but it cites the head it had verified,
    # and it is no pointer move or import: the evidence of the cut is in it.
    time.sleep(0.5)
    db = watched.site.h.db()
    try:
        [raised] = [a for a in unacknowledged(db) if a.code == "audit_chain_broken"]
        event = next(e for e in audit.rows(db) if e["seq"] == raised.seq)
        assert '"seen_head"' in event["detail"]
    finally:
        db.conn.close()


def test_trust_row_added(watched: Watched) -> None:
    conn = _attacker(watched)
    row = conn.execute("SELECT public_pem FROM keys WHERE role = 'publisher'").fetchone()
    t = time.monotonic()
    conn.execute(
        "INSERT INTO keys (keyid, public_pem, role, stream, added_version) VALUES"
        " ('f' || hex(randomblob(31)), ?, 'publisher', 'other', 1)",
        [row[0]],
    )
    conn.close()
    _only(watched, "trust_state_unauthorized", t)


def test_counter_lowered(watched: Watched) -> None:
    conn = _attacker(watched)
    t = time.monotonic()
    conn.execute("UPDATE streams SET sequence = 1")
    conn.close()
    _, took = watched.wait("counter_unauthorized", t)
    assert took < DEADLINE - MARGIN


def test_witness_deleted(watched: Watched) -> None:
    assert watched.site.witness is not None
    t = time.monotonic()
    watched.site.witness.unlink()
    _only(watched, "witness_changed", t)


def test_import_rollback_and_100_loads_raise_nothing(watched: Watched, tmp_path: Path) -> None:
    site = watched.site
    # An import and a rollback from other processes (the real CLI), loads beside them.
    bundle = site.bundle({"model@3.0": b"three " * 5000, "extra@1.0": b"x" * 70000})
    imp = site.cli("--witness", str(site.witness), "import", bundle, check=0)
    assert imp.code == 0
    for _ in range(100):
        with appliance.load("model", home=site.h, witness=site.witness) as art:
            assert art.size
    auth = tmp_path / "auth.json"
    authorize_rollback(auth, "model", "2.0", [site.rollback])
    site.cli("--witness", str(site.witness), "rollback", "model", "--authorization", auth, check=0)
    # And one in this process, through the library.
    _, data = authorize_rollback(None, "model", "1.0", [site.rollback])
    apply_rollback(site.h, "model", data, witness_path=site.witness)
    watched.quiet(1.5)
    stats = watched.watcher.stats
    # Incremental: each change hashes only the events it added, never the whole log again.
    assert stats.full_checks == 1, stats


def test_database_replaced_by_an_older_copy(watched: Watched) -> None:
    """The backup-restore attack: the file renamed over, not written through SQLite."""
    site = watched.site
    old = site.h.root / "old.db"
    old.write_bytes(site.h.db_path.read_bytes())
    with appliance.load("tool", home=site.h, witness=site.witness):
        pass
    time.sleep(0.3)
    t = time.monotonic()
    os.rename(old, site.h.db_path)
    _only(watched, "audit_chain_broken", t, frozenset({"state_rolled_back"}))


def test_database_file_overwritten_raw_is_an_alarm_and_the_watch_goes_on(
    watched: Watched,
) -> None:
    """A writer that bypasses SQLite (garbage over the header): fail closed, keep watching."""
    site = watched.site
    t = time.monotonic()
    with open(site.h.db_path, "r+b") as f:
        f.write(b"\xff" * 100)
    _, took = watched.wait("state_unauthorized", t)
    assert took < DEADLINE - MARGIN
    assert watched.thread.is_alive()
    t = time.monotonic()
    assert site.witness is not None
    os.unlink(site.witness)
    watched.wait("witness_changed", t)


def test_alarms_while_the_database_does_not_open_are_reported_and_later_ones_recorded(
    site: Site,
) -> None:
    """The database overwritten raw before the watch starts: the audit writer cannot open
    it. Each alarm it cannot record is said so (on_error); once the bytes are put back,
    the next alarm reaches the audit log (the writer used to die at its first open)."""
    saved = site.h.db_path.read_bytes()
    stop = threading.Event()
    got = Watched(site, None, stop, None)  # type: ignore[arg-type]
    errors: list[str] = []
    # The Watcher reads the configured witness at construction: build it on good bytes.
    site.h.db_path.write_bytes(saved)
    w = Watcher(site.h, site.witness, sinks=(got.sink,))
    w.on_error = errors.append
    with open(site.h.db_path, "r+b") as f:
        f.write(b"\xff" * 100)
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    got.watcher, got.thread = w, thread
    thread.start()
    try:
        got.wait("state_unauthorized", time.monotonic(), timeout=20)
        deadline = time.monotonic() + 10
        while not any("not recorded" in e for e in errors) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any("state_unauthorized" in e and "not recorded" in e for e in errors), errors
        site.h.db_path.write_bytes(saved)  # the operator restores the database
        time.sleep(0.5)
        t = time.monotonic()
        assert site.witness is not None
        os.unlink(site.witness)
        got.wait("witness_changed", t)
        deadline = time.monotonic() + 10
        recorded: list[str] = []
        while time.monotonic() < deadline:
            db = site.h.db()
            try:
                recorded = [a.code for a in unacknowledged(db)]
            finally:
                db.conn.close()
            if "witness_changed" in recorded:
                break
            time.sleep(0.05)
        assert "witness_changed" in recorded, (recorded, errors)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_database_restored_after_a_raw_overwrite_is_watched_again(watched: Watched) -> None:
    """A look that failed on the unreadable file left its read transaction open, and every
    later poll failed on it: after the restore, a pointer move was never seen."""
    site = watched.site
    saved = site.h.db_path.read_bytes()
    t = time.monotonic()
    with open(site.h.db_path, "r+b") as f:
        f.write(b"\xff" * 100)
    watched.wait("state_unauthorized", t)
    site.h.db_path.write_bytes(saved)
    time.sleep(0.5)
    with watched.lock:
        watched.alarms.clear()
    conn = _attacker(watched)
    t = time.monotonic()
    conn.execute("UPDATE active SET version = '1.0' WHERE name = 'model'")
    conn.close()
    _, took = watched.wait("pointer_unauthorized", t)
    assert took < DEADLINE - MARGIN
    assert not any("transaction" in a.message for _, a in watched.alarms), watched.alarms


def test_trigger_planted_is_schema_tampered(watched: Watched) -> None:
    """A trigger would run inside the appliance's own commits: the watcher names it
    (``schema_tampered``, from the schema check every trust decision makes) beside the
    changed-schema alarm, within the deadline. Its own alarm events cannot be committed
    into a database whose schema is not the appliance's; they are still raised."""
    conn = _attacker(watched)
    events = conn.execute("SELECT count(*) FROM audit").fetchone()
    t = time.monotonic()
    conn.execute(
        "CREATE TRIGGER t AFTER INSERT ON audit BEGIN UPDATE active SET moved_at = 'x'; END"
    )
    _only(watched, "schema_tampered", t, frozenset({"state_unauthorized"}))
    assert conn.execute("SELECT count(*) FROM audit").fetchone() == events  # none committed
    assert conn.execute("SELECT count(*) FROM active WHERE moved_at = 'x'").fetchone() == (0,)
    conn.close()
