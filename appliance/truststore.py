"""The trust state, counters and trusted time of a home (derived in ``appliance.evidence``).

``save_trust`` writes the trust tables that people inspect; decisions read
``load_trust``, which derives the state from signed evidence and refuses tables
that disagree with it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypedDict

from appliance import audit, evidence
from appliance.db import Database, get_meta, set_meta
from appliance.trust import KeyEntry, TrustState
from bundles.errors import ApplianceError
from bundles.keys import PublicKey
from bundles.timeutil import utcnow


def load_trust(db: Database) -> TrustState:
    """Today's trust state, derived from the anchor and the stored root-signed documents.

    Exit 4 (``trust_state_unauthorized``) when the trust tables disagree with that
    evidence; see ``appliance.evidence``.
    """
    return evidence.verified_trust(db)


def signed_trust(db: Database) -> TrustState:
    """Today's trust state from the signed evidence alone (anchor and stored root-signed
    documents), for naming keys in output: labels live only in those documents, no table
    holds them, so an edit of the database cannot rename a key (it breaks the chain:
    ``trust_state_unauthorized``)."""
    return evidence.trust_chain(db).current


def naming_trust(db: Database) -> tuple[TrustState | None, str | None]:
    """``(signed_trust(db), None)``, or ``(None, why)`` when the signed chain cannot be
    derived (a missing anchor, an edited trust document): output that only names keys
    (``history``, ``audit show``) then shows bare key ids and says why, and never takes
    a label from anywhere else."""
    try:
        return signed_trust(db), None
    except ApplianceError as e:
        return None, f"key labels unavailable [{e.code}]: {e.message}"


def trust_tables(db: Database) -> TrustState:
    """The trust state as the tables hold it (for comparison and display only: never decide
    on it; a writer of the home can change these rows).
    """
    keys: dict[str, KeyEntry] = {}
    revoked: set[str] = set()
    for kid, pem, role, stream, added, rev in db.execute(
        "SELECT keyid, public_pem, role, stream, added_version, revoked_version FROM keys"
    ).fetchall():
        if role == "revoked":  # a pre-emptive revocation of a key we never had
            revoked.add(kid)
            continue
        keys[kid] = KeyEntry(PublicKey.from_pem(pem.encode()), (role, stream or ""), added, rev)
        if rev is not None:
            revoked.add(kid)
    thresholds = {
        (role, stream): int(t)
        for role, stream, t in db.execute("SELECT role, stream, threshold FROM thresholds")
    }
    version = int(get_meta(db, "trust_version") or "0")
    return TrustState(version, keys, thresholds, frozenset(revoked))


def save_trust(db: Database, state: TrustState) -> None:
    """Replace the stored trust state (call inside a transaction)."""
    db.execute("DELETE FROM keys")
    for kid, e in state.keys.items():
        db.execute(
            "INSERT INTO keys (keyid, public_pem, role, stream, added_version, revoked_version)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                kid,
                e.key.to_pem().decode(),
                e.role[0],
                e.role[1],
                e.added_version,
                e.revoked_version,
            ],
        )
    for kid in state.revoked - set(state.keys):
        db.execute(
            "INSERT INTO keys (keyid, public_pem, role, stream, added_version, revoked_version)"
            " VALUES (?, '', 'revoked', '', ?, ?)",
            [kid, state.version, state.version],
        )
    db.execute("DELETE FROM thresholds")
    for (role, stream), t in state.thresholds.items():
        db.execute(
            "INSERT INTO thresholds (role, stream, threshold) VALUES (?, ?, ?)", [role, stream, t]
        )
    set_meta(db, "trust_version", str(state.version))
    grants = [{**g.to_dict(), "version": g.version} for g in state.grants]
    set_meta(db, "loader_grants", json.dumps(grants, sort_keys=True))  # issue 11
    models = {  # issue 17: model-signer keys and the streams that require model signatures
        "signers": {
            kid: {
                "pem": e.key.to_pem().decode(),
                "stream": e.stream,
                "added": e.added_version,
                "name": e.name,
            }
            for kid, e in state.model_signers.items()
        },
        "required": sorted(state.model_signature_required),
    }
    set_meta(db, "model_signing", json.dumps(models, sort_keys=True))


def site(db: Database) -> str | None:
    """This appliance's site, from its anchor."""
    return evidence.anchor_of(db).site


def time_floors(db: Database) -> evidence.Floors:
    return evidence.time_floors(db)


def trusted_now(db: Database, *, stream: str | None = None, rollback: bool = False) -> datetime:
    """max(system clock, the floor that applies): a clock set back cannot unfreeze.

    The floor for a bundle of ``stream`` is the newest root-signed time or that stream's
    newest accepted ``issued_at``; for a rollback authorization, the newest root-signed
    time or the newest used authorization's. Other streams' times never count.
    """
    now = utcnow()
    if stream is None and not rollback:
        floor = evidence.trust_chain(db).root_floor()
    else:
        floors = evidence.time_floors(db)
        floor = floors.for_stream(stream) if stream is not None else floors.for_rollback()
    return max(now, floor) if floor else now


def stream_sequences(db: Database) -> dict[str, int]:
    """Every stream's high-water mark, from the signed manifests (exit 4 if the table differs)."""
    return evidence.stream_marks(db)


def stream_table(db: Database) -> dict[str, int]:
    """The streams table as stored (the witness's counters; never a policy decision)."""
    return {s: int(n) for s, n in db.execute("SELECT stream, sequence FROM streams")}


class Counters(TypedDict):
    trust_version: int
    streams: dict[str, int]
    audit_seq: int
    audit_head: str


def counters(db: Database) -> Counters:
    """The signed-state counters a witness records."""
    seq, head_hash = audit.head(db)
    return {
        "trust_version": int(get_meta(db, "trust_version") or "0"),
        "streams": stream_table(db),
        "audit_seq": seq,
        "audit_head": head_hash,
    }
