"""One turn of the watcher, and the state it carries from turn to turn.

``Loop.start`` takes the baseline (a full check of the database, the stat of
every object, unknown files, the witness); ``Loop.turn`` reads inotify events
(at most ``TICK`` seconds), polls the database, judges touched and deferred
paths, collects hash results, advances the rolling chain verifier and checks
the witness. Both return alarms; the ``Watcher`` raises them.

A turn that fails on an OS or SQLite error does not end the watch: a database
that no longer reads is the ``state_unauthorized`` alarm (an attacker may have
corrupted it), any other error is reported and the next turn re-checks
everything. So is a database that does not read when the watch starts: each
turn tries the baseline again until it does.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from appliance.home import Home
from appliance.store import object_path
from appliance.watch import homelock
from appliance.watch.alarms import Alarm
from appliance.watch.dbstate import DbMonitor, RollingChain
from appliance.watch.notify import Batch, Notifier
from appliance.watch.objects import Hashed, ObjectBaseline, Seen, Verdict, hash_object, referenced
from appliance.watch.witnesswatch import WitnessMonitor

T = TypeVar("T")
TICK = 0.1
FULL_EVERY = 300.0
# Seconds after a state-changing appliance event (import, repair) during which a rename over
# a referenced object is hashed rather than alarmed at once: the event may trail the commit.
RECENT = 3.0
# Alarms a promotion looks like until its commit is seen: re-judged after the next poll.
SETTLING_CODES = frozenset({"unknown_object", "object_replaced"})
# Hashes in a row of one object that changed while hashed before that is an alarm.
UNSETTLED_TRIES = 3
# Seconds a file that no record references may wait, while the home lock is held, for the
# commit of the import that may have promoted it. An import promotes its objects only
# after every byte was hashed and synced, and commits right after: seconds, whatever the
# bundle's size. Whoever can write the home can also take its lock; holding it must not
# keep a planted file unjudged (docs/WATCH.md).
LOCK_PATIENCE = 120.0


class Loop:
    def __init__(
        self,
        home: Home,
        witness_path: Path | None,
        *,
        full_every: float,
        emit: Callable[[Alarm], None],
        on_error: Callable[[str], None],
        cleared: Callable[[Path], None],
    ) -> None:
        self.home = home
        self.emit = emit
        self.full_every = full_every
        self.on_error = on_error
        self.cleared = cleared
        home.objects.mkdir(exist_ok=True)
        self.notifier = Notifier(home.objects, witness_path, home.db_path)
        self.mon = DbMonitor(home.db_path)
        self.mon.emit = emit
        self.base = ObjectBaseline(home)
        self.wit = WitnessMonitor(witness_path)
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watch-hash")
        self.hashing: dict[Path, Future[Hashed]] = {}
        self.deferred: set[Path] = set()
        # path -> when its judgement was first held back while the home was busy
        self.deferred_since: dict[Path, float] = {}
        self.lock_patience = LOCK_PATIENCE
        self.unsettled: dict[Path, int] = {}  # path -> hashes in a row that did not settle
        self.last_state_event = -RECENT
        self.chain = RollingChain()
        self.last_pass = self.last_full = time.monotonic()
        self.rescan = False
        self.baselined = False

    def close(self) -> None:
        self.hasher.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()
        self.mon.close()

    def start(self) -> list[Alarm]:
        """The baseline. A database that does not read yet (overwritten, truncated) is the
        ``state_unauthorized`` alarm, and every turn tries the baseline again; until one
        is taken nothing else is judged (the objects' references are in the database)."""
        try:
            alarms = self.mon.baseline()
        except sqlite3.DatabaseError as e:
            alarm = self._unreadable(e)
            return [] if alarm is None else [alarm]
        self.baselined = True
        self.last_pass = self.last_full = time.monotonic()
        self.base.set_refs(referenced(self.mon.db))
        alarms += self.base.scan()[0]  # the first baseline: nothing to compare with
        if homelock.lock_held(self.home.lock_path):
            # An import may have promoted files it has not committed yet: each unknown
            # file is judged by the turns, held back at most ``lock_patience``.
            self.deferred.update(self.base.unknown_files())
        else:
            alarms += self._unknown()
        alarms += self.wit.check(self.mon.db)
        return alarms

    def _held_back(self, path: Path, now: float) -> Alarm | None:
        """The ``unknown_object`` alarm of a file held back too long while the home was
        busy (its lock held, or an appliance event just now), else None: wait on."""
        since = self.deferred_since.setdefault(path, now)
        if now - since < self.lock_patience:
            return None
        del self.deferred_since[path]
        return self.base.alarm_for(
            "unknown_object",
            path,
            f"no record references this file, {now - since:.0f} s after it was first seen "
            "while the home lock was held (no import's commit trails its promotion that long)",
        )

    def _unknown(self) -> list[Alarm]:
        return [
            self.base.alarm_for("unknown_object", p, "no record references this file")
            for p in self.base.unknown_files()
        ]

    def turn(self) -> list[Alarm]:
        try:
            batch = self.notifier.read(int(TICK * 1000))
        except OSError as e:
            self.on_error(f"appliance: watch: reading kernel events: {e}")
            batch = Batch(rescan=True)
        if not self.baselined:
            if batch.db_replaced:
                self.mon.reopen()
            return self._guard(self.start, [])
        now = time.monotonic()
        full = now - self.last_full >= self.full_every or batch.rescan or batch.db_replaced
        full = full or self.rescan
        self.rescan = False
        # The database, then the objects and the witness: a database that no longer reads
        # must not stop the judging of object events (the last known references stand).
        none: list[Alarm] = []
        alarms, changed = self._guard(lambda: self._database(batch, full, now), (none, False))
        alarms = alarms + self._guard(lambda: self._files(batch, full, now), none)
        if batch.witness or changed or full:
            alarms += self._guard(
                lambda: self.wit.check(self.mon.db, witness_touched=batch.witness), none
            )
        return alarms

    def _guard(self, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except sqlite3.DatabaseError as e:
            alarm = self._unreadable(e)
            if alarm is not None:
                self.rescan = True
                self.emit(alarm)
            return default
        except OSError as e:
            self.rescan = True
            self.on_error(f"appliance: watch: {e}; re-checking everything")
            return default

    def _unreadable(self, e: sqlite3.DatabaseError) -> Alarm | None:
        """What a failed read of the database is: busy (reported, retried next turn: no
        alarm) or unreadable (``state_unauthorized``: it may have been corrupted)."""
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            self.on_error(f"appliance: watch: database busy, retrying: {e}")
            return None
        return Alarm("state_unauthorized", self.home.db_path.name, f"database unreadable: {e}")

    def _database(self, batch: Batch, full: bool, now: float) -> tuple[list[Alarm], bool]:
        alarms = self.mon.reopen() if batch.db_replaced else []
        before = self.mon.state_changes
        found, changed = self.mon.poll(force_full=full)
        alarms += found
        if self.mon.state_changes != before:
            self.last_state_event = now
        if changed:
            refs = referenced(self.mon.db)
            # Newly committed: sealed by the import's immutable flag, else hashed (another
            # file may have been renamed over it since its promotion).
            unsealed = [
                d for d in set(refs) - set(self.base.refs) if not self.base.accept_if_sealed(d)
            ]
            self.base.set_refs(refs)
            for d in unsealed:
                self._hash(object_path(self.home, d))
        if self.chain.done and now - self.last_pass >= self.full_every:
            self.chain.restart()
            self.last_pass = now
        alarms += self.mon.chain_step(self.chain)
        return alarms, changed

    def _files(self, batch: Batch, full: bool, now: float) -> list[Alarm]:
        alarms: list[Alarm] = []
        busy = homelock.lock_held(self.home.lock_path) or now - self.last_state_event < RECENT
        if full:
            self.last_full = now
            self.notifier.rewatch()
            found, changed = self.base.scan()
            alarms += found
            for path in changed:
                self._hash(path)
            if not busy:
                alarms += self._unknown()
            else:  # judged one by one, each held back at most ``lock_patience``
                self.deferred.update(self.base.unknown_files())
        alarms += self._judge(batch, busy, now)
        return alarms

    def _judge(self, batch: Batch, busy: bool, now: float) -> list[Alarm]:
        alarms: list[Alarm] = []
        paths = dict(batch.paths)
        for p in self.deferred:
            paths.setdefault(p, False)
        self.deferred = set()
        for path, written in paths.items():
            if path in self.hashing:
                self.deferred.add(path)  # judged again once its hash is in
                continue
            j = self.base.judge(path, written, busy)
            if j.verdict is Verdict.DEFER:
                alarm = self._held_back(path, now)
                if alarm is None:
                    self.deferred.add(path)
                else:
                    alarms.append(alarm)
                continue
            self.deferred_since.pop(path, None)
            if j.verdict is Verdict.HASH:
                self._hash(path)
            elif j.verdict is Verdict.ALARM and j.alarm is not None:
                if j.alarm.code in SETTLING_CODES and not written and self._settling():
                    # An import may have promoted, committed and let go of the lock since
                    # the poll: judge again next turn, against the committed references.
                    self.deferred.add(path)
                else:
                    alarms.append(j.alarm)
            else:
                self._accept(path)
        for path, fut in list(self.hashing.items()):
            if not fut.done():
                continue
            del self.hashing[path]
            result = fut.result()
            try:
                # The same inode number is not enough (a freed number is given again): the
                # whole ``lstat``, change time included, must be the hashed descriptor's.
                same = result.seen is not None and Seen.of(os.lstat(path)) == result.seen
            except FileNotFoundError:
                same = False
            tries = self.unsettled.pop(path, 0) + 1
            if result.ok and same:
                self._accept(path, result.seen)
            elif (result.ok or result.seen is None) and tries < UNSETTLED_TRIES:
                # replaced, changed or removed while it was hashed: judge again
                self.unsettled[path] = tries
                self.deferred.add(path)
            elif result.ok or result.seen is None:
                alarms.append(
                    self.base.alarm_for(
                        "object_modified", path, "object kept changing while it was hashed"
                    )
                )
            else:
                alarms.append(
                    self.base.alarm_for(
                        "object_replaced", path, "object was replaced by other bytes"
                    )
                )
        return alarms

    def _settling(self) -> bool:
        """Did the appliance start or finish a change after this turn's poll?"""
        return homelock.lock_held(self.home.lock_path) or self.mon.moved_on()

    def _hash(self, path: Path) -> None:
        """Hash the object at ``path`` in the background (judged when the result is in)."""
        if path in self.hashing:
            return
        digest = path.name
        self.hashing[path] = self.hasher.submit(
            hash_object, path, digest, self.base.refs[digest][0]
        )

    def _accept(self, path: Path, seen: Seen | None = None) -> None:
        """An object judged fine (verified replacement, repair, flag change): accept it,
        with ``seen``, the ``fstat`` of the descriptor that was hashed, as its baseline."""
        if seen is not None and path.name in self.base.refs:
            self.base.accept(path.name, seen)
        self.cleared(path)
