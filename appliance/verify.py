"""Re-verify what is in the store: every object re-hashed, every record re-checked.

Two questions per record, kept apart because they have different exit codes:
do the object's bytes still hash to the recorded digest (no: the store was
tampered with, exit 4), and do the record's signers still meet today's trust
(no: a key was revoked or a threshold raised since import, exit 1).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from appliance import safefs
from appliance.errors import ObjectTamperedError
from appliance.home import OBJECTS_DIR, Home
from appliance.provenance import DbToken, Pointers, check_pointer, check_record, db_token
from appliance.store import Record, object_path
from appliance.trust import TrustState
from bundles.errors import RejectedError, StateSuspectError
from bundles.hashing import hash_fd

_HEX64 = re.compile(r"[0-9a-f]{64}")


def open_object(home: Home, record: Record) -> int:
    """Open the stored object read-only by descriptor, never through a link; exit 4
    (``object_tampered``) when it is gone or is not a regular file (a FIFO, directory,
    device or link in its place never blocks or errors as I/O), and ``home_tampered``
    when ``objects/`` or ``objects/xx/`` itself was replaced.
    """
    path = object_path(home, record.digest)
    what = f"{record.name}@{record.version}"
    if not _HEX64.fullmatch(record.digest):
        raise ObjectTamperedError(f"{what}: the record's digest is not a BLAKE3 hex digest")
    with home.open_dir(OBJECTS_DIR) as objects:
        if objects is None:
            raise ObjectTamperedError(f"{what}: object {path} is missing (no objects folder)")
        try:
            sub = safefs.open_dir_at(objects, record.digest[:2])
        except FileNotFoundError as e:
            raise ObjectTamperedError(f"{what}: object {path} is missing") from e
        except safefs.UnsafeEntryError as e:
            raise home.tampered(e, f"{OBJECTS_DIR}/") from e
        except OSError as e:
            raise ObjectTamperedError(
                f"{what}: object {path} cannot be opened ({e.strerror})"
            ) from e
        try:
            return safefs.open_file_at(sub, record.digest)
        except FileNotFoundError as e:
            raise ObjectTamperedError(f"{what}: object {path} is missing") from e
        except safefs.UnsafeEntryError as e:
            raise ObjectTamperedError(
                f"{what}: object {path} is a {e.found}, not a regular file"
            ) from e
        except OSError as e:
            raise ObjectTamperedError(
                f"{what}: object {path} cannot be opened ({e.strerror})"
            ) from e
        finally:
            os.close(sub)


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
    db: sqlite_utils.Database,
    trust: TrustState,
    record: Record,
    *,
    token: DbToken | None | Literal["read"] = "read",
    pointers: Pointers | None = None,
) -> frozenset[str]:
    """The record is backed by its stored signed manifest, and, when active, its pointer by
    an authorized move; returns the signers that count today (see ``appliance.provenance``).
    ``token``: see ``check_record``; ``pointers``: the pointers judged in one pass for
    many records (``Pointers``), else this record's pointer is checked on its own.
    """
    if record.active:
        if pointers is not None:
            pointers.check(record.name)
        else:
            check_pointer(db, trust, record.name)
    return check_record(db, trust, record, token=token)


def verify_records(
    home: Home, db: sqlite_utils.Database, trust: TrustState, records: list[Record]
) -> list[RecordStatus]:
    """``verify_record`` of each record in one read-only pass: the database token is read
    once for the pass, not once a record, and the active pointers are judged from one
    read of the pointer-moving audit events (``appliance.provenance.Pointers``)."""
    token = db_token(db)
    pointers = Pointers(db)
    return [verify_record(home, db, trust, r, token=token, pointers=pointers) for r in records]


def verify_record(
    home: Home,
    db: sqlite_utils.Database,
    trust: TrustState,
    record: Record,
    *,
    token: DbToken | None | Literal["read"] = "read",
    pointers: Pointers | None = None,
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
        check_provenance(db, trust, record, token=token, pointers=pointers)
    except StateSuspectError as e:
        return RecordStatus(record, "unauthorized", e.code, e.message)
    except RejectedError as e:
        return RecordStatus(record, "untrusted", e.code, e.message)
    return RecordStatus(record, "ok")
