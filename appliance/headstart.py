"""Hashing in the background, and the CLI's head start on a big load.

``BackgroundHash`` computes the BLAKE3 of one open descriptor in a thread (BLAKE3,
``preadv`` and the mapping's page faults all run without the GIL), so the loader
checks provenance and today's trust while the bytes are hashed; the result is
taken (and compared with the record) before anything is handed over.

``head_start`` is the CLI's ``load``/``exec`` start: before the rest of the product
is imported (about 100 ms of CPU), it reads which object NAME[@VERSION] most likely
is straight from the state database, opens it by descriptor (``appliance.safefs``:
never a link, a FIFO or a device), and, when that inode carries the immutable flag,
starts hashing it. What it read is only a guess, never trusted: the loader still goes
witness -> record -> gate -> pin -> ``open_object`` -> immutable flag in that order,
with the same errors, and takes the head start's hash only when its own descriptor
is the same inode (device and inode number, both held open) as the one hashed, whose
flag was set before the hash began; the digest and size are then compared with the
record as always. Any other case (no such row, another object, no flag, anything
unreadable) just drops the guess, and the loader hashes its own descriptor. A writer
of the home can make the guess wrong, and so waste at most one ``MAP_CHUNK`` of
hashing (the thread stops between chunks), never change what is trusted.

Imports here are only what that needs (no sqlite-utils, no cryptography).
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import sqlite3
import threading
from typing import Any

from appliance import safefs
from bundles.closing import Closing
from bundles.hashing import hash_fd, hash_mapped

__all__ = ["BackgroundHash", "HeadStart", "head_start", "start_early", "take_early"]

# store.FS_IOC_GETFLAGS / FS_IMMUTABLE_FL (``appliance.store`` imports sqlite-utils; a
# test pins that both agree).
FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x00000010
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BackgroundHash:
    """The BLAKE3 hex digest and size of everything in ``fd``, computed in a thread.

    ``mapped``: hash through a mapping (``bundles.hashing.hash_mapped``: only for a file
    that cannot shrink, in a process that may end on SIGBUS); else ``hash_fd``.
    ``result`` waits and returns ``(digest, size)`` or raises what the hash raised;
    ``stop`` gives up (a mapped hash stops between chunks) and waits for the thread,
    so the caller may close ``fd`` after either.
    """

    def __init__(self, fd: int, *, mapped: bool) -> None:
        self.fd = fd
        self.mapped = mapped
        self._stop = threading.Event()
        self._result: tuple[str, int] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="blake3-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.mapped:
                self._result = hash_mapped(self.fd, self._stop.is_set)
            else:
                self._result = hash_fd(self.fd)
        except BaseException as e:  # noqa: BLE001 - re-raised by result()
            self._error = e

    def result(self) -> tuple[str, int]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the hash was stopped before it finished")
        return self._result

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _immutable(fd: int) -> bool:
    buf = array.array("l", [0])
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return False
    return bool(buf[0] & FS_IMMUTABLE_FL)


class HeadStart(Closing):
    """An open store object (immutable when opened) and its hash, started early."""

    def __init__(self, fd: int, hashing: BackgroundHash) -> None:
        self.fd = fd
        self.hashing = hashing
        self._closed = False

    def claim(self, fd: int) -> BackgroundHash | None:
        """This hash, when ``fd`` (the loader's own descriptor) is the very inode hashed."""
        if self._closed:
            return None
        mine, theirs = os.fstat(self.fd), os.fstat(fd)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        return self.hashing

    def close(self) -> None:
        """Stop the hash if still running, wait for it, close the descriptor (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self.hashing.stop()
            finally:
                os.close(self.fd)


_GUESS_STEPS = 1000  # the guess's query gives up after this many thousand SQLite VM steps


def _query(root_fd: int, db_file: str, sql: str, params: tuple[object, ...]) -> list[Any]:
    """The rows of one query of the state database, read as a guess.

    The database is opened as ``appliance.safefs`` opens a file (a regular file, never a
    link or a FIFO, which would block the open) and read through that descriptor,
    read-only, without locks or journal (``immutable=1``: a writer is never held up; what
    a concurrent write leaves half-done is at worst a wrong guess), for at most
    ``_GUESS_STEPS`` thousand steps (a planted schema cannot make it run long).
    """
    db_fd = safefs.open_file_at(root_fd, db_file)
    try:
        conn = sqlite3.connect(
            f"file:/proc/self/fd/{db_fd}?mode=ro&immutable=1", uri=True, isolation_level=None
        )
        try:
            steps = iter(range(_GUESS_STEPS))
            conn.set_progress_handler(lambda: next(steps, None) is None, 1000)
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    finally:
        os.close(db_fd)


def _digests(rows: list[Any]) -> list[str]:
    return [r[0] for r in rows if isinstance(r[0], str) and _HEX64.fullmatch(r[0])]


def _guess(root_fd: int, db_file: str, name: str, version: str | None) -> str | None:
    """The digest the records table holds for NAME@VERSION (or the active version)."""
    found = _digests(
        _query(
            root_fd,
            db_file,
            "SELECT digest FROM artifacts WHERE name = ? AND version = "
            "COALESCE(?, (SELECT version FROM active WHERE name = ?))",
            (name, version, name),
        )
    )
    return found[0] if found else None


# ``verify`` of the whole store: the first object it hashes with all cores
# (``appliance.verify`` hashes those of ``bundles.hashing.ISOLATED_MIN`` bytes or more in
# a forked child; its hash overlaps the start-up, and ``verify`` hashes the next ones
# itself, one at a time, rather than several at once from one disk), only in a store of
# fewer small objects than ``verify`` forks its hashing helpers for
# (``verify._HELPER_MIN``): no process forks beside a running thread.
LARGE_MIN = 64 << 20
SMALL_MAX = 511
SMALL_SIZE = 1 << 20  # ``verify.SMALL_OBJECT``


def _guess_large(root_fd: int, db_file: str) -> str | None:
    """The digest of the first record of ``LARGE_MIN`` bytes or more, in the order
    ``appliance.store.records`` gives them (by name, then release); None when the store
    holds more than ``SMALL_MAX`` small objects."""
    small = _query(
        root_fd,
        db_file,
        "SELECT count(*) FROM (SELECT 1 FROM artifacts WHERE size < ? LIMIT ?)",
        (SMALL_SIZE, SMALL_MAX + 1),
    )
    if not small or not isinstance(small[0][0], int) or small[0][0] > SMALL_MAX:
        return None
    found = _digests(
        _query(
            root_fd,
            db_file,
            "SELECT digest FROM artifacts WHERE size >= ? ORDER BY name, release LIMIT 1",
            (LARGE_MIN,),
        )
    )
    return found[0] if found else None


def _open(root_fd: int, digest: str) -> int:
    fds: list[int] = []
    try:
        fds.append(safefs.open_dir_at(root_fd, "objects"))
        fds.append(safefs.open_dir_at(fds[-1], digest[:2]))
        return safefs.open_file_at(fds[-1], digest)
    finally:
        for fd in fds:
            os.close(fd)


def head_start(root: str | os.PathLike[str], db_file: str, ref: str | None) -> HeadStart | None:
    """Start hashing the object ``ref`` (NAME[@VERSION]) most likely is, or with ``ref``
    None the first large object ``verify`` of the whole store will hash
    (``_guess_large``), in a thread (see the module's note); None when there is no guess
    to make or the object is not immutable.

    Reading errors are not reported here: they only mean no head start, and the command,
    which parses and reads the same things again, reports each with its own error code.
    """
    try:
        root_fd = safefs.open_root(root)
    except OSError:
        return None
    try:
        if ref is None:
            digest = _guess_large(root_fd, db_file)
        else:
            name, at, version = ref.partition("@")
            digest = _guess(root_fd, db_file, name, version if at else None)
        if digest is None:
            return None
        fd = _open(root_fd, digest)
    except (sqlite3.Error, OSError, safefs.UnsafeEntryError):
        return None
    finally:
        os.close(root_fd)
    try:
        if not _immutable(fd):
            os.close(fd)
            return None
        return HeadStart(fd, BackgroundHash(fd, mapped=True))
    except BaseException:
        os.close(fd)
        raise


# The head start the launcher made before the command line was parsed: (the home as an
# absolute path, the reference as given or None for ``verify``, the head start), until
# the command takes it.
_early: tuple[str, str | None, HeadStart] | None = None


def start_early(root: str, db_file: str, ref: str | None) -> None:
    """``head_start`` from the launcher (``appliance.launch``), before argparse and the
    rest of the CLI are imported; kept for ``take_early``. A guess of a guess: the
    launcher read the home and the reference off the command line itself."""
    global _early
    started = head_start(root, db_file, ref)
    if started is not None:
        _early = (os.path.abspath(root), ref, started)


def take_early(root: str | os.PathLike[str], ref: str | None) -> HeadStart | None:
    """The launcher's head start when it was made for this home and reference (None:
    ``verify`` of the whole store) as the parsed command line gives them; else it is
    stopped and closed, and None."""
    global _early
    got, _early = _early, None
    if got is None:
        return None
    home, guessed_ref, started = got
    if home == os.path.abspath(root) and guessed_ref == ref:
        return started
    started.close()
    return None
