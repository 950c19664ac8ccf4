"""The immutable, content-addressed object store and its records.

Objects live at ``objects/<first two hex>/<blake3 hex>``, written once: a
staging file in the same filesystem is fsynced, made read-only (0444) and
renamed into place. Records (name, version -> digest, signers) live in the
state database; an object is reachable only through a committed record.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance import safefs
from appliance.errors import (
    DiskFullError,
    IOFailedError,
    NotFoundError,
    OperationalError,
    ReadOnlyError,
)
from appliance.home import OBJECTS_DIR, Home


@dataclass(frozen=True)
class Record:
    name: str
    version: str
    digest: str
    size: int
    media_type: str
    release: int
    stream: str
    sequence: int
    signers: tuple[str, ...]
    imported_at: str
    active: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": {"blake3": self.digest},
            "size": self.size,
            "media_type": self.media_type,
            "release": self.release,
            "stream": self.stream,
            "sequence": self.sequence,
            "signers": list(self.signers),
            "imported_at": self.imported_at,
            "active": self.active,
        }


_COLS = (
    "a.name, a.version, a.digest, a.size, a.media_type, a.release, a.stream, a.sequence, "
    "a.signers, a.imported_at, (act.version IS NOT NULL)"
)


def _record(row: tuple[Any, ...]) -> Record:
    return Record(
        name=row[0],
        version=row[1],
        digest=row[2],
        size=int(row[3]),
        media_type=row[4],
        release=int(row[5]),
        stream=row[6],
        sequence=int(row[7]),
        signers=tuple(json.loads(row[8])),
        imported_at=row[9],
        active=bool(row[10]),
    )


def records(db: sqlite_utils.Database, name: str | None = None) -> list[Record]:
    sql = (
        f"SELECT {_COLS} FROM artifacts a LEFT JOIN active act "
        "ON act.name = a.name AND act.version = a.version"
    )
    params: list[str] = []
    if name is not None:
        sql += " WHERE a.name = ?"
        params.append(name)
    return [_record(r) for r in db.execute(sql + " ORDER BY a.name, a.release", params)]


def active_version(db: sqlite_utils.Database, name: str) -> str | None:
    row = db.execute("SELECT version FROM active WHERE name = ?", [name]).fetchone()
    return None if row is None else str(row[0])


def find(db: sqlite_utils.Database, name: str, version: str | None = None) -> Record:
    """The record for NAME@VERSION, or the active one; ``NotFoundError`` (exit 2) if none."""
    if version is None:
        version = active_version(db, name)
        if version is None:
            raise NotFoundError(f"no artifact named {name!r} in the store")
    for rec in records(db, name):
        if rec.version == version:
            return rec
    raise NotFoundError(f"no version {version!r} of {name!r} in the store")


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, sep, version = ref.partition("@")
    return name, (version if sep else None)


def object_path(home: Home, digest: str) -> Path:
    return home.objects / digest[:2] / digest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def io_error(e: OSError, what: str) -> OperationalError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full while {what}")
    if e.errno == errno.EROFS:
        return ReadOnlyError(f"read-only file system while {what}")
    return IOFailedError(f"{what}: {e.strerror or e}")


def sweep_orphans(home: Home, db: sqlite_utils.Database) -> int:
    """Remove objects no record references (left by an import killed before its commit).

    Call only while holding the home lock, before staging anything.
    """
    referenced = {str(r[0]) for r in db.execute("SELECT DISTINCT digest FROM artifacts")}
    removed = 0
    # By descriptor, never following a link: a link planted at objects/xx is refused, one
    # inside it is removed as a name (see appliance.safefs).
    with home.open_dir(OBJECTS_DIR) as objects:
        if objects is None:
            return 0
        for sub_name, is_dir in safefs.entries(objects):
            if not is_dir:
                continue
            try:
                sub = safefs.open_dir_at(objects, sub_name)
            except safefs.UnsafeEntryError as e:
                raise home.tampered(e, f"{OBJECTS_DIR}/") from e
            name = sub_name
            try:
                for name, _ in safefs.entries(sub):
                    if name not in referenced:
                        safefs.remove_entry_at(sub, name)
                        removed += 1
            except safefs.UnsafeEntryError as e:
                raise home.tampered(e, f"{OBJECTS_DIR}/{sub_name}/") from e
            except OSError as e:
                raise io_error(e, f"removing unreferenced object {name[:16]}") from e
            finally:
                os.close(sub)
    return removed


def promote(home: Home, staged: Path, digest: str) -> Path:
    """Move a verified, fsynced staging file into the store (once per digest)."""
    target = object_path(home, digest)
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(staged, 0o444)
        # Always rename, even over an object of the same digest: ours was just verified,
        # while one left by an interrupted import was never referenced and may have been
        # altered since. Loaders holding the old inode keep it.
        os.rename(staged, target)
        _fsync_dir(target.parent)
    except OSError as e:
        raise io_error(e, f"promoting {digest[:16]} into the store") from e
    return target
