"""Repair at import: a present artifact whose stored object fails its hash is replaced.

An import hashes every artifact of the bundle anyway. For an artifact the store
already has, ``damaged`` re-hashes the stored object: when it is missing or no
longer hashes to its digest, the import stages the bundle's (verified) bytes
like a new artifact and ``record`` writes one ``repair`` audit event per artifact
in the transaction that commits the import's records. Only after that commit
does ``prepare`` clear the immutable inode flag of the bad object (if it carries
one) and the store's ``promote`` rename the verified copy over it, so a crash
never leaves a replaced object without its event (at worst an event and a
still-damaged object, which every load refuses and the next import repairs).
The import reports such an artifact as ``repaired``; ``present`` means the
stored object verified.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import sqlite_utils

from appliance import audit
from appliance.home import Home
from appliance.store import io_error, object_path
from bundles.hashing import hash_fd
from bundles.manifest import Artifact

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def _stored_ok(home: Home, a: Artifact) -> bool:
    try:
        fd = os.open(object_path(home, a.blake3), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        digest, size = hash_fd(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return digest == a.blake3 and size == a.size


def damaged(home: Home, present: Iterable[Artifact]) -> list[Artifact]:
    """The present artifacts whose stored object is missing or fails its hash."""
    return [a for a in present if not _stored_ok(home, a)]


def clear_immutable_flag(path: Path) -> bool:
    """Clear ``FS_IMMUTABLE_FL`` on ``path`` if set; True when it was set."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        flags = struct.unpack("i", buf)[0]
        if not flags & FS_IMMUTABLE_FL:
            return False
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags & ~FS_IMMUTABLE_FL))
        return True
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    finally:
        os.close(fd)


def prepare(home: Home, artifacts: Iterable[Artifact]) -> None:
    """Make the damaged objects replaceable (under the home lock, after the commit
    that recorded their ``repair`` events, just before promote)."""
    for a in artifacts:
        try:
            clear_immutable_flag(object_path(home, a.blake3))
        except OSError as e:
            raise io_error(e, f"clearing the immutable flag of {a.blake3[:16]}") from e


def record(db: sqlite_utils.Database, artifacts: Iterable[Artifact], source: str) -> None:
    """One ``repair`` event per replaced object, written in the caller's transaction.

    The import calls this inside the transaction that commits its records, so the
    repair events and the import's records are committed together or not at all.
    """
    for a in artifacts:
        audit.append(
            db,
            "repair",
            outcome="accepted",
            name=a.name,
            version=a.version,
            detail={"digest": a.blake3, "size": a.size, "source": source},
        )
