"""The watcher: kernel notifications and the database's change signal, judged in one loop.

``Watcher(home, witness_path).run(stop)`` runs until ``stop`` is set (in a
thread inside ``appliance serve``, or in the foreground for ``appliance
watch``). Each turn (at most ``TICK`` seconds apart) it reads inotify events,
polls ``PRAGMA data_version``, re-judges paths that were deferred while the
appliance held the home lock, and every ``FULL_EVERY`` seconds re-checks
everything. An alarm goes to every sink at once (stderr, JSON lines, syslog: see
``appliance.watch.report``) and then, from a writer thread so that a busy
database never delays the next alarm, into the audit log.
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance import audit, witness
from appliance.db import Database
from appliance.home import Home
from appliance.watch.alarms import Alarm, record
from appliance.watch.dbstate import DbMonitor, Stats
from appliance.watch.loop import FULL_EVERY, LOCK_PATIENCE, Loop
from appliance.watch.objects import ObjectBaseline, hash_matches, referenced
from appliance.watch.report import stderr_sink, syslog_sink
from appliance.watch.scrub import Scrubber, ScrubProgress
from appliance.watch.witnesswatch import WitnessMonitor
from bundles.errors import ApplianceError, StateSuspectError

Sink = Callable[[Alarm], None]


def _stderr(text: str) -> None:
    if sys.stderr is not None:  # (None: closed; ``print`` would write it to stdout)
        print(text, file=sys.stderr, flush=True)


class Watcher:
    """Watch one home; ``sinks`` get every alarm as it is raised (default: stderr and the
    system log). Inside ``appliance serve``::

        threading.Thread(target=Watcher(home, witness_path).run, args=(stop,)).start()
    """

    def __init__(
        self,
        home: Home | Path,
        witness_path: Path | None = None,
        *,
        sinks: tuple[Sink, ...] | None = None,
        scrub_rate: int = 0,
        record_alarms: bool = True,
        full_every: float = FULL_EVERY,
        lock_patience: float = LOCK_PATIENCE,
    ) -> None:
        self.home = home if isinstance(home, Home) else Home(Path(home))
        self.home.require()
        if sinks is None:  # embedded (serve): stderr and the system log
            log = syslog_sink()
            sinks = (stderr_sink(),) if log is None else (stderr_sink(), log)
        self.sinks = sinks
        self.record_alarms = record_alarms
        self.full_every = full_every
        self.lock_patience = lock_patience
        self.raised: list[Alarm] = []
        self.active: set[tuple[str, str, str]] = set()
        self.ready = threading.Event()
        self.stats = Stats()
        self._lock = threading.Lock()
        self._scrub_alarms: queue.SimpleQueue[Alarm] = queue.SimpleQueue()
        self._to_record: queue.SimpleQueue[tuple[Alarm, tuple[int, str]] | None] = (
            queue.SimpleQueue()
        )
        self._seen_head: tuple[int, str] = (0, "")
        self.on_error: Callable[[str], None] = _stderr
        self.scrubber = (
            Scrubber(self.home, scrub_rate, self._scrub_alarms.put) if scrub_rate > 0 else None
        )
        db = self.home.db()
        try:
            self.witness_path = witness.configured_path(db, witness_path)
        finally:
            db.conn.close()

    # -- public --------------------------------------------------------------------------

    def scrub_progress(self) -> ScrubProgress | None:
        return None if self.scrubber is None else self.scrubber.snapshot()

    def check_once(self, *, hash_objects: bool = True) -> list[Alarm]:
        """Check everything now (``watch --once``); alarms go to sinks and the log."""
        mon = DbMonitor(self.home.db_path)
        try:
            found = mon.baseline()
            self._seen_head = mon.state.head
            try:
                audit.verify_chain(mon.db)
            except StateSuspectError as e:
                found.append(Alarm(e.code, "audit", e.message))
            base = ObjectBaseline(self.home)
            base.set_refs(referenced(mon.db))
            found += base.scan()[0]  # a fresh baseline: nothing to compare with
            found += [
                base.alarm_for("unknown_object", p, "no record references this file")
                for p in base.unknown_files()
            ]
            if hash_objects:
                bad = {a.subject for a in found}
                for digest, (size, _ref) in base.refs.items():
                    path = self.home.objects / digest[:2] / digest
                    if str(path.relative_to(self.home.root)) in bad or not path.exists():
                        continue
                    if not hash_matches(path, digest, size):
                        found.append(
                            base.alarm_for("object_modified", path, "stored bytes no longer match")
                        )
            found += WitnessMonitor(self.witness_path).check(mon.db)
        finally:
            mon.close()
        for a in found:
            self._raise(a)
        self._record_pending()
        return found

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set."""
        writer = threading.Thread(target=self._writer, name="watch-audit", daemon=True)
        writer.start()
        try:
            self._loop(stop)
        finally:
            self._to_record.put(None)
            writer.join(timeout=35)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        loop = Loop(
            self.home,
            self.witness_path,
            full_every=self.full_every,
            emit=self._raise,
            on_error=self.on_error,
            cleared=self._clear,
        )
        loop.lock_patience = self.lock_patience
        self.stats = loop.mon.stats
        scrub_stop = threading.Event()
        scrub_thread = None
        try:
            for a in loop.start():
                self._raise(a)
            self._seen_head = loop.mon.state.head
            if self.scrubber is not None:
                scrub_thread = threading.Thread(
                    target=self.scrubber.run, args=(scrub_stop,), name="watch-scrub", daemon=True
                )
                scrub_thread.start()
            self.ready.set()
            while not stop.is_set():
                alarms = loop.turn()
                self._seen_head = loop.mon.state.head
                while True:
                    try:
                        alarms.append(self._scrub_alarms.get_nowait())
                    except queue.Empty:
                        break
                for a in alarms:
                    self._raise(a)
        finally:
            scrub_stop.set()
            if scrub_thread is not None:
                scrub_thread.join(timeout=10)
            loop.close()

    def _clear(self, path: Path) -> None:
        """Alarms about an object judged fine again may be raised anew."""
        rel = str(path.relative_to(self.home.root))
        with self._lock:
            self.active = {k for k in self.active if k[1] != rel}

    def _raise(self, alarm: Alarm) -> None:
        with self._lock:
            if alarm.key in self.active:
                return
            self.active.add(alarm.key)
            self.raised.append(alarm)
        for sink in self.sinks:
            sink(alarm)
        if self.record_alarms:
            self._to_record.put((alarm, self._seen_head))

    # -- recording -----------------------------------------------------------------------

    def _record_pending(self) -> None:
        items = []
        while True:
            try:
                item = self._to_record.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            items.append(item)
        self._record_all(items)

    def _writer(self) -> None:
        self._record_all(iter(self._to_record.get, None))

    def _record_all(self, items: Iterable[tuple[Alarm, tuple[int, str]]]) -> None:
        """Record alarms into the audit log. The database is opened at the first alarm and
        again after a failure: one that does not open or write (overwritten, locked,
        swapped) costs that alarm its audit event, reported through ``on_error`` (every
        sink has had it already), never the writer thread, so later alarms are recorded
        once the database reads again."""
        db: Database | None = None
        try:
            for item in items:
                if db is None:
                    try:
                        db = self.home.db()
                    except (ApplianceError, sqlite3.Error) as e:
                        self._not_recorded(item[0], e)
                        continue
                if not self._record_one(db, *item):
                    db.conn.close()
                    db = None
        finally:
            if db is not None:
                db.conn.close()

    def _record_one(self, db: Database, alarm: Alarm, seen_head: tuple[int, str]) -> bool:
        try:
            record(db, alarm, seen_head)
        except (ApplianceError, sqlite3.Error) as e:
            self._not_recorded(alarm, e)
            return False
        return True

    def _not_recorded(self, alarm: Alarm, e: ApplianceError | sqlite3.Error) -> None:
        why = e.message if isinstance(e, ApplianceError) else str(e)
        self.on_error(
            f"appliance: alarm {alarm.code} for {alarm.subject} not recorded in the "
            f"audit log: {why}"
        )


__all__ = ["Watcher"]
