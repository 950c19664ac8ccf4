"""Is what the database says backed by signed evidence?

An attacker who can write the state database could point ``active`` at another
version, insert a record, or edit a record's signers. So records and pointers
are not taken on the database's word:

* a record must be listed, with the same version, digest, size, media type and
  release, in the signed manifest stored at import; its signers are recomputed from that
  envelope and checked against today's trust (never read from a column);
* the active pointer must equal the target of the last pointer-moving audit
  event for the name (an import that activated it, or an authorized
  rollback); those events must hash correctly and link to their neighbours;
  imports must go up in release; each rollback must cite a distinct stored
  authorization that verifies under a key of the rollback role.

A failure here means the appliance's own state is suspect (exit 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import blake3

from appliance import audit, evidence
from appliance.db import Database, snapshot
from appliance.errors import PointerUnauthorizedError, RecordUnauthorizedError
from appliance.store import Record, active_version
from appliance.trust import RoleKey, TrustState, role_key
from bundles.documents import ROLLBACK_PAYLOAD_TYPE
from bundles.dsse import Envelope, verify_envelope
from bundles.errors import EnvelopeFormatError, RejectedError
from bundles.manifest import MAX_MANIFEST_FILE_BYTES, PAYLOAD_TYPE, StoredManifest, parse_stored

_manifest_cache: dict[bytes, StoredManifest] = {}


def parse_manifest(payload: bytes) -> StoredManifest:
    """Parse a (verified) stored manifest payload; results are cached by payload hash
    (``appliance.evidence`` reads release counters through it). Its entries are shown
    valid at once and an artifact is made only for each name asked for
    (``bundles.manifest.StoredManifest``): a record's check costs what its own entry
    costs, not what the bundle's other entries cost."""
    key = hashlib.sha256(payload).digest()
    manifest = _manifest_cache.get(key)
    if manifest is None:
        counters["manifest_parses"] += 1
        manifest = parse_stored(payload)
        if len(_manifest_cache) > 64:
            _manifest_cache.clear()
        _manifest_cache[key] = manifest
    return manifest


# A memo of stored manifests that verified: (BLAKE3 of the stored envelope bytes, the
# verifying key set) -> (signers, parsed manifest). The same bytes under the same keys
# give the same answer, so each stored manifest is verified and parsed once per
# process (one command, or until the service's trust or database changes), however
# many records it backs. Other bytes or other keys miss it. Only successes are kept.
_MEMO_MAX = 8
_memo: dict[tuple[bytes, frozenset[tuple[str, bytes]]], tuple[frozenset[str], StoredManifest]] = {}
# pinned by tests/perf
counters = {"manifest_verifications": 0, "manifest_parses": 0, "pointer_reads": 0}


def _key_set(trust: TrustState, env_keyids: frozenset[str]) -> frozenset[tuple[str, bytes]]:
    """The keys the resolver gives for the envelope's key ids: what verification used."""
    out = set()
    for kid in env_keyids:
        entry = trust.keys.get(kid)
        if entry is not None:
            out.add((kid, entry.key.key.public_bytes_raw()))
    return frozenset(out)


def _parse_manifest(env: Envelope) -> StoredManifest:
    """Parse a (verified) stored manifest."""
    return parse_manifest(env.payload)


def _verified_manifest(
    trust: TrustState, raw: bytes, digest: bytes
) -> tuple[frozenset[str], StoredManifest]:
    """Signers and parsed manifest of a stored envelope (``digest``: its BLAKE3), from the
    memo when the same bytes were verified under the same keys before."""
    keyids = _memo_keyids.get(digest)
    if keyids is not None:
        hit = _memo.get((digest, _key_set(trust, keyids)))
        if hit is not None:
            return hit
    env = Envelope.from_bytes(raw, max_bytes=MAX_MANIFEST_FILE_BYTES)
    keyids = frozenset(s.keyid for s in env.signatures)
    counters["manifest_verifications"] += 1
    signers = verify_envelope(env, trust.resolver(), PAYLOAD_TYPE)
    manifest = _parse_manifest(env)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
        _memo_keyids.clear()
    _memo[(digest, _key_set(trust, keyids))] = (signers, manifest)
    _memo_keyids[digest] = keyids
    return signers, manifest


def _envelope_digest(raw: bytes) -> bytes:
    threads = blake3.blake3.AUTO if len(raw) >= 1 << 20 else 1
    return bytes(blake3.blake3(raw, max_threads=threads).digest())


_memo_keyids: dict[bytes, frozenset[str]] = {}
# Which envelope bytes (by digest) a manifests row held, and the state of the database
# file when it was read: (path, stream, sequence) -> (token, digest). While the file's
# token (inode, size, mtime, SQLite's file change counter, the -wal file) is unchanged,
# the row holds the same bytes, so the memo above is consulted without reading and
# hashing the envelope again; any commit changes the token. Not used inside an open
# transaction. (Whatever this cache answers, it only ever selects a manifest that
# verified under today's key set.)
_row_digests: dict[tuple[str, str, int], tuple[tuple[object, ...], bytes]] = {}


DbToken = tuple[str, tuple[object, ...]]


def db_token(db: Database) -> DbToken | None:
    """The state of the database file (see ``_row_digests``); None inside a transaction
    or for a database without a file. A command that only reads (``verify``) takes it
    once and passes it to ``check_record`` for each record."""
    if db.conn.in_transaction:
        return None
    return _file_token(db)


def _file_token(db: Database) -> DbToken | None:
    row = db.execute("PRAGMA database_list").fetchone()
    path = str(row[2]) if row is not None and row[2] else ""
    if not path:
        return None
    try:
        fd = _header_fd(path)
        st = os.fstat(fd)
        counter = os.pread(fd, 4, 24)  # SQLite header: file change counter
        try:
            wal = os.stat(path + "-wal")
            wal_token: tuple[int, int] | None = (wal.st_size, wal.st_mtime_ns)
        except FileNotFoundError:
            wal_token = None
    except OSError:
        return None
    return path, (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,  # no one but the kernel sets it: a write then utimes still shows
        counter,
        wal_token,
    )


# One descriptor per database file (device, inode), opened once and never closed: closing
# any descriptor of a file drops every POSIX lock this process holds on it, SQLite's too
# (its read snapshot's SHARED lock, the journal's RESERVED or EXCLUSIVE one on another
# connection of the loader service), so another process could then commit in the middle
# of a snapshot or a commit (the intermittent lock_held, trust_state_unauthorized and
# "disk I/O error" of the 64-loader service test). A replaced file gets a new entry.
_header_fds: dict[tuple[int, int], int] = {}
_header_lock = threading.Lock()


def _header_fd(path: str) -> int:
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _header_lock:
        fd = _header_fds.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fst = os.fstat(fd)
            key = (fst.st_dev, fst.st_ino)  # the file opened, if it was replaced meanwhile
            if key in _header_fds:
                # Kept open, never closed (see above); the one already held serves.
                _spare_fds.append(fd)
                fd = _header_fds[key]
            else:
                _header_fds[key] = fd
        return fd


_spare_fds: list[int] = []  # descriptors never closed, for the reason above


def token_inside(db: Database) -> DbToken | None:
    """The file's token inside a write transaction of ``db`` (the write lock is held:
    no one else can commit until this one does); for ``carry_audit_commit``."""
    return _file_token(db) if db.conn.in_transaction else None


def carry_audit_commit(db: Database, inside: DbToken | None) -> None:
    """After a commit of ``db`` that changed only the audit log (a load event), with
    ``inside`` its ``token_inside``: the stored manifests it left alone stay known.

    If SQLite's file change counter moved by exactly one from ``inside`` (this commit
    and no other, in the rollback-journal mode the appliance uses; same file, no WAL),
    the ``_row_digests`` entries taken in the state ``inside`` saw are carried to the
    new token. Otherwise nothing is carried and the next lookup reads the rows again.
    """
    after = db_token(db)
    if inside is None or after is None or after[0] != inside[0]:
        return
    before, now = inside[1], after[1]
    if before[-1] is not None or now[-1] is not None or before[:2] != now[:2]:
        return
    count, count2 = before[-2], now[-2]
    if not isinstance(count, bytes) or not isinstance(count2, bytes):
        return
    if (int.from_bytes(count2, "big") - int.from_bytes(count, "big")) % (1 << 32) != 1:
        return
    for where, (token, digest) in list(_row_digests.items()):
        if where[0] == inside[0] and token == before:
            _row_digests[where] = (now, digest)


def _stored_manifest(
    db: Database, trust: TrustState, record: Record, token: DbToken | None
) -> tuple[frozenset[str], StoredManifest] | None:
    """The verified manifest of the record's (stream, sequence); None when there is no row."""
    where = (token[0], record.stream, record.sequence) if token is not None else None
    if token is not None and where is not None:
        seen = _row_digests.get(where)
        if seen is not None and seen[0] == token[1]:
            keyids = _memo_keyids.get(seen[1])
            if keyids is not None:
                hit = _memo.get((seen[1], _key_set(trust, keyids)))
                if hit is not None:
                    return hit
    row = db.execute(
        "SELECT envelope FROM manifests WHERE stream = ? AND sequence = ?",
        [record.stream, record.sequence],
    ).fetchone()
    if row is None:
        return None
    if not isinstance(row[0], bytes):  # text or a number in a BLOB column: written by hand
        raise EnvelopeFormatError(
            f"the stored manifest of stream {record.stream} sequence {record.sequence} is "
            f"not a byte string ({type(row[0]).__name__})"
        )
    raw = row[0]
    digest = _envelope_digest(raw)
    result = _verified_manifest(trust, raw, digest)
    if token is not None and where is not None:
        if len(_row_digests) > 4096:
            _row_digests.clear()
        _row_digests[where] = (token[1], digest)
    return result


def check_record(
    db: Database,
    trust: TrustState,
    record: Record,
    *,
    token: DbToken | None | Literal["read"] = "read",
) -> frozenset[str]:
    """Signers of ``record`` that count today; exit 4 when the record is not backed.

    ``token``: the database token (``db_token``) taken by a caller that checks many
    records in one read-only pass; by default it is read here, for this record.
    """
    if isinstance(token, str):
        token = db_token(db)
    try:
        found: _Found = _stored_manifest(db, trust, record, token)
    except RejectedError as e:
        found = e
    return _judge_record(trust, record, found, trust.check_signers)


_Found = tuple[frozenset[str], StoredManifest] | RejectedError | None


def _matches(manifest: StoredManifest, record: Record) -> bool:
    """The manifest lists the record's name with its version, digest, size, media type and
    release."""
    return manifest.matches(
        record.name, record.version, record.digest, record.size, record.media_type, record.release
    )


def _judge_record(
    trust: TrustState,
    record: Record,
    found: _Found,
    check_signers: Callable[[frozenset[str], RoleKey], frozenset[str]],
) -> frozenset[str]:
    """``check_record``'s verdict from what the manifests row gave (``found``: the verified
    manifest, the reason it does not verify, or None when there is no row)."""
    ref = f"{record.name}@{record.version}"
    if isinstance(found, RejectedError):
        raise RecordUnauthorizedError(
            f"{ref}: stored manifest does not verify ({found.code})"
        ) from found
    if found is None:
        raise RecordUnauthorizedError(
            f"{ref}: no signed manifest for stream {record.stream} sequence {record.sequence}"
        )
    signers, manifest = found
    if manifest.stream != record.stream or not _matches(manifest, record):
        raise RecordUnauthorizedError(f"{ref}: record differs from its signed manifest")
    return check_signers(signers, role_key("publisher", record.stream))


class Records:
    """``check_record`` for many records in one read-only pass (``appliance verify``).

    Each (stream, sequence)'s stored manifest is looked up and judged once per pass (by
    ``_stored_manifest``: read, hashed and verified, or found in the memo), and the
    signers it gives once per role (only successes are kept: a refusal is judged again,
    with its own error); ``check(record)`` then gives what ``check_record`` gives for
    that record, with the same errors: for a record of a verified manifest, one dict
    lookup of its (stream, sequence), one of its name in the manifest and a comparison
    (``StoredManifest.matches``). ``token``: the pass's ``db_token``.
    """

    def __init__(self, db: Database, trust: TrustState, token: DbToken | None) -> None:
        self._db, self._trust, self._token = db, trust, token
        self._found: dict[tuple[str, int], _Found] = {}
        self._counted: dict[tuple[frozenset[str], RoleKey], frozenset[str]] = {}
        # (stream, sequence) -> (manifest, the signers that count for its stream's
        # publisher role) for a manifest that verified and names that same stream
        self._sound: dict[tuple[str, int], tuple[StoredManifest, frozenset[str]]] = {}

    def _check_signers(self, signers: frozenset[str], role: RoleKey) -> frozenset[str]:
        key = (signers, role)
        counted = self._counted.get(key)
        if counted is None:  # only successes are kept: a refusal is judged again
            counted = self._counted[key] = self._trust.check_signers(signers, role)
        return counted

    def check(self, record: Record) -> frozenset[str]:
        where = (record.stream, record.sequence)
        sound = self._sound.get(where)
        if sound is not None and _matches(sound[0], record):
            return sound[1]
        if where in self._found:
            found = self._found[where]
        else:
            try:
                found = _stored_manifest(self._db, self._trust, record, self._token)
            except RejectedError as e:
                found = e
            self._found[where] = found
        counted = _judge_record(self._trust, record, found, self._check_signers)
        if isinstance(found, tuple) and found[1].stream == record.stream:
            self._sound[where] = (found[1], counted)
        return counted

    def vouched(self, record: Record, signers: frozenset[str]) -> frozenset[str]:
        """``check(record)`` for a record that ``judge_manifests`` found listed, as it is,
        in its (stream, sequence)'s stored manifest, which verified with ``signers``:
        the signers that count today for its stream's publisher role (refusals as
        ``check`` raises them)."""
        return self._check_signers(signers, role_key("publisher", record.stream))


# Stored manifests handed to a helper process by ``appliance verify``: those that back at
# least this many of the records checked, up to this many bytes in all (the rest are
# judged by ``Records`` in the verifying process, as every one is without a helper).
VOUCH_MIN_RECORDS = 64
VOUCH_MAX_BYTES = 64 << 20

Vouching = tuple[tuple[str, int], bytes, list[int]]  # (stream, sequence), envelope, indices


def manifests_to_vouch(db: Database, records: list[Record]) -> list[Vouching]:
    """The stored envelopes (as read now) that a helper may verify for ``judge_manifests``
    with the indices of the records each backs; what is not a byte string is left to
    ``Records``, which refuses it with its own error."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.stream, r.sequence), []).append(i)
    out: list[Vouching] = []
    total = 0
    for (stream, sequence), indices in groups.items():
        if len(indices) < VOUCH_MIN_RECORDS:
            continue
        row = db.execute(
            "SELECT envelope FROM manifests WHERE stream = ? AND sequence = ?"
            " AND typeof(envelope) = 'blob' AND length(envelope) <= ?",
            [stream, sequence, MAX_MANIFEST_FILE_BYTES],
        ).fetchone()
        if row is None or total + len(row[0]) > VOUCH_MAX_BYTES:
            continue
        total += len(row[0])
        out.append(((stream, sequence), bytes(row[0]), indices))
    return out


def judge_manifests(
    trust: TrustState, records: list[Record], work: list[Vouching]
) -> list[list[Any]]:
    """For each envelope of ``work`` that verifies under ``trust`` as a stored manifest of
    its (stream, sequence): [stream, sequence, its signers, the indices of its records
    that it does not list as they are]. An envelope that does not verify, or names
    another stream, is left out: ``Records`` judges its records, with its own errors.
    Plain lists: the answer crosses a pipe from the helper that computes it."""
    out: list[list[Any]] = []
    for (stream, sequence), raw, indices in work:
        try:
            env = Envelope.from_bytes(raw, max_bytes=MAX_MANIFEST_FILE_BYTES)
            signers = verify_envelope(env, trust.resolver(), PAYLOAD_TYPE)
            manifest = parse_manifest(env.payload)
        except RejectedError:
            continue
        if manifest.stream != stream:
            continue
        bad = [i for i in indices if not _matches(manifest, records[i])]
        out.append([stream, sequence, sorted(signers), bad])
    return out


def vouched_signers(work: list[Vouching], found: object) -> dict[int, frozenset[str]]:
    """Record index -> signers, from a helper's ``judge_manifests`` answer ``found`` for
    ``work``: only for the records of an envelope it judged, not among those it found
    unlisted; anything not shaped as ``judge_manifests`` answers is left out (judged here)."""
    groups = {key: indices for key, _, indices in work}
    out: dict[int, frozenset[str]] = {}
    if not isinstance(found, list):
        return out
    for item in found:
        if not (isinstance(item, list) and len(item) == 4):
            continue
        stream, sequence, signers, bad = item
        indices = groups.pop((stream, sequence), None) if type(sequence) is int else None
        if indices is None or not isinstance(signers, list) or not isinstance(bad, list):
            continue
        if not all(type(k) is str for k in signers) or not all(type(i) is int for i in bad):
            continue
        counted, unlisted = frozenset(signers), set(bad)
        out.update((i, counted) for i in indices if i not in unlisted)
    return out


def _moves_pointer(e: dict[str, Any]) -> dict[str, Any] | None:
    """The event with its detail parsed when it may move a pointer (an import that
    activated, or a rollback), else None."""
    detail = audit.detail_dict(e["detail"])
    if (e["type"] == "import" and detail.get("activated")) or e["type"] == "rollback":
        return {**e, "detail": detail, _STORED_DETAIL: e["detail"]}
    return None


_STORED_DETAIL = "stored_detail"  # the detail as stored, the bytes the chain hashed


def _pointer_events(db: Database, name: str) -> list[dict[str, Any]]:
    out = []
    for e in audit.pointer_rows(db, name):
        moved = _moves_pointer(e)
        if moved is not None:
            out.append(moved)
    return out


def _check_hash(event: dict[str, Any]) -> None:
    """The event as stored hashes to its ``hash``: the detail string the chain covers,
    which the parsed detail the rules read is parsed from (``_moves_pointer``)."""
    raw = {**event, "detail": event[_STORED_DETAIL]}
    if not audit.hash_matches(event["prev_hash"], raw, event["hash"]):
        raise PointerUnauthorizedError(f"audit event {event['seq']} was altered")


def _check_neighbours(
    event: dict[str, Any], prev_hash: str | None, next_row: tuple[str] | None
) -> None:
    """``prev_hash``: the hash of event seq-1 (None: no such row); ``next_row``: the
    prev_hash of event seq+1 (None: no such row)."""
    if event["seq"] > 1 and (prev_hash is None or prev_hash != event["prev_hash"]):
        raise PointerUnauthorizedError(f"audit event {event['seq']} does not link to its past")
    if next_row is not None and next_row[0] != event["hash"]:
        raise PointerUnauthorizedError(f"audit event {event['seq']} was replaced")


def _check_links(db: Database, event: dict[str, Any]) -> None:
    _check_hash(event)
    prev = db.execute("SELECT hash FROM audit WHERE seq = ?", [event["seq"] - 1]).fetchone()
    nxt = db.execute("SELECT prev_hash FROM audit WHERE seq = ?", [event["seq"] + 1]).fetchone()
    _check_neighbours(
        event, None if prev is None else str(prev[0]), None if nxt is None else (str(nxt[0]),)
    )


def _check_rollback(
    db: Database,
    trust: TrustState,
    name: str,
    event: dict[str, Any],
    seen: set[str],
) -> None:
    """``trust`` is the trust in force when the rollback was applied: rules are judged at
    the time of the act, so raising the rollback threshold later does not void it."""
    auth_id = event["detail"].get("authorization_id")
    if not isinstance(auth_id, str) or auth_id in seen:
        raise PointerUnauthorizedError(
            f"{name}: rollback event {event['seq']} cites no authorization or reuses one"
        )
    seen.add(auth_id)
    row = db.execute("SELECT envelope FROM used_authorizations WHERE id = ?", [auth_id]).fetchone()
    if row is None or row[0] is None:
        raise PointerUnauthorizedError(f"{name}: authorization {auth_id} is not on record")
    try:
        env = Envelope.from_bytes(bytes(row[0]))
        signers = verify_envelope(env, trust.resolver(), ROLLBACK_PAYLOAD_TYPE)
    except RejectedError as e:
        raise PointerUnauthorizedError(
            f"{name}: stored authorization {auth_id} does not verify ({e.code})"
        ) from e
    # Authorized then: the signers held the rollback role (revocation since does not undo it).
    holders = {s for s in signers if s in trust.keys and trust.keys[s].role == ("rollback", "")}
    if len(holders) < trust.threshold(("rollback", "")):
        raise PointerUnauthorizedError(
            f"{name}: authorization {auth_id} is not signed by the rollback role"
        )
    payload = json.loads(env.payload)
    if payload.get("name") != name or payload.get("to_version") != event["version"]:
        raise PointerUnauthorizedError(
            f"{name}: authorization {auth_id} does not authorize a move to {event['version']}"
        )


def check_signers_column(db: Database, record: Record) -> None:
    """The record's ``signers`` column (what ``appliance list --json`` shows) is what the
    record's accepted import event recorded, and that event hashes right: both are written
    from one list in one transaction at import, so a column edited since, or a record with
    no import event, is ``record_unauthorized`` (exit 4). The signers that count are never
    read from the column (``check_record``); this keeps what responders are shown honest."""
    intact = [
        (int(e["seq"]), audit.detail_dict(e["detail"]).get("signers"))
        for e in _imports_of(db, record.name, record.version)
        if audit.hash_matches(e["prev_hash"], e, e["hash"])
    ]
    _judge_signers(record, intact)


def _imports_of(db: Database, name: str, version: str) -> list[dict[str, Any]]:
    """The accepted import events of ``name`` at ``version`` (one, unless the log was
    edited)."""
    return [
        e for e in audit.pointer_rows(db, name) if e["type"] == "import" and e["version"] == version
    ]


def check_missing_record(db: Database, name: str, version: str | None) -> None:
    """For a record the store does not hold (``store.find`` gave ``not_found``): raise
    the tampering that shows, or return when it is an ordinary ``not_found`` (exit 2).
    No active version while an audited move set one is ``pointer_unauthorized``; a
    version the log says was imported, or the active one, with no record is
    ``record_unauthorized``: records are never removed (exit 4)."""
    active = active_version(db, name)
    if version is None:
        check_pointer(db, name)
        if active is None:
            return
        version = active
    imports = _imports_of(db, name, version)
    if imports:
        raise RecordUnauthorizedError(
            f"{name}@{version}: imported (audit event {imports[0]['seq']}) but its record is "
            "gone from the store: the database was edited"
        )
    if version == active:
        raise RecordUnauthorizedError(
            f"{name}@{version}: the active version has no record: the database was edited"
        )


def _judge_signers(record: Record, intact: list[tuple[int, Any]]) -> None:
    """``intact``: (seq, recorded signers) of each accepted import event of the record's
    name and version whose stored bytes hash to its ``hash`` (one, unless the log was
    edited: a record is backed when any of them recorded its signers)."""
    ref = f"{record.name}@{record.version}"
    if not intact:
        raise RecordUnauthorizedError(f"{ref}: no intact audited import event for this record")
    if not any(isinstance(s, list) and tuple(s) == record.signers for _, s in intact):
        raise RecordUnauthorizedError(
            f"{ref}: the record's signers differ from those its import (audit event "
            f"{intact[-1][0]}) recorded: the database was edited"
        )


# Each active pointer, and whether it names a stored version (``Pointers.lands``).
_ACTIVE_LANDS = (
    "SELECT a.name, a.version, EXISTS (SELECT 1 FROM artifacts r "
    "WHERE r.name = a.name AND r.version = a.version) FROM active a"
)


def pointer_lands(db: Database, name: str) -> bool:
    """``name``'s active pointer names a stored version of it (``Pointers.lands``)."""
    row = db.execute(
        "SELECT 1 FROM active a JOIN artifacts r ON r.name = a.name AND r.version = a.version "
        "WHERE a.name = ?",
        [name],
    ).fetchone()
    return row is not None


def check_pointer(db: Database, name: str) -> None:
    """The active version of ``name`` is where the last authorized, audited move put it
    (no active version when no move put one: a name whose ``active`` row is gone while
    an audited move set it is refused). The rules use the trust in force at each
    rollback, read from the database, not today's."""
    with snapshot(db):  # the events and the pointer as of one moment, not across a commit
        events = _pointer_events(db, name)
        active = active_version(db, name)
    _judge_pointer(db, name, active, events, lambda e: _check_links(db, e))


def _judge_pointer(
    db: Database,
    name: str,
    active: str | None,
    events: list[dict[str, Any]],
    check_links: Callable[[dict[str, Any]], None],
) -> None:
    if not events:
        if active is not None:
            raise PointerUnauthorizedError(f"{name}: active version {active} was never imported")
        return
    last_release = 0
    seen: set[str] = set()
    for e in events:
        check_links(e)
        if e["type"] == "import":
            release = int(e["detail"].get("release", 0))
            if release <= last_release:
                raise PointerUnauthorizedError(
                    f"{name}: audit event {e['seq']} imports release {release} after {last_release}"
                )
            last_release = release
        else:
            chain = evidence.trust_chain(db)
            version = evidence.trust_version_at(db, int(e["seq"]))
            _check_rollback(db, chain.at(version), name, e, seen)
    if active is None:
        raise PointerUnauthorizedError(
            f"{name}: has no active version, but the last authorized move set "
            f"{events[-1]['version']} (the active pointer was removed)"
        )
    if events[-1]["version"] != active:
        raise PointerUnauthorizedError(
            f"{name}: active version {active} was not set by an authorized move "
            f"(last authorized: {events[-1]['version']})"
        )


_K = TypeVar("_K", int, str)


_LINKED_COLS = (*audit.FIELDS, "prev_hash", "hash")  # the first ten of a linked row
_Linked = tuple[tuple[Any, ...], Any]  # (``audit.pointer_rows_linked`` row, parsed detail)


class Pointers:
    """``check_pointer`` for many names in one read-only pass (``appliance verify``).

    The pointer-moving events of every name, their neighbours' links and whether their
    bytes hash right are read in one query (``audit.pointer_rows_linked``), and the
    active pointers in a second, when this is made. A name whose events are all
    imports that hash right, link to both neighbours and go up in release (an integer
    each), the last of which set its active pointer, is shown sound in that one pass
    (no dict, no closure, no query for it); any other name is judged from memory when
    asked, by ``check_pointer``'s rules (``_judge_pointer``) and with its errors, each
    event's hash and links checked once (memo by seq).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._rows: dict[str, list[_Linked]] = {}
        self._links: dict[int, tuple[str | None, tuple[str] | None]] = {}
        self._hashed: dict[int, bool] = {}
        self._checked: dict[int, PointerUnauthorizedError | None] = {}
        self._verdicts: dict[str, PointerUnauthorizedError | None] = {}
        # (name, version) -> its accepted import events: (row, the signers it recorded)
        self._imports: dict[tuple[str, str], list[tuple[tuple[Any, ...], Any]]] = {}
        counters["pointer_reads"] += 1
        with snapshot(db):  # the events and the pointers as of one moment
            rows = audit.pointer_rows_linked(db)
            active = db.execute(_ACTIVE_LANDS).fetchall()
        self._active = {str(r[0]): str(r[1]) for r in active}
        self._lands = {str(r[0]) for r in active if r[2]}
        # name -> (every event so far shown sound, the last release, the last version)
        shown: dict[str, tuple[bool, int, Any]] = {}
        fresh = (True, 0, None)
        for row in rows:
            kind = row[2]
            detail = audit.detail_dict(row[7])
            name, seq = str(row[5]), row[0]
            if kind == "import":  # every accepted import, activating or not (``check_signers``)
                self._imports.setdefault((name, str(row[6])), []).append(
                    (row, detail.get("signers"))
                )
            if not ((kind == "import" and detail.get("activated")) or kind == "rollback"):
                continue  # as ``_moves_pointer``: this event moves no pointer
            self._rows.setdefault(name, []).append((row, detail))
            sound, last, _ = shown.get(name, fresh)
            release = detail.get("release", 0) if kind == "import" else None
            sound = bool(
                sound
                and kind == "import"
                and row[10]  # its bytes hash to its hash
                and (seq <= 1 or (type(row[11]) is str and row[11] == row[8]))
                and (row[12] is None or (type(row[13]) is str and row[13] == row[9]))
                and type(release) is int
                and release > last
            )
            shown[name] = (sound, release if sound and isinstance(release, int) else 0, row[6])
        for name, (sound, _, version) in shown.items():
            active_version = self._active.get(name)
            if sound and active_version is not None and active_version == version:
                self._verdicts[name] = None

    def _events(self, name: str) -> list[dict[str, Any]]:
        """The name's events as ``_pointer_events`` gives them (with their links and
        hash findings noted for ``_check_links``)."""
        out = []
        for row, detail in self._rows.get(name, []):
            seq = int(row[0])
            self._hashed[seq] = bool(row[10])
            self._links[seq] = (
                None if row[11] is None else str(row[11]),
                None if row[12] is None else (str(row[13]),),
            )
            event = dict(zip(_LINKED_COLS, row[:10], strict=True))
            out.append({**event, "detail": detail, _STORED_DETAIL: row[7]})
        return out

    def _check_links(self, event: dict[str, Any]) -> None:
        seq = int(event["seq"])

        def links() -> None:
            if not self._hashed[seq]:  # not shown by the one pass: checked here
                _check_hash(event)
            _check_neighbours(event, *self._links[seq])

        _once(self._checked, seq, links)

    def check_signers(self, record: Record) -> None:
        """As ``check_signers_column(db, record)`` at the time this was made."""
        found = self._imports.get((record.name, record.version), ())
        if len(found) == 1:  # the usual case, decided here: one event, shown intact, agreeing
            row, signers = found[0]
            if row[10] and type(signers) is list and tuple(signers) == record.signers:
                return
        intact = []
        for row, signers in found:
            # the one pass's hash finding, else hashed here as ``_check_links`` does
            if row[10] or audit.hash_matches(
                row[8], dict(zip(_LINKED_COLS, row[:10], strict=True)), row[9]
            ):
                intact.append((int(row[0]), signers))
        _judge_signers(record, intact)

    def lands(self, name: str) -> bool:
        """``name``'s ``active`` row names a stored version of it (at the time this was
        made): false when there is no row, and when the row names a version with no
        record (a pointer moved to nothing is judged too, not passed over)."""
        return name in self._lands

    def check(self, name: str) -> None:
        """As ``check_pointer(db, name)`` at the time this was made."""
        if self._verdicts.get(name, False) is None:
            return  # shown sound (or judged sound before)
        _once(
            self._verdicts,
            name,
            lambda: _judge_pointer(
                self._db, name, self._active.get(name), self._events(name), self._check_links
            ),
        )


def _once(
    verdicts: dict[_K, PointerUnauthorizedError | None], key: _K, check: Callable[[], None]
) -> None:
    """Run ``check`` for ``key`` the first time only; raise its refusal (a fresh error with
    the same message) every time."""
    if key not in verdicts:
        try:
            check()
            verdicts[key] = None
        except PointerUnauthorizedError as e:
            verdicts[key] = e
    error = verdicts[key]
    if error is not None:
        raise PointerUnauthorizedError(error.message)
