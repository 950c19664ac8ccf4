"""Give a home to the service user: owned by it, closed to everyone else.

``give_home_to(home, user)`` (``appliance init --service-user USER``)
changes the owner of the home and everything in it to USER and its primary
group, and closes the home directory, ``objects/`` and ``staging/`` (0700)
and the state files (0600) to every other user. Objects stay 0444 inside
a 0700 tree: only the owner (and root) can reach them. Loaders then get
bytes only through ``appliance serve`` running as USER. Must run as root
(``chown``).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import Any

from appliance.errors import OperationalError, PermissionDeniedError, UnknownUserError
from appliance.home import Home


def _close(path: Path, uid: int, gid: int) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise OperationalError(f"{path} is a symlink; refusing to chown through it")
    os.lchown(path, uid, gid)
    if stat.S_ISDIR(st.st_mode):
        os.chmod(path, 0o700)
    elif path.parent.name == "objects" or path.parent.parent.name == "objects":
        os.chmod(path, 0o444)
    else:
        os.chmod(path, 0o600)


def give_home_to(home: Home, user: str) -> dict[str, Any]:
    """Make ``home`` owned by ``user`` and closed to others; returns ``{user, uid, gid}``."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError as e:
        raise UnknownUserError(f"--service-user {user!r}: no such user on this host") from e
    try:
        _close(home.root, pw.pw_uid, pw.pw_gid)
        for dirpath, dirnames, filenames in os.walk(home.root):
            for n in [*dirnames, *filenames]:
                _close(Path(dirpath) / n, pw.pw_uid, pw.pw_gid)
    except PermissionError as e:
        raise PermissionDeniedError(
            f"cannot give {home.root} to {user}: {e.strerror} (run init as root)"
        ) from e
    except OSError as e:
        raise OperationalError(f"cannot give {home.root} to {user}: {e.strerror}") from e
    return {"user": user, "uid": pw.pw_uid, "gid": pw.pw_gid}
