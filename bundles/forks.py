"""Whether this process may fork without exec'ing a new program.

A child forked while another thread of its parent holds a lock gets that lock held by a
thread that does not exist in it, and its first use of the lock waits for ever: forking
beside a thread that queried SQLite hung one child in three on the test machine (SQLite's
own mutex). Python threads are the ones that run this program's code (SQLite, OpenSSL,
file reads); the idle pools of native libraries (OpenBLAS, when numpy is installed) keep
their own at-fork handling, and no forked child of this program hashes in parallel.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

__all__ = ["MAX_BATCHES", "batch_queue", "fork_is_safe", "fork_with_pipe", "take_batch"]


def fork_is_safe() -> bool:
    """True when this process runs no Python thread but the calling one."""
    return threading.active_count() == 1


def fork_with_pipe(child: Callable[[int], None]) -> tuple[int, int] | None:
    """Fork a helper that runs ``child(write_end)`` and exits (0 when it returned, 1 when
    it raised; it never returns into the caller's code), SIGINT at its default (the
    parent decides what an interrupt means): (pid, read end) in the parent, or None when
    no pipe or process could be made."""
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            child(w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


MAX_BATCHES = 8192  # 4 bytes each: a whole queue fits in a pipe's 64 KiB at once


def batch_queue(count: int) -> int:
    """A work queue a forked helper and its parent share: the read end of a pipe that holds
    the batch numbers 0 to ``count - 1`` (``count`` at most ``MAX_BATCHES``), its write end
    closed, so each ``take_batch`` takes the next number exactly once, whichever process
    reads, and an empty queue reads as end of file."""
    queue, end = os.pipe()
    try:
        os.write(end, b"".join(n.to_bytes(4, "little") for n in range(count)))
    finally:
        os.close(end)
    return queue


def take_batch(queue: int) -> int | None:
    """The next batch number of ``queue`` (``batch_queue``), or None when it is empty."""
    got = os.read(queue, 4)
    return int.from_bytes(got, "little") if len(got) == 4 else None
