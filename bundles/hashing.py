"""BLAKE3 hashing: large files read in chunks with read and hash overlapped, small files
spread over processes.

``hash_fd`` reads the open descriptor it is given with ``pread`` (from offset 0,
to its end) into reused buffers, so the bytes hashed are those of that
descriptor (the loader hands over the same one). Reading beats mapping here:
the buffer stays in the core's cache and there are no page faults (hashing a
mapping of 2 GiB costs ~1.6x the time), the peak memory is a few MiB instead of
the file's size in mapped pages, and a file that shrinks while it is hashed
gives a short read, never a SIGBUS. For a large file, one thread reads the next
chunk while another hashes the last (both release the GIL): two cores overlap
the copy out of the page cache and the hash.

``hash_paths`` hashes many small files in two or more processes (the GIL keeps
threads from helping), each reading into its own buffer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import blake3

# At and above this size new_hasher() hashes with all cores (one update of a big buffer).
MULTITHREAD_MIN = 1 << 20
EMPTY_DIGEST = blake3.blake3(b"").hexdigest()
CHUNK = 1 << 20  # read size: two of these stay in a core's L2 cache
PIPELINE_MIN = 8 << 20  # from this size on, read and hash in two threads
_BUFFERS = 3
_local = threading.local()


def new_hasher(size_hint: int = 0) -> blake3.blake3:
    """A BLAKE3 hasher; multithreaded for a hint of ``MULTITHREAD_MIN`` bytes or more."""
    if size_hint >= MULTITHREAD_MIN:
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return blake3.blake3()


def _buffer() -> memoryview:
    """This thread's reused read buffer."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = memoryview(bytearray(CHUNK))
        _local.view = view
    return view


def _hash_serial(fd: int, hasher: blake3.blake3, offset: int) -> int:
    view = _buffer()
    while True:
        n = os.preadv(fd, [view], offset)
        if n == 0:
            return offset
        hasher.update(view[:n])
        offset += n


def _hash_pipelined(fd: int, hasher: blake3.blake3, offset: int) -> int:
    """This thread reads chunk k+1 while a helper thread hashes chunk k."""
    free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
    for _ in range(_BUFFERS):
        free.put(memoryview(bytearray(CHUNK)))
    failed: list[BaseException] = []

    def hash_chunks() -> None:
        try:
            while (item := full.get()) is not None:
                view, n = item
                hasher.update(view[:n])
                free.put(view)
        except BaseException as e:  # noqa: BLE001 - re-raised by the reading thread
            failed.append(e)
            free.put(memoryview(bytearray(0)))  # wake the reader

    helper = threading.Thread(target=hash_chunks, name="blake3", daemon=True)
    helper.start()
    try:
        while not failed:
            view = free.get()
            if not view:
                break
            n = os.preadv(fd, [view], offset)
            if n == 0:
                break
            offset += n
            full.put((view, n))
    finally:
        full.put(None)
        helper.join()
    if failed:
        raise failed[0]
    return offset


def hash_fd(fd: int) -> tuple[str, int]:
    """BLAKE3 hex digest and size of everything readable from ``fd`` (from offset 0).

    Reads with ``pread``: the descriptor's file offset does not move.
    """
    hasher = blake3.blake3()
    view = _buffer()
    n = os.preadv(fd, [view], 0)
    if n == 0:
        return EMPTY_DIGEST, 0
    hasher.update(view[:n])
    if n < len(view):
        size = _hash_serial(fd, hasher, n)  # most likely at the end already
    elif os.fstat(fd).st_size >= PIPELINE_MIN:
        size = _hash_pipelined(fd, hasher, n)
    else:
        size = _hash_serial(fd, hasher, n)
    return hasher.hexdigest(), size


def hash_path(path: str | os.PathLike[str]) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def _hash_many(paths: Sequence[str]) -> list[tuple[str, int]]:
    return [hash_path(p) for p in paths]


def hash_paths(paths: Sequence[str | Path], workers: int | None = None) -> list[tuple[str, int]]:
    """Hash many files; small files are spread over processes (the GIL limits threads)."""
    names = [os.fspath(p) for p in paths]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    if workers <= 1 or len(names) < 256:
        return _hash_many(names)
    chunk = max(64, len(names) // (workers * 8))
    batches = [names[i : i + chunk] for i in range(0, len(names), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results: list[tuple[str, int]] = []
        for part in pool.map(_hash_many, batches):
            results.extend(part)
    return results
