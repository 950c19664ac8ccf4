"""BLAKE3 hashing: large files with all cores, many small files in parallel.

``hash_fd`` maps the open descriptor it is given and hashes the mapping, so the
bytes hashed are those of that descriptor (the loader hands over the same one).
Only map files that no one else can shrink (our store); media is read with
``os.readinto`` into a reused buffer instead (see ``bundles.reader``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import blake3

# Below this size a single-threaded hasher is faster than waking the pool.
MULTITHREAD_MIN = 1 << 20
EMPTY_DIGEST = blake3.blake3(b"").hexdigest()


def new_hasher(size_hint: int = 0) -> blake3.blake3:
    if size_hint >= MULTITHREAD_MIN:
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return blake3.blake3()


def hash_fd(fd: int) -> tuple[str, int]:
    """BLAKE3 hex digest and size of everything readable from ``fd`` (from offset 0)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return EMPTY_DIGEST, 0
    hasher = new_hasher(size)
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
        hasher.update(mapped)
        return hasher.hexdigest(), len(mapped)


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
