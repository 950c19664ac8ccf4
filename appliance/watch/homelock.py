"""Is an appliance writer holding the home lock right now? Read ``/proc/locks``.

Never probe with ``flock``: holding the lock even for a moment would make a real
import fail with ``lock_held``. ``/proc/locks`` lists every held lock with the
device and inode of its file (``MAJ:MIN:INODE``, major and minor in hex).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")


def lock_held(lock_path: Path, proc_locks: Path = PROC_LOCKS) -> bool:
    """True while some process holds a lock on ``lock_path`` (False when it does not exist)."""
    try:
        st = os.stat(lock_path)
        text = proc_locks.read_text()
    except FileNotFoundError:
        return False
    for line in text.splitlines():
        fields = line.split()
        ident = next((f for f in fields if f.count(":") == 2), None)
        if ident is None or "->" in fields[1:2]:
            continue  # a waiter, not a holder
        # The inode alone decides: on stacked file systems the device in /proc/locks may be
        # the lower one. A false "held" only defers a judgement; a false "free" would alarm.
        if ident.rsplit(":", 1)[1] == str(st.st_ino):
            return True
    return False
