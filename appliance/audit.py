"""Append-only, hash-chained audit log in the state database.

Each event's hash is SHA-256 over the previous hash and the RFC 8785 bytes of
the event's fields, so editing, removing or reordering any past event breaks
every later link. ``verify_chain`` walks the whole log.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import weakref
from collections.abc import Callable
from datetime import datetime
from json.scanner import make_scanner
from typing import Any, cast

from appliance import evidence
from appliance.db import Database
from appliance.errors import AuditChainError
from bundles.canonical import canonical_bytes
from bundles.errors import ApplianceError
from bundles.timeutil import format_time, utcnow

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "type", "outcome", "code", "name", "version", "detail")


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    body = canonical_bytes({k: event[k] for k in FIELDS})
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def head(db: Database) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append(
    db: Database,
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
    fields = {"outcome": outcome, "code": code, "name": name, "version": version, "detail": detail}
    return append_many(db, [(type, fields)])[0]


def append_many(db: Database, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Append each ``(type, fields)`` in order (``append``'s fields), inside the caller's
    transaction (the loader service's group commit; ``append`` is a batch of one): the
    chain head, the last time stamp and the trusted time are read once for the batch,
    not once per event; each event is hashed by ``event_hash``'s rule (``_chain_hash``).
    Time stamps never run backwards along the chain: a clock that did is recorded."""
    seq, prev = head(db)
    now = utcnow()
    clock = format_time(now)
    last = db.execute("SELECT ts FROM audit WHERE seq = ?", [seq]).fetchone() if seq else None
    trusted = _trusted_time(db, now)
    extra: dict[str, Any] = {}
    if last is not None and str(last[0]) > clock:
        extra["clock"] = clock
        clock = str(last[0])
    out = []
    for type, fields in events:
        unknown = set(fields) - _APPEND_FIELDS
        if unknown:
            raise TypeError(f"append_many: unknown event field(s) {sorted(unknown)}")
        detail = fields.get("detail")
        body = {**(detail or {}), **trusted, **extra}
        seq += 1
        event: dict[str, Any] = {
            "seq": seq,
            "ts": clock,
            "type": type,
            "outcome": fields["outcome"],
            "code": fields.get("code"),
            "name": fields.get("name"),
            "version": fields.get("version"),
            "detail": json.dumps(body, sort_keys=True, separators=(",", ":")),
        }
        event["prev_hash"] = prev
        event["hash"] = prev = _chain_hash(prev, event)
        out.append(event)
    db.conn.executemany(
        "INSERT INTO audit (seq, ts, type, outcome, code, name, version, detail, prev_hash, hash)"
        " VALUES (:seq, :ts, :type, :outcome, :code, :name, :version, :detail, :prev_hash, :hash)",
        out,
    )
    return out


_APPEND_FIELDS = frozenset({"outcome", "code", "name", "version", "detail"})


def _chain_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """``event_hash``: by ``_fast_body`` when every string field is printable ASCII (there
    RFC 8785 and the C encoder write the same bytes: only ``"`` and ``\\`` are escaped),
    else by ``canonical_bytes``."""
    if all(type(v) is not str or (v.isascii() and v.isprintable()) for v in event.values()):
        return hashlib.sha256(bytes.fromhex(prev_hash) + _fast_body(event)).hexdigest()
    return event_hash(prev_hash, event)


def _trusted_time(db: Database, now: datetime) -> dict[str, Any]:
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
    token: bytes | None = None
    for version, env in rows:
        if not isinstance(env, bytes):  # written by hand: the chain below refuses it
            break
        h.update(b"%d:%d:" % (int(version), len(env)))
        h.update(env)
    else:
        token = h.digest()
    hit = _root_floors.get(db)
    if token is not None and hit is not None and hit[0] == token:
        floor = hit[1]
    else:
        try:
            floor = evidence.trust_chain(db).root_floor()
        except ApplianceError as e:
            return {"trusted_time": None, "trusted_time_unknown": e.code}
        if token is not None:
            _root_floors[db] = (token, floor)
    return {"trusted_time": format_time(max(now, floor) if floor else now)}


# Per open database: the root floor verified for the stored trust documents of that token
# (the same bytes always give the same floor), so an event costs one query and one hash,
# not a re-read of the anchor (the loader service appends thousands a second).
_root_floors: weakref.WeakKeyDictionary[Database, tuple[bytes, datetime | None]] = (
    weakref.WeakKeyDictionary()
)


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((*FIELDS, "prev_hash", "hash"), row, strict=True))


def rows(db: Database, name: str | None = None) -> list[dict[str, Any]]:
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    if name is None:
        cur = db.execute(f"SELECT {cols} FROM audit ORDER BY seq")
    else:
        cur = db.execute(f"SELECT {cols} FROM audit WHERE name=? ORDER BY seq", [name])
    return [_row(r) for r in cur.fetchall()]


def rows_naming(db: Database, name: str) -> list[dict[str, Any]]:
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


def pointer_rows(db: Database, name: str) -> list[dict[str, Any]]:
    """Accepted imports and rollbacks of ``name``: the events that may move its pointer."""
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    cur = db.execute(
        f"SELECT {cols} FROM audit WHERE name = ? AND outcome = 'accepted'"
        " AND type IN ('import', 'rollback') ORDER BY seq",
        [name],
    )
    return [_row(r) for r in cur.fetchall()]


def pointer_rows_linked(db: Database) -> list[tuple[Any, ...]]:
    """Accepted imports and rollbacks of every name with a record or an active pointer,
    in one query (``pointer_sql``), in seq order, each
    row: the ``FIELDS``, prev_hash, hash; then whether the event's bytes as SQLite
    writes them (``_SQL_BODY``, what ``_fast_body`` gives) hash to its ``hash`` after
    its ``prev_hash`` (one SHA-256 an event; False is not "altered": the caller checks
    such an event by ``hash_matches``; False for all where SQLite cannot write the
    bytes); then the neighbours' links: the hash of event seq-1 (None: no such row),
    the seq of event seq+1 (None: no such row) and its prev_hash."""
    try:
        return _pointer_rows(db, _SQL_BODY)
    except sqlite3.OperationalError:  # SQLite cannot write the bytes: the caller hashes
        return _pointer_rows(db, "NULL")


def pointer_sql(body: str) -> str:
    """The query of ``pointer_rows_linked`` with ``body`` as the event bytes column: the
    events of each name that has a record or an active pointer (the only names a pass
    judges), found by the ``audit_name`` index, so its cost follows the imports and
    rollbacks, not the load events around them in the log."""
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    return (
        f"SELECT x.*, p.hash, n.seq, n.prev_hash FROM (SELECT {cols}, {body} AS body"
        " FROM audit WHERE name IN (SELECT name FROM artifacts UNION SELECT name FROM active)"
        " AND outcome = 'accepted' AND type IN ('import', 'rollback')) x"
        " LEFT JOIN audit p ON p.seq = x.seq - 1 LEFT JOIN audit n ON n.seq = x.seq + 1"
        " ORDER BY x.seq"
    )


def _pointer_rows(db: Database, body: str) -> list[tuple[Any, ...]]:
    cur = db.execute(pointer_sql(body))
    sha256, fromhex = hashlib.sha256, bytes.fromhex
    out: list[tuple[Any, ...]] = []
    while batch := cur.fetchmany(4096):
        for r in batch:
            text, prev_hash = r[10], r[8]
            hashed = False
            if type(text) is str and type(prev_hash) is str:
                try:
                    hashed = sha256(fromhex(prev_hash) + text.encode()).hexdigest() == r[9]
                except ValueError:  # not hex, or text no UTF-8 holds: hash_matches decides
                    hashed = False
            out.append((*r[:10], hashed, *r[11:]))
    return out


# the C scanner ``json.loads`` runs (typeshed types its argument as a scanner)
_scan_once: Callable[[str, int], tuple[Any, int]] = make_scanner(cast(Any, json.JSONDecoder()))


def _loads(text: Any) -> Any:
    """``json.loads(text)``: the C scanner straight when it reads the whole of a string
    (no whitespace around, nothing after), else ``json.loads`` itself, which gives its
    own value or error."""
    if type(text) is str:
        try:
            value, end = _scan_once(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1  # not a JSON value from the start: json.loads raises its own error
        if end == len(text):
            return value
    return json.loads(text)


def detail_dict(text: Any) -> dict[str, Any]:
    """A stored detail parsed for a reader that goes on whatever it holds: the object, or
    an empty one when the detail is not a JSON object (only an edited log has such a
    detail; ``audit verify`` names it). The provenance rules read it so (an empty detail
    moves no pointer and records no signers, so they refuse), and so do readers where
    stopping would hide more than it shows (an alarm still listed, an acknowledgement not
    honoured). Parsed by the C scanner straight (``_loads``): the pointer pass reads one
    detail per import event."""
    try:
        value = _loads(text)
    except (TypeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


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


def first_unvouched(db: Database) -> int | None:
    """The first event the chain no longer vouches for (altered, missing before it, or
    linked to an altered past), or None when the whole log verifies."""
    try:
        verify_chain(db)
    except AuditChainError as e:
        return e.seq
    return None


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
_quote = json.encoder.encode_basestring  # the C encoder's string writer (ensure_ascii off)
# The fields in sorted order, as ``_dumps`` writes them; seq is the one integer.
_SORTED = tuple(sorted(FIELDS))
_SHAPE = "{{" + ",".join(f'"{k}":{{}}' for k in _SORTED) + "}}"  # str.format


def _value(v: object) -> str:
    """One field value as ``_dumps`` writes it: a string, null, or an integer."""
    if type(v) is str:
        return str(_quote(v))
    if v is None:
        return "null"
    if type(v) is int:
        return str(v)
    return _dumps(v)


def _fast_body(event: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of an event's fields for the usual case, as the C JSON encoder
    with sorted keys and no spaces writes them (``_dumps``), one value at a time.

    The fields are ASCII-named strings, one integer and nulls: for those the encoder
    writes what RFC 8785 writes, except where they differ on escapes of unusual
    characters; ``verify_chain`` falls back to ``canonical_bytes`` whenever this gives
    a hash that does not match, so the chain rule is exactly ``event_hash``.
    """
    body = _SHAPE.format(*[_value(event[k]) for k in _SORTED])
    return body.encode("utf-8", "surrogatepass")


def hash_matches(prev_hash: str, event: dict[str, Any], digest: str) -> bool:
    """``event_hash(prev_hash, event) == digest``, by the C encoder first (``_fast_body``)
    and by the reference ``event_hash`` only when that does not match."""
    try:
        fast = hashlib.sha256(bytes.fromhex(prev_hash) + _fast_body(event)).hexdigest()
        return fast == digest or event_hash(prev_hash, event) == digest
    except (TypeError, ValueError):  # a value no event holds (a BLOB, NaN): not this hash
        return False


def verify_chain(db: Database) -> tuple[int, str]:
    """Walk the log; return (events, head hash) or raise ``AuditChainError``.

    One pass over a cursor (no list of all events). SQLite writes each event's bytes
    as ``_fast_body`` would (``_SQL_BODY``: ``json_quote`` escapes as the C encoder
    does), so the loop here is one SHA-256 an event; an event whose hash does not
    match that way is read again and checked with ``_fast_body`` and the reference
    ``event_hash`` before it is called altered. Where SQLite cannot write the bytes (a
    value of another type in a column, no JSON functions), the walk is made again with
    the event bytes from Python (``_verify_chain_rows``).
    """
    try:
        return _verify_chain_sql(db)
    except sqlite3.OperationalError:
        return _verify_chain_rows(db)


# The event bytes of ``_fast_body``, written by SQLite: keys in sorted order, each value
# by json_quote (strings escaped as the C encoder escapes them, NULL as null, integers).
_SQL_BODY = (
    "printf('{"
    + ",".join(f'"{k}":%s' for k in _SORTED)
    + "}', "
    + ", ".join(f"json_quote({k})" for k in _SORTED)
    + ")"
)


def _verify_chain_sql(db: Database) -> tuple[int, str]:
    prev = GENESIS
    expected_seq = 1
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    cur = db.execute(
        f"SELECT seq, {_SQL_BODY}, prev_hash, hash, "
        "CASE WHEN json_valid(detail) THEN json_type(detail) = 'object' ELSE 0 END "
        "FROM audit ORDER BY seq"
    )
    while batch := cur.fetchmany(4096):
        for seq, body, prev_hash, digest, detail_ok in batch:
            if seq != expected_seq:
                raise AuditChainError(
                    f"audit event {expected_seq} is missing (found {seq} next)",
                    seq=expected_seq,
                )
            if not detail_ok:
                raise _detail_error(seq)
            if prev_hash != prev or (
                (
                    type(body) is not str
                    or sha256(fromhex(prev) + body.encode()).hexdigest() != digest
                )
                and not _row_matches(db, seq, prev, digest)
            ):
                raise AuditChainError(f"audit event {seq} was altered: chain broken", seq=seq)
            prev = digest
            expected_seq += 1
    return expected_seq - 1, prev


def _row_matches(db: Database, seq: int, prev: str, digest: object) -> bool:
    """The event ``seq`` as read back hashes to ``digest`` by ``hash_matches``."""
    cols = ", ".join(FIELDS)
    row = db.execute(f"SELECT {cols} FROM audit WHERE seq = ?", [seq]).fetchone()
    if row is None or not isinstance(digest, str):
        return False
    return hash_matches(prev, dict(zip(FIELDS, row, strict=True)), digest)


def _verify_chain_rows(db: Database) -> tuple[int, str]:
    prev = GENESIS
    expected_seq = 1
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
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
            if not _is_object(event["detail"]):
                raise _detail_error(event["seq"])
            if event["prev_hash"] != prev or not hash_matches(prev, event, digest):
                raise AuditChainError(
                    f"audit event {event['seq']} was altered: chain broken", seq=event["seq"]
                )
            prev = digest
            expected_seq += 1
    return expected_seq - 1, prev


_ALL_COLS = (*FIELDS, "prev_hash", "hash")


def _is_object(detail: object) -> bool:
    try:
        return isinstance(json.loads(detail), dict)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _detail_error(seq: int) -> AuditChainError:
    """The appliance writes every event's detail as a JSON object: a detail that is not
    one was written by someone else, even where the chain was re-linked around it (the
    chain has no key; the witness and the anchor vouch for the head)."""
    return AuditChainError(
        f"audit event {seq} has a detail that is not a JSON object: the log was edited",
        seq=seq,
    )
