"""The service's work per load, counted: its own commits never invalidate what it verified,
a small load is served by the accept loop (no worker hand-over) and replied to from the
journal thread right after its commit, and a reader too slow for that reply still gets it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from service_world import MODEL_V2, World, ask

from appliance import audit
from appliance.home import Home
from appliance.service import server as server_module
from appliance.service.cache import ChangeCounter
from appliance.service.identity import unit_of
from appliance.service.journal import Journal
from appliance.service.server import Config, Server, bind_socket
from bundles.documents import AllowLoader, RevokeKey


@contextmanager
def in_process(w: World, name: str) -> Iterator[tuple[Server, Path]]:
    sock = w.tmp / name
    server = Server(Config(Home(w.home)), [bind_socket(sock)])
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    try:
        yield server, sock
    finally:
        server.stop()
        t.join(60)
        assert not t.is_alive()


def _wait_for(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_concurrent_loads_verify_once_their_own_commits_never_invalidate(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    with in_process(w, "counts.sock") as (server, sock):
        errors: list[object] = []
        seqs: list[int] = []
        lock = threading.Lock()

        def loader() -> None:
            for _ in range(20):
                r = ask(sock, "model")
                with lock:
                    if r.doc.get("ok") and os.pread(r.fds[0], 1 << 20, 0) == MODEL_V2:
                        seqs.append(r.doc["event"])
                    else:
                        errors.append(r.doc)
                r.close()

        threads = [threading.Thread(target=loader, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [] and len(set(seqs)) == 16 * 20
        # 320 loads, many group commits of the service's own: evidence read once.
        assert server.cache.invalidations == 1
        assert server.cache.trust_loads == 1
        assert server.cache.verifications == 1
        assert server.journal.batches < 320
        # Another process's commit still counts, and today's trust still decides.
        w.apply(RevokeKey(w.site.publisher.keyid))
        r = ask(sock, "model")
        assert r.code == "revoked_key" and r.fds == []
        assert server.cache.trust_loads == 2
    verified = {e["seq"] for e in w.events() if e["outcome"] == "verified"}
    assert set(seqs) <= verified  # every handed-over descriptor has its committed event


def test_a_small_load_is_served_by_the_accept_loop_not_a_worker(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    with in_process(w, "inline.sock") as (server, sock):
        for _ in range(25):
            r = ask(sock, "model")
            assert r.doc["ok"] and os.pread(r.fds[0], 1 << 20, 0) == MODEL_V2
            r.close()
        # The first request names an object of a size not yet known: a worker serves it.
        assert server.handed_to_workers == 1
        _wait_for(lambda: server.served == 25)  # counted just after the send
        # A refusal takes the request off the accept loop again (it waits for its event).
        w.apply(RevokeKey(w.site.publisher.keyid))
        assert ask(sock, "model").code == "revoked_key"
        assert ask(sock, "model").code == "revoked_key"
        assert server.handed_to_workers == 2
    assert len([e for e in w.events() if e["code"] == "revoked_key"]) == 2


def test_a_reply_the_journal_cannot_send_at_once_is_still_delivered(
    root_world: World, monkeypatch: pytest.MonkeyPatch
):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    real = socket.send_fds
    deferred: list[str] = []

    def would_block(sock: socket.socket, buffers: list[bytes], fds: list[int], *a: int) -> int:
        if a and a[0] & socket.MSG_DONTWAIT:
            deferred.append(threading.current_thread().name)
            raise BlockingIOError("pretend the peer's buffer is full")
        return real(sock, buffers, fds, *a)

    monkeypatch.setattr(server_module.socket, "send_fds", would_block)
    with in_process(w, "slow.sock") as (server, sock):
        for _ in range(3):
            r = ask(sock, "model")
            assert r.doc["ok"] and os.pread(r.fds[0], 1 << 20, 0) == MODEL_V2
            r.close()
        assert deferred == ["audit-journal"] * 3  # first tried from the journal thread
        _wait_for(lambda: server.served == 3)


def test_a_reader_meeting_the_journals_pending_commit_waits_for_its_verdict(tmp_path: Path):
    db = tmp_path / "x.db"
    db.write_bytes(bytes(100))
    counter = ChangeCounter(db)
    try:
        counter.expect(8)
        answer: list[bool] = []
        t = threading.Thread(
            target=lambda: answer.append(counter.only_own_since(7, 8)), daemon=True
        )
        t.start()
        time.sleep(0.1)
        assert answer == []  # waiting: 8 may or may not become ours
        counter.own(8)
        t.join(10)
        assert answer == [True]
        # A failed commit: the value it expected is someone else's change.
        counter.expect(9)
        t = threading.Thread(
            target=lambda: answer.append(counter.only_own_since(8, 9)), daemon=True
        )
        t.start()
        time.sleep(0.1)
        counter.abandon()
        t.join(10)
        assert answer == [True, False]
        # No verdict in time: not ours (fail closed).
        counter.PENDING_WAIT = 0.05
        counter.expect(10)
        assert counter.only_own_since(9, 10) is False
    finally:
        counter.close()


def test_a_name_that_now_names_a_large_object_goes_to_a_worker(root_world: World):
    w = root_world
    w.apply(AllowLoader("root", "models"))
    big = bytes(range(256)) * 512  # 128 KiB: above INLINE_MAX
    with in_process(w, "large.sock") as (server, sock):
        for _ in range(3):
            ask(sock, "model").close()
        assert server.handed_to_workers == 1
        w.ship({"model@3": big})
        r = ask(sock, "model")
        assert r.doc["ok"] and r.doc["record"]["version"] == "3"
        assert os.pread(r.fds[0], 1 << 20, 0) == big
        r.close()
        # The accept loop took it for a small load, found the large record, handed it over.
        assert server.handed_to_workers == 2
        ask(sock, "model").close()
        assert server.handed_to_workers == 3  # now known to be large: straight to a worker
    assert [e["outcome"] for e in w.events()[-2:]] == ["verified", "verified"]


def test_stop_waits_for_a_holder_and_commits_what_it_submits(root_world: World):
    home = Home(root_world.home)
    db = home.db()
    counter = ChangeCounter(home.db_path)
    journal = Journal(db, counter, None)
    try:
        journal.hold()
        stopper = threading.Thread(target=journal.stop, daemon=True)
        stopper.start()
        time.sleep(0.2)
        assert stopper.is_alive()  # a reply still being sent may yet record an event
        fut = journal.submit(
            "load_undelivered",
            {"outcome": "failed", "code": "client_gone", "name": "model", "detail": {}},
        )
        journal.release()
        stopper.join(30)
        assert not stopper.is_alive()
        seq = fut.result(timeout=1)
        assert audit.verify_chain(db)[0] >= seq
    finally:
        counter.close()
        db.conn.close()


def test_unit_of_reads_the_innermost_service_of_the_systemd_hierarchy():
    assert unit_of("0::/system.slice/loader.service\n") == "loader.service"
    assert unit_of("0::/system.slice/a.service/b.service/x\n") == "b.service"
    assert unit_of("9:name=systemd:/system.slice/v1.service\n8:pids:/x.service\n") == "v1.service"
    assert unit_of("8:pids:/x.service\n9:name=systemd:/user.slice\n") is None
    assert unit_of("0::/user.slice/user-0.slice/session-1.scope\n") is None
    assert unit_of("") is None
