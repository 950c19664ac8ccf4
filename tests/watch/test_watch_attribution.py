"""What makes a change the appliance's own: the home lock, chained events, and nothing else."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest_load import Site
from watch_world import DEADLINE, MARGIN, Watched, make_writable, start

import appliance
from appliance.home import HomeLock
from appliance.importer import import_bundle
from appliance.store import FS_IMMUTABLE_FL, FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, find, object_path
from appliance.watch import homelock
from bundles.errors import ApplianceError


def test_lock_seen_in_proc_locks_from_another_process(site: Site) -> None:
    lock = site.h.lock_path
    lock.touch()
    assert not homelock.lock_held(lock)
    holder = _hold_lock(lock)
    try:
        assert homelock.lock_held(lock)
        # Reading /proc/locks never takes the lock: an import would still get it afterwards.
    finally:
        holder.kill()
        holder.wait()
    assert not homelock.lock_held(lock)
    with HomeLock(site.h):
        assert homelock.lock_held(lock)


def test_a_file_promoted_under_the_lock_waits_for_the_commit(watched: Watched) -> None:
    home = watched.site.h
    planted = home.objects / "cd" / ("cd" + "1" * 62)
    with HomeLock(home):
        planted.parent.mkdir(exist_ok=True)
        planted.write_bytes(b"an import's object, before its commit")
        time.sleep(1.0)
        assert watched.alarms == []  # the import may still commit a record for it
    t = time.monotonic()
    _, took = watched.wait("unknown_object", t)  # no commit came: nothing references it
    assert took < DEADLINE - MARGIN
    assert watched.codes() == {"unknown_object"}


def test_the_alarm_event_never_explains_the_tampering(watched: Watched) -> None:
    site = watched.site
    conn = sqlite3.connect(site.h.db_path, isolation_level=None)
    conn.execute("UPDATE active SET version = '1.0' WHERE name = 'model'")
    conn.close()
    watched.wait("pointer_unauthorized", time.monotonic())
    time.sleep(0.5)  # the alarm is in the log now
    res = site.cli("--witness", str(site.witness), "watch", "--once", "--json", check=4)
    assert res.json["error"]["code"] == "pointer_unauthorized"
    # And loads still refuse: the alarm moved no pointer.
    with pytest.raises(ApplianceError) as e:
        appliance.load("model", home=site.h, witness=site.witness)
    assert e.value.code == "pointer_unauthorized"


def test_incremental_chain_checks_count_only_new_events(watched: Watched) -> None:
    site = watched.site
    start_hashed = watched.watcher.stats.events_hashed
    n = 40
    for _ in range(n):
        with appliance.load("tool", home=site.h, witness=site.witness):
            pass
    time.sleep(0.5)
    stats = watched.watcher.stats
    assert stats.full_checks == 1, stats
    assert stats.events_hashed - start_hashed == n, stats  # one per new event, never the log
    assert watched.alarms == []


def _set_immutable(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_IMMUTABLE_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def test_repair_clears_the_immutable_flag_first(tmp_path: Path, site: Site) -> None:
    db = site.h.db()
    rec = find(db, "model", "1.0")
    db.conn.close()
    path = object_path(site.h, rec.digest)
    make_writable(path)
    with open(path, "r+b") as f:
        f.write(b"rot")
    os.chmod(path, 0o444)
    if not _set_immutable(path):
        pytest.skip("this file system has no immutable inode flag")
    w = start(site)
    try:
        bundle = site.bundle({"model@1.0": b"one " * 1000})
        result = import_bundle(site.h, bundle, witness_path=site.witness)
        assert [a["status"] for a in result.to_dict()["artifacts"]] == ["repaired"]
        with appliance.load("model@1.0", home=site.h, witness=site.witness) as art:
            assert art.read() == b"one " * 1000
        time.sleep(0.5)
        # The watcher saw the damage at start (its own full stat pass cannot: same size),
        # and the repair is no alarm.
        assert "object_replaced" not in w.codes(), w.codes()
    finally:
        w.stop.set()
        w.thread.join(timeout=30)


def test_big_log_edit_found_by_block_not_by_rehashing_the_log(site: Site) -> None:
    from appliance import audit
    from appliance.db import transaction
    from appliance.watch.dbstate import BLOCK

    db = site.h.db()
    with transaction(db):
        for _ in range(3 * BLOCK):
            audit.append(db, "load", outcome="verified", name="tool", detail={"digest": "0"})
    db.conn.close()
    w = start(site)
    try:
        deadline = time.monotonic() + 30
        while w.watcher.stats.chain_passes < 1:  # the rolling verifier went through once
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert w.watcher.stats.chain_hashed >= 3 * BLOCK
        before = w.watcher.stats.events_hashed
        conn = sqlite3.connect(site.h.db_path, isolation_level=None)
        t = time.monotonic()
        conn.execute("UPDATE audit SET detail = '{}' WHERE seq = 20")
        conn.close()
        _, took = w.wait("audit_chain_broken", t)
        assert took < DEADLINE - MARGIN
        # Found by comparing block fingerprints: only the partial tail block was re-hashed.
        assert w.watcher.stats.events_hashed - before <= BLOCK
        assert w.codes() == {"audit_chain_broken"}
    finally:
        w.stop.set()
        w.thread.join(timeout=30)


def _hold_lock(lock: Path) -> subprocess.Popen[bytes]:
    """Another process (a writer of the home) takes the home lock and keeps it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def test_holding_the_lock_does_not_keep_a_planted_file_unjudged(site: Site) -> None:
    """An attacker who can write the home can take its lock too: holding it defers the
    judgement of a file no record references only ``lock_patience`` seconds, never for
    as long as the lock is held."""
    planted = site.h.objects / "cd" / ("cd" + "2" * 62)
    holder = _hold_lock(site.h.lock_path)
    w = start(site, lock_patience=1.5)
    try:
        t = time.monotonic()
        planted.parent.mkdir(exist_ok=True)
        planted.write_bytes(b"an object no import will commit")
        time.sleep(0.8)
        assert w.alarms == []  # an import holding the lock may still commit it
        alarm, took = w.wait("unknown_object", t, timeout=8)
        assert alarm.subject == str(planted.relative_to(site.h.root))
        assert "home lock was held" in alarm.message
        assert took >= 1.4  # held back, then judged while the lock is still held
        assert holder.poll() is None
        assert w.codes() == {"unknown_object"}
    finally:
        holder.kill()
        holder.wait()
        w.stop.set()
        w.thread.join(timeout=30)


def test_a_full_pass_under_a_held_lock_judges_unknown_files_too(site: Site) -> None:
    """The full pass (every ``full_every`` seconds, and after the kernel's event queue
    overflowed) skipped the unknown-file scan while the lock was held; now each file it
    finds waits ``lock_patience`` like one the kernel reported."""
    from appliance.watch.loop import Loop
    from appliance.watch.notify import Batch

    got: list[object] = []
    loop = Loop(
        site.h,
        site.witness,
        full_every=300,
        emit=got.append,
        on_error=got.append,
        cleared=lambda p: None,
    )
    try:
        assert loop.start() == []
        planted = site.h.objects / "cd" / ("cd" + "3" * 62)
        planted.parent.mkdir(exist_ok=True)
        planted.write_bytes(b"planted where no event is read")
        holder = _hold_lock(site.h.lock_path)
        try:
            now = time.monotonic()
            assert loop._files(Batch(), True, now) == []  # held back: the lock is held
            assert loop._files(Batch(), False, now + 60) == []
            late = loop._files(Batch(), False, now + loop.lock_patience)
            assert [(a.code, a.subject) for a in late] == [
                ("unknown_object", str(planted.relative_to(site.h.root)))
            ]
            assert loop._files(Batch(), False, now + loop.lock_patience + 1) == []  # once
        finally:
            holder.kill()
            holder.wait()
    finally:
        loop.close()


def test_a_baseline_taken_under_a_held_lock_holds_unknown_files_back(site: Site) -> None:
    """A watcher started while an import holds the lock (its promoted files not yet
    committed) no longer raises unknown_object at once for them: each waits for the
    commit at most ``lock_patience``, then is judged; with the lock free, at once."""
    from appliance.watch.loop import Loop
    from appliance.watch.notify import Batch

    def loop() -> Loop:
        return Loop(
            site.h,
            site.witness,
            full_every=300,
            emit=lambda a: None,
            on_error=lambda m: None,
            cleared=lambda p: None,
        )

    planted = site.h.objects / "cd" / ("cd" + "4" * 62)
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"promoted by an import that has not committed yet")
    subject = str(planted.relative_to(site.h.root))
    holder = _hold_lock(site.h.lock_path)
    held = loop()
    try:
        assert held.start() == []  # held back
        now = time.monotonic()
        assert held._files(Batch(), False, now) == []
        late = held._files(Batch(), False, now + held.lock_patience)
        assert [(a.code, a.subject) for a in late] == [("unknown_object", subject)]
    finally:
        holder.kill()
        holder.wait()
        held.close()
    free = loop()
    try:
        assert [(a.code, a.subject) for a in free.start()] == [("unknown_object", subject)]
    finally:
        free.close()
