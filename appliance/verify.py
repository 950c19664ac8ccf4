"""Re-verify what is in the store: every object re-hashed, every record re-checked.

Two questions per record, kept apart because they have different exit codes:
do the object's bytes still hash to the recorded digest (no: the store was
tampered with, exit 4), and do the record's signers still meet today's trust
(no: a key was revoked or a threshold raised since import, exit 1).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import blake3

from appliance import safefs
from appliance.db import Database
from appliance.errors import ObjectTamperedError
from appliance.headstart import HeadStart
from appliance.home import OBJECTS_DIR, Home
from appliance.provenance import (
    DbToken,
    Pointers,
    Records,
    check_pointer,
    check_record,
    check_signers_column,
    db_token,
    judge_manifests,
    manifests_to_vouch,
    pointer_lands,
    vouched_signers,
)
from appliance.store import Record, is_immutable, object_path
from appliance.trust import TrustState
from bundles.errors import RejectedError, StateSuspectError
from bundles.fdio import read_all, write_all
from bundles.fields import HEX64
from bundles.forks import MAX_BATCHES, batch_queue, fork_is_safe, fork_with_pipe, take_batch


def open_object(home: Home, record: Record) -> int:
    """Open the stored object read-only by descriptor, never through a link; exit 4
    (``object_tampered``) when it is gone or is not a regular file (a FIFO, directory,
    device or link in its place never blocks or errors as I/O), and ``home_tampered``
    when ``objects/`` or ``objects/xx/`` itself was replaced.
    """
    what = f"{record.name}@{record.version}"
    if not HEX64.fullmatch(record.digest):
        raise ObjectTamperedError(f"{what}: the record's digest is not a BLAKE3 hex digest")
    path = _LazyPath(home, record.digest)  # for the messages only: built if one is raised
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


class _LazyPath:
    """``object_path(home, digest)`` in an f-string, computed only when formatted."""

    def __init__(self, home: Home, digest: str) -> None:
        self.home, self.digest = home, digest

    def __format__(self, spec: str) -> str:
        return format(object_path(self.home, self.digest), spec)


def check_hash(fd: int, record: Record) -> None:
    """Hash from ``fd``; raise ``ObjectTamperedError`` unless size and digest match."""
    digest, size = _hash_fd(fd)
    check_digest(record, digest, size)


def check_digest(record: Record, digest: str, size: int) -> None:
    """``ObjectTamperedError`` unless a hash's digest and size are the record's."""
    if size != record.size or digest != record.digest:
        raise ObjectTamperedError(_mismatch(record, digest, size))


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
    db: Database,
    trust: TrustState,
    record: Record,
    *,
    token: DbToken | None | Literal["read"] = "read",
    pointers: Pointers | None = None,
    checks: Records | None = None,
    vouched: frozenset[str] | None = None,
) -> frozenset[str]:
    """The record is backed by its stored signed manifest, and its name's pointer by an
    authorized move (when the record is active, or when no stored version of the name
    is: an ``active`` row removed, or moved to a version with no record, is tampering
    unless an audited move put it there), and its signers column by its intact import
    audit event (``check_signers_column``: a loader is handed that column in
    ``LoadedArtifact.record``); returns the signers that
    count today (see ``appliance.provenance``). ``token``: see ``check_record``;
    ``pointers`` and ``checks``: the pointers and records judged in one pass for many
    records (``Pointers``, ``Records``), else this record is checked on its own;
    ``vouched``: the signers of the record's stored manifest, which a helper verified
    and found listing the record as it is (``Records.vouched``).
    """
    if pointers is not None:
        if record.active or not pointers.lands(record.name):
            pointers.check(record.name)
        pointers.check_signers(record)
    else:
        if record.active or not pointer_lands(db, record.name):
            check_pointer(db, record.name)
        check_signers_column(db, record)
    if checks is not None:
        return checks.check(record) if vouched is None else checks.vouched(record, vouched)
    return check_record(db, trust, record, token=token)


def verify_records(
    home: Home,
    db: Database,
    trust: TrustState,
    records: list[Record],
    *,
    early: HeadStart | None = None,
) -> list[RecordStatus]:
    """``verify_record`` of each record in one read-only pass.

    The objects are opened by descriptor under one descriptor of ``objects/`` and one
    of each ``objects/xx/`` (``_ObjectsDir``), each distinct object hashed once, small
    ones in a forked helper process beside this one (``_hash_all``); the database
    token is read once for the pass, the active pointers judged from one read of the
    pointer-moving audit events (``Pointers``), each stored manifest looked up once
    (``Records``), and a manifest that backs many of the records verified and matched
    against them by the helper while this process reads the pointers
    (``provenance.judge_manifests``; what the helper does not vouch for is judged here).
    ``early``: the CLI's head start (``appliance.headstart``), the hash of a large object
    already running; it is taken only when the descriptor opened here carries the
    immutable flag and is the very inode it hashes.
    Same statuses, codes and messages as ``verify_record``; like it,
    raises only ``home_tampered`` (``objects/`` or ``objects/xx/`` replaced).
    """
    work = manifests_to_vouch(db, records) if len(records) >= _HELPER_MIN else []
    hashing = _HashPass(
        home,
        records,
        job=(lambda: judge_manifests(trust, records, work)) if work else None,
        early=early,
    )
    try:
        token = db_token(db)
        pointers = Pointers(db)
        checks = Records(db, trust, token)
        # The helper's verdicts on the manifests come before its hashing ends: the
        # records are judged here while it hashes, then the batches left are taken.
        vouched = vouched_signers(work, hashing.job_answer()) if work else {}
        judged = [
            _judge_provenance(
                db, trust, r, pointers=pointers, checks=checks, vouched=vouched.get(i)
            )
            for i, r in enumerate(records)
        ]
        found = hashing.finish()
    finally:
        hashing.close()
    out = []
    for r, provenance in zip(records, judged, strict=True):
        problem = found[r.digest] if HEX64.fullmatch(r.digest) else _NOT_HEX
        try:
            _judge_hash(home, r, problem)
        except ObjectTamperedError as e:
            out.append(RecordStatus(r, "tampered", e.code, e.message))
            continue
        out.append(provenance)
    return out


def verify_record(
    home: Home,
    db: Database,
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
    return _judge_provenance(db, trust, record, token=token, pointers=pointers)


def _judge_provenance(
    db: Database,
    trust: TrustState,
    record: Record,
    *,
    token: DbToken | None | Literal["read"] = "read",
    pointers: Pointers | None = None,
    checks: Records | None = None,
    vouched: frozenset[str] | None = None,
) -> RecordStatus:
    try:
        check_provenance(
            db, trust, record, token=token, pointers=pointers, checks=checks, vouched=vouched
        )
    except StateSuspectError as e:
        return RecordStatus(record, "unauthorized", e.code, e.message)
    except RejectedError as e:
        return RecordStatus(record, "untrusted", e.code, e.message)
    return RecordStatus(record, "ok")


# --- the hash pass of ``verify_records`` ---------------------------------------------------
#
# What opening and hashing one object found, as plain tuples (they cross a pipe from the
# helper process): ("ok", hex digest, size), or a refusal that ``_judge_hash`` turns into
# the error ``open_object`` / ``check_hash`` raise for it.
_Problem = tuple[str | int, ...]
_NOT_HEX: _Problem = ("not_hex",)
_NO_OBJECTS: _Problem = ("no_objects",)
SMALL_OBJECT = 1 << 20  # below this (by the record's size) an object may go to the helper
_HELPER_MIN = 512  # fewer small objects than this: no helper process
_MAX_HELPERS = 3
_BATCH = 128  # small objects per batch of the work queue, at least
_READ = 1 << 16
counters = {"helper_processes": 0, "subdir_opens": 0}  # pinned by tests/perf


def _judge_hash(home: Home, record: Record, problem: _Problem) -> None:
    """Raise what ``open_object`` then ``check_hash`` raise for ``record`` given what the
    hash pass found; return when the object hashes to the record."""
    kind = problem[0]
    if kind == "ok":
        if problem[2] != record.size or problem[1] != record.digest:
            raise ObjectTamperedError(_mismatch(record, str(problem[1]), int(problem[2])))
        return
    path = object_path(home, record.digest)
    what = f"{record.name}@{record.version}"
    if kind == "not_hex":
        raise ObjectTamperedError(f"{what}: the record's digest is not a BLAKE3 hex digest")
    if kind == "no_objects":
        raise ObjectTamperedError(f"{what}: object {path} is missing (no objects folder)")
    if kind == "missing":
        raise ObjectTamperedError(f"{what}: object {path} is missing")
    if kind == "dir_unsafe":
        e = safefs.UnsafeEntryError(str(problem[1]), str(problem[2]), str(problem[3]))
        raise home.tampered(e, f"{OBJECTS_DIR}/")
    if kind == "unsafe":
        raise ObjectTamperedError(f"{what}: object {path} is a {problem[1]}, not a regular file")
    raise ObjectTamperedError(f"{what}: object {path} cannot be opened ({problem[1]})")


def _hash_fd(fd: int) -> tuple[str, int]:
    """``bundles.hashing.hash_fd`` (all cores), imported when first needed: a pass over
    small objects never uses it. (A load's process, a library user's, is never forked.)"""
    from bundles.hashing import hash_fd

    return hash_fd(fd)


def _hash_large(fd: int) -> tuple[str, int]:
    """``bundles.hashing.hash_isolated``: a large object of the ``verify_records`` pass
    hashed through a mapping in a forked child where no other thread runs (``b3sum``'s
    speed: no copy into buffers), else read by ``hash_fd``; the same answers."""
    from bundles.hashing import hash_isolated

    return hash_isolated(fd)


def _mismatch(record: Record, digest: str, size: int) -> str:
    return (
        f"{record.name}@{record.version}: stored object does not match its record "
        f"(BLAKE3 {digest[:16]}..., expected {record.digest[:16]}...; "
        f"{size} bytes, expected {record.size})"
    )


class _ObjectsDir:
    """``objects/`` by one descriptor, each ``objects/xx/`` opened once (never through a
    link); each object opened as ``open_object`` opens it (``safefs.open_file_at``, minus
    clearing ``O_NONBLOCK``, which reads of a regular file ignore) and hashed."""

    def __init__(self, objects: int, early: HeadStart | None = None) -> None:
        self.objects = objects
        self.subs: dict[str, int | _Problem] = {}
        self.buffer = bytearray(_READ)
        self.early = early

    def close(self) -> None:
        for fd in self.subs.values():
            if isinstance(fd, int):
                os.close(fd)
        self.subs.clear()

    def _sub(self, prefix: str) -> int | _Problem:
        sub = self.subs.get(prefix)
        if sub is None:
            counters["subdir_opens"] += 1
            try:
                sub = safefs.open_dir_at(self.objects, prefix)
            except FileNotFoundError:
                sub = ("missing",)
            except safefs.UnsafeEntryError as e:
                sub = ("dir_unsafe", e.name, e.found, e.expected)
            except OSError as e:
                sub = ("oserror", e.strerror or str(e))
            self.subs[prefix] = sub
        return sub

    def hash(self, digest: str, large: bool) -> _Problem:
        """Open and hash one object; ``large``: hash with all cores (never in the helper,
        whose copy of this process has no BLAKE3 thread pool)."""
        sub = self._sub(digest[:2])
        if not isinstance(sub, int):
            return sub
        try:
            before = os.stat(digest, dir_fd=sub, follow_symlinks=False)
        except FileNotFoundError:
            return ("missing",)
        except OSError as e:
            return ("oserror", e.strerror or str(e))
        if not stat.S_ISREG(before.st_mode):
            return ("unsafe", safefs.kind(before.st_mode))
        try:
            fd = os.open(digest, _OPEN_FLAGS, dir_fd=sub)
        except FileNotFoundError:
            return ("missing",)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
                st = safefs.lstat_at(sub, digest)
                return ("unsafe", safefs.kind(st.st_mode) if st is not None else "vanishing entry")
            return ("oserror", e.strerror or str(e))
        try:
            after = os.fstat(fd)
            if not stat.S_ISREG(after.st_mode):
                return ("unsafe", safefs.kind(after.st_mode))
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                return ("unsafe", "file swapped while opened")
            if large:
                hexdigest, size = self._hash_large(fd)
            else:
                hexdigest, size = self._hash_small(fd)
            return ("ok", hexdigest, size)
        except OSError as e:
            return ("oserror", e.strerror or str(e))
        finally:
            os.close(fd)

    def _hash_large(self, fd: int) -> tuple[str, int]:
        """The head start's hash when ``fd`` is immutable and the very inode it hashes (as
        the loader takes one: ``appliance.loader``), else ``_hash_large``."""
        if self.early is not None and is_immutable(fd):
            running = self.early.claim(fd)
            if running is not None:
                return running.result()
        return _hash_large(fd)

    def _hash_small(self, fd: int) -> tuple[str, int]:
        """One core, this object's own buffer: no thread, safe in the forked helper."""
        view = memoryview(self.buffer)
        hasher = blake3.blake3()
        size = 0
        while n := os.preadv(fd, [view], size):
            hasher.update(view[:n])
            size += n
        return str(hasher.hexdigest()), size


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _HashPass:
    """Open and hash each distinct well-formed digest of ``records``.

    Small objects are cut into batches whose numbers wait in a pipe (a work queue that
    any process can take from: each takes one 4-byte number per read). When there are
    many and more than one core, ``start`` forks helper processes that take batches
    and hash them while this process does its database work (two processes hash small
    files faster than threads, which the GIL serialises); ``finish`` then hashes the
    large objects (all cores), takes the batches left, and collects the helpers'
    findings. What a helper fails to report (it died, or wrote something else) is
    hashed here.
    """

    def __init__(
        self,
        home: Home,
        records: list[Record],
        job: Callable[[], Any] | None = None,
        early: HeadStart | None = None,
    ) -> None:
        """``job``: run by the first helper before it takes batches; its answer (plain
        JSON values) is ``job_answer()``, which waits for the job only (None when no
        helper ran it);
        ``early``: see ``verify_records``."""
        self.job = job
        self.job_result: Any = None
        self.job_pipe: int | None = None  # read end: the first helper's job answer
        small: dict[str, None] = {}
        large: dict[str, None] = {}
        for r in records:
            if HEX64.fullmatch(r.digest):
                (large if r.size >= SMALL_OBJECT else small)[r.digest] = None
        self.large = list(large)
        names = list(small)
        size = max(_BATCH, -(-len(names) // MAX_BATCHES))
        self.batches = [names[i : i + size] for i in range(0, len(names), size)]
        self.found: dict[str, _Problem] = {}
        self.helpers: list[tuple[int, int]] = []
        self.objs: _ObjectsDir | None = None
        self.queue: int | None = None
        if not names and not self.large:
            return
        with home.open_dir(OBJECTS_DIR) as objects:
            if objects is None:
                self.found = dict.fromkeys([*names, *self.large], _NO_OBJECTS)
                return
            self.objs = _ObjectsDir(os.dup(objects), early)
        self.queue = batch_queue(len(self.batches))
        if len(names) >= _HELPER_MIN and fork_is_safe():  # (beside a thread: hashed here)
            for n in range(min((os.cpu_count() or 1) - 1, _MAX_HELPERS)):
                helper = self._start_helper(self.job if n == 0 else None)
                if helper is None:
                    break
                self.helpers.append(helper)

    def _start_helper(self, job: Callable[[], Any] | None) -> tuple[int, int] | None:
        """``_start_helper`` with, for ``job``, a pipe of its own for the job's answer
        (``job_answer``): (pid, read end of the findings), None when it cannot start."""
        if job is None:
            return _start_helper(self, None, None)
        try:
            r, w = os.pipe()
        except OSError:
            return None
        try:
            started = _start_helper(self, job, w)
        finally:
            os.close(w)  # the helper holds its own copy: end of file once it wrote
        if started is None:
            os.close(r)
        else:
            self.job_pipe = r
        return started

    def job_answer(self) -> Any:
        """The first helper's job answer (plain JSON values), waiting for the job but not
        for the helper's hashing; None when no helper ran it, or it failed or wrote
        something else. Also ``job_result`` from then on."""
        if self.job_pipe is None:
            return self.job_result
        try:
            answer = read_all(self.job_pipe)
        finally:
            os.close(self.job_pipe)
            self.job_pipe = None
        try:
            self.job_result = json.loads(answer) if answer else None
        except ValueError:
            self.job_result = None
        return self.job_result

    def take(self) -> int | None:
        """The next batch number from the queue, or None when it is empty."""
        assert self.queue is not None
        return take_batch(self.queue)

    def hash_batches(self) -> dict[int, list[_Problem]]:
        """Take batches until the queue is empty; what each one's objects gave."""
        assert self.objs is not None
        out = {}
        while (n := self.take()) is not None:
            out[n] = [self.objs.hash(d, False) for d in self.batches[n]]
        return out

    def finish(self) -> dict[str, _Problem]:
        """What opening and hashing found for each distinct well-formed digest."""
        objs = self.objs
        if objs is None:
            return self.found
        try:
            self.found.update((d, objs.hash(d, True)) for d in self.large)
            done = self.hash_batches()
            self.job_answer()  # (read before waiting for the helper, which may wait to write it)
            for pid, r in self.helpers:
                done.update(_finish_helper(self, pid, r))
            self.helpers = []
            for n, batch in enumerate(self.batches):
                results = done.get(n)
                if results is None:  # a helper took it and did not report it
                    results = [objs.hash(d, False) for d in batch]
                self.found.update(zip(batch, results, strict=True))
            return self.found
        finally:
            self.close()

    def close(self) -> None:
        """Release the descriptors and reap the helpers (idempotent)."""
        if self.queue is not None:
            os.close(self.queue)
            self.queue = None
        if self.job_pipe is not None:
            os.close(self.job_pipe)
            self.job_pipe = None
        for pid, r in self.helpers:  # only when this process failed before ``finish``
            os.close(r)
            os.kill(pid, signal.SIGKILL)  # its findings are not wanted any more
            os.waitpid(pid, 0)
        self.helpers = []
        if self.objs is not None:
            self.objs.close()
            os.close(self.objs.objects)
            self.objs = None


def _start_helper(
    hashing: _HashPass, job: Callable[[], Any] | None, job_pipe: int | None
) -> tuple[int, int] | None:
    """Fork a process that runs ``job`` (if any) and writes its answer as JSON to
    ``job_pipe``, then takes batches from ``hashing``'s queue and hashes them, and writes
    what it found to a pipe as JSON: (pid, read end); None when it cannot be started."""

    def child(w: int) -> None:  # only descriptors, blake3, json and the job's own work
        if job is not None and job_pipe is not None:
            write_all(job_pipe, json.dumps(job()).encode())
            os.close(job_pipe)
        write_all(w, json.dumps(hashing.hash_batches()).encode())

    started = fork_with_pipe(child)
    if started is not None:
        counters["helper_processes"] += 1
    return started


def _finish_helper(hashing: _HashPass, pid: int, r: int) -> dict[int, list[_Problem]]:
    """A helper's findings, each checked for shape (batch number, one finding for each
    of its objects; anything else is left out, to be hashed in this process)."""
    try:
        found = read_all(r)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return {}
    try:
        results = json.loads(found)
    except ValueError:
        return {}
    out: dict[int, list[_Problem]] = {}
    if isinstance(results, dict):
        for key, found in results.items():
            n = int(key) if key.isdigit() else -1
            if 0 <= n < len(hashing.batches) and isinstance(found, list):
                if len(found) == len(hashing.batches[n]) and all(map(_shaped, found)):
                    out[n] = [tuple(x) for x in found]
    return out


def _shaped(x: object) -> bool:
    """A finding as ``_ObjectsDir.hash`` makes them: a list of strings, the last of an
    ``ok`` one the size."""
    if not isinstance(x, list) or not x or not all(isinstance(v, str) for v in x[:-1]):
        return False
    if x[0] == "ok":
        return len(x) == 3 and isinstance(x[2], int)
    return isinstance(x[-1], str)
