"""Append-only, hash-chained audit log in the state database.

Each event's hash is SHA-256 over the previous hash and the RFC 8785 bytes of
the event's fields, so editing, removing or reordering any past event breaks
every later link. ``verify_chain`` walks the whole log.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from datetime import datetime
from typing import Any

import sqlite_utils

from appliance import evidence
from appliance.errors import AuditChainError
from bundles.canonical import canonical_bytes
from bundles.errors import ApplianceError
from bundles.timeutil import format_time, utcnow

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "type", "outcome", "code", "name", "version", "detail")


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    body = canonical_bytes({k: event[k] for k in FIELDS})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def head(db: sqlite_utils.Database) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append(
    db: sqlite_utils.Database,
    type: str,
    *,
    outcome: str,
    code: str | None = None,
    name: str | None = None,
    version: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one event; call inside the transaction that makes the change it records.

    ``detail.trusted_time`` is the trusted time in force (docs/AUDIT.md).
    """
    seq, prev = head(db)
    now = utcnow()
    clock = format_time(now)
    last = db.execute("SELECT ts FROM audit WHERE seq = ?", [seq]).fetchone() if seq else None
    body = {**(detail or {}), **_trusted_time(db, now)}
    if last is not None and str(last[0]) > clock:
        # Time stamps never run backwards along the chain; a clock that did is recorded.
        body["clock"] = clock
        clock = str(last[0])
    event: dict[str, Any] = {
        "seq": seq + 1,
        "ts": clock,
        "type": type,
        "outcome": outcome,
        "code": code,
        "name": name,
        "version": version,
        "detail": json.dumps(body, sort_keys=True, separators=(",", ":")),
    }
    event["prev_hash"] = prev
    event["hash"] = event_hash(prev, event)
    db.execute(
        "INSERT INTO audit (seq, ts, type, outcome, code, name, version, detail, prev_hash, hash)"
        " VALUES (:seq, :ts, :type, :outcome, :code, :name, :version, :detail, :prev_hash, :hash)",
        event,
    )
    return event


def _trusted_time(db: sqlite_utils.Database, now: datetime) -> dict[str, Any]:
    """``{"trusted_time": ...}``: max(system clock, the newest root-signed time counted from
    the last ``reset_time``), from the verified trust chain (no root-signed update yet: the
    clock). When that chain cannot be derived (its anchor or a stored trust document
    refused), ``trusted_time`` is null and ``trusted_time_unknown`` names the refusal: the
    event is still recorded."""
    rows = db.conn.execute(
        "SELECT version, envelope FROM trust_documents ORDER BY version"
    ).fetchall()
    if not rows:
        return {"trusted_time": format_time(now)}
    h = hashlib.sha256()
    for version, env in rows:
        h.update(b"%d:%d:" % (int(version), len(env)))
        h.update(bytes(env))
    token = h.digest()
    hit = _root_floors.get(db)
    if hit is not None and hit[0] == token:
        floor = hit[1]
    else:
        try:
            floor = evidence.trust_chain(db).root_floor()
        except ApplianceError as e:
            return {"trusted_time": None, "trusted_time_unknown": e.code}
        _root_floors[db] = (token, floor)
    return {"trusted_time": format_time(max(now, floor) if floor else now)}


# Per open database: the root floor verified for the stored trust documents of that token
# (the same bytes always give the same floor), so an event costs one query and one hash,
# not a re-read of the anchor (the loader service appends thousands a second).
_root_floors: weakref.WeakKeyDictionary[sqlite_utils.Database, tuple[bytes, datetime | None]] = (
    weakref.WeakKeyDictionary()
)


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((*FIELDS, "prev_hash", "hash"), row, strict=True))


def rows(db: sqlite_utils.Database, name: str | None = None) -> list[dict[str, Any]]:
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    if name is None:
        cur = db.execute(f"SELECT {cols} FROM audit ORDER BY seq")
    else:
        cur = db.execute(f"SELECT {cols} FROM audit WHERE name=? ORDER BY seq", [name])
    return [_row(r) for r in cur.fetchall()]


def rows_naming(db: sqlite_utils.Database, name: str) -> list[dict[str, Any]]:
    """Events about ``name`` in chain order: those recorded under it and refused imports
    (and refused trust updates carried by a bundle) whose manifest named it
    (``detail.artifacts``, issue 14)."""
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    needle = json.dumps(name)  # a quick filter; the detail is parsed below to be sure
    cur = db.execute(
        f"SELECT {cols} FROM audit WHERE name = ? UNION ALL SELECT {cols} FROM audit"
        " WHERE name IS NULL AND type IN ('import', 'trust_update') AND outcome = 'rejected'"
        " AND instr(detail, ?)"
        " ORDER BY seq",
        [name, needle],
    )
    return [e for e in map(_row, cur.fetchall()) if e["name"] == name or _names(e, name)]


def _names(event: dict[str, Any], name: str) -> bool:
    try:
        listed = json.loads(event["detail"]).get("artifacts")
    except (ValueError, AttributeError):
        return False
    return isinstance(listed, list) and any(
        isinstance(a, dict) and a.get("name") == name for a in listed
    )


def pointer_rows(db: sqlite_utils.Database, name: str) -> list[dict[str, Any]]:
    """Accepted imports and rollbacks of ``name``: the events that may move its pointer."""
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    cur = db.execute(
        f"SELECT {cols} FROM audit WHERE name = ? AND outcome = 'accepted'"
        " AND type IN ('import', 'rollback') ORDER BY seq",
        [name],
    )
    return [_row(r) for r in cur.fetchall()]


def all_pointer_rows(
    db: sqlite_utils.Database,
) -> list[tuple[dict[str, Any], str | None, tuple[str] | None]]:
    """Accepted imports and rollbacks of every name, in one query, each with its
    neighbours' links: (event, the hash of event seq-1 or None when there is no such
    row, (the prev_hash of event seq+1,) or None when there is no such row)."""
    cols = ", ".join(f"a.{c}" for c in (*FIELDS, "prev_hash", "hash"))
    cur = db.execute(
        f"SELECT {cols}, p.hash, n.seq, n.prev_hash FROM audit a"
        " LEFT JOIN audit p ON p.seq = a.seq - 1 LEFT JOIN audit n ON n.seq = a.seq + 1"
        " WHERE a.name IS NOT NULL AND a.outcome = 'accepted'"
        " AND a.type IN ('import', 'rollback') ORDER BY a.seq"
    )
    out: list[tuple[dict[str, Any], str | None, tuple[str] | None]] = []
    while batch := cur.fetchmany(4096):
        for r in batch:
            nxt = None if r[-2] is None else (str(r[-1]),)
            out.append((_row(r[:-3]), None if r[-3] is None else str(r[-3]), nxt))
    return out


def detail_of(event: dict[str, Any]) -> dict[str, Any]:
    """An event's detail parsed back into its object; a detail that is not a JSON object
    (someone wrote the database: the chain hash has no key) is ``audit_chain_broken``."""
    try:
        d = json.loads(event["detail"])
    except (TypeError, ValueError) as e:
        raise AuditChainError(
            f"audit event {event['seq']} has a detail that is not JSON: the log was edited",
            seq=event["seq"],
        ) from e
    if not isinstance(d, dict):
        raise AuditChainError(
            f"audit event {event['seq']} has a detail that is not a JSON object: the log was "
            "edited",
            seq=event["seq"],
        )
    return d


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as shown to users: detail parsed back into an object (``detail_of``)."""
    out = dict(event)
    out["detail"] = detail_of(event)
    return out


def first_unvouched(db: sqlite_utils.Database) -> int | None:
    """The first event the chain no longer vouches for (altered, missing before it, or
    linked to an altered past), or None when the whole log verifies."""
    try:
        verify_chain(db)
    except AuditChainError as e:
        return e.seq
    return None


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _fast_body(event: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of an event's fields for the usual case, by the C JSON encoder.

    The fields are ASCII-named strings, one integer and nulls: for those the encoder
    with sorted keys and no spaces writes what RFC 8785 writes, except where they
    differ on escapes of unusual characters; ``verify_chain`` falls back to
    ``canonical_bytes`` whenever this gives a hash that does not match, so the chain
    rule is exactly ``event_hash``.
    """
    return _dumps({k: event[k] for k in FIELDS}).encode("utf-8", "surrogatepass")


def verify_chain(db: sqlite_utils.Database) -> tuple[int, str]:
    """Walk the log; return (events, head hash) or raise ``AuditChainError``.

    One pass over a cursor (no list of all events), the event bytes from the C JSON
    encoder; an event whose hash does not match that way is checked again with the
    reference ``event_hash`` before it is called altered.
    """
    prev = GENESIS
    expected_seq = 1
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    sha256 = hashlib.sha256
    cur = db.execute(f"SELECT {cols} FROM audit ORDER BY seq")
    while batch := cur.fetchmany(4096):
        for row in batch:
            event = dict(zip(_ALL_COLS, row, strict=True))
            if event["seq"] != expected_seq:
                raise AuditChainError(
                    f"audit event {expected_seq} is missing (found {event['seq']} next)",
                    seq=expected_seq,
                )
            digest = event["hash"]
            if event["prev_hash"] != prev or (
                sha256(bytes.fromhex(prev) + _fast_body(event)).hexdigest() != digest
                and event_hash(prev, event) != digest
            ):
                raise AuditChainError(
                    f"audit event {event['seq']} was altered: chain broken", seq=event["seq"]
                )
            prev = digest
            expected_seq += 1
    return expected_seq - 1, prev


_ALL_COLS = (*FIELDS, "prev_hash", "hash")
