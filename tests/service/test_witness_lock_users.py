"""The witness's write lock, with real users: only the folder's owner (the service user)
and root can open it, so a loader who can read the witness folder cannot hold every
witness write (and with it every audited load) for 10 s at a time."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest_load import Site, make_site
from service_world import User, Users

from appliance import witness

TRY_LOCK = """
import fcntl, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDWR)
except PermissionError:
    print("denied")
    sys.exit(0)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked")
"""


def _try_lock(lock: Path, uid: int, gid: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(lock)],
        user=uid,
        group=gid,
        extra_groups=[],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return out.stdout.decode().strip()


def test_root_makes_the_lock_for_the_folder_owner_and_a_reader_cannot_open_it(
    tmp_path: Path, users: Users
) -> None:
    owner, reader = users.make("apwit"), users.make("aprdr")
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    # Outside pytest's own 0700 folder, so that both users can reach it.
    base = Path(tempfile.mkdtemp(prefix="appliance-wit-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        _check(site, base, owner, reader)
    finally:
        shutil.rmtree(base)


def _check(site: Site, base: Path, owner: User, reader: User) -> None:
    folder = base / "witness-folder"
    folder.mkdir(mode=0o755)
    os.chown(folder, owner.uid, owner.gid)
    path = folder / "w.json"
    db = site.h.db()
    try:
        witness.write(db, path, adopt=True)  # root, as an import by root would
    finally:
        db.conn.close()
    lock = folder / ".w.json.lock"
    st = lock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (owner.uid, owner.gid)
    assert _try_lock(lock, reader.uid, reader.gid) == "denied"  # can read the folder, no more
    assert _try_lock(lock, owner.uid, owner.gid) == "locked"  # the service user takes turns
