"""Witness writers one at a time, counters read under the lock: it only moves forward.

Two audited loads beside each other each write the witness after their event. The
slower one used to write the counters it had read before the faster one's commit,
over the newer witness: the witness went back, and the faster load's event was no
longer witnessed (a restored copy without it would pass).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest_load import make_site, witnessed_site

import appliance
from appliance import audit, safefs, witness, witnesslock
from appliance.errors import LockHeldError
from bundles.errors import ApplianceError


def _head(site: Any) -> int:
    db = site.h.db()
    try:
        return audit.head(db)[0]
    finally:
        db.conn.close()


def _write(site: Any, path: Path, *, adopt: bool = False) -> dict[str, Any]:
    """``witness.write`` of the site's home to ``path`` on a connection of its own."""
    db = site.h.db()
    try:
        return witness.write(db, path, adopt=adopt)
    finally:
        db.conn.close()


def test_a_slow_writer_never_puts_older_counters_over_newer_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, wit = witnessed_site(tmp_path)
    real_write = safefs.write_file_at
    first_read = threading.Event()
    other_done = threading.Event()
    calls: list[str] = []

    def slow_first(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
        if not calls:  # the first writer stalls between its counters and its rename,
            calls.append(threading.current_thread().name)  # as a preempted one would
            first_read.set()
            other_done.wait(2.0)  # the other writer waits for the lock: the full 2 s
        real_write(dir_fd, name, data, mode)

    monkeypatch.setattr(safefs, "write_file_at", slow_first)

    def load(name: str) -> None:
        with appliance.load("model", home=site.h, witness=wit) as art:
            assert art.read() == b"one"

    slow = threading.Thread(target=load, args=("slow",), name="slow")
    slow.start()
    assert first_read.wait(20)
    load("fast")  # commits its event after the slow one read its counters
    other_done.set()
    slow.join(20)
    doc = witness.read(wit)
    assert doc is not None
    assert doc["audit_seq"] == _head(site)  # both load events are witnessed


def test_a_writer_that_never_lets_go_is_lock_held_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped while it writes the witness (SIGSTOP) holds the lock: the next
    writer gives up after WRITE_LOCK_WAIT with lock_held, and the load still refuses
    nothing it verified (the event is committed; the witness write is what failed)."""
    site, wit = witnessed_site(tmp_path)
    monkeypatch.setattr(witnesslock, "WRITE_LOCK_WAIT", 0.3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(wit.parent / ('.' + wit.name + '.lock'))!r}, "
            "os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        before = wit.read_bytes()
        db = site.h.db()
        try:
            with pytest.raises(LockHeldError, match="another process has been writing"):
                witness.write(db, wit)
            assert witness.refresh_after_commit(db, wit)[0].startswith("witness_write_failed")
        finally:
            db.conn.close()
        assert wit.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


LOADS = """
import sys
from pathlib import Path
import appliance
home, wit, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    with appliance.load("model", home=home, witness=wit) as art:
        art.read()
"""


def test_loads_in_three_processes_leave_every_event_witnessed(tmp_path: Path) -> None:
    site, wit = witnessed_site(tmp_path)
    procs = [
        subprocess.Popen([sys.executable, "-c", LOADS, str(site.home), str(wit), "60"])
        for _ in range(3)
    ]
    seen: list[int] = []
    while any(p.poll() is None for p in procs):
        doc = witness.read(wit)
        if doc is not None:
            seen.append(int(doc["audit_seq"]))
    assert all(p.wait() == 0 for p in procs)
    assert seen == sorted(seen), "the witness went backwards"
    doc = witness.read(wit)
    assert doc is not None and doc["audit_seq"] == _head(site)


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_a_link_or_fifo_at_the_lock_name_is_refused_and_the_witness_kept(
    tmp_path: Path, planted: str
) -> None:
    site, wit = witnessed_site(tmp_path)
    lock = wit.parent / f".{wit.name}.lock"
    lock.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"")
    if planted == "link":
        lock.symlink_to(elsewhere)
    else:
        os.mkfifo(lock)
    before = wit.read_bytes()
    with pytest.raises(ApplianceError) as info:
        _write(site, wit)
    assert info.value.code == "witness_unreadable"
    assert wit.read_bytes() == before
    assert elsewhere.read_bytes() == b""


def test_the_lock_file_is_private(tmp_path: Path) -> None:
    site, wit = witnessed_site(tmp_path)
    st = (wit.parent / f".{wit.name}.lock").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (wit.parent.stat().st_uid, os.getegid())


def test_a_filesystem_without_owners_keeps_the_lock_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root writing a witness on removable media whose folder belongs to another uid (vfat
    mounted with uid=): chown there fails with EPERM, and the write goes on, locked.
    INJECTED: this machine's kernel has no vfat; the refusal is what vfat answers."""
    import errno

    site, wit = witnessed_site(tmp_path)
    folder = tmp_path / "vfat-stick"
    folder.mkdir()
    os.chown(folder, 4321, 4321)
    path = folder / "w.json"
    tried: list[int] = []

    def no_owners(fd: int, uid: int, gid: int) -> None:
        tried.append(uid)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", no_owners)
    doc = _write(site, path, adopt=True)
    assert tried == [4321]
    assert witness.read(path) == doc
    assert (folder / ".w.json.lock").exists()


def test_the_witness_checked_is_the_one_replaced_even_if_its_folder_is_swapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The witness's folder is reached through a link (the operator's choice); someone
    who can change that link swaps it while a write runs, from another home's witness
    folder to ours. The write checks and replaces in the folder it opened: it refuses
    the other home's witness, and leaves it as it was."""
    ours = make_site(tmp_path / "a", witness=True)
    ours.ship({"model@1.0": b"one"})
    other = make_site(tmp_path / "b", witness=True)
    other.ship({"model@1.0": b"uno"})
    assert ours.witness is not None and other.witness is not None
    link = tmp_path / "witness-link"
    link.symlink_to(other.witness.parent)
    path = link / ours.witness.name
    assert path.name == other.witness.name
    foreign = other.witness.read_bytes()
    real = witness.lock_for_writing

    def swap_then_lock(parent: int, p: Path) -> int | None:
        link.unlink()
        link.symlink_to(ours.witness.parent)  # now the path names our own witness
        return real(parent, p)

    monkeypatch.setattr(witness, "lock_for_writing", swap_then_lock)
    with pytest.raises(ApplianceError) as info:
        _write(ours, path)
    assert info.value.code == "witness_foreign"
    assert other.witness.read_bytes() == foreign


def test_a_direct_load_whose_witness_write_fails_says_so_in_the_log(tmp_path: Path) -> None:
    """Through the CLI: the load's event is committed, the witness write then fails (a
    FIFO at the lock's name): exit 4 witness_unreadable, no output, and a
    ``load_undelivered`` event after the verified one."""
    site, wit = witnessed_site(tmp_path)
    lock = wit.parent / f".{wit.name}.lock"
    lock.unlink()
    os.mkfifo(lock)
    out = tmp_path / "out.bin"
    res = site.cli("--witness", str(wit), "load", "model", "-o", out, "--json")
    assert (res.code, res.json["error"]["code"]) == (4, "witness_unreadable")
    assert not out.exists()
    db = site.h.db()
    try:
        rows = db.execute(
            "SELECT type, outcome, code FROM audit WHERE type LIKE 'load%' ORDER BY seq"
        ).fetchall()
    finally:
        db.conn.close()
    assert rows[-2:] == [
        ("load", "verified", None),
        ("load_undelivered", "failed", "witness_unreadable"),
    ]
    lock.unlink()  # the responder's view: history says it plainly
    hist = site.cli("--witness", str(wit), "history", "model", check=0).stdout.decode()
    assert "model@1.0 NOT handed over [witness_unreadable]" in hist
    assert "the witness could not be brought forward" in hist
