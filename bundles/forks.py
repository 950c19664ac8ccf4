"""Whether this process may fork without exec'ing a new program.

A child forked while another thread of its parent holds a lock gets that lock held by a
thread that does not exist in it, and its first use of the lock waits for ever: forking
beside a thread that queried SQLite hung one child in three on the test machine (SQLite's
own mutex). Python threads are the ones that run this program's code (SQLite, OpenSSL,
file reads); the idle pools of native libraries (OpenBLAS, when numpy is installed) keep
their own at-fork handling, and no forked child of this program hashes in parallel.
"""

from __future__ import annotations

import threading

__all__ = ["fork_is_safe"]


def fork_is_safe() -> bool:
    """True when this process runs no Python thread but the calling one."""
    return threading.active_count() == 1
