"""``audit verify``: is the appliance's own state intact? One core check for the CLI and TUI.

In order: the audit chain links and hashes end to end; the trust state the
tables hold is the one the anchor and the stored root-signed documents give;
every stream's high-water mark is the one its signed manifests give; the home
is not behind its witness, and the witness is there when one is configured.
Each failure is a ``StateSuspectError`` (exit 4) with its own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.db import Database
from appliance.errors import AuditChainError, WitnessMissingError
from appliance.truststore import load_trust, stream_sequences

__all__ = ["IntegrityReport", "check_integrity"]


@dataclass(frozen=True)
class IntegrityReport:
    events: int
    head: str
    trust_version: int
    streams: dict[str, int]
    witness: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "head": self.head,
            "trust_version": self.trust_version,
            "streams": self.streams,
            "witness": self.witness,
        }


def check_integrity(db: Database, witness_path: Path | None) -> IntegrityReport:
    count, head = audit.verify_chain(db)
    # The witness first: a cut-off tail explains missing evidence better than the tables do.
    wcheck = witness.check(db, witness.configured_path(db, witness_path))
    if wcheck.status is witness.WitnessStatus.BEHIND:
        raise AuditChainError(f"audit chain is intact but behind its witness: {wcheck.detail}")
    if wcheck.status is witness.WitnessStatus.MISSING:
        raise WitnessMissingError(f"audit chain is intact but {wcheck.detail}")
    trust = load_trust(db)
    streams = stream_sequences(db)
    return IntegrityReport(count, head, trust.version, streams, wcheck.status.value)
