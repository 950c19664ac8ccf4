"""The state witness: the audit chain head and signed counters, kept elsewhere.

A restored older copy of the home (VM snapshot, backup) would bring back
revoked keys and lower high-water marks. The witness, written to a second
location after every change, lets the appliance notice: when the home's
signed counters are below the witness's, or its audit chain does not contain
the witnessed head, the home is behind and loads refuse (exit 4).

A home *ahead* of its witness is accepted and the witness is brought forward:
that is what a crash between a commit and the witness write leaves, and it
cannot bring back revoked keys. The way back from "behind" is signed state:
an import or trust update that brings every counter up to the witness's, or
an explicit ``appliance witness reset``, which the audit log records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from appliance import audit, safefs
from appliance.anchor import home_key, replace_anchor_witness, write_anchor
from appliance.db import Database, get_meta, transaction
from appliance.errors import (
    IOFailedError,
    OperationalError,
    ReadOnlyModeError,
    StateRolledBackError,
    UsageError,
    WitnessForeignError,
    WitnessMissingError,
    WitnessUnreadableError,
)
from appliance.evidence import anchor_of, home_root, read_only
from appliance.truststore import Counters, counters
from appliance.witnesslock import lock_for_writing
from bundles.timeutil import format_time, utcnow

FORMAT = 1
MAX_WITNESS_BYTES = 1 << 20


class WitnessStatus(Enum):
    OFF = "off"
    MISSING = "missing"
    CURRENT = "current"
    AHEAD = "home_ahead"  # home has events the witness has not seen yet: fine
    BEHIND = "home_behind"  # home older than its witness: state rolled back


@dataclass(frozen=True)
class WitnessCheck:
    status: WitnessStatus
    path: Path | None
    detail: str
    witness: dict[str, Any] | None = None


def configured_path(db: Database, given: Path | None) -> Path | None:
    """The witness named in the home's trust anchor (outside the home: a writer of the home
    cannot switch it off); with none there, the path given now (``--witness``).

    A ``--witness`` that names another file than the anchor's is a usage error.
    """
    recorded = anchor_of(db).witness
    if recorded is None:
        return given
    if given is not None and Path(os.path.abspath(given)) != recorded:
        raise UsageError(
            f"the trust anchor names the witness {recorded}; --witness {given} differs "
            "(change it with 'appliance witness reset --witness PATH')"
        )
    return recorded


def _identity(db: Database) -> dict[str, str]:
    return {"home": home_key(home_root(db)), "home_id": get_meta(db, "home_id") or ""}


def check_belongs(db: Database, path: Path, doc: dict[str, Any]) -> None:
    """A witness records the home it belongs to; a copy of a home must never use it."""
    mine = _identity(db)
    theirs = {k: doc.get(k) for k in mine}
    if read_only():
        theirs.pop("home")
        mine.pop("home")
    if theirs != mine:
        raise WitnessForeignError(
            f"witness {path} belongs to the home {doc.get('home')} (id "
            f"{str(doc.get('home_id'))[:12]}), not this one ({mine.get('home', '')} id "
            f"{mine['home_id'][:12]}): a copied home is examined with --read-only"
        )


def _open_parent(path: Path) -> int:
    """The witness's folder: the operator's choice (it may be a link, or other media)."""
    return safefs.open_root(path.parent)


SWAP_RETRIES = 8  # looks at a witness another process is replacing, before it is refused


def _open_witness(parent: int, name: str) -> int:
    """Open the witness, looking again when an appliance write (a ``rename`` of a new
    regular file over it) lands between the look and the open: that race is every
    concurrent command's, not an attack. A name still swapped after ``SWAP_RETRIES``
    looks, or anything but a regular file at it, is refused."""
    for _ in range(SWAP_RETRIES - 1):
        try:
            return safefs.open_file_at(parent, name, os.O_RDONLY)
        except safefs.SwappedError:
            continue
    return safefs.open_file_at(parent, name, os.O_RDONLY)


def read(path: Path) -> dict[str, Any] | None:
    """The witness document, or None when the file is absent.

    Opened by descriptor, ``O_NOFOLLOW | O_NONBLOCK`` after an ``lstat``, and
    checked with ``fstat``: a link, FIFO, directory, device or socket at the
    witness's name is ``witness_unreadable`` (exit 4), never followed, never a
    hang; content that is not a witness stays ``state_rolled_back``.
    """
    try:
        parent = _open_parent(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IOFailedError(f"cannot read witness {path}: {e.strerror}") from e
    try:
        return _read_at(parent, path)
    finally:
        os.close(parent)


def _read_at(parent: int, path: Path) -> dict[str, Any] | None:
    """``read`` in the witness folder open at ``parent`` (a writer checks and replaces the
    witness in one folder, even if the folder's path is swapped meanwhile)."""
    try:
        fd = _open_witness(parent, path.name)
        try:
            data = os.read(fd, MAX_WITNESS_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except safefs.UnsafeEntryError as e:
        raise WitnessUnreadableError(f"witness {path}: {e}; refusing to trust it") from e
    except OSError as e:
        raise IOFailedError(f"cannot read witness {path}: {e.strerror}") from e
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateRolledBackError(f"witness {path} is unreadable: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateRolledBackError(f"witness {path} is not an appliance witness")
    return doc


def write(db: Database, path: Path, *, adopt: bool = False) -> dict[str, Any]:
    """Atomically write the home's current counters to ``path``.

    By an unpredictable temporary name in the witness's folder, created with
    ``O_EXCL | O_NOFOLLOW``, renamed over the witness by descriptor; anything
    but a regular file at the witness's name is refused (``witness_unreadable``).
    An existing witness of another home is never overwritten (``adopt`` is for
    ``witness reset``, which the audit log records). One writer at a time
    (``witnesslock.lock_for_writing``), and the counters are read under that lock; a link,
    FIFO or other non-file at the lock's name is ``witness_unreadable`` too.
    """
    if read_only():
        raise ReadOnlyModeError("--read-only: the witness is never written")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = _open_parent(path)
    except OSError as e:
        raise IOFailedError(f"cannot write witness {path}: {e.strerror}") from e
    lock: int | None = None
    try:
        lock = lock_for_writing(parent, path)
        if not adopt:
            existing = _read_at(parent, path)
            if existing is not None:
                check_belongs(db, path, existing)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "written_at": format_time(utcnow()),
            **_identity(db),
            **counters(db),
        }
        data = json.dumps(doc, sort_keys=True).encode()
        safefs.check_at(parent, path.name, "regular file")
        safefs.write_file_at(parent, path.name, data, 0o644)
    except safefs.UnsafeEntryError as e:
        raise WitnessUnreadableError(f"witness {path}: {e}; not overwritten") from e
    except OSError as e:
        raise IOFailedError(f"cannot write witness {path}: {e.strerror}") from e
    finally:
        if lock is not None:
            os.close(lock)
        os.close(parent)
    return doc


def signed_counters_reach(current: Counters, witness: dict[str, Any]) -> bool:
    """True when trust version and every stream's sequence are at least the witness's."""
    if current["trust_version"] < int(witness.get("trust_version", 0)):
        return False
    streams = current["streams"]
    return all(streams.get(s, 0) >= int(n) for s, n in witness.get("streams", {}).items())


def require_resync(
    db: Database,
    result: WitnessCheck,
    what: str,
    *,
    trust_version: int | None = None,
    stream: tuple[str, int] | None = None,
) -> None:
    """A home behind its witness takes only a change that brings its signed counters up to
    the witness's (the new ``trust_version``, or ``stream`` at a new sequence); else exit 4.
    """
    if result.status is not WitnessStatus.BEHIND or result.witness is None:
        return
    after = counters(db)
    if trust_version is not None:
        after["trust_version"] = trust_version
    if stream is not None:
        after["streams"] = {**after["streams"], stream[0]: stream[1]}
    if not signed_counters_reach(after, result.witness):
        raise StateRolledBackError(
            f"appliance state was rolled back behind its witness ({result.detail}); "
            f"this {what} does not bring it up to date, so it is refused"
        )


def check(db: Database, path: Path | None) -> WitnessCheck:
    if path is None:
        return WitnessCheck(WitnessStatus.OFF, None, "no witness configured")
    doc = read(path)
    if doc is None:
        return WitnessCheck(WitnessStatus.MISSING, path, f"witness {path} is absent")
    check_belongs(db, path, doc)
    now = counters(db)
    if not signed_counters_reach(now, doc):
        return WitnessCheck(
            WitnessStatus.BEHIND, path, "signed counters are below the witness's", doc
        )
    seq, head = int(doc.get("audit_seq", 0)), str(doc.get("audit_head", ""))
    if now["audit_seq"] < seq:
        return WitnessCheck(
            WitnessStatus.BEHIND,
            path,
            f"audit log has {now['audit_seq']} events, witness saw {seq}",
            doc,
        )
    if seq > 0:
        row = db.execute("SELECT hash FROM audit WHERE seq = ?", [seq]).fetchone()
        if row is None or row[0] != head:
            return WitnessCheck(
                WitnessStatus.BEHIND,
                path,
                f"audit event {seq} differs from the witnessed head",
                doc,
            )
    if now["audit_seq"] == seq:
        return WitnessCheck(WitnessStatus.CURRENT, path, "home matches its witness", doc)
    return WitnessCheck(WitnessStatus.AHEAD, path, "home is ahead of its witness", doc)


def missing_error(result: WitnessCheck) -> WitnessMissingError:
    """The refusal for a configured witness that is absent."""
    return WitnessMissingError(
        f"{result.detail}; if this is a new witness location run "
        "'appliance witness reset' (audited)"
    )


def require_current(db: Database, path: Path | None) -> WitnessCheck:
    """Refuse (exit 4) when the witness is configured and absent, or the home is behind."""
    result = check(db, path)
    if result.status is WitnessStatus.MISSING:
        raise missing_error(result)
    if result.status is WitnessStatus.BEHIND:
        raise StateRolledBackError(
            f"appliance state was rolled back behind its witness ({result.detail}); "
            "loads are refused until a current signed bundle or trust update is imported, "
            "or 'appliance witness reset' is run"
        )
    return result


def refresh(db: Database, path: Path | None) -> None:
    """After a committed change: bring the witness forward (no-op when off or read-only)."""
    if path is not None and not read_only():
        write(db, path)


def refresh_after_commit(db: Database, path: Path | None) -> list[str]:
    """``refresh`` for a change that has already committed: a failure is a warning, not an
    error, so that the command reports the change as done (a retry would be refused as a
    replay). Returns the warnings (one line each) for the command's ``warnings`` list.
    """
    try:
        refresh(db, path)
    except (OperationalError, StateRolledBackError, WitnessForeignError) as e:
        return [
            f"witness_write_failed: the change was committed but the witness {path} was "
            f"not brought forward ({e.code}: {e.message}); the next command re-writes it"
        ]
    return []


def reset(home_db: Database, given: Path | None, reason: str) -> dict[str, Any]:
    """``appliance witness reset``: accept the home as it is, audited; with ``--witness PATH``
    other than the anchor's, the anchor is re-written to name PATH (this needs write access
    to the anchor, which a writer of the home does not have). Call under the home lock.
    """
    anchor = anchor_of(home_db)
    path = Path(os.path.abspath(given)) if given is not None else anchor.witness
    if path is None:
        raise UsageError("no witness configured: give --witness PATH or set APPLIANCE_WITNESS")
    if path != anchor.witness:
        write_anchor(replace_anchor_witness(anchor, path), replace=True)
    with transaction(home_db):
        record_reset(home_db, path, reason)
    return write(home_db, path, adopt=True)


def record_reset(db: Database, path: Path, reason: str) -> dict[str, Any]:
    """The audit event of a witness reset (inside the caller's transaction)."""
    before = read(path)
    event = audit.append(
        db,
        "witness_reset",
        outcome="accepted",
        detail={"path": str(path), "reason": reason, "previous": before},
    )
    return event
