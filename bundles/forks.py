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

__all__ = ["fork_is_safe", "fork_with_pipe"]


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
