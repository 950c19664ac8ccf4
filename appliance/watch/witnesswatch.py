"""The witness as the watcher last saw it: it may only move forward with the home.

Appliance writes replace the witness atomically with the home's current
counters, so a legitimate witness is always the home now or a little behind it
(``witness.check``: current or home ahead) and its audit position never goes
back, except after an audited ``witness reset``. Anything else (gone,
unreadable, ahead of the home, gone backwards) is ``witness_changed``.
"""

from __future__ import annotations

from pathlib import Path

from appliance import witness
from appliance.db import Database
from appliance.watch.alarms import Alarm
from bundles.errors import ApplianceError


class WitnessMonitor:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen_seq = 0
        self.resets_seen = 0

    def check(self, db: Database, *, witness_touched: bool = True) -> list[Alarm]:
        """``witness_touched``: the witness file changed (else the home did): a home now
        behind its witness is ``witness_changed`` in the first case, ``state_rolled_back``
        in the second."""
        if self.path is None:
            return []
        subject = str(self.path)
        if not self.path.exists():  # needs no database: judged even when that is broken
            return [Alarm("witness_changed", subject, "witness vanished")]
        try:
            result = witness.check(db, self.path)
        except ApplianceError as e:
            return [Alarm("witness_changed", subject, f"witness is unreadable: {e.message}")]
        if result.status is witness.WitnessStatus.MISSING:
            return [Alarm("witness_changed", subject, "witness vanished")]
        if result.status is witness.WitnessStatus.BEHIND:
            return [
                Alarm(
                    "witness_changed" if witness_touched else "state_rolled_back",
                    subject,
                    f"witness no longer matches the home: {result.detail}",
                )
            ]
        seq = int((result.witness or {}).get("audit_seq", 0))
        resets = int(
            db.execute("SELECT count(*) FROM audit WHERE type = 'witness_reset'").fetchone()[0]
        )
        went_back = seq < self.seen_seq and resets == self.resets_seen
        self.seen_seq = seq
        self.resets_seen = resets
        if went_back:
            return [
                Alarm(
                    "witness_changed",
                    subject,
                    f"witness went backwards to audit event {seq} with no witness reset",
                )
            ]
        return []
