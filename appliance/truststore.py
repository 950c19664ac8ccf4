"""Load and save the trust state, counters and trusted time in the state database."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypedDict

import sqlite_utils

from appliance import audit
from appliance.db import get_meta, set_meta
from appliance.trust import KeyEntry, ModelSignerEntry, TrustState
from bundles.keys import EcPublicKey, PublicKey
from bundles.timeutil import format_time, parse_stamp, utcnow


def load_trust(db: sqlite_utils.Database) -> TrustState:
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
    models = json.loads(get_meta(db, "model_signing") or "{}")  # issue 17
    signers = {
        kid: ModelSignerEntry(
            EcPublicKey.from_pem(e["pem"].encode()), e["stream"], e["added"], e["name"]
        )
        for kid, e in models.get("signers", {}).items()
    }
    required = frozenset(models.get("required", []))
    return TrustState(version, keys, thresholds, frozenset(revoked), signers, required)


def save_trust(db: sqlite_utils.Database, state: TrustState) -> None:
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


def site(db: sqlite_utils.Database) -> str | None:
    return get_meta(db, "site")


def trusted_time_floor(db: sqlite_utils.Database) -> datetime | None:
    value = get_meta(db, "trusted_time")
    return parse_stamp(value) if value else None


def trusted_now(db: sqlite_utils.Database) -> datetime:
    """max(system clock, newest signed time ever accepted): a clock set back cannot unfreeze."""
    floor = trusted_time_floor(db)
    now = utcnow()
    return max(now, floor) if floor else now


def raise_time_floor(db: sqlite_utils.Database, signed_time: datetime) -> None:
    floor = trusted_time_floor(db)
    if floor is None or signed_time > floor:
        set_meta(db, "trusted_time", format_time(signed_time))


def stream_sequences(db: sqlite_utils.Database) -> dict[str, int]:
    return {s: int(n) for s, n in db.execute("SELECT stream, sequence FROM streams")}


class Counters(TypedDict):
    trust_version: int
    streams: dict[str, int]
    audit_seq: int
    audit_head: str


def counters(db: sqlite_utils.Database) -> Counters:
    """The signed-state counters a witness records."""
    seq, head_hash = audit.head(db)
    return {
        "trust_version": int(get_meta(db, "trust_version") or "0"),
        "streams": stream_sequences(db),
        "audit_seq": seq,
        "audit_head": head_hash,
    }
