"""Alarms as audit events, their acknowledgement, and what an operator should do.

An alarm is the audit event ``alarm`` (outcome ``raised``, ``code`` one of the
codes below, detail ``{subject, message, at, seen_head}``). ``seen_head`` is
the audit head the watcher had verified before the finding: when the database
itself was tampered with, the alarm event that follows it is evidence, never
an appliance transaction that explains the change (``alarm`` events move no
pointer and explain no table). Acknowledging is the audit event
``alarm_ack`` citing the alarm's ``seq``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance import audit
from appliance.db import Database, transaction
from appliance.errors import (
    AlarmAlreadyAcknowledgedError,
    AlarmNotFoundError,
    AuditChainError,
    CounterUnauthorizedError,
    ObjectModifiedError,
    ObjectRemovedError,
    ObjectReplacedError,
    PointerUnauthorizedError,
    RecordUnauthorizedError,
    StateRolledBackError,
    StateUnauthorizedError,
    TrustStateUnauthorizedError,
    UnknownObjectError,
    WitnessChangedError,
)
from bundles.errors import StateSuspectError
from bundles.timeutil import format_time, utcnow

ALARM = "alarm"
ACK = "alarm_ack"

# One error class per alarm code (``--once`` raises the first finding's class: exit 4).
ALARM_ERRORS: dict[str, type[StateSuspectError]] = {
    cls.code: cls
    for cls in (
        ObjectModifiedError,
        ObjectRemovedError,
        ObjectReplacedError,
        UnknownObjectError,
        PointerUnauthorizedError,
        RecordUnauthorizedError,
        AuditChainError,
        WitnessChangedError,
        StateRolledBackError,
        TrustStateUnauthorizedError,
        CounterUnauthorizedError,
        StateUnauthorizedError,
    )
}

ADVICE: dict[str, str] = {
    "object_modified": (
        "Do not load it. Re-import a bundle that carries this artifact: the import replaces "
        "the object with verified bytes (status 'repaired'). Then find who could write the store."
    ),
    "object_removed": (
        "Loads of it fail closed. Re-import a bundle that carries the artifact to restore it; "
        "check who can write HOME/objects."
    ),
    "object_replaced": (
        "Do not load it. Re-import a bundle that carries the artifact (repair), keep the "
        "replacement file's inode details from the alarm for the investigation."
    ),
    "unknown_object": (
        "A file no record references: keep a copy for the investigation; the next import "
        "sweeps it. Nothing loads it."
    ),
    "pointer_unauthorized": (
        "Loads of this name refuse (exit 4). Compare 'appliance history NAME' with the "
        "database; restore the pointer by an authorized rollback or a new signed import."
    ),
    "record_unauthorized": (
        "A record with no signed manifest behind it: loads refuse. Treat the database as "
        "tampered; restore the home from a trusted copy or re-import signed bundles."
    ),
    "audit_chain_broken": (
        "The audit log was edited or cut. Export it ('appliance audit export') for the "
        "investigation and compare it with the witness and any earlier export."
    ),
    "witness_changed": (
        "Check the witness location; if the home is current, 'appliance witness reset "
        "--reason ...' (audited) writes it again. If the home is behind, it was rolled back."
    ),
    "state_rolled_back": (
        "The home is behind its witness: an older copy of the state was restored or the log "
        "was cut. Loads refuse; import the newest signed bundle and trust update, or restore."
    ),
    "trust_state_unauthorized": (
        "Trust tables disagree with signed trust updates: do not import or load. Re-apply the "
        "signed trust updates or restore the home; find who wrote the database."
    ),
    "counter_unauthorized": (
        "A counter (high-water mark, trust version, trusted time) changed with no audited "
        "change: import the newest signed bundle and trust update, then investigate."
    ),
    "state_unauthorized": (
        "The database changed with no appliance transaction: treat it as tampered, export "
        "the audit log and compare it with a trusted copy."
    ),
}


@dataclass(frozen=True)
class Alarm:
    """One finding: ``code`` (see ``ALARM_ERRORS``), what it concerns, and when."""

    code: str
    subject: str
    message: str
    at: str = field(default_factory=lambda: format_time(utcnow()))
    name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two alarms the same finding: for an object, code and path (a chmod and
        the write that follows are one finding); else the message too."""
        return (
            self.code,
            self.subject,
            "" if self.subject.startswith("objects/") else self.message,
        )

    @property
    def advice(self) -> str:
        return ADVICE.get(self.code, "Investigate: the appliance's own state is suspect.")

    def error(self) -> StateSuspectError:
        return ALARM_ERRORS.get(self.code, StateSuspectError)(f"{self.subject}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.code,
            "subject": self.subject,
            "at": self.at,
            "message": self.message,
            "advice": self.advice,
        }

    def line(self) -> str:
        return f"appliance: ALARM [{self.code}] {self.subject}: {self.message}"


@dataclass(frozen=True)
class RecordedAlarm:
    """An ``alarm`` event as read back from the log, with its acknowledgement if any."""

    seq: int
    ts: str
    code: str
    subject: str
    message: str
    at: str
    advice: str
    acknowledged: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "alarm": self.code,
            "subject": self.subject,
            "message": self.message,
            "at": self.at,
            "advice": self.advice,
            "acknowledged": self.acknowledged,
        }


def record(
    db: Database, alarm: Alarm, seen_head: tuple[int, str] | None = None
) -> dict[str, Any] | None:
    """Append the ``alarm`` event, unless the same finding is already unacknowledged."""
    with transaction(db):
        if any(_key(a) == alarm.key for a in unacknowledged(db)):
            return None
        detail: dict[str, Any] = {
            "subject": alarm.subject,
            "message": alarm.message,
            "at": alarm.at,
            **alarm.detail,
        }
        if seen_head is not None:
            detail["seen_head"] = {"seq": seen_head[0], "hash": seen_head[1]}
        return audit.append(
            db, ALARM, outcome="raised", code=alarm.code, name=alarm.name, detail=detail
        )


def _key(a: RecordedAlarm) -> tuple[str, str, str]:
    return (a.code, a.subject, "" if a.subject.startswith("objects/") else a.message)


def _acks(db: Database) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for seq, ts, detail in db.execute(
        "SELECT seq, ts, detail FROM audit WHERE type = ? ORDER BY seq", [ACK]
    ):
        d = audit.detail_dict(detail)
        target = d.get("alarm_seq")
        if isinstance(target, int) and target not in out:
            out[target] = {"seq": int(seq), "ts": ts, "note": d.get("note", "")}
    return out


def alarms(db: Database, *, include_acknowledged: bool = False) -> list[RecordedAlarm]:
    """Alarm events, newest first; only unacknowledged ones unless asked for all."""
    acks = _acks(db)
    out: list[RecordedAlarm] = []
    for seq, ts, code, detail in db.execute(
        "SELECT seq, ts, code, detail FROM audit WHERE type = ? ORDER BY seq DESC", [ALARM]
    ):
        ack = acks.get(int(seq))
        if ack is not None and not include_acknowledged:
            continue
        d = audit.detail_dict(detail)
        out.append(
            RecordedAlarm(
                seq=int(seq),
                ts=str(ts),
                code=str(code),
                subject=str(d.get("subject", "")),
                message=str(d.get("message", "")),
                at=str(d.get("at", ts)),
                advice=ADVICE.get(str(code), ""),
                acknowledged=ack,
            )
        )
    return out


def unacknowledged(db: Database) -> list[RecordedAlarm]:
    return alarms(db)


def acknowledge(db: Database, seq: int, note: str = "") -> dict[str, Any]:
    """Record that an operator has seen alarm ``seq`` (the ``alarm_ack`` event)."""
    with transaction(db):
        row = db.execute("SELECT type, code FROM audit WHERE seq = ?", [seq]).fetchone()
        if row is None or row[0] != ALARM:
            raise AlarmNotFoundError(f"audit event {seq} is not an alarm")
        if seq in _acks(db):
            raise AlarmAlreadyAcknowledgedError(f"alarm {seq} is already acknowledged")
        return audit.append(
            db, ACK, outcome="accepted", code=row[1], detail={"alarm_seq": seq, "note": note}
        )
