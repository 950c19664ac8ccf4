"""Re-verify what is in the store: every object re-hashed, every record re-checked.

Two questions per record, kept apart because they have different exit codes:
do the object's bytes still hash to the recorded digest (no: the store was
tampered with, exit 4), and do the record's signers still meet today's trust
(no: a key was revoked or a threshold raised since import, exit 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.errors import ObjectTamperedError
from appliance.home import Home
from appliance.provenance import check_pointer, check_record
from appliance.store import Record, object_path
from appliance.trust import TrustState
from bundles.errors import RejectedError, StateSuspectError
from bundles.hashing import hash_fd


def open_object(home: Home, record: Record) -> int:
    """Open the stored object read-only, never through a symlink; exit 4 when it is gone."""
    path = object_path(home, record.digest)
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise ObjectTamperedError(
            f"{record.name}@{record.version}: object {path} is missing"
        ) from e
    except OSError as e:
        raise ObjectTamperedError(
            f"{record.name}@{record.version}: object {path} cannot be opened ({e.strerror})"
        ) from e


def check_hash(fd: int, record: Record) -> None:
    """Hash from ``fd``; raise ``ObjectTamperedError`` unless size and digest match."""
    digest, size = hash_fd(fd)
    if size != record.size or digest != record.digest:
        raise ObjectTamperedError(
            f"{record.name}@{record.version}: stored object does not match its record "
            f"(BLAKE3 {digest[:16]}..., expected {record.digest[:16]}...; "
            f"{size} bytes, expected {record.size})"
        )


@dataclass(frozen=True)
class RecordStatus:
    record: Record
    status: str  # ok | tampered | unauthorized | untrusted
    code: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.record.name,
            "version": self.record.version,
            "digest": {"blake3": self.record.digest},
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }


def check_provenance(
    db: sqlite_utils.Database, trust: TrustState, record: Record
) -> frozenset[str]:
    """The record is backed by its stored signed manifest, and, when active, its pointer by
    an authorized move; returns the signers that count today (see ``appliance.provenance``).
    """
    if record.active:
        check_pointer(db, trust, record.name)
    return check_record(db, trust, record)


def verify_record(
    home: Home, db: sqlite_utils.Database, trust: TrustState, record: Record
) -> RecordStatus:
    """Re-hash the object and re-check its provenance and today's trust; never raises."""
    try:
        fd = open_object(home, record)
        try:
            check_hash(fd, record)
        finally:
            os.close(fd)
    except ObjectTamperedError as e:
        return RecordStatus(record, "tampered", e.code, e.message)
    try:
        check_provenance(db, trust, record)
    except StateSuspectError as e:
        return RecordStatus(record, "unauthorized", e.code, e.message)
    except RejectedError as e:
        return RecordStatus(record, "untrusted", e.code, e.message)
    return RecordStatus(record, "ok")
