"""The immutable, content-addressed object store and its records.

Objects live at ``objects/<first two hex>/<blake3 hex>``, written once: a
staging file in the same filesystem is made read-only (0444) and renamed into
place; the import makes the whole batch durable with ``sync_home`` (``syncfs``)
before and after the renames, then commits. Records (name, version -> digest,
signers) live in the state database; an object is reachable only through a
committed record.

Where the process holds ``CAP_LINUX_IMMUTABLE`` (and ``APPLIANCE_IMMUTABLE`` is
not ``0``), ``promote`` also sets the inode's immutable flag (``FS_IMMUTABLE_FL``
through ``FS_IOC_SETFLAGS``): no one without that capability, root included, can
then write, truncate, chmod, rename over or unlink the object, and the loader
hashes it in place (``docs/LOADING.md``). The appliance itself removes or replaces
objects only through ``remove_object`` and ``promote``, which clear the flag first.
"""

from __future__ import annotations

import array
import errno
import fcntl
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
from bundles.durable import sync_filesystem


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


FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on 64-bit Linux
FS_IOC_SETFLAGS = 0x40086602  # _IOW('f', 2, long)
FS_IMMUTABLE_FL = 0x00000010
counters = {"syncfs": 0, "fsync": 0}  # pinned by tests/perf (calls per import)


def immutable_wanted() -> bool:
    """``APPLIANCE_IMMUTABLE`` (default on): set the immutable flag at promotion."""
    return os.environ.get("APPLIANCE_IMMUTABLE", "1") != "0"


def inode_flags(fd: int) -> int | None:
    """The inode flags of the open file ``fd`` (``FS_IOC_GETFLAGS``), None where the file
    system has none."""
    buf = array.array("l", [0])
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return None
    return int(buf[0])


def is_immutable(fd: int) -> bool:
    """Does the inode of the open descriptor ``fd`` carry ``FS_IMMUTABLE_FL``?"""
    flags = inode_flags(fd)
    return flags is not None and bool(flags & FS_IMMUTABLE_FL)


def _set_immutable(fd: int, on: bool) -> bool:
    """Set or clear the flag on ``fd``'s inode; False when the kernel or the file system
    refuses (no ``CAP_LINUX_IMMUTABLE``, no flag support)."""
    flags = inode_flags(fd)
    if flags is None:
        return False
    new = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
    if new == flags:
        return True
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("l", [new]), True)
    except OSError:
        return False
    return True


def _open_inode(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def set_immutable(path: Path, on: bool = True) -> bool:
    """Set (or clear) the immutable flag of the file at ``path``; True when it now holds."""
    fd = _open_inode(path)
    if fd is None:
        return False
    try:
        return _set_immutable(fd, on)
    finally:
        os.close(fd)


def clear_immutable(path: Path) -> None:
    """Clear the flag so that the appliance can remove or replace ``path`` (no-op when the
    file is absent or has no flag). Raises ``OperationalError`` when a flagged file cannot
    be cleared (the process lacks the capability)."""
    fd = _open_inode(path)
    if fd is None:
        return
    try:
        if is_immutable(fd) and not _set_immutable(fd, False):
            raise IOFailedError(
                f"{path} is immutable and this process cannot clear the flag (CAP_LINUX_IMMUTABLE)"
            )
    finally:
        os.close(fd)


def remove_object(home: Home, digest: str) -> bool:
    """Remove the object ``digest`` from the store (flag cleared first); False if absent."""
    path = object_path(home, digest)
    try:
        clear_immutable(path)
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise io_error(e, f"removing object {digest[:16]}") from e
    return True


def sync_home(home: Home) -> None:
    """Make everything written under the home durable: one ``syncfs`` on its file system
    (``bundles.durable``). This replaces an fsync per staged file and per directory:
    one flush for a whole import, however many files it holds."""
    counters["syncfs"] += 1
    try:
        sync_filesystem(home.root)
    except OSError as e:
        raise io_error(e, "syncing the store") from e


def _fsync_dir(path: Path) -> None:
    counters["fsync"] += 1
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
    # inside it is removed as a name (see appliance.safefs). The immutable flag (where
    # set) is cleared first.
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
                        clear_immutable(home.objects / sub_name / name)
                        safefs.remove_entry_at(sub, name)
                        removed += 1
            except safefs.UnsafeEntryError as e:
                raise home.tampered(e, f"{OBJECTS_DIR}/{sub_name}/") from e
            except OSError as e:
                raise io_error(e, f"removing unreferenced object {name[:16]}") from e
            finally:
                os.close(sub)
    return removed


def promote(home: Home, staged: Path, digest: str, *, durable: bool = True) -> Path:
    """Move a verified staging file into the store (once per digest), read-only and, where
    the kernel allows it, immutable.

    An existing object of that digest is replaced (its flag cleared first): ours was
    just verified, while one left by an interrupted import was never referenced and may
    have been altered since; loaders holding the old inode keep it. ``durable=False``
    leaves the directory entry to the caller's ``sync_home`` (a batch import syncs
    once); with ``durable`` the directory is fsynced here.
    """
    target = object_path(home, digest)
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(staged, 0o444)
        clear_immutable(target)  # whatever set it: an immutable target cannot be replaced
        os.rename(staged, target)
        if immutable_wanted():
            set_immutable(target)  # refused without CAP_LINUX_IMMUTABLE: then a plain object
        if durable:
            _fsync_dir(target.parent)
    except OSError as e:
        raise io_error(e, f"promoting {digest[:16]} into the store") from e
    return target
