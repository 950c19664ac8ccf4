"""The bundle writer's one pass per source: open once, read, hash and write the same bytes.

A small source (up to ``SMALL`` bytes) is read whole into one buffer (one byte more than
its size, so a file that grew is noticed), hashed from that buffer (BLAKE3, and SHA-256
when asked) and written from it: the bytes hashed are the bytes stored, and the source is
opened once. A larger one is hashed on all cores from its descriptor
(``bundles.hashing.hash_fd``) and then copied from the same descriptor by the kernel
(``copy_file_range``). Either way the source's identity, size and mtime are checked
again after the copy (``SourceChangedError`` when they moved).

Small sources are shared by this process and one forked helper
(``bundles.helper_batches``: from 256 of them, where the process may fork), each writing
its own; threads were tried (2 and 4, 20,000 files of 1-8 KiB) and were no faster (the
GIL handed over at each system call cost more than it overlapped). What the helper
reports for a source (its digests and size) is taken only in the shape ``write_source``
gives; a source it did not report is written here again, over what the helper may have
left of it. Larger sources are written here, one after the other (their hash runs on all
cores). Every folder is made once, before the files, parents first; nothing is synced
here (the writer makes the whole bundle durable with one ``syncfs``: ``bundles.durable``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3

from bundles.errors import SourceChangedError
from bundles.fdio import write_all
from bundles.fields import HEX64
from bundles.hashing import hash_fd
from bundles.helper_batches import NOT_USABLE, HelperBatches
from bundles.manifest import Part

SMALL = 4 << 20  # at most this size: one read into a buffer, hash, write
_COPY_CHUNK = 1 << 30
_SHA_CHUNK = 4 << 20
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


@dataclass(frozen=True)
class Source:
    """One artifact's source file: its ``stat`` when it was named, and where it goes."""

    path: Path
    stat: os.stat_result
    files: tuple[Part, ...]  # its place in the bundle (one part or several)
    sha256: bool = False


@dataclass(frozen=True)
class Digests:
    blake3: str
    sha256: str | None
    size: int


def changed(path: Path) -> SourceChangedError:
    return SourceChangedError(f"{path} changed while it was bundled")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
    )


def copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src`` from ``offset`` to ``dst``'s current position;
    ``EOFError`` when ``src`` ends first."""
    done = 0
    fast = True
    while done < count:
        n = 0
        if fast:
            try:
                n = os.copy_file_range(src, dst, min(count - done, _COPY_CHUNK), offset + done)
            except OSError as e:
                if e.errno not in _NO_KERNEL_COPY:
                    raise
                fast = False
                continue
        else:
            data = os.pread(src, min(count - done, 1 << 20), offset + done)
            n = len(data)
            if n:
                write_all(dst, memoryview(data))
        if n == 0:
            raise EOFError
        done += n


def make_folders(root: Path, paths: Iterable[str]) -> int:
    """Every folder the bundle ``paths`` lie in, made once each, parents first; how many."""
    folders = {p[:i] for p in paths for i in range(len(p)) if p[i] == "/"}
    for folder in sorted(folders):  # a parent sorts before its children
        os.mkdir(root / folder)
    return len(folders)


def _read_small(fd: int, size: int, path: Path) -> memoryview:
    """The ``size`` bytes of a small source, read by asking for one byte more: a file
    that grew is noticed here, or (a read that stopped exactly at the old size) by the
    identity check after the copy, which compares ``st_size``. Usually one system call."""
    data = os.pread(fd, size + 1, 0)
    if len(data) < size:  # a short read before the end (some file systems do): read on
        chunks, done = [data], len(data)
        while done <= size and (chunk := os.pread(fd, size + 1 - done, done)):
            chunks.append(chunk)
            done += len(chunk)
        data = b"".join(chunks)
    if len(data) != size:
        raise changed(path)
    return memoryview(data)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(_SHA_CHUNK))
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        h.update(buf[:n])
        offset += n
    return h.hexdigest()


def _create(root: int, part: Part, replace: bool) -> int:
    """A new part file under ``root``; ``replace``: one a helper left (it may have
    created it before it stopped) is removed first, not refused."""
    try:
        return os.open(part.path, _NEW_FILE, 0o644, dir_fd=root)
    except FileExistsError:
        if not replace:
            raise
    os.unlink(part.path, dir_fd=root)
    return os.open(part.path, _NEW_FILE, 0o644, dir_fd=root)


def _write_part(root: int, part: Part, data: memoryview, replace: bool = False) -> None:
    out = _create(root, part, replace)
    try:
        write_all(out, data)
    finally:
        os.close(out)


def _copy_part(root: int, part: Part, fd: int, offset: int, path: Path) -> None:
    out = _create(root, part, False)
    try:
        copy_range(fd, out, offset, part.size)
    except EOFError:
        raise changed(path) from None
    finally:
        os.close(out)


def write_source(root: int, src: Source, replace: bool = False) -> Digests:
    """Hash ``src`` and write its parts under the folder ``root`` (an open descriptor:
    each part is created relative to it, not by a path walked again from ``/``) from one
    open descriptor of the source; ``replace``: a small source's part files a helper
    may have left are written over."""
    size = src.stat.st_size
    # non-blocking: a FIFO put in its place is opened at once, and refused by fstat
    fd = os.open(src.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not same_file(os.fstat(fd), src.stat):
            raise changed(src.path)
        if size <= SMALL:
            data = _read_small(fd, size, src.path)
            digest = blake3.blake3(data).hexdigest()
            sha = hashlib.sha256(data).hexdigest() if src.sha256 else None
            if len(src.files) == 1:
                _write_part(root, src.files[0], data, replace)
            else:
                offset = 0
                for part in src.files:
                    _write_part(root, part, data[offset : offset + part.size], replace)
                    offset += part.size
        else:
            digest, hashed = hash_fd(fd)
            if hashed != size:
                raise changed(src.path)
            sha = _sha256_fd(fd) if src.sha256 else None
            offset = 0
            for part in src.files:
                _copy_part(root, part, fd, offset, src.path)
                offset += part.size
        if not same_file(os.fstat(fd), src.stat):
            raise changed(src.path)
    finally:
        os.close(fd)
    return Digests(digest, sha, size)


def write_sources(root: Path, sources: Sequence[Source]) -> list[Digests]:
    """Write every source under ``root`` (its folders made first); their digests, in
    order. The small ones are shared with a helper (see the module's note); the first
    failure, in the sources' order among the small ones and then the large ones, is
    raised."""
    make_folders(root, (p.path for s in sources for p in s.files))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        small = [i for i, s in enumerate(sources) if s.stat.st_size <= SMALL]
        out: list[Digests | None] = [None] * len(sources)
        for i, got in zip(small, _write_small(fd, [sources[i] for i in small]), strict=True):
            out[i] = got
        for i, s in enumerate(sources):
            if out[i] is None:
                out[i] = write_source(fd, s)
        return [d for d in out if d is not None]
    finally:
        os.close(fd)


def _write_small(root: int, sources: list[Source]) -> list[Digests]:
    """``write_source`` of each small source, here and in a helper."""
    stop = threading.Event()
    helped = False  # set once the helper is forked: its copy keeps False, never replaces

    def work(src: Source, here: bool) -> Digests:
        return write_source(root, src, replace=here and helped)

    def decode(entry: object, i: int) -> object:
        return _decode(entry, sources[i])

    with HelperBatches(sources, work, _encode, decode, stop, _stopped) as batches:
        helped = batches.helper is not None
        outcomes = batches.run()
    found: list[Digests] = []
    for got in outcomes:
        if isinstance(got, BaseException):
            raise got
        if got is None:  # never reached: only after a failure, raised above
            raise AssertionError("a source was left unwritten")
        found.append(got)
    return found


def _encode(d: Digests) -> object:
    return [d.blake3, d.sha256, d.size]


def _decode(entry: object, src: Source) -> object:
    """A helper's report of ``src`` as ``_encode`` writes it (the source's own size, hex
    digests, SHA-256 exactly when asked), else ``NOT_USABLE``: written here again."""
    if not (isinstance(entry, list) and len(entry) == 3):
        return NOT_USABLE
    b3, sha, size = entry
    if type(b3) is not str or not HEX64.fullmatch(b3):
        return NOT_USABLE
    if (sha is None) == src.sha256 or (
        sha is not None and not (type(sha) is str and HEX64.fullmatch(sha))
    ):
        return NOT_USABLE
    if type(size) is not int or size != src.stat.st_size:
        return NOT_USABLE
    return Digests(b3, sha, size)


def _stopped() -> BaseException:
    return RuntimeError("bundle writing stopped after a failure")
