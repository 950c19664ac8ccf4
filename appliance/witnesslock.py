"""Writers of the witness take turns, so that it only moves forward.

Each writer holds an ``flock`` on a lock file beside the witness (``.NAME.lock``)
while it reads the home's counters and replaces the witness. Two audited loads
beside each other could otherwise write in the wrong order: the slower one's
older counters over the newer ones, and the faster load's event would no longer
be witnessed. The lock file is 0600 and belongs to the folder's owner, so no one
who can merely read the witness folder can hold it (against every audited load).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from appliance import safefs
from appliance.errors import LockHeldError

WRITE_LOCK_WAIT = 10.0  # seconds a writer waits for another one to finish
_LOCK_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _lock_name(path: Path) -> str:
    return f".{path.name}.lock"


def _open_lock(parent: int, path: Path) -> int | None:
    """The witness's lock file (``.NAME.lock`` beside it), 0600 and owned by the folder's
    owner: only that user and root can open it, so no one who can merely read the folder
    can hold the lock. Made if absent (by root: given to the folder's owner). None when
    this process may not open it (another user's lock): the write then goes unlocked."""
    name = _lock_name(path)
    try:
        fd = os.open(name, _LOCK_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=parent)
    except FileExistsError:
        try:
            fd, _ = safefs.open_regular_at(parent, name, _LOCK_FLAGS)
        except PermissionError:
            return None
        return fd
    try:
        folder = os.fstat(parent)
        if os.geteuid() == 0 and folder.st_uid != 0:
            _give(fd, folder)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _give(fd: int, folder: os.stat_result) -> None:
    try:
        os.fchown(fd, folder.st_uid, folder.st_gid)
    except OSError as e:
        # A filesystem without owners (vfat removable media): its mount options, not the
        # file, decide who may open it; the lock works as it is.
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
            raise


def lock_for_writing(parent: int, path: Path) -> int | None:
    """Take the witness's write lock (``flock``), waiting at most ``WRITE_LOCK_WAIT``
    seconds: writers one at a time, each reading the counters only once it holds the lock,
    so the witness only moves forward. (Two loads beside each other could otherwise write
    in the wrong order: the slower one's older counters over the newer ones, and its load
    event would no longer be witnessed.) The lock's descriptor, closed to release it; None
    when this process may not open the lock file."""
    fd = _open_lock(parent, path)
    if fd is None:
        return None
    try:
        held = safefs.flock_within(fd, WRITE_LOCK_WAIT, 0.001)
    except BaseException:
        os.close(fd)
        raise
    if not held:
        os.close(fd)
        raise LockHeldError(
            f"witness {path}: another process has been writing it for "
            f"{WRITE_LOCK_WAIT:.0f} s; not written"
        )
    return fd


__all__ = ["WRITE_LOCK_WAIT", "lock_for_writing"]
