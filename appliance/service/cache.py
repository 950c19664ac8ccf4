"""What the service verified, kept in memory until someone else changes the stored evidence.

The service is the only process that reads the home and no database writer
can reach its memory, so it may remember that a record's signed manifest
verified and that its active pointer was authorized, and the parsed trust
state. It forgets all of it whenever **another** process commits to the
database (an import, a rollback, a trust update, a direct load, the
watcher): SQLite increments the file change counter in the database header
(offset 24, rollback-journal mode) once per committed write transaction. The
service's own commits (its load events, written by ``Journal`` on its own
connection) are told to the cache as they happen (``ChangeCounter.own``) and
do not count as changes: they touch nothing provenance depends on. A
replaced database file (another inode) is a change too. Entries are keyed by
the full record (name, version, digest, size, stream, sequence, active), so
a different row is never served a stale answer.

Also remembered: which record ``NAME[@VERSION]`` names (so that, with no
witness configured, a load reads nothing from the database and never waits
for the journal's commits). What is *not* cached: the bytes (every load
copies and re-hashes them), the grant decision (made per load from the
current ``TrustState``), the witness check. ``verifications`` and
``trust_loads`` count the real work, so tests pin "once per change, not once
per load" by counting.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from appliance.db import Database
from appliance.errors import IOFailedError
from appliance.store import Record, find
from appliance.trust import TrustState
from appliance.truststore import load_trust
from appliance.verify import check_provenance


class ChangeCounter:
    """The database header's change counter, and which increments were our own commits.

    The journal commits in the open: between SQLite writing the new counter into the
    header and the journal learning that its ``COMMIT`` succeeded, a reader may already
    see the new value. So the journal first says which value its commit will make
    (``expect``, inside its write transaction, when no one else can commit), then
    ``own`` (committed) or ``abandon`` (failed). A reader who meets the expected value
    waits for that verdict (at most ``PENDING_WAIT`` seconds, then it counts as
    someone else's change): a value is taken as ours only once our commit of it has
    succeeded.
    """

    PENDING_WAIT = 5.0

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._where = os.fspath(db_path)
        try:
            self.fd = os.open(db_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise IOFailedError(f"cannot open {db_path}: {e.strerror}") from e
        self.inode = os.fstat(self.fd).st_ino
        self._own: set[int] = set()
        self._pending: int | None = None
        self._lock = threading.Lock()
        self._verdict = threading.Condition(self._lock)

    def read(self) -> int:
        """The counter now; -1 when the file at the path is no longer the one we opened."""
        try:
            if os.stat(self._where).st_ino != self.inode:
                return -1
        except OSError:
            return -1
        return int.from_bytes(os.pread(self.fd, 4, 24), "big")

    def expect(self, value: int) -> None:
        """Our journal's commit, under way, will make the counter ``value``."""
        with self._lock:
            self._pending = value

    def own(self, value: int) -> None:
        """Our journal committed and the counter became ``value``."""
        with self._lock:
            self._own.add(value)
            if self._pending == value:
                self._pending = None
            self._verdict.notify_all()

    def abandon(self) -> None:
        """Our journal's commit failed: the value it expected is not ours."""
        with self._lock:
            self._pending = None
            self._verdict.notify_all()

    def only_own_since(self, seen: int, now: int) -> bool:
        if seen < 0 or now < seen:
            return False
        with self._lock:
            deadline = time.monotonic() + self.PENDING_WAIT
            while self._pending is not None and seen < self._pending <= now:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._verdict.wait(left)
            ok = all(v in self._own for v in range(seen + 1, now + 1))
            self._own = {v for v in self._own if v > now}
        return ok

    def close(self) -> None:
        os.close(self.fd)


class EvidenceCache:
    """Trust state and provenance results for the service's read connection (call under its
    lock)."""

    def __init__(self, db: Database, counter: ChangeCounter) -> None:
        self.db = db
        self.counter = counter
        self._seen: int | None = None
        self._trust: TrustState | None = None
        self._proven: dict[Record, frozenset[str]] = {}
        self._records: dict[tuple[str, str | None], Record] = {}
        self.verifications = 0
        self.trust_loads = 0
        self.invalidations = 0

    def _current(self) -> None:
        now = self.counter.read()
        if now == self._seen and now >= 0:
            return
        if self._seen is None or now < 0 or not self.counter.only_own_since(self._seen, now):
            self._trust = None
            self._proven.clear()
            self._records.clear()
            self.invalidations += 1
        self._seen = now

    def trust(self) -> TrustState:
        self._current()
        if self._trust is None:
            self._trust = load_trust(self.db)
            self.trust_loads += 1
        return self._trust

    def find(self, db: Database, name: str, version: str | None) -> Record:
        """``store.find``, remembered until another process commits (``NotFoundError`` is
        never remembered)."""
        self._current()
        key = (name, version)
        rec = self._records.get(key)
        if rec is None:
            rec = find(db, name, version)
            if len(self._records) > 65536:
                self._records.clear()
            self._records[key] = rec
        return rec

    def provenance(self, db: Database, record: Record) -> frozenset[str]:
        """``check_provenance`` once per record per change of the stored evidence."""
        trust = self.trust()
        signers = self._proven.get(record)
        if signers is None:
            signers = check_provenance(db, trust, record)
            self.verifications += 1
            if len(self._proven) > 65536:
                self._proven.clear()
            self._proven[record] = signers
        return signers
