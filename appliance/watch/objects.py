"""The object store as the watcher expects it, and the judgement of one changed path.

``ObjectBaseline`` keeps, for every referenced digest, the ``lstat`` seen when
the watcher last accepted it (inode, size, mode, owner, mtime, links, change time). A
path touched by a kernel event is judged against it (``judge``): gone is
``object_removed``; written or truncated is ``object_modified``; another inode
is ``object_replaced`` unless the appliance may be promoting (the home lock is
held, or it committed a change moments ago) and the new file hashes to its name.

The inode number alone does not tell a file: ext4 gives a removed file's number to the
next file made, so a file of other bytes, given the old mode and mtime and renamed over
the object, can carry every field the baseline had but one, its change time (``ctime``,
which no one without the clock's privilege can set). So the same number with another
change time is hashed (``Verdict.HASH``), as is anything the full stat pass (``scan``)
finds changed since the baseline, and only a file whose bytes match its name is
accepted, with the ``fstat`` of the descriptor that was hashed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from appliance.db import Database
from appliance.home import Home
from appliance.store import is_immutable, object_path
from appliance.watch.alarms import Alarm
from bundles.hashing import hash_fd

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class Seen:
    ino: int
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    nlink: int
    ctime_ns: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> Seen:
        return cls(
            st.st_ino,
            st.st_size,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_nlink,
            st.st_ctime_ns,
            st.st_dev,
        )


class Verdict(Enum):
    OK = "ok"
    DEFER = "defer"  # the appliance may be promoting: judge again when it is done
    HASH = "hash"  # a replacement while the appliance may be promoting: hash it
    ALARM = "alarm"


@dataclass
class Judgement:
    verdict: Verdict
    alarm: Alarm | None = None


def referenced(db: Database) -> dict[str, tuple[int, str]]:
    """digest -> (size, a NAME@VERSION using it), for every record."""
    out: dict[str, tuple[int, str]] = {}
    for digest, size, name, version in db.execute(
        "SELECT digest, size, name, version FROM artifacts ORDER BY name, version"
    ):
        out.setdefault(str(digest), (int(size), f"{name}@{version}"))
    return out


def relpath(home: Home, path: Path) -> str:
    try:
        return str(path.relative_to(home.root))
    except ValueError:
        return str(path)


def list_files(home: Home) -> list[Path]:
    """Every non-directory entry under ``objects/`` (one level of fan-out folders)."""
    out: list[Path] = []
    if not home.objects.is_dir():
        return out
    for top in os.scandir(home.objects):
        if top.is_dir(follow_symlinks=False):
            for entry in os.scandir(top.path):
                out.append(Path(entry.path))
        else:
            out.append(Path(top.path))
    return out


def digest_of(home: Home, path: Path) -> str | None:
    """The digest a path stands for, if it is where that digest's object lives."""
    if path.parent.parent != home.objects:
        return None
    name = path.name
    return name if path.parent.name == name[:2] and len(name) == 64 else None


@dataclass(frozen=True)
class Hashed:
    """A hash of what was at a path: ``seen`` is the ``fstat`` of the descriptor that was
    hashed, taken after the hash and unchanged since before it (else ``None``)."""

    ok: bool
    seen: Seen | None


def hash_object(path: Path, digest: str, size: int) -> Hashed:
    """Hash the regular file at ``path`` through one descriptor (never a FIFO: opened
    non-blocking and checked by ``fstat`` before any read)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return Hashed(False, None)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return Hashed(False, None)
        got, n = hash_fd(fd)
        after = Seen.of(os.fstat(fd))
    except OSError:
        return Hashed(False, None)
    finally:
        os.close(fd)
    if after != Seen.of(before):
        return Hashed(False, None)  # changed while it was hashed
    return Hashed(got == digest and n == size, after)


def hash_matches(path: Path, digest: str, size: int) -> bool:
    return hash_object(path, digest, size).ok


class ObjectBaseline:
    """What the watcher last accepted for each referenced object."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.refs: dict[str, tuple[int, str]] = {}
        self.seen: dict[str, Seen] = {}

    def set_refs(self, refs: dict[str, tuple[int, str]]) -> None:
        self.refs = refs

    def accept(self, digest: str, seen: Seen) -> None:
        """Take ``seen``, the ``fstat`` of the descriptor that was hashed, as the baseline."""
        self.seen[digest] = seen

    def accept_if_sealed(self, digest: str) -> bool:
        """A newly committed object, accepted at once (True) when its inode carries the
        immutable flag: only a holder of ``CAP_LINUX_IMMUTABLE`` sets it (the appliance's
        promotion, on the inode it verified), and no one else can then rename anything
        over the name. Else False, and it is to be hashed: between the promotion and this
        look, another file may have been renamed over it."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(object_path(self.home, digest), flags)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not is_immutable(fd):
                return False
            self.seen[digest] = Seen.of(st)
            return True
        finally:
            os.close(fd)

    def scan(self) -> tuple[list[Alarm], list[Path]]:
        """Full stat pass: missing, writable or wrong-sized objects are alarms; an object
        whose ``lstat`` differs from its baseline otherwise (its events lost, say in a
        queue overflow) is returned to be hashed, its baseline kept until it is; an
        object with no baseline yet takes its ``lstat``."""
        alarms: list[Alarm] = []
        changed: list[Path] = []
        for digest, (_size, ref) in self.refs.items():
            path = object_path(self.home, digest)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                alarms.append(self._alarm("object_removed", path, ref, "object is missing"))
                self.seen.pop(digest, None)
                continue
            bad = self._static_problem(st, digest)
            if bad is not None:
                alarms.append(self._alarm(bad[0], path, ref, bad[1]))
                self.seen[digest] = Seen.of(st)
                continue
            base = self.seen.get(digest)
            if base is None:
                self.seen[digest] = Seen.of(st)
            elif Seen.of(st) != base:
                changed.append(path)
        return alarms, changed

    def unknown_files(self) -> list[Path]:
        return [p for p in list_files(self.home) if digest_of(self.home, p) not in self.refs]

    def _static_problem(self, st: os.stat_result, digest: str) -> tuple[str, str] | None:
        if not stat.S_ISREG(st.st_mode):
            return ("object_replaced", "object is not a regular file")
        if st.st_mode & WRITE_BITS:
            return ("object_modified", f"object is writable (mode {stat.S_IMODE(st.st_mode):04o})")
        if st.st_size != self.refs[digest][0]:
            return (
                "object_modified",
                f"object has {st.st_size} bytes, its record {self.refs[digest][0]}",
            )
        return None

    def _alarm(self, code: str, path: Path, ref: str | None, message: str) -> Alarm:
        name = ref.partition("@")[0] if ref else None
        detail = {"artifact": ref} if ref else {}
        return Alarm(code, relpath(self.home, path), message, name=name, detail=detail)

    def judge(self, path: Path, written: bool, busy: bool) -> Judgement:
        """Judge ``path`` after kernel events (``written``: a write or truncate was seen)."""
        digest = digest_of(self.home, path)
        if digest is None or digest not in self.refs:
            if not os.path.lexists(path):
                return Judgement(Verdict.OK)
            if path.is_dir() and path.parent == self.home.objects and len(path.name) == 2:
                return Judgement(Verdict.OK)  # a fan-out folder
            if busy:
                return Judgement(Verdict.DEFER)
            return Judgement(
                Verdict.ALARM,
                self._alarm("unknown_object", path, None, "no record references this file"),
            )
        size, ref = self.refs[digest]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Judgement(
                Verdict.ALARM,
                self._alarm("object_removed", path, ref, "object was deleted or renamed away"),
            )
        base = self.seen.get(digest)
        if written:
            what = "truncated" if st.st_size < size else "written to"
            return Judgement(
                Verdict.ALARM, self._alarm("object_modified", path, ref, f"object was {what}")
            )
        if base is None or st.st_ino != base.ino:
            if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mode & WRITE_BITS:
                return Judgement(
                    Verdict.ALARM,
                    self._alarm(
                        "object_replaced", path, ref, "object was replaced by another file"
                    ),
                )
            if busy:  # promoted (or repaired) by the appliance, maybe: the bytes decide
                return Judgement(Verdict.HASH)
            return Judgement(
                Verdict.ALARM,
                self._alarm("object_replaced", path, ref, "object was replaced (renamed over)"),
            )
        problem = self._static_problem(st, digest)
        if problem is not None:
            return Judgement(Verdict.ALARM, self._alarm(problem[0], path, ref, problem[1]))
        now = Seen.of(st)
        if (now.mode, now.uid, now.gid) != (base.mode, base.uid, base.gid):
            return Judgement(
                Verdict.ALARM,
                self._alarm(
                    "object_modified",
                    path,
                    ref,
                    f"object mode or owner changed (mode {stat.S_IMODE(st.st_mode):04o}, "
                    f"uid {st.st_uid})",
                ),
            )
        if now.mtime_ns != base.mtime_ns or now.nlink != base.nlink:
            return Judgement(
                Verdict.ALARM,
                self._alarm("object_modified", path, ref, "object's times or hard links changed"),
            )
        if now != base:
            # The same number, another change time: an inode flag or attribute changed
            # (the appliance sets and clears the immutable flag), or another file took the
            # freed number. Only its bytes tell.
            return Judgement(Verdict.HASH)
        return Judgement(Verdict.OK)

    def alarm_for(self, code: str, path: Path, message: str) -> Alarm:
        digest = digest_of(self.home, path)
        ref = self.refs.get(digest, (0, None))[1] if digest else None
        return self._alarm(code, path, ref, message)
