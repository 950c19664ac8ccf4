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
objects only through ``remove_object``, ``sweep_orphans`` and ``promote``, which clear
the flag first.

A writer of the home may swap a link, a FIFO or a file in at any name while a
command runs, so every operation here works by descriptor (``appliance.safefs``):
``objects``, ``objects/xx`` and ``staging`` opened with ``O_DIRECTORY |
O_NOFOLLOW`` one name at a time (anything but a folder is ``home_tampered``);
objects and staging files opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked
with ``fstat`` to be regular files before any ``ioctl`` or ``fchmod``; renames
with ``src_dir_fd``/``dst_dir_fd``; removals by ``unlinkat``. ``promote`` moves
only the inode that was verified (``Staged``). Nothing outside the home is ever
created, renamed into, chmod'ed, chattr'ed or removed (docs/SECURITY.md).
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from appliance import safefs
from appliance.db import Database
from appliance.errors import (
    DiskFullError,
    HomeTamperedError,
    IOFailedError,
    NotFoundError,
    OperationalError,
    ReadOnlyError,
    RecordUnauthorizedError,
)
from appliance.home import OBJECTS_DIR, STAGING_DIR, Home
from bundles.durable import sync_filesystem
from bundles.helper_batches import NOT_USABLE, HelperBatches


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


_FIELDS = tuple(f.name for f in fields(Record))
_TEXT_COLUMNS = (0, 1, 2, 4, 6, 9)  # name, version, digest, media_type, stream, imported_at


def _record(row: tuple[Any, ...], signers: dict[Any, tuple[str, ...]]) -> Record:
    """The record of one row of ``_COLS``. ``signers``: the signers already decoded in
    this read, by the column's value (the rows of one bundle share one list): the same
    bytes decode to the same tuple, so each distinct value is decoded once. The record
    is made as its frozen dataclass ``__init__`` makes it (each field set on the new
    instance, no ``__post_init__``), in one update of its ``__dict__``."""
    raw = row[8]
    try:
        for i in _TEXT_COLUMNS:
            if type(row[i]) is not str:
                raise TypeError(f"{_FIELDS[i]} is {type(row[i]).__name__}, not text")
        decoded = signers.get(raw)
        if decoded is None:
            decoded = signers[raw] = _signer_ids(raw)
        values = (
            row[0],
            row[1],
            row[2],
            int(row[3]),
            row[4],
            int(row[5]),
            row[6],
            int(row[7]),
            decoded,
            row[9],
            bool(row[10]),
        )
    except (TypeError, ValueError) as e:  # a value no import writes: the database was edited
        raise RecordUnauthorizedError(
            f"{row[0]!s:.200}@{row[1]!s:.200}: the record holds a value no import writes ({e}): "
            "the database was edited"
        ) from e
    record = _new(Record)
    record.__dict__.update(zip(_FIELDS, values, strict=True))
    return record


def _signer_ids(raw: Any) -> tuple[str, ...]:
    """The signers column decoded: a JSON list of key ids, else ``ValueError``."""
    value = json.loads(raw)
    if not isinstance(value, list) or not all(type(k) is str for k in value):
        raise ValueError("the signers column is not a list of key ids")
    return tuple(value)


_new = object.__new__


def records(db: Database, name: str | None = None) -> list[Record]:
    sql = (
        f"SELECT {_COLS} FROM artifacts a LEFT JOIN active act "
        "ON act.name = a.name AND act.version = a.version"
    )
    params: list[str] = []
    if name is not None:
        sql += " WHERE a.name = ?"
        params.append(name)
    signers: dict[Any, tuple[str, ...]] = {}
    return [_record(r, signers) for r in db.execute(sql + " ORDER BY a.name, a.release", params)]


def active_version(db: Database, name: str) -> str | None:
    row = db.execute("SELECT version FROM active WHERE name = ?", [name]).fetchone()
    return None if row is None else str(row[0])


def find(db: Database, name: str, version: str | None = None) -> Record:
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


FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's generation number


def inode_generation(fd: int) -> int | None:
    """The generation number of the open file ``fd``'s inode (``FS_IOC_GETVERSION``), or
    None where the file system keeps none (tmpfs). ext4 gives a freed inode number, reused
    at once for the next file made, a new generation: (dev, inode number) alone does not
    tell a file from one planted in its place after it was removed."""
    buf = array.array("l", [0])
    try:
        fcntl.ioctl(fd, FS_IOC_GETVERSION, buf, True)
    except OSError:
        return None
    return int(buf[0])


@dataclass(frozen=True)
class Staged:
    """A file the import wrote and verified in ``staging``: its name and its inode.

    ``promote`` moves that inode and no other: a file swapped in at the name since
    (by a writer of the home) is ``home_tampered``, never promoted. The inode is told
    by its device and number, and, since a removed file's number is given to the next
    file made, by its generation number (where the file system keeps one), size and
    change time too, as they were when the import finished writing it.
    """

    name: str
    dev: int
    ino: int
    size: int = -1
    ctime_ns: int = -1
    generation: int | None = None

    @classmethod
    def of(cls, name: str, st: os.stat_result, generation: int | None = None) -> Staged:
        return cls(name, st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns, generation)

    @classmethod
    def of_fd(cls, name: str, fd: int) -> Staged:
        """The staging file open at ``fd``, as it is now."""
        return cls.of(name, os.fstat(fd), inode_generation(fd))

    def same_file(self, fd: int, st: os.stat_result) -> bool:
        """Whether ``fd`` (``st`` its ``fstat``) is this staging file, unchanged."""
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            return False
        if (self.size, self.ctime_ns) != (-1, -1) and (st.st_size, st.st_ctime_ns) != (
            self.size,
            self.ctime_ns,
        ):
            return False
        return self.generation is None or inode_generation(fd) == self.generation


def _open_fanout(home: Home, objects: int, name: str, *, create: bool) -> int | None:
    """The folder ``objects/<name>`` by descriptor, never through a link; None when absent."""
    try:
        return safefs.open_dir_at(objects, name, create=0o755 if create else None)
    except FileNotFoundError:
        return None
    except safefs.UnsafeEntryError as e:
        raise home.tampered(e, f"{OBJECTS_DIR}/") from e
    except OSError as e:
        raise io_error(e, f"opening {OBJECTS_DIR}/{name}/") from e


@contextmanager
def fanout_dir(home: Home, digest: str, *, create: bool = False) -> Iterator[int | None]:
    """The folder ``objects/xx`` that holds (or will hold) ``digest``, by descriptor.

    ``objects`` and ``objects/xx`` are each opened with ``O_DIRECTORY | O_NOFOLLOW``
    relative to the one before: a link (or a FIFO, a file) at either is
    ``home_tampered``, never followed. With ``create`` both are made when absent;
    otherwise None when either is absent.
    """
    with home.open_dir(OBJECTS_DIR, create=0o755 if create else None) as objects:
        if objects is None:
            yield None
            return
        fan = _open_fanout(home, objects, digest[:2], create=create)
        if fan is None:
            yield None
            return
        try:
            yield fan
        finally:
            os.close(fan)


def open_stored(home: Home, digest: str) -> int | None:
    """The stored object ``digest`` opened for reading by descriptor: ``objects``,
    ``objects/xx`` and the object itself never through a link, the object a regular
    file (``O_NONBLOCK`` open, ``fstat`` check). None when absent; ``home_tampered``
    for a bad folder; ``safefs.UnsafeEntryError`` when the object's name holds
    something other than a regular file (the caller decides what that means)."""
    with fanout_dir(home, digest) as fan:
        if fan is None:
            return None
        try:
            return safefs.open_file_at(fan, digest)
        except FileNotFoundError:
            return None


def _clear_at(dir_fd: int, name: str) -> None:
    """Clear the immutable flag of the regular file ``name`` in ``dir_fd`` so that it
    can be replaced or removed. No-op when it is absent, has no flag, or is not a
    regular file (a link, FIFO or device is never opened for an ``ioctl``: it is
    replaced or removed as a name). Raises ``IOFailedError`` when a flagged file
    cannot be cleared (the process lacks ``CAP_LINUX_IMMUTABLE``)."""
    try:
        fd = safefs.open_file_at(dir_fd, name)
    except (FileNotFoundError, safefs.UnsafeEntryError):
        return
    try:
        if is_immutable(fd) and not _set_immutable(fd, False):
            raise IOFailedError(
                f"object {name[:16]} is immutable and this process cannot clear the flag "
                "(CAP_LINUX_IMMUTABLE)"
            )
    finally:
        os.close(fd)


def _parent_fd(path: Path) -> int:
    return os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def set_immutable(path: Path, on: bool = True) -> bool:
    """Set (or clear) the immutable flag of the regular file at ``path``; True when it now
    holds. For paths the caller controls (tools, tests); the store itself works by
    descriptor (``promote``, ``remove_object``, ``sweep_orphans``)."""
    try:
        parent = _parent_fd(path)
    except OSError:
        return False
    try:
        fd = safefs.open_file_at(parent, path.name)
    except (OSError, safefs.UnsafeEntryError):
        return False
    finally:
        os.close(parent)
    try:
        return _set_immutable(fd, on)
    finally:
        os.close(fd)


def clear_immutable(path: Path) -> None:
    """Clear the flag of the regular file at ``path`` (no-op when absent, unflagged or not
    a regular file; ``IOFailedError`` when it cannot be cleared). For paths the caller
    controls; the store itself works by descriptor."""
    try:
        parent = _parent_fd(path)
    except FileNotFoundError:
        return
    try:
        _clear_at(parent, path.name)
    finally:
        os.close(parent)


def _refuse_directory(home: Home, dir_fd: int, name: str, where: str) -> None:
    st = safefs.lstat_at(dir_fd, name)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise home.tampered(safefs.UnsafeEntryError(name, "directory", "regular file"), where)


def remove_object(home: Home, digest: str) -> bool:
    """Remove the object ``digest`` from the store (flag cleared first); False if absent.

    By descriptor: ``unlinkat`` in ``objects/xx`` opened without following a link, so
    the name goes (even if it is a link), never what a link points at.
    """
    what = f"removing object {digest[:16]}"
    try:
        with fanout_dir(home, digest) as fan:
            if fan is None:
                return False
            _refuse_directory(home, fan, digest, f"{OBJECTS_DIR}/{digest[:2]}/")
            _clear_at(fan, digest)
            os.unlink(digest, dir_fd=fan)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise io_error(e, what) from e
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


def io_error(e: OSError, what: str) -> OperationalError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full while {what}")
    if e.errno == errno.EROFS:
        return ReadOnlyError(f"read-only file system while {what}")
    return IOFailedError(f"{what}: {e.strerror or e}")


def sweep_orphans(home: Home, db: Database) -> int:
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
        for sub_name, _ in safefs.entries(objects):
            sub = _open_fanout(home, objects, sub_name, create=False)  # a link: home_tampered
            if sub is None:
                continue  # vanished since listed
            name = sub_name
            try:
                for name, _ in safefs.entries(sub):
                    if name not in referenced:
                        _clear_at(sub, name)
                        safefs.remove_entry_at(sub, name)
                        removed += 1
            except safefs.UnsafeEntryError as e:
                raise home.tampered(e, f"{OBJECTS_DIR}/{sub_name}/") from e
            except OSError as e:
                raise io_error(e, f"removing unreferenced object {name[:16]}") from e
            finally:
                os.close(sub)
    return removed


def promote(home: Home, staged: Staged, digest: str, *, durable: bool = True) -> Path:
    """Move a verified staging file into the store (once per digest), read-only and, where
    the kernel allows it, immutable.

    All by descriptor, never through a link: ``staging``, ``objects`` and
    ``objects/xx`` are opened with ``O_DIRECTORY | O_NOFOLLOW`` (a link or anything
    but a folder at any of them is ``home_tampered``); the staging file is opened
    without following a link and must still be the inode that was verified; it is
    made read-only by ``fchmod`` and renamed with ``src_dir_fd``/``dst_dir_fd``; the
    object's name must then hold that inode (something swapped in is removed as a
    name, and refused) before its immutable flag is set, through the descriptor of
    the verified inode.

    An existing object of that digest is replaced (its flag cleared first): ours was
    just verified, while one left by an interrupted import was never referenced and may
    have been altered since; loaders holding the old inode keep it. ``durable=False``
    leaves the directory entry to the caller's ``sync_home`` (a batch import syncs
    once); with ``durable`` the directory is fsynced here. ``Promotion`` does the same
    for a batch, opening the folders once.
    """
    with Promotion(home) as batch:
        batch.promote(staged, digest, durable=durable)
    return object_path(home, digest)


class Promotion:
    """``promote`` for a batch of staged files: ``staging`` and ``objects`` are opened
    once (at the first promotion) and each ``objects/xx`` once (at the first promotion
    into it), not once per file; use as a context manager (it closes them).

    The checks are ``promote``'s, each done at that opening: ``O_DIRECTORY |
    O_NOFOLLOW`` one name at a time, a link or anything but a folder ``home_tampered``.
    Every later step goes through those descriptors, so a link swapped in at any of
    those names meanwhile is never followed. Each file is still checked on its own:
    the staging file must be the verified inode, the object's name must hold it after
    the rename.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._stack = ExitStack()
        self._opened = False
        self._staging: int | None = None
        self._objects: int | None = None
        self._fans: dict[str, int] = {}
        self._immutable = immutable_wanted()

    def __enter__(self) -> Promotion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fans, self._fans = self._fans, {}
        try:
            for fd in fans.values():
                os.close(fd)
        finally:
            self._stack.close()

    def _folders(self, digest: str) -> tuple[int, int]:
        """``staging`` and ``objects/<digest[:2]>``, opened (``objects/xx`` made) once."""
        if not self._opened:
            self._opened = True
            self._staging = self._stack.enter_context(self.home.open_dir(STAGING_DIR))
            self._objects = self._stack.enter_context(self.home.open_dir(OBJECTS_DIR, create=0o755))
        fan = self._fans.get(digest[:2])
        if fan is None and self._objects is not None:
            fan = _open_fanout(self.home, self._objects, digest[:2], create=True)
            if fan is not None:
                self._fans[digest[:2]] = fan
        if self._staging is None or fan is None:
            raise IOFailedError(f"promoting {digest[:16]}: the staging folder vanished")
        return self._staging, fan

    def check_folders(self) -> None:
        """After the batch, before anything refers to it: every folder it opened is still
        the one at its name (``staging`` and ``objects`` in the home, each ``objects/xx``
        in ``objects``, by ``lstat`` against the descriptor's ``fstat``). One renamed away
        or swapped for a link while the promotions ran is ``home_tampered``, so the import
        stops before its commit."""
        if not self._opened:
            return
        with self.home.root_fd() as root:
            for name, fd in ((STAGING_DIR, self._staging), (OBJECTS_DIR, self._objects)):
                if fd is not None:
                    _same_folder(self.home, root, name, fd, "")
        if self._objects is not None:
            for name, fd in self._fans.items():
                _same_folder(self.home, self._objects, name, fd, f"{OBJECTS_DIR}/")

    def promote_all(self, files: Sequence[tuple[Staged, str]]) -> None:
        """``promote`` each ``(staged, digest)``, shared with a forked helper where that
        pays (``helper_batches``). Every folder is opened here first, so the helper
        promotes through the same descriptors and ``check_folders`` covers its work too.
        A failure raises the first error met here; an item the helper failed on is
        promoted again here, and raises what it finds."""
        for _, digest in files:
            self._folders(digest)

        def work(item: tuple[Staged, str], here: bool) -> None:
            self.promote(*item)

        def decode(entry: object, i: int) -> object:
            return None if entry == 1 else NOT_USABLE

        with HelperBatches(
            files, work, lambda _: 1, decode, threading.Event(), _promotion_stopped
        ) as shared:
            for got in shared.run():
                if isinstance(got, BaseException):
                    raise got

    def promote(self, staged: Staged, digest: str, *, durable: bool = False) -> None:
        """``promote`` one file of the batch (see there)."""
        home = self.home
        where = f"{OBJECTS_DIR}/{digest[:2]}/"
        try:
            staging, fan = self._folders(digest)
            fd = _open_staged(home, staging, staged)
            try:
                os.fchmod(fd, 0o444)
                _make_room(home, fan, digest, where)
                os.rename(staged.name, digest, src_dir_fd=staging, dst_dir_fd=fan)
                _check_promoted(home, fan, digest, staged, where)
                if self._immutable:
                    _set_immutable(fd, True)  # refused without CAP_LINUX_IMMUTABLE: a plain object
            finally:
                os.close(fd)
            if durable:
                counters["fsync"] += 1
                os.fsync(fan)
        except OSError as e:
            raise io_error(e, f"promoting {digest[:16]} into the store") from e


def _promotion_stopped() -> BaseException:
    return IOFailedError("promotion stopped after an earlier failure")


def _same_folder(home: Home, parent: int, name: str, fd: int, where: str) -> None:
    try:
        st, now = safefs.lstat_at(parent, name), os.fstat(fd)
    except OSError as e:
        raise io_error(e, f"checking {where}{name}/") from e
    if (
        st is None
        or not stat.S_ISDIR(st.st_mode)
        or (st.st_dev, st.st_ino)
        != (
            now.st_dev,
            now.st_ino,
        )
    ):
        found = "folder swapped while the import promoted into it"
        raise home.tampered(safefs.UnsafeEntryError(name, found, "directory"), where)


def _open_staged(home: Home, staging: int, staged: Staged) -> int:
    """The staging file, still the inode the import wrote and hashed."""
    where = f"{STAGING_DIR}/"
    try:
        fd, st = safefs.open_regular_at(staging, staged.name)
    except FileNotFoundError as e:
        raise home.tampered(
            safefs.UnsafeEntryError(staged.name, "vanishing entry", "regular file"), where
        ) from e
    except safefs.UnsafeEntryError as e:
        raise home.tampered(e, where) from e
    if not staged.same_file(fd, st):
        os.close(fd)
        raise home.tampered(
            safefs.UnsafeEntryError(
                staged.name, "file swapped since it was verified", "regular file"
            ),
            where,
        )
    return fd


def _make_room(home: Home, fan: int, digest: str, where: str) -> None:
    """Before the rename to ``digest``: a folder there is ``home_tampered``; a regular
    file there has its immutable flag cleared (whatever set it: an immutable target
    cannot be replaced); a link or FIFO is replaced as a name. One ``lstat`` when the
    name is free (a new object)."""
    st = safefs.lstat_at(fan, digest)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise home.tampered(safefs.UnsafeEntryError(digest, "directory", "regular file"), where)
    if stat.S_ISREG(st.st_mode):
        _clear_at(fan, digest)


def _check_promoted(home: Home, fan: int, digest: str, staged: Staged, where: str) -> None:
    """The object's name now holds our inode, a regular file (else it is removed as a name
    and refused)."""
    st = safefs.lstat_at(fan, digest)
    if (
        st is None
        or not stat.S_ISREG(st.st_mode)
        or (st.st_dev, st.st_ino) != (staged.dev, staged.ino)
    ):
        raise _swapped(home, fan, digest, where)


def _swapped(home: Home, fan: int, digest: str, where: str) -> HomeTamperedError:
    """Something other than our file took the object's name as it was promoted: remove
    that name (never what it may point at) and refuse."""
    found = "entry swapped in while promoted"
    try:
        safefs.remove_entry_at(fan, digest)
    except (OSError, safefs.UnsafeEntryError) as e:
        found += f" (left in place: {e})"
    return home.tampered(safefs.UnsafeEntryError(digest, found, "regular file"), where)
