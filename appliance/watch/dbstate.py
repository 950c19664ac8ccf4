"""The state database as the watcher last verified it, and what a change to it means.

The signal is ``PRAGMA data_version`` on a dedicated read-only connection: it
moves whenever another connection commits. Every appliance transaction appends
an audit event, so a change is attributed by the events it added:

* the event the watcher last saw at the head must still be there, unchanged, and
  every new event must extend the chain from it (checked incrementally: only
  the new events are hashed); else ``audit_chain_broken``;
* no new event at all: no appliance transaction made the change. Full check:
  the whole chain, every pointer and record with the core's own checks
  (``appliance.provenance``), the trust state (``load_trust``), and a
  fingerprint of every other table: a changed table is an alarm of its class;
* only events that change nothing but the log (loads, refusals, alarms,
  acknowledgements, scrub progress): any other table that changed is an alarm;
* events that change state (imports, rollbacks, trust updates, repairs, ...):
  the names they touch are re-checked with the core's checks, the trust state
  too when trust tables moved.

Big logs stay affordable: past events are compared by a cheap fingerprint of
each complete block of ``BLOCK`` events (no canonical re-hash; the appliance
never rewrites an event, so any difference is ``audit_chain_broken``); only the
partial tail block and new events are re-hashed. The whole chain is re-hashed
by ``RollingChain``, a slice of ``SLICE`` events per turn, each in its own
short read transaction, so writers never wait for a full pass.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.db import Database
from appliance.provenance import Pointers, Records, db_token
from appliance.store import records
from appliance.truststore import load_trust
from appliance.watch.alarms import ACK, ALARM, Alarm
from bundles.errors import ApplianceError, StateSuspectError

# Event types that change nothing but the audit log itself.
LOG_ONLY = frozenset({"load", "load_undelivered", ALARM, ACK, "scrub"})

# A table changed with no event that explains it: the alarm of its class.
TABLE_CODES: dict[str, str] = {
    "active": "pointer_unauthorized",
    "used_authorizations": "pointer_unauthorized",
    "artifacts": "record_unauthorized",
    "names": "record_unauthorized",
    "manifests": "record_unauthorized",
    "keys": "trust_state_unauthorized",
    "thresholds": "trust_state_unauthorized",
    "trust_documents": "trust_state_unauthorized",
    "streams": "counter_unauthorized",
    "meta": "counter_unauthorized",
}
SCHEMA = "sqlite_master"
BLOCK = 1024
SLICE = 2000
_COLS = ", ".join((*audit.FIELDS, "prev_hash", "hash"))


def open_reader(path: Path) -> Database:
    """A read-only connection that never writes (not even a journal mode)."""
    target = ":memory:" if str(path) == ":memory:" else f"file:{path}?mode=ro"
    conn = sqlite3.connect(
        target, uri=True, timeout=30, isolation_level=None, check_same_thread=False
    )
    return Database(conn)


def fingerprint(db: Database) -> dict[str, str]:
    """SHA-256 of every table but the audit log (which the chain covers), and of the schema."""
    out: dict[str, str] = {}
    tables = [
        str(r[0])
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]
    h = hashlib.sha256()
    for row in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"):
        h.update(repr(tuple(row)).encode())
    out[SCHEMA] = h.hexdigest()
    for t in tables:
        if t == "audit":
            continue
        h = hashlib.sha256()
        for row in db.execute(f'SELECT * FROM "{t}" ORDER BY rowid'):
            h.update(repr(tuple(row)).encode())
        out[t] = h.hexdigest()
    return out


def audit_blocks(db: Database, start: int = 0) -> list[str]:
    """Fingerprints of complete blocks of ``BLOCK`` events, from block ``start``."""
    head = audit.head(db)[0]
    complete = head // BLOCK
    out: list[str] = []
    cur = db.execute(
        f"SELECT {_COLS} FROM audit WHERE seq > ? AND seq <= ? ORDER BY seq",
        [start * BLOCK, complete * BLOCK],
    )
    while True:
        rows = cur.fetchmany(BLOCK)
        if len(rows) < BLOCK:
            return out
        out.append(hashlib.sha256(repr(rows).encode()).hexdigest())


def _as_event(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((*audit.FIELDS, "prev_hash", "hash"), row, strict=True))


@dataclass
class Stats:
    """Work counters (tests pin complexity with them, never with time)."""

    polls: int = 0
    changes: int = 0
    events_hashed: int = 0
    full_checks: int = 0
    chain_hashed: int = 0  # by the rolling full-chain verifier
    chain_passes: int = 0
    pointer_checks: int = 0


@dataclass
class DbState:
    """The last verified audit head and table fingerprints."""

    head: tuple[int, str] = (0, audit.GENESIS)
    tables: dict[str, str] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    version: int | None = None


class DbMonitor:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self.db = open_reader(db_path)
        self.state = DbState()
        self.stats = Stats()
        self.state_changes = 0  # how many state-changing appliance events were seen
        self.missing = False  # the database file vanished: retry until it is back
        self._blocks_now: list[str] = []
        self.emit: Callable[[Alarm], None] | None = None  # early alarms of a full check

    def close(self) -> None:
        self.db.conn.close()

    def reopen(self) -> list[Alarm]:
        """The database file was replaced: read the new one, judged against the old baseline."""
        self.db.conn.close()
        self.state.version = None
        try:
            self.db = open_reader(self.path)
            self.db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            self.db = open_reader(Path(":memory:"))
            self.missing = True
            return [Alarm("state_unauthorized", self.path.name, f"state database is gone: {e}")]
        self.missing = False
        return []

    # -- snapshot helpers ---------------------------------------------------------------

    def _begin(self) -> None:
        """A read transaction (one snapshot for the whole look). A database that does not
        read leaves none open, so the next look starts afresh once it reads again."""
        self.db.conn.execute("BEGIN")
        try:
            self.db.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")
            raise

    def _end(self) -> None:
        if self.db.conn.in_transaction:
            self.db.conn.execute("COMMIT")

    def _data_version(self) -> int:
        return int(self.db.conn.execute("PRAGMA data_version").fetchone()[0])

    def moved_on(self) -> bool:
        """True when the database changed since the last poll (a commit not yet looked at)."""
        if self.missing:
            return False
        return self._data_version() != self.state.version

    # -- checks ----------------------------------------------------------------------

    def baseline(self) -> list[Alarm]:
        """The first look: a full check; its state becomes the baseline."""
        self._begin()
        try:
            self.state.version = self._data_version()
            alarms = self.full_check()
            self.state.head = audit.head(self.db)
            self.state.tables = fingerprint(self.db)
            self.state.blocks = self._blocks_now
        finally:
            self._end()
        return alarms

    def full_check(self) -> list[Alarm]:
        """Past events unchanged (by block), every pointer and record, trust: the core's
        checks over the whole state. The chain itself is re-hashed by ``RollingChain``."""
        self.stats.full_checks += 1
        alarms = self._check_blocks()
        alarms += self._check_trust_and_names(None)
        return alarms

    def _check_blocks(self) -> list[Alarm]:
        now = audit_blocks(self.db)
        self._blocks_now = now
        old = self.state.blocks
        for i, (a, b) in enumerate(zip(old, now, strict=False)):
            if a != b:
                return [
                    Alarm(
                        "audit_chain_broken",
                        "audit",
                        f"past audit events {i * BLOCK + 1}-{(i + 1) * BLOCK} were edited",
                    )
                ]
        if len(now) < len(old):
            return [Alarm("audit_chain_broken", "audit", "past audit events were removed")]
        # The partial tail block: re-hash it (at most BLOCK events).
        start = len(now) * BLOCK
        prev = hash_at(self.db, start)
        expected = start + 1
        for row in self.db.execute(
            f"SELECT {_COLS} FROM audit WHERE seq > ? ORDER BY seq", [start]
        ):
            e = _as_event(row)
            self.stats.events_hashed += 1
            if (
                e["seq"] != expected
                or e["prev_hash"] != prev
                or audit.event_hash(prev, e) != e["hash"]
            ):
                return [
                    Alarm(
                        "audit_chain_broken",
                        "audit",
                        f"audit event {expected} was altered or removed",
                    )
                ]
            prev, expected = e["hash"], expected + 1
        return []

    def _check_trust_and_names(self, names: set[str] | None) -> list[Alarm]:
        alarms: list[Alarm] = []
        try:
            trust = load_trust(self.db)
        except StateSuspectError as e:
            return [Alarm(e.code, "trust", e.message)]
        except ApplianceError as e:
            return [Alarm("trust_state_unauthorized", "trust", e.message)]
        recs = records(self.db)
        # Every stored name's pointer, and every active row's: a name with stored
        # records whose active row is gone is judged too (tampering when an audited
        # move set it). One read of the pointer events for all of them (``Pointers``).
        pointers = Pointers(self.db)
        pointer_names = {r.name for r in recs} | {
            str(n) for (n,) in self.db.execute("SELECT name FROM active")
        }
        for name in sorted(pointer_names):
            if names is not None and name not in names:
                continue
            self.stats.pointer_checks += 1
            try:
                pointers.check(name)
            except StateSuspectError as e:
                alarms.append(Alarm(e.code, name, e.message, name=name))
        checks = Records(self.db, trust, db_token(self.db))
        for rec in recs:
            if names is not None and rec.name not in names:
                continue
            ref = f"{rec.name}@{rec.version}"
            try:
                checks.check(rec)
            except StateSuspectError as e:
                alarms.append(Alarm(e.code, ref, e.message, name=rec.name))
            except ApplianceError:
                continue  # signers no longer count today (revoked key): not tampering
        return alarms

    def _new_events(self) -> tuple[list[dict[str, Any]], list[Alarm]]:
        """Events after the last verified head; the head must be intact and extended."""
        seq, hsh = self.state.head
        if seq > 0:
            row = self.db.execute("SELECT hash FROM audit WHERE seq = ?", [seq]).fetchone()
            if row is None or row[0] != hsh:
                what = "removed" if row is None else "altered"
                return [], [
                    Alarm(
                        "audit_chain_broken",
                        "audit",
                        f"audit event {seq}, the head last verified, was {what}",
                        detail={"seen_head": {"seq": seq, "hash": hsh}},
                    )
                ]
        cols = ", ".join((*audit.FIELDS, "prev_hash", "hash"))
        new = [
            _as_event(r)
            for r in self.db.execute(f"SELECT {cols} FROM audit WHERE seq > ? ORDER BY seq", [seq])
        ]
        prev_seq, prev = seq, hsh
        for e in new:
            self.stats.events_hashed += 1
            if (
                e["seq"] != prev_seq + 1
                or e["prev_hash"] != prev
                or audit.event_hash(prev, e) != e["hash"]
            ):
                return new, [
                    Alarm(
                        "audit_chain_broken",
                        "audit",
                        f"audit event {e['seq']} does not extend the chain from event {prev_seq}",
                    )
                ]
            prev_seq, prev = e["seq"], e["hash"]
        return new, []

    def poll(self, *, force_full: bool = False) -> tuple[list[Alarm], bool]:
        """Look for a change; return the alarms and whether the state changed at all."""
        self.stats.polls += 1
        if self.missing:
            if not self.path.exists() or self.reopen():
                return [], False
        self._begin()
        try:
            version = self._data_version()
            if version == self.state.version and not force_full:
                return [], False
            self.state.version = version
            self.stats.changes += 1
            return self._on_change(force_full), True
        finally:
            self._end()

    def _on_change(self, force_full: bool) -> list[Alarm]:
        new, alarms = self._new_events()
        tables = fingerprint(self.db)
        changed = {t for t, fp in tables.items() if self.state.tables.get(t) != fp}
        changed |= set(self.state.tables) - set(tables)
        state_events = [e for e in new if not _log_only(e)]
        full = not new or force_full
        if full:
            # The cheap, specific checks first (pointers, records, trust, tables), sent at
            # once; then the past-event blocks, whose cost grows with the log.
            self.stats.full_checks += 1
            alarms += self._check_trust_and_names(None)
        elif state_events:
            self.state_changes += 1
            names = {str(e["name"]) for e in state_events if e["name"]}
            unknown = any(e["type"] not in _KNOWN for e in state_events)
            alarms += self._check_trust_and_names(None if unknown else names)
        if not state_events:
            raised = {a.code for a in alarms}
            for t in sorted(changed):
                code = TABLE_CODES.get(t, "state_unauthorized")
                if code not in raised:
                    raised.add(code)
                    alarms.append(
                        Alarm(code, t, f"table {t} changed with no audited appliance transaction")
                    )
        if full:
            if self.emit is not None:
                for a in alarms:
                    self.emit(a)
                alarms = []
            alarms += self._check_blocks()
        self.state.head = audit.head(self.db)
        self.state.tables = tables
        if not new or force_full:
            self.state.blocks = self._blocks_now
        else:  # only blocks completed by the new events are added
            self.state.blocks = self.state.blocks + audit_blocks(self.db, len(self.state.blocks))
        return alarms

    def chain_step(self, chain: RollingChain) -> list[Alarm]:
        """One slice of the rolling full-chain verification, in its own read transaction."""
        self._begin()
        try:
            return chain.step(self.db, self.stats)
        finally:
            self._end()


def hash_at(db: Database, seq: int) -> str:
    """The hash of event ``seq`` (the genesis value for 0)."""
    if seq == 0:
        return audit.GENESIS
    row = db.execute("SELECT hash FROM audit WHERE seq = ?", [seq]).fetchone()
    return "" if row is None else str(row[0])


class RollingChain:
    """``audit.verify_chain`` in slices: link and hash every event from the genesis."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.prev = audit.GENESIS
        self.done = False

    def restart(self) -> None:
        self.next_seq, self.prev, self.done = 1, audit.GENESIS, False

    def step(self, db: Database, stats: Stats) -> list[Alarm]:
        if self.done:
            return []
        rows = db.execute(
            f"SELECT {_COLS} FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?",
            [self.next_seq, SLICE],
        ).fetchall()
        if self.next_seq > 1 and hash_at(db, self.next_seq - 1) != self.prev:
            self.restart()  # an event before the slice changed since: the block check reports it
            return [Alarm("audit_chain_broken", "audit", "an audit event verified earlier changed")]
        for row in rows:
            e = _as_event(row)
            stats.chain_hashed += 1
            if (
                e["seq"] != self.next_seq
                or e["prev_hash"] != self.prev
                or audit.event_hash(self.prev, e) != e["hash"]
            ):
                self.restart()
                self.done = True
                return [
                    Alarm(
                        "audit_chain_broken",
                        "audit",
                        f"audit event {self.next_seq} was altered or removed: chain broken",
                    )
                ]
            self.prev, self.next_seq = e["hash"], self.next_seq + 1
        if len(rows) < SLICE:
            self.done = True
            stats.chain_passes += 1
        return []


_KNOWN = frozenset({"import", "bundle_import", "rollback", "trust_update", "repair"})


def _log_only(event: dict[str, Any]) -> bool:
    if event["type"] in LOG_ONLY:
        return True
    return bool(event["outcome"] == "rejected")


def detail_of(event: dict[str, Any]) -> dict[str, Any]:
    return audit.detail_dict(event["detail"])
