"""The audit group commit: K concurrent loads, far fewer than K commits; every event chained."""

from __future__ import annotations

import threading

from service_world import World

from appliance import audit
from appliance.db import transaction
from appliance.home import Home
from appliance.service.cache import ChangeCounter
from appliance.service.journal import Journal


def _fields(i: int, name: str = "model") -> dict:
    return {
        "outcome": "verified",
        "name": name,
        "version": "2",
        "detail": {"digest": "ab" * 32, "loader": {"uid": i, "user": "r\u00e9my\n"}},
    }


def test_append_many_writes_what_append_writes_and_the_chain_verifies(root_world: World):
    db = Home(root_world.home).db()
    try:
        with transaction(db):
            one = audit.append(db, "load", **_fields(0))
        events = [("load", _fields(i)) for i in range(1, 6)]
        events.append(("load", _fields(6, name="mod\u00e8le\u2028x")))  # the slow-hash path
        with transaction(db):
            many = audit.append_many(db, events)
        assert [e["seq"] for e in many] == list(range(one["seq"] + 1, one["seq"] + 7))
        prev = one["hash"]
        for e in many:
            assert e["prev_hash"] == prev and e["hash"] == audit.event_hash(prev, e)
            assert audit.detail_of(e)["trusted_time"] is not None
            prev = e["hash"]
        assert audit.verify_chain(db)[1] == prev
    finally:
        db.conn.close()


def test_k_concurrent_events_take_fewer_than_k_commits(root_world: World):
    home = Home(root_world.home)
    db, blocker = home.db(), home.db()
    counter = ChangeCounter(home.db_path)
    journal = Journal(db, counter, None)
    k = 40
    seqs: list[int] = []
    lock = threading.Lock()
    try:
        blocker.conn.execute("BEGIN IMMEDIATE")  # the journal's first commit waits here
        futures = [journal.submit("load", _fields(i)) for i in range(k)]

        def wait(f) -> None:
            s = f.result(timeout=60)
            with lock:
                seqs.append(s)

        waiters = [threading.Thread(target=wait, args=(f,), daemon=True) for f in futures]
        for t in waiters:
            t.start()
        blocker.conn.execute("COMMIT")
        for t in waiters:
            t.join(60)
        journal.stop()
        assert len(seqs) == k and sorted(seqs) == list(range(min(seqs), min(seqs) + k))
        assert journal.batches <= 2  # one for the first event, one for all queued behind it
        assert audit.verify_chain(db)[0] >= max(seqs)
    finally:
        counter.close()
        db.conn.close()
        blocker.conn.close()
