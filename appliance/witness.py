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

import sqlite_utils

from appliance import audit
from appliance.db import get_meta
from appliance.errors import (
    IOFailedError,
    StateRolledBackError,
    WitnessMissingError,
)
from appliance.truststore import Counters, counters
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


def configured_path(db: sqlite_utils.Database, given: Path | None) -> Path | None:
    """The path given now, else the one recorded when the witness was first set up."""
    if given is not None:
        return given
    recorded = get_meta(db, "witness_path")
    return Path(recorded) if recorded else None


def read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_WITNESS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IOFailedError(f"cannot read witness {path}: {e.strerror}") from e
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateRolledBackError(f"witness {path} is unreadable: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateRolledBackError(f"witness {path} is not an appliance witness")
    return doc


def write(db: sqlite_utils.Database, path: Path) -> dict[str, Any]:
    """Atomically write the home's current counters to ``path``."""
    doc: dict[str, Any] = {"format": FORMAT, "written_at": format_time(utcnow()), **counters(db)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise IOFailedError(f"cannot write witness {path}: {e.strerror}") from e
    return doc


def signed_counters_reach(current: Counters, witness: dict[str, Any]) -> bool:
    """True when trust version and every stream's sequence are at least the witness's."""
    if current["trust_version"] < int(witness.get("trust_version", 0)):
        return False
    streams = current["streams"]
    return all(streams.get(s, 0) >= int(n) for s, n in witness.get("streams", {}).items())


def require_resync(
    db: sqlite_utils.Database,
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


def check(db: sqlite_utils.Database, path: Path | None) -> WitnessCheck:
    if path is None:
        return WitnessCheck(WitnessStatus.OFF, None, "no witness configured")
    doc = read(path)
    if doc is None:
        return WitnessCheck(WitnessStatus.MISSING, path, f"witness {path} is absent")
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


def require_current(db: sqlite_utils.Database, path: Path | None) -> WitnessCheck:
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


def refresh(db: sqlite_utils.Database, path: Path | None) -> None:
    """After a committed change: bring the witness forward (no-op when off)."""
    if path is not None:
        write(db, path)


def record_reset(db: sqlite_utils.Database, path: Path, reason: str) -> dict[str, Any]:
    """``appliance witness reset``: accept the home as it is, audited."""
    before = read(path) if path.exists() else None
    event = audit.append(
        db,
        "witness_reset",
        outcome="accepted",
        detail={"path": str(path), "reason": reason, "previous": before},
    )
    return event
