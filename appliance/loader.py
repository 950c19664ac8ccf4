"""Verify on every load: the caller gets an open descriptor whose bytes were hashed.

``load(name, version=None)`` goes: witness check (when one is configured:
exit 4 semantics) -> the trust record (active version unless one is named) ->
open the store object (never through a symlink) -> copy it into a private
copy no one else can change (``appliance.sealed``: a sealed memfd, or an
unnamed file above the RAM cap) -> BLAKE3 of that copy, compared with the
record -> provenance and today's trust (``appliance.verify.check_provenance``:
the record must match its stored signed manifest, whose signers are checked
against *today's* trust store, so a key revoked since import fails the load;
an active pointer must have been put there by an authorized, audited move)
-> one audit event ``load`` with outcome ``verified`` or ``rejected`` (and the
error code, and ``loader``: who loaded, see ``appliance.service.identity``)
-> the descriptor handed over. No cache: every call hashes again. The loader
service (``appliance.service``) runs the same ``verified_open`` with its
grant check as the gate.

Why a copy: store objects are 0444 and only the appliance writes them, but
the threat model includes a writer who can change store files between check
and use (overwrite in place after a chmod, or replace by rename). Hashing the
store file and then handing it over would leave that gap; hashing a sealed
copy closes it: the handed-over bytes are exactly the hashed bytes, and a
writer racing the copy produces a hash mismatch (``ObjectTamperedError``),
never other bytes that pass. Replacement by rename is harmless once the
descriptor is held. Residual risk: see ``appliance.sealed`` and
``docs/LOADING.md``.

Cost: a verified load of a tiny artifact is dominated by the audit event's
SQLite commit (``synchronous=FULL``: several fsyncs); ``record=False`` skips
the event for hot loops (the bytes are still copied, hashed and trust-checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import audit, provenance, witness
from appliance.db import Database, read_only, transaction
from appliance.errors import DigestPinnedError, NotFoundError
from appliance.evidence import one_anchor
from appliance.headstart import BackgroundHash, HeadStart
from appliance.home import Home, default_home
from appliance.provenance import check_missing_record
from appliance.sealed import private_copy
from appliance.service.identity import Identity, self_identity
from appliance.store import Record, find, is_immutable, parse_ref
from appliance.truststore import load_trust
from appliance.verify import check_digest, check_hash, check_provenance, open_object
from bundles.closing import Closing
from bundles.errors import ApplianceError, RejectedError, StateSuspectError

__all__ = [
    "LoadedArtifact",
    "check_pin",
    "default_home",
    "load",
    "load_event",
    "load_from_db",
    "load_from_home",
    "undelivered_event",
    "resolve_home",
    "verified_open",
]


def resolve_home(home: Home | str | os.PathLike[str] | None) -> Home:
    if isinstance(home, Home):
        return home
    return Home(Path(home) if home is not None else default_home())


@dataclass
class LoadedArtifact(Closing):
    """A verified artifact: ``fd`` is the open descriptor whose bytes were hashed.

    Use it as a context manager (``with appliance.load("model") as art:``) or
    call ``close()``. ``path`` (``/dev/fd/N``) names the same open file for
    code that wants a path; it is valid while the descriptor is open.
    """

    name: str
    version: str
    digest: str
    size: int
    fd: int
    sealed: bool
    record: Record
    _closed: bool = field(default=False, repr=False)
    copy: str | None = None  # immutable_inode | sealed_memfd | unnamed_file (docs/LOADING.md)

    @property
    def path(self) -> str:
        return f"/dev/fd/{self.fd}"

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bytes:
        """All verified bytes (read with ``pread`` from offset 0; the offset is not moved)."""
        chunks: list[bytes] = []
        offset = 0
        while offset < self.size:
            chunk = os.pread(self.fd, min(self.size - offset, 1 << 30), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": {"blake3": self.digest},
            "size": self.size,
            "copy": self.copy or ("sealed_memfd" if self.sealed else "unnamed_file"),
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


OVERLAP_MIN = 16 << 20  # from this size the hash runs in a thread beside the provenance check


@dataclass
class _Hashing:
    """The descriptor that will be handed over, and its hash (running, or still to run)."""

    record: Record
    fd: int
    sealed: bool
    copy: str | None
    running: BackgroundHash | None

    def finish(self) -> LoadedArtifact:
        """Wait for the hash and compare it with the record (``ObjectTamperedError``)."""
        rec = self.record
        try:
            if self.running is None:
                check_hash(self.fd, rec)
            else:
                digest, size = self.running.result()
                check_digest(rec, digest, size)
        except BaseException:
            self.abandon()
            raise
        return LoadedArtifact(
            rec.name, rec.version, rec.digest, rec.size, self.fd, self.sealed, rec, copy=self.copy
        )

    def abandon(self) -> None:
        """Stop the hash (a mapped one stops at its next chunk), wait, close the descriptor."""
        try:
            if self.running is not None:
                self.running.stop()
        finally:
            os.close(self.fd)


def _start_hash(
    home: Home, record: Record, *, mapped: bool = False, early: HeadStart | None = None
) -> _Hashing:
    """Open the record's object and start hashing what will be handed over.

    Fast path: when the open store object's inode carries the immutable flag (asked of
    that very descriptor, ``FS_IOC_GETFLAGS``), no one without ``CAP_LINUX_IMMUTABLE`` can
    change it, so it is hashed in place and that descriptor is handed over (no copy);
    ``early`` (the CLI's head start, ``appliance.headstart``) already hashes it when it
    opened the same inode; ``mapped`` hashes it through a mapping (the one-shot CLI
    only: ``bundles.hashing.hash_mapped``). Otherwise a private copy no one else can
    change (``appliance.sealed``) is hashed (by ``pread``) and handed over. From
    ``OVERLAP_MIN`` bytes the hash runs in a thread while the caller checks provenance.
    What each path guarantees: docs/LOADING.md.
    """
    what = f"{record.name}@{record.version}"
    src = open_object(home, record)
    big = record.size >= OVERLAP_MIN
    if is_immutable(src):
        try:
            running = early.claim(src) if early is not None else None
            if running is None and big:
                running = BackgroundHash(src, mapped=mapped)
        except BaseException:
            os.close(src)
            raise
        return _Hashing(record, src, False, "immutable_inode", running)
    try:
        fd, sealed = private_copy(src, record.size, home.staging, what)
    finally:
        os.close(src)
    try:
        running = BackgroundHash(fd, mapped=False) if big else None
    except BaseException:
        os.close(fd)
        raise
    return _Hashing(record, fd, sealed, None, running)


def open_verified(home: Home, record: Record) -> LoadedArtifact:
    """The record's object, hashed from the descriptor handed over; ``ObjectTamperedError``
    on mismatch (the paths: ``_start_hash``; their guarantees: docs/LOADING.md)."""
    return _start_hash(home, record).finish()


Gate = Callable[[Record], None]
Provenance = Callable[[Database, Record], object]
Guard = Callable[[], AbstractContextManager[object]]
Lookup = Callable[[Database, str, "str | None"], Record]


def _provenance(db: Database, rec: Record) -> object:
    return check_provenance(db, load_trust(db), rec)


def check_pin(rec: Record, digest: str | None) -> None:
    """A request that pins a BLAKE3 digest gets exactly that object or ``digest_pinned``."""
    if digest is not None and digest.lower() != rec.digest:
        raise DigestPinnedError(
            f"{rec.name}@{rec.version} has BLAKE3 {rec.digest[:16]}..., "
            f"the request pinned {digest[:16]}..."
        )


def verified_open(
    home: Home,
    db: Database,
    name: str,
    version: str | None,
    *,
    witness_path: Path | None,
    digest: str | None = None,
    gate: Gate | None = None,
    provenance: Provenance = _provenance,
    guard: Guard = nullcontext,
    found: list[Record] | None = None,
    lookup: Lookup = find,
    mapped: bool = False,
    early: HeadStart | None = None,
) -> LoadedArtifact:
    """The one verification path of every load, direct or through the service.

    witness -> record -> ``gate`` (the service's grant check) -> digest pin ->
    the object opened and its hash started (``_start_hash``: in place when immutable,
    else a private copy) -> provenance and today's trust, while a big object is hashed
    in a thread -> the hash compared with the record. A refusal is the one the order
    above gives first: a tampered object is ``object_tampered`` even when provenance
    refused too. Nothing is handed over before both passed. ``guard`` wraps the
    database steps (the service's connection lock), so hashing runs outside it.
    ``found`` receives the record for the event; ``lookup`` finds it (the service's
    cache; ``store.find`` by default). ``mapped`` and ``early``: see ``_start_hash``.
    Records nothing: the caller audits (``load_event``).
    """
    with guard():
        witness.require_current(db, witness_path)
        try:
            rec = lookup(db, name, version)
        except NotFoundError:
            check_missing_record(db, name, version)
            raise
    if found is not None:
        found.append(rec)
    if gate is not None:
        gate(rec)
    check_pin(rec, digest)
    hashing = _start_hash(home, rec, mapped=mapped, early=early)
    if hashing.running is None:  # small: hashed here and now, then provenance
        art = hashing.finish()
        try:
            with guard():
                provenance(db, rec)
        except BaseException:
            art.close()
            raise
        return art
    try:
        with guard():
            provenance(db, rec)
    except Exception:
        # The hash comes first in this order: a tampered object is reported as such.
        hashing.finish().close()
        raise
    except BaseException:  # interrupted: stop hashing, hand over nothing
        hashing.abandon()
        raise
    return hashing.finish()


def load_event(
    name: str,
    version: str | None,
    rec: Record | None,
    art: LoadedArtifact | None,
    error: ApplianceError | None,
    loader: Identity,
) -> dict[str, Any]:
    """The ``audit.append`` fields of one load event (``outcome`` verified or rejected)."""
    detail: dict[str, Any] = {} if rec is None else {"digest": rec.digest, "size": rec.size}
    if art is not None:
        detail["copy"] = art.to_dict()["copy"]
    detail["loader"] = loader.to_dict()
    if error is not None:
        detail["message"] = error.message
    return {
        "outcome": "rejected" if error else "verified",
        "code": error.code if error else None,
        "name": name,
        "version": rec.version if rec else version,
        "detail": detail,
    }


def undelivered_event(
    name: str, version: str | None, rec: Record | None, loader: Identity, code: str
) -> dict[str, Any]:
    """The fields of a ``load_undelivered`` event: a load on record as verified that never
    reached its loader (``code``: ``client_gone``, or the witness's error)."""
    fields = load_event(name, version, rec, None, None, loader)
    fields.update(outcome="failed", code=code)
    return fields


def _record_event(db: Database, fields: dict[str, Any], type: str = "load") -> None:
    """Commit one load event; the next load on this connection still knows the stored
    manifests it read (``provenance.carry_audit_commit``): an audited load costs what
    an unrecorded one does, whatever the size of the artifact's bundle."""
    with transaction(db):
        inside = provenance.token_inside(db)
        audit.append(db, type, **fields)
    provenance.carry_audit_commit(db, inside)


def load_from_db(
    home: Home,
    db: Database,
    name: str,
    version: str | None = None,
    *,
    witness_path: Path | None = None,
    record: bool = True,
    digest: str | None = None,
    loader: Identity | None = None,
    mapped: bool = False,
    early: HeadStart | None = None,
) -> LoadedArtifact:
    """``load`` on an open state database (the CLI and the demo share one connection).

    ``mapped`` and ``early`` are the one-shot CLI's (``verified_open``)."""
    found: list[Record] = []
    record = record and not read_only()  # a forensic copy: no load events, no witness
    wpath = witness.configured_path(db, witness_path)
    who = loader if loader is not None else self_identity()
    try:
        art = verified_open(
            home,
            db,
            name,
            version,
            witness_path=wpath,
            digest=digest,
            found=found,
            mapped=mapped,
            early=early,
        )
    except (RejectedError, StateSuspectError) as e:
        if record:
            rec = found[0] if found else None
            _record_event(db, load_event(name, version, rec, None, e, who))
            if not isinstance(e, StateSuspectError):
                witness.refresh(db, wpath)
        raise
    if record:
        try:
            _record_event(db, load_event(name, version, art.record, art, None, who))
            # With a witness, load events are witnessed too: none can vanish unnoticed.
            _witness_or_undelivered(db, wpath, name, version, art, who)
        except BaseException:
            art.close()
            raise
    return art


def _witness_or_undelivered(
    db: Database,
    wpath: Path | None,
    name: str,
    version: str | None,
    art: LoadedArtifact,
    who: Identity,
) -> None:
    """Bring the witness forward after a load's event. When that fails the load is not
    handed over (its event would not be witnessed), and the log says so: a
    ``load_undelivered`` event with the witness's error code, not witnessed either."""
    try:
        witness.refresh(db, wpath)
    except ApplianceError as e:
        _record_event(
            db, undelivered_event(name, version, art.record, who, e.code), "load_undelivered"
        )
        raise


def load(
    name: str,
    version: str | None = None,
    *,
    home: Home | str | os.PathLike[str] | None = None,
    witness: Path | None = None,
    record: bool = True,
    socket: str | os.PathLike[str] | None = None,
    digest: str | None = None,
) -> LoadedArtifact:
    """Verify NAME (the active version, or VERSION) and return it open.

    ``name`` may also be ``NAME@VERSION``. Raises ``NotFoundError`` (exit 2),
    ``ObjectTamperedError``/``StateRolledBackError``/``WitnessMissingError``
    (exit 4), a ``RejectedError`` such as ``RevokedKeyError`` when today's
    trust no longer accepts the signers (exit 1), ``OperationalError`` (exit 3).
    ``record=False`` skips the audit event (hot loops); refusals are recorded
    either way only when ``record`` is true.

    ``socket``: ask the loader service at that path instead of reading the
    home (``home``, ``witness`` and ``record`` are then the service's; the
    service always records). ``digest``: refuse any other object
    (``DigestPinnedError``, exit 1).
    """
    if version is None and "@" in name:
        name, version = parse_ref(name)
    if socket is not None:
        from appliance.service.client import request_load

        return request_load(Path(socket), name, version, digest=digest)
    return load_from_home(
        resolve_home(home), name, version, witness_path=witness, record=record, digest=digest
    )


def load_from_home(
    home: Home,
    name: str,
    version: str | None = None,
    *,
    witness_path: Path | None = None,
    record: bool = True,
    digest: str | None = None,
    mapped: bool = False,
    early: HeadStart | None = None,
) -> LoadedArtifact:
    """``load_from_db`` on the home's database, opened for this load and closed after it;
    the trust anchor is read once for the whole load (``evidence.one_anchor``: opening the
    home, the witness location and the trust chain judge by the same anchor)."""
    with one_anchor():
        db = home.db()
        try:
            return load_from_db(
                home,
                db,
                name,
                version,
                witness_path=witness_path,
                record=record,
                digest=digest,
                mapped=mapped,
                early=early,
            )
        finally:
            db.conn.close()
