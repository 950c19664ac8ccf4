"""A private copy of a store object that no one can change: hashed bytes = handed-over bytes.

The store object is opened (never through a symlink) and copied by the kernel
(``os.sendfile``) into a file that no one else can change; that copy is then
hashed and handed over. Two kinds of copy:

* up to ``SEAL_MAX`` bytes (default 1 GiB, ``APPLIANCE_SEAL_MAX`` to change):
  a ``memfd`` sealed with ``F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
  F_SEAL_SEAL``. After sealing, the kernel refuses every write, truncate or
  growth by anyone, root included, through any descriptor or mapping: the
  digest computed from it afterwards is the digest of every byte anyone will
  ever read from it. Cost: the object's size in RAM (or swap) for as long as
  the descriptor is open, on top of the page cache of the store file.
* larger objects: an unnamed file (``O_TMPFILE``) in ``HOME/staging`` (mode
  0700), created 0400 and never linked into any directory. It has no name,
  so a writer who can reach the store cannot reach it; the only way in is
  ``/proc/PID/fd/N``, which needs ptrace rights over the loading process (and
  with those the loader's memory is already the attacker's). Cost: disk space
  in the home's file system and the write, for as long as the descriptor is
  open; nothing is left behind when it closes.

Residual risk, precisely: (1) root, or anyone with ptrace rights over the
loading process, can change what the loader does after the check: out of
scope (docs/SECURITY.md). (2) For the unnamed-file fallback, root can write
through ``/proc/PID/fd/N``; a sealed memfd not even that. (3) The copy reads
the store object once; if a writer changes it during the copy, the copy holds
a mix that fails the hash (``ObjectTamperedError``), never other bytes
passed as verified. (4) A consumer that re-opens ``/dev/fd/N`` by path gets
the same sealed object (memfd) or the same unnamed inode (fallback), not the
store file.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from appliance import safefs
from appliance.errors import (
    DiskFullError,
    HomeTamperedError,
    IOFailedError,
    ObjectTamperedError,
    OperationalError,
)

SEAL_MAX = 1 << 30
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_CHUNK = 1 << 30


def seal_max() -> int:
    """The largest object copied into RAM (``APPLIANCE_SEAL_MAX`` bytes, default 1 GiB)."""
    value = os.environ.get("APPLIANCE_SEAL_MAX")
    if value is None:
        return SEAL_MAX
    try:
        return max(0, int(value))
    except ValueError:
        return SEAL_MAX


def _copy(src: int, dst: int, limit: int, what: str) -> int:
    """Copy up to ``limit`` bytes from ``src`` (offset 0) to ``dst``; return how many."""
    done = 0
    while done < limit:
        try:
            n = os.sendfile(dst, src, done, min(_CHUNK, limit - done))
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT):
                raise DiskFullError(f"no room for a private copy of {what} ({e.strerror})") from e
            raise IOFailedError(f"cannot copy {what}: {e.strerror}") from e
        if n == 0:
            break
        done += n
    return done


def _memfd(what: str) -> int:
    try:
        return os.memfd_create("appliance-load", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as e:
        raise OperationalError(f"cannot make a sealed copy of {what}: {e.strerror}") from e


def _unnamed_file(staging: Path, what: str) -> int:
    # By descriptor, never through a link planted at HOME/staging (appliance.safefs);
    # O_EXCL: the unnamed file can never be linked into a directory.
    try:
        root = safefs.open_root(staging.parent)
        try:
            sfd = safefs.open_dir_at(root, staging.name, create=0o700)
        finally:
            os.close(root)
        try:
            flags = os.O_TMPFILE | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC
            return os.open(".", flags, 0o400, dir_fd=sfd)
        finally:
            os.close(sfd)
    except safefs.UnsafeEntryError as e:
        raise HomeTamperedError(f"cannot make a private copy of {what}: {staging}: {e}") from e
    except OSError as e:
        raise IOFailedError(
            f"cannot make a private copy of {what} in {staging}: {e.strerror}"
        ) from e


def _read_only(fd: int) -> int:
    """A read-only descriptor of the same inode; closes ``fd``."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OperationalError(f"cannot reopen a private copy read-only: {e.strerror}") from e
    finally:
        os.close(fd)


def private_copy(src: int, size: int, staging: Path, what: str) -> tuple[int, bool]:
    """Copy ``size`` bytes of ``src`` into a copy no one else can change.

    Returns ``(fd, sealed)``: ``sealed`` is True for a sealed memfd. Raises
    ``ObjectTamperedError`` when the source is not exactly ``size`` bytes long
    (one extra byte is read to notice a longer file); the caller hashes the
    returned descriptor.
    """
    sealed = size <= seal_max()
    dst = _memfd(what) if sealed else _unnamed_file(staging, what)
    try:
        copied = _copy(src, dst, size + 1, what)
        if copied != size:
            raise ObjectTamperedError(f"{what}: stored object is {copied} bytes, expected {size}")
        if sealed:
            fcntl.fcntl(dst, fcntl.F_ADD_SEALS, SEALS)
            return dst, True
        ro = _read_only(dst)
        dst = -1
        return ro, False
    except BaseException:
        if dst >= 0:
            os.close(dst)
        raise
