"""One flush for a batch of files: ``syncfs`` on the file system that holds a path.

Writing thousands of small files with an ``fsync`` each (and one per directory) costs a
disk flush per file; one ``syncfs`` after the batch makes all of them durable at once
(data, inodes and directory entries of that file system). Used by the bundle writer
and by the import (``appliance.store.sync_home``). Where libc has no ``syncfs``,
``os.sync`` (every file system) does the same job, slower.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import cast

counters = {"syncfs": 0}  # calls, pinned by tests/perf


def _load() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_syncfs = _load()


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Make everything written to the file system holding ``path`` durable; ``OSError``
    when the kernel reports a write-back error."""
    counters["syncfs"] += 1
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)
