"""What the service verified, kept in memory until the stored evidence changes.

The service is the only process that reads the home and no database writer
can reach its memory, so it may remember that a record's signed manifest
verified and that its active pointer was authorized. It remembers per
``PRAGMA data_version`` of its own connection: SQLite changes that number
whenever *another* connection commits (an import, a rollback, a trust
update, a direct load, the watcher), so any change of the stored evidence
drops everything remembered. The service's own commits (its load events)
do not change it, and they touch nothing provenance depends on. Entries are
keyed by the full record (name, version, digest, size, stream, sequence,
active), so a different row is never served a stale answer.

What is *not* cached: the bytes (every load copies and re-hashes them), the
grant decision (made per load from the current ``TrustState``), the witness
check. ``verifications`` and ``trust_loads`` count the real work, so tests
pin "once per change, not once per load" by counting.
"""

from __future__ import annotations

import sqlite_utils

from appliance.store import Record
from appliance.trust import TrustState
from appliance.truststore import load_trust
from appliance.verify import check_provenance


class EvidenceCache:
    """Trust state and provenance results for one connection; call under its lock."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._data_version: int | None = None
        self._trust: TrustState | None = None
        self._proven: dict[Record, frozenset[str]] = {}
        self.verifications = 0
        self.trust_loads = 0

    def _current(self) -> None:
        row = self.db.execute("PRAGMA data_version").fetchone()
        version = int(row[0])
        if version != self._data_version:
            self._data_version = version
            self._trust = None
            self._proven.clear()

    def trust(self) -> TrustState:
        self._current()
        if self._trust is None:
            self._trust = load_trust(self.db)
            self.trust_loads += 1
        return self._trust

    def provenance(self, db: sqlite_utils.Database, record: Record) -> frozenset[str]:
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
