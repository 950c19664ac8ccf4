"""Trust state, high-water marks and time floors, derived from signed evidence.

A writer of the home can change any row of ``appliance.db``. So no decision
takes a trust table on its word:

* the trust state (keys, roles, thresholds, revocations, labels and every
  other root-signed setting) is the anchor's root (``appliance.anchor``, kept
  outside the home) folded with the stored root-signed trust documents,
  version 2, 3, ... each verified against the state before it, as
  ``appliance.trust.apply_update`` verified it when it was applied;
* a stream's high-water mark is the highest sequence among the stored
  manifests of that stream, each verified under the trust in force when it was
  imported (its place in the audit chain says which), after the last
  root-signed ``reset_stream`` of that stream;
* the trusted-time floors: root-signed times (trust updates, ``reset_time``)
  raise the floor of everything; a publisher's ``issued_at`` raises only its
  own stream's floor and a rollback authorization's only the floor of
  rollback authorizations, so one compromised non-root key can freeze at most
  what it could sign for, and root can undo that (docs/SECURITY.md).

The tables (``keys``, ``thresholds``, ``streams``, meta ``trust_version`` and
``site``) are kept for people who inspect the database and are compared with
what the evidence says: any difference is ``trust_state_unauthorized`` (exit 4).

Results are memoised in the process by the hash of the evidence bytes (the
anchor and the stored envelopes), so a command or the loader service verifies
each stored document once per change, not once per question.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.anchor import Anchor, anchor_path, home_key, read_anchor
from appliance.db import Database, check_schema, get_meta, read_only, snapshot
from appliance.errors import TrustStateUnauthorizedError
from appliance.trust import TrustState, apply_update, role_key
from bundles.canonical import parse_json
from bundles.documents import (
    ROLLBACK_PAYLOAD_TYPE,
    ResetStream,
    ResetTime,
    RollbackAuthorization,
    TrustUpdate,
)
from bundles.dsse import Envelope, verify_envelope
from bundles.errors import ManifestFormatError, RejectedError
from bundles.fields import as_int, as_time
from bundles.manifest import PAYLOAD_TYPE
from bundles.names import check_identifier

__all__ = [
    "Floors",
    "TrustChain",
    "anchor_of",
    "home_root",
    "one_anchor",
    "name_owners",
    "read_only",
    "stream_marks",
    "time_floors",
    "trust_chain",
    "trust_version_at",
    "verified_trust",
]


def home_root(db: Database) -> Path:
    """The home a state database belongs to (the folder of its main file)."""
    for _seq, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return Path(file).parent
    raise TrustStateUnauthorizedError("the state database has no file: no home to anchor")


# Inside ``one_anchor``: the anchor each connection read, by id (the connection is held, so
# its id is not reused while the scope lasts).
_one_look: ContextVar[dict[int, tuple[Database, Anchor]] | None] = ContextVar(
    "appliance_one_anchor", default=None
)


@contextmanager
def one_anchor() -> Iterator[None]:
    """Within this scope, ``anchor_of`` reads and checks the anchor once per connection.

    For one decision (a load: opening the home, the witness location, the trust chain)
    that takes its anchor at several steps: every step then judges by the same anchor,
    and the file is opened once instead of three times. Outside a scope (and in a new
    scope) every call reads the file again, so a long-lived connection (the service's)
    sees an anchor replaced between two requests. Nesting keeps the outer scope's."""
    if _one_look.get() is not None:
        yield
        return
    token = _one_look.set({})
    try:
        yield
    finally:
        _one_look.reset(token)


def anchor_of(db: Database) -> Anchor:
    """The home's anchor, checked to belong to this home (exit 4 otherwise); read once per
    connection inside ``one_anchor``."""
    seen = _one_look.get()
    if seen is not None:
        hit = seen.get(id(db))
        if hit is not None and hit[0] is db:
            return hit[1]
    anchor = _read_anchor_of(db)
    if seen is not None:
        seen[id(db)] = (db, anchor)
    return anchor


def _read_anchor_of(db: Database) -> Anchor:
    root = home_root(db)
    given = os.environ.get("APPLIANCE_ANCHOR")
    key = home_key(root)  # one realpath for both uses
    anchor = read_anchor(anchor_path(root, Path(given) if given else None, key=key))
    anchor.check_home(root, get_meta(db, "home_id"), read_only=read_only(), key=key)
    return anchor


# --- the trust chain -------------------------------------------------------------------


@dataclass(frozen=True)
class TrustChain:
    anchor: Anchor
    states: tuple[TrustState, ...]  # states[i] is trust version i + 1
    updates: tuple[TrustUpdate, ...]  # updates[i] made trust version i + 2

    @property
    def current(self) -> TrustState:
        return self.states[-1]

    def at(self, version: int) -> TrustState:
        if not 1 <= version <= len(self.states):
            raise TrustStateUnauthorizedError(f"no trust version {version} in the signed chain")
        return self.states[version - 1]

    def stream_resets(self) -> dict[str, tuple[int, int]]:
        """stream -> (trust version of its last reset, the sequence it was reset to)."""
        out: dict[str, tuple[int, int]] = {}
        for v, u in enumerate(self.updates, start=2):
            for op in u.operations:
                if isinstance(op, ResetStream):
                    out[op.stream] = (v, op.sequence)
        return out

    def time_reset(self) -> tuple[int, datetime] | None:
        """(trust version, time) of the last root-signed ``reset_time``, if any."""
        last = None
        for v, u in enumerate(self.updates, start=2):
            for op in u.operations:
                if isinstance(op, ResetTime):
                    last = (v, op.time)
        return last

    def root_floor(self) -> datetime | None:
        """The newest root-signed time, counted from the last ``reset_time``."""
        reset = self.time_reset()
        floor = reset[1] if reset else None
        for v, u in enumerate(self.updates, start=2):
            if reset is not None and v <= reset[0]:
                continue
            if floor is None or u.issued_at > floor:
                floor = u.issued_at
        return floor


def _int(value: Any, what: str) -> int:
    """A stored integer (an INTEGER column, a JSON number); anything else was written by
    hand: exit 4, not an internal error."""
    if type(value) is int:
        return value
    raise TrustStateUnauthorizedError(
        f"{what} is not an integer ({type(value).__name__}): the database was edited"
    )


def _int_text(value: str, what: str) -> int:
    """A stored integer kept as text (a ``meta`` value)."""
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise TrustStateUnauthorizedError(
            f"{what} is not an integer: the database was edited"
        ) from e


def _blob(value: Any, what: str) -> bytes:
    """A stored signed document's bytes (a BLOB column); text or a number was written by
    hand: exit 4."""
    if isinstance(value, bytes):
        return value
    raise TrustStateUnauthorizedError(
        f"{what} is not a byte string ({type(value).__name__}): the database was edited"
    )


_chains: dict[bytes, TrustChain] = {}


def trust_chain(db: Database) -> TrustChain:
    """The anchor folded with every stored trust document, each verified in turn."""
    anchor = anchor_of(db)
    rows = [
        (version, _blob(env, f"trust document {version}"))
        for version, env in db.execute(
            "SELECT version, envelope FROM trust_documents ORDER BY version"
        )
    ]
    h = hashlib.sha256(json.dumps(anchor.to_dict(), sort_keys=True).encode())
    for version, env in rows:
        h.update(b"%d:%d:" % (int(version), len(env)))
        h.update(env)
    key = h.digest()
    chain = _chains.get(key)
    if chain is not None:
        return chain
    states = [anchor.initial_trust()]
    updates: list[TrustUpdate] = []
    for version, env in rows:
        expected = states[-1].version + 1
        if int(version) != expected:
            raise TrustStateUnauthorizedError(
                f"stored trust document {version} does not follow version {expected - 1}"
            )
        try:
            new, update = apply_update(states[-1], Envelope.from_bytes(env))
        except RejectedError as e:
            raise TrustStateUnauthorizedError(
                f"stored trust document {version} does not verify against the anchor's "
                f"root chain ({e.code}: {e.message})"
            ) from e
        if new.version != int(version):
            raise TrustStateUnauthorizedError(
                f"stored trust document {version} claims {new.version}"
            )
        states.append(new)
        updates.append(update)
    chain = TrustChain(anchor, tuple(states), tuple(updates))
    if len(_chains) > 32:
        _chains.clear()
    _chains[key] = chain
    return chain


def _state_rows(state: TrustState) -> tuple[Any, ...]:
    keys = sorted(
        (kid, e.role[0], e.role[1], e.added_version, e.revoked_version)
        for kid, e in state.keys.items()
    )
    extra = sorted(state.revoked - set(state.keys))
    return (state.version, keys, extra, sorted(state.thresholds.items()))


def _table_rows(db: Database) -> tuple[Any, ...]:
    keys, extra = [], []
    for kid, role, stream, added, rev in db.execute(
        "SELECT keyid, role, stream, added_version, revoked_version FROM keys"
    ).fetchall():
        if role == "revoked":
            extra.append(kid)
        else:
            keys.append((kid, role, stream or "", added, rev))
    thresholds = [
        ((role, stream or ""), _int(t, f"the threshold of {role}"))
        for role, stream, t in db.execute("SELECT role, stream, threshold FROM thresholds")
    ]
    version = _int_text(get_meta(db, "trust_version") or "0", "the trust_version mark")
    return (version, sorted(keys), sorted(extra), sorted(thresholds))


def verified_trust(db: Database) -> TrustState:
    """Today's trust state from the evidence; exit 4 when the tables say otherwise, or
    when the database's schema is not exactly the appliance's (``db.check_schema``)."""
    with snapshot(db):
        return _verified_trust(db)


def _verified_trust(db: Database) -> TrustState:
    check_schema(db)  # a planted trigger or view first: it would answer for the tables
    chain = trust_chain(db)
    state = chain.current
    if _table_rows(db) != _state_rows(state):
        raise TrustStateUnauthorizedError(
            "the trust tables (keys, thresholds, trust version) differ from what the anchor "
            f"and the {len(chain.updates)} stored root-signed trust update(s) say"
        )
    site = get_meta(db, "site")
    if site != chain.anchor.site:
        raise TrustStateUnauthorizedError(
            f"the site recorded in the home ({site or 'none'}) is not the anchor's "
            f"({chain.anchor.site or 'none'})"
        )
    return state


# --- where events stand in the chain of trust versions --------------------------------


def _trust_update_seqs(db: Database) -> list[int]:
    return [
        int(r[0])
        for r in db.execute(
            "SELECT seq FROM audit WHERE type = 'trust_update' AND outcome = 'accepted' "
            "ORDER BY seq"
        )
    ]


def trust_version_at(db: Database, seq: int, cache: list[int] | None = None) -> int:
    """The trust version in force when audit event ``seq`` was written."""
    seqs = _trust_update_seqs(db) if cache is None else cache
    return 1 + bisect.bisect_left(seqs, seq)


# --- stored manifests: high-water marks and stream floors --------------------------------


@dataclass(frozen=True)
class _Header:
    stream: str
    sequence: int
    issued_at: datetime


_headers: dict[bytes, _Header] = {}
_verified: dict[tuple[bytes, int, str], bool] = {}


def _header(payload: bytes) -> _Header:
    key = hashlib.sha256(payload).digest()
    hit = _headers.get(key)
    if hit is None:
        doc = parse_json(payload, what="stored manifest")
        pred = doc.get("predicate") if isinstance(doc, dict) else None
        if not isinstance(pred, dict) or not {"stream", "sequence", "issued_at"} <= set(pred):
            raise ManifestFormatError("stored manifest has no stream, sequence and issued_at")
        hit = _Header(
            check_identifier(pred["stream"], "stream"),
            as_int(pred["sequence"], "sequence", 1),
            as_time(pred["issued_at"], "issued_at"),
        )
        if len(_headers) > 4096:
            _headers.clear()
        _headers[key] = hit
    return hit


def _signed_by_publishers(env: Envelope, state: TrustState, stream: str, digest: bytes) -> bool:
    key = (digest, state.version, stream)
    ok = _verified.get(key)
    if ok is None:
        try:
            signers = verify_envelope(env, state.resolver(), PAYLOAD_TYPE)
            role = role_key("publisher", stream)
            holders = {s for s in signers if s in state.keys and state.keys[s].role == role}
            ok = len(holders) >= state.threshold(role)
        except RejectedError:
            ok = False
        if len(_verified) > 65536:
            _verified.clear()
        _verified[key] = ok
    return ok


@dataclass(frozen=True)
class _StreamEvidence:
    marks: dict[str, int]
    floors: dict[str, datetime]
    owners: dict[str, tuple[str, int]]  # artifact name -> (its stream, highest release)


_releases: dict[bytes, tuple[tuple[str, int], ...]] = {}


def _artifact_releases(payload: bytes) -> tuple[tuple[str, int], ...]:
    key = hashlib.sha256(payload).digest()
    hit = _releases.get(key)
    if hit is None:
        from appliance.provenance import parse_manifest

        hit = parse_manifest(payload).releases()
        if len(_releases) > 4096:
            _releases.clear()
        _releases[key] = hit
    return hit


def _detail(seq: int, detail: str) -> dict[str, Any]:
    from appliance.audit import detail_of  # audit imports this module

    return detail_of({"seq": seq, "detail": detail})


def _stream_evidence(db: Database, chain: TrustChain) -> _StreamEvidence:
    tu_seqs = _trust_update_seqs(db)
    imported: dict[tuple[str, int], int] = {}
    for seq, detail in db.execute(
        "SELECT seq, detail FROM audit WHERE type = 'bundle_import' AND outcome = 'accepted'"
    ):
        d = _detail(seq, detail)
        imported[
            (str(d.get("stream")), _int(d.get("sequence", 0), f"audit event {seq}'s sequence"))
        ] = int(seq)
    resets = chain.stream_resets()
    time_reset = chain.time_reset()
    marks: dict[str, int] = {s: n for s, (_v, n) in resets.items()}
    floors: dict[str, datetime] = {}
    owners: dict[str, tuple[str, int]] = {}
    for stream, sequence, env_bytes in db.execute(
        "SELECT stream, sequence, envelope FROM manifests"
    ).fetchall():
        what = f"stored manifest of stream {stream} sequence {sequence}"
        sequence = _int(sequence, f"the sequence of a stored manifest of stream {stream}")
        seq = imported.get((stream, sequence))
        if seq is None:
            raise TrustStateUnauthorizedError(f"{what} has no import event in the audit log")
        version = trust_version_at(db, seq, tu_seqs)
        raw = _blob(env_bytes, what)
        try:
            env = Envelope.from_bytes(raw)
            header = _header(env.payload)
        except RejectedError as e:
            raise TrustStateUnauthorizedError(f"{what} is malformed ({e.code})") from e
        if (header.stream, header.sequence) != (stream, int(sequence)):
            raise TrustStateUnauthorizedError(f"{what} is signed for another stream or sequence")
        if not _signed_by_publishers(env, chain.at(version), stream, hashlib.sha256(raw).digest()):
            raise TrustStateUnauthorizedError(
                f"{what} is not signed by the stream's publishers of trust version {version}"
            )
        reset = resets.get(stream)
        voided = reset is not None and version < reset[0]  # undone by a root-signed reset
        for name, release in _artifact_releases(env.payload):
            owner_stream, best = owners.get(name, (stream, 0))
            if owner_stream == stream and not voided:
                best = max(best, release)
            owners[name] = (owner_stream, best)
        if voided:
            continue
        marks[stream] = max(marks.get(stream, 0), header.sequence)
        if time_reset is not None and version < time_reset[0]:
            continue
        if stream not in floors or header.issued_at > floors[stream]:
            floors[stream] = header.issued_at
    return _StreamEvidence(marks, floors, owners)


def stream_marks(db: Database) -> dict[str, int]:
    """Every stream's high-water mark from the evidence; exit 4 if the table disagrees."""
    with snapshot(db):
        marks = _stream_evidence(db, trust_chain(db)).marks
        table = {
            str(s): _int(n, f"the streams table's mark of {s}")
            for s, n in db.execute("SELECT stream, sequence FROM streams")
        }
    if table != marks:
        diff = sorted(set(table.items()) ^ set(marks.items()))
        raise TrustStateUnauthorizedError(
            f"the streams table differs from the signed manifests (high-water marks {diff[:4]})"
        )
    return marks


def name_owners(db: Database) -> dict[str, tuple[str, int]]:
    """Each artifact name's stream (the first to ship it) and highest release counter, from
    the signed manifests (releases of manifests undone by a ``reset_stream`` do not count).
    """
    with snapshot(db):
        return _stream_evidence(db, trust_chain(db)).owners


# --- time floors ---------------------------------------------------------------------


@dataclass(frozen=True)
class Floors:
    """Trusted-time floors: ``root`` for everything, plus one per stream and one for rollbacks."""

    root: datetime | None
    streams: dict[str, datetime] = field(default_factory=dict)
    rollback: datetime | None = None

    def for_stream(self, stream: str) -> datetime | None:
        return _latest(self.root, self.streams.get(stream))

    def for_rollback(self) -> datetime | None:
        return _latest(self.root, self.rollback)

    def to_dict(self) -> dict[str, Any]:
        from bundles.timeutil import format_time

        return {
            "root": format_time(self.root) if self.root else None,
            "streams": {s: format_time(t) for s, t in sorted(self.streams.items())},
            "rollback": format_time(self.rollback) if self.rollback else None,
        }


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _rollback_floor(db: Database, chain: TrustChain) -> datetime | None:
    tu_seqs = _trust_update_seqs(db)
    events: dict[str, int] = {}
    for seq, detail in db.execute(
        "SELECT seq, detail FROM audit WHERE type = 'rollback' AND outcome = 'accepted'"
    ):
        auth_id = _detail(seq, detail).get("authorization_id")
        if isinstance(auth_id, str):
            events[auth_id] = int(seq)
    time_reset = chain.time_reset()
    floor: datetime | None = None
    for auth_id, env_bytes in db.execute("SELECT id, envelope FROM used_authorizations"):
        seq = events.get(str(auth_id))
        if seq is None or env_bytes is None:
            continue  # not evidence of anything (appliance.provenance reports such rows)
        version = trust_version_at(db, seq, tu_seqs)
        if time_reset is not None and version < time_reset[0]:
            continue
        try:
            env = Envelope.from_bytes(_blob(env_bytes, f"authorization {auth_id}"))
            state = chain.at(version)
            verify_envelope(env, state.resolver(), ROLLBACK_PAYLOAD_TYPE)
            auth = RollbackAuthorization.from_payload(env.payload)
        except RejectedError:
            continue
        floor = _latest(floor, auth.issued_at)
    return floor


def time_floors(db: Database) -> Floors:
    with snapshot(db):
        chain = trust_chain(db)
        return Floors(
            chain.root_floor(), _stream_evidence(db, chain).floors, _rollback_floor(db, chain)
        )
