"""The bundle writer's one pass per source: open once, read, hash and write the same bytes.

A small source (up to ``SMALL`` bytes) is read whole into one buffer (one byte more than
its size, so a file that grew is noticed), hashed from that buffer (BLAKE3, and SHA-256
when asked) and written from it: the bytes hashed are the bytes stored, and the source is
opened once. A larger one is hashed on all cores from its descriptor
(``bundles.hashing.hash_fd``) and then copied from the same descriptor by the kernel
(``copy_file_range``). Either way the source's identity, size and mtime are checked
again after the copy (``SourceChangedError`` when they moved).

Sources are written one after the other, in this thread: threads were tried (2 and 4,
20,000 files of 1-8 KiB) and were no faster, the files all go into one folder (its lock
serialises the creates) and the GIL handed over at each system call cost more than it
overlapped. Every folder is made once, before the files, parents first; nothing is
synced here (the writer makes the whole bundle durable with one
``syncfs``: ``bundles.durable``).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3

from bundles.errors import SourceChangedError
from bundles.hashing import hash_fd
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


def write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


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


def _write_part(root: int, part: Part, data: memoryview) -> None:
    out = os.open(part.path, _NEW_FILE, 0o644, dir_fd=root)
    try:
        write_all(out, data)
    finally:
        os.close(out)


def _copy_part(root: int, part: Part, fd: int, offset: int, path: Path) -> None:
    out = os.open(part.path, _NEW_FILE, 0o644, dir_fd=root)
    try:
        copy_range(fd, out, offset, part.size)
    except EOFError:
        raise changed(path) from None
    finally:
        os.close(out)


def write_source(root: int, src: Source) -> Digests:
    """Hash ``src`` and write its parts under the folder ``root`` (an open descriptor:
    each part is created relative to it, not by a path walked again from ``/``) from one
    open descriptor of the source."""
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
                _write_part(root, src.files[0], data)
            else:
                offset = 0
                for part in src.files:
                    _write_part(root, part, data[offset : offset + part.size])
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
    """Write every source under ``root`` (its folders made first); their digests, in order."""
    make_folders(root, (p.path for s in sources for p in s.files))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return [write_source(fd, s) for s in sources]
    finally:
        os.close(fd)
