"""Files under the home opened relative to a directory descriptor, never through a link.

A writer of the home can put a symbolic link, a FIFO, a device node or a
directory at any name the appliance uses. Every helper here therefore:

* resolves one name at a time, relative to an open directory descriptor
  (``dir_fd=``), with ``O_NOFOLLOW`` so a link is never followed, and
  ``O_DIRECTORY`` when a directory is expected;
* looks at what is there first (``lstat``) and opens a would-be regular file
  with ``O_NONBLOCK`` (a FIFO cannot block the open), then checks with
  ``fstat`` that the descriptor is the regular file it looked at (same device
  and inode), so a swap between the look and the open is noticed;
* creates files only by an unpredictable name with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` and moves them into place with ``rename`` relative to the
  same descriptor;
* removes trees by descriptor (``unlinkat``), descending only into
  directories it opened itself with ``O_NOFOLLOW | O_DIRECTORY``.

What it finds in the wrong place is reported as ``UnsafeEntryError``; the
caller turns that into its own error code (``home_tampered``,
``object_tampered``, ``witness_unreadable``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_REMOVE_DEPTH = 16  # staging holds flat files; a deeper tree is refused, not walked
_TEMP_ATTEMPTS = 16


def _token() -> str:
    """16 random hex digits (``secrets.token_hex(8)`` is this call; the module is not
    imported: the CLI's head start on a load imports this module before anything else)."""
    return os.urandom(8).hex()


class UnsafeEntryError(Exception):
    """A name holds something other than what the appliance put there."""

    def __init__(self, name: str, found: str, expected: str) -> None:
        super().__init__(f"{name} is a {found}, expected a {expected}")
        self.name = name
        self.found = found
        self.expected = expected


class SwappedError(UnsafeEntryError):
    """A regular file was replaced by another regular file between the look and the open:
    what an atomic ``rename`` over the name does. A reader of a file that is replaced
    that way (the witness) looks again; nothing else treats it differently."""


def kind(mode: int) -> str:
    """A reader's name for a file type (``stat.S_IFMT`` of ``mode``)."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _one_name(name: str) -> None:
    """One path component: no ``/``, not ``.`` or ``..`` (names may come from the database)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UnsafeEntryError(repr(name), "path of several components", "single name")


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """What ``name`` is, not following a link; None when absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_root(path: str | os.PathLike[str]) -> int:
    """The home's own directory. Its path is the operator's choice, so it may be a link."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd


def open_dir_at(dir_fd: int, name: str, *, create: int | None = None) -> int:
    """Open the directory ``name`` in ``dir_fd`` without following a link.

    With ``create`` (a mode), make it first when absent. Raises
    ``FileNotFoundError`` when absent (and not created), ``UnsafeEntryError``
    when something else is there.
    """
    _one_name(name)
    if create is not None:
        try:
            os.mkdir(name, create, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            st = lstat_at(dir_fd, name)
            found = kind(st.st_mode) if st is not None else "vanishing entry"
            raise UnsafeEntryError(name, found, "directory") from e
        raise
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISDIR(mode):  # O_DIRECTORY already guarantees it; checked all the same
        os.close(fd)
        raise UnsafeEntryError(name, kind(mode), "directory")
    return fd


def open_file_at(dir_fd: int, name: str, flags: int = os.O_RDONLY) -> int:
    """Open the regular file ``name`` in ``dir_fd``; never a link, FIFO, device or directory.

    Raises ``FileNotFoundError`` when absent and ``UnsafeEntryError`` when
    something other than a regular file is there (or was swapped in between
    the look and the open). The descriptor returned is blocking again.
    """
    fd, _ = open_regular_at(dir_fd, name, flags)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_at(dir_fd: int, name: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
    """``open_file_at`` with the same checks, returning the descriptor's ``fstat`` too and
    leaving the descriptor ``O_NONBLOCK`` (for ``fstat``, ``fchmod``, ``ioctl``: callers
    that never read it need not pay two ``fcntl`` calls per file)."""
    _one_name(name)
    before = lstat_at(dir_fd, name)
    if before is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if not stat.S_ISREG(before.st_mode):
        raise UnsafeEntryError(name, kind(before.st_mode), "regular file")
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            st = lstat_at(dir_fd, name)
            found = kind(st.st_mode) if st is not None else "vanishing entry"
            raise UnsafeEntryError(name, found, "regular file") from e
        raise
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise UnsafeEntryError(name, kind(after.st_mode), "regular file")
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise SwappedError(name, "file swapped while opened", "regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, after


def check_at(dir_fd: int, name: str, expected: str) -> os.stat_result | None:
    """``name`` is absent or of the ``expected`` kind ("regular file" or "directory")."""
    st = lstat_at(dir_fd, name)
    if st is not None and kind(st.st_mode) != expected:
        raise UnsafeEntryError(name, kind(st.st_mode), expected)
    return st


def create_temp_at(
    dir_fd: int, prefix: str, suffix: str = ".tmp", mode: int = 0o600
) -> tuple[int, str]:
    """A new file by an unpredictable name (``O_CREAT | O_EXCL | O_NOFOLLOW``): (fd, name).

    A name someone planted (a link, a FIFO, a file) is never opened: ``O_EXCL``
    refuses it and another random name is tried.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(_TEMP_ATTEMPTS):
        name = f"{prefix}{_token()}{suffix}"
        try:
            return os.open(name, flags, mode, dir_fd=dir_fd), name
        except FileExistsError:
            if attempt == _TEMP_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def make_temp_dir_at(dir_fd: int, prefix: str, mode: int = 0o700) -> tuple[int, str]:
    """A new private directory by an unpredictable name (``mkdirat`` is exclusive)."""
    for attempt in range(_TEMP_ATTEMPTS):
        name = f"{prefix}{_token()}"
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            if attempt == _TEMP_ATTEMPTS - 1:
                raise
            continue
        return open_dir_at(dir_fd, name), name
    raise AssertionError("unreachable")  # pragma: no cover


def write_file_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace ``name`` in ``dir_fd`` with ``data``.

    Written to an unpredictable temporary name (``O_EXCL | O_NOFOLLOW``),
    fsynced, renamed over ``name`` (a link there is replaced, never followed)
    and the directory fsynced. The temporary file is removed on failure.
    """
    fd, tmp = create_temp_at(dir_fd, f".{name}.", ".tmp", mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(dir_fd)


def remove_entry_at(dir_fd: int, name: str, *, depth: int = 0) -> None:
    """Remove ``name`` from ``dir_fd``: a link, FIFO, device or file by ``unlinkat`` (the
    name goes, never what a link points at); a directory by descriptor, then ``rmdir``.
    """
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    if depth >= MAX_REMOVE_DEPTH:
        raise UnsafeEntryError(name, f"tree deeper than {MAX_REMOVE_DEPTH} levels", "flat file")
    sub = open_dir_at(dir_fd, name)
    try:
        remove_contents(sub, depth=depth + 1)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dir_fd)


def remove_contents(dir_fd: int, *, depth: int = 0) -> int:
    """Empty the directory ``dir_fd`` by descriptor; returns how many entries it held."""
    with os.scandir(dir_fd) as it:
        names = [entry.name for entry in it]
    for name in names:
        remove_entry_at(dir_fd, name, depth=depth)
    return len(names)


def entries(dir_fd: int) -> list[tuple[str, bool]]:
    """(name, is a real directory) for each entry of ``dir_fd`` (never following links)."""
    with os.scandir(dir_fd) as it:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]


def flock_within(fd: int, timeout: float, poll: float) -> bool:
    """An exclusive ``flock`` on ``fd``, tried every ``poll`` seconds for at most
    ``timeout`` seconds (0: once); True when it is held. The kernel drops it when its
    holder dies, so a lock left by a dead process never blocks."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
