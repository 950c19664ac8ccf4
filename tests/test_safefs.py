"""``appliance.safefs`` and its users, in process: the races the up-front check cannot see.

The conformance cases (tests/conformance/test_home_links.py) plant things before
a command starts, so ``Home.check`` refuses them first. These tests call the
lower layers directly, as if the thing had been swapped in after that check:
each open, walk and write must still never follow a link, never block on a
FIFO, and never touch anything outside the home.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from conformance.driver import cli, ok

import appliance.safefs as safefs
from appliance import witness
from appliance.db import connect
from appliance.errors import (
    HomeTamperedError,
    ObjectTamperedError,
    WitnessUnreadableError,
)
from appliance.home import Home, HomeLock
from appliance.sealed import _unnamed_file
from appliance.store import Record, sweep_orphans
from appliance.verify import open_object
from bundles.keys import PrivateKey, save_keypair

# --- helpers ----------------------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            data = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[str(p.relative_to(root))] = f"{stat.S_IFMT(st.st_mode):o} {data}"
    return out


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    c = tmp_path / "canary"
    (c / "sub").mkdir(parents=True)
    (c / "precious.txt").write_text("keep me\n")
    (c / "sub" / "x").write_bytes(b"x" * 100)
    return c


@pytest.fixture
def home(tmp_path: Path) -> Home:
    key = PrivateKey.generate()
    save_keypair(key, tmp_path / "keys", "root")
    ok(cli(tmp_path / "home", "init", "--root-key", tmp_path / "keys" / "root.pub"))
    return Home(tmp_path / "home")


def dirfd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def mkdev(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot make device nodes here")


# --- safefs itself ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device", "dangling"])
def test_open_file_at_refuses_what_is_not_a_regular_file(
    tmp_path: Path, canary: Path, kind: str
) -> None:
    p = tmp_path / "f"
    if kind == "symlink":
        p.symlink_to(canary / "precious.txt")
    elif kind == "dangling":
        p.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    else:
        mkdev(p)
    fd = dirfd(tmp_path)
    try:
        with pytest.raises(safefs.UnsafeEntryError) as info:
            safefs.open_file_at(fd, "f")
        assert info.value.expected == "regular file"
    finally:
        os.close(fd)


def test_open_file_at_regular_file_is_blocking_again(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    fd = dirfd(tmp_path)
    try:
        f = safefs.open_file_at(fd, "f")
        assert os.read(f, 10) == b"abc"
        assert os.get_blocking(f)
        os.close(f)
        with pytest.raises(FileNotFoundError):
            safefs.open_file_at(fd, "absent")
    finally:
        os.close(fd)


def test_fifo_swapped_in_after_the_look_is_refused_without_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lstat saw a regular file; by the open a FIFO is there: O_NONBLOCK opens it at
    once and the fstat refuses it (a blocking open would wait for a writer forever)."""
    (tmp_path / "real").write_bytes(b"x")
    os.mkfifo(tmp_path / "f")
    regular = os.lstat(tmp_path / "real")
    monkeypatch.setattr(safefs, "lstat_at", lambda fd, name: regular)
    fd = dirfd(tmp_path)
    try:
        with pytest.raises(safefs.UnsafeEntryError) as info:
            safefs.open_file_at(fd, "f")
        assert info.value.found == "FIFO"
    finally:
        os.close(fd)


def test_file_swapped_for_another_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "looked").write_bytes(b"x")
    (tmp_path / "f").write_bytes(b"y")
    looked = os.lstat(tmp_path / "looked")
    monkeypatch.setattr(safefs, "lstat_at", lambda fd, name: looked)
    fd = dirfd(tmp_path)
    try:
        with pytest.raises(safefs.UnsafeEntryError, match="swapped"):
            safefs.open_file_at(fd, "f")
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../etc", ""])
def test_names_of_several_components_are_refused(tmp_path: Path, name: str) -> None:
    fd = dirfd(tmp_path)
    try:
        with pytest.raises(safefs.UnsafeEntryError):
            safefs.open_file_at(fd, name)
        with pytest.raises(safefs.UnsafeEntryError):
            safefs.open_dir_at(fd, name)
    finally:
        os.close(fd)


def test_open_dir_at_refuses_a_link_to_a_directory(tmp_path: Path, canary: Path) -> None:
    (tmp_path / "d").symlink_to(canary)
    fd = dirfd(tmp_path)
    try:
        with pytest.raises(safefs.UnsafeEntryError) as info:
            safefs.open_dir_at(fd, "d", create=0o700)
        assert info.value.found == "symbolic link"
    finally:
        os.close(fd)


def test_temp_name_collision_with_a_planted_link_is_never_opened(
    tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the attacker guesses the random part, O_EXCL refuses the planted name
    and the next random name is used; the link and its target are untouched."""
    (tmp_path / ".w.aaaa.tmp").symlink_to(canary / "precious.txt")
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(safefs, "_token", lambda: next(names))
    before = tree(canary)
    fd = dirfd(tmp_path)
    try:
        safefs.write_file_at(fd, "w", b"data")
    finally:
        os.close(fd)
    assert (tmp_path / "w").read_bytes() == b"data"
    assert (tmp_path / ".w.aaaa.tmp").is_symlink()
    assert not (tmp_path / ".w.bbbb.tmp").exists()
    assert tree(canary) == before


def test_write_file_at_replaces_a_link_never_writes_through_it(
    tmp_path: Path, canary: Path
) -> None:
    (tmp_path / "w").symlink_to(canary / "precious.txt")
    before = tree(canary)
    fd = dirfd(tmp_path)
    try:
        safefs.write_file_at(fd, "w", b"new")
    finally:
        os.close(fd)
    assert not (tmp_path / "w").is_symlink()
    assert (tmp_path / "w").read_bytes() == b"new"
    assert tree(canary) == before


def test_remove_contents_never_follows_and_bounds_depth(tmp_path: Path, canary: Path) -> None:
    d = tmp_path / "d"
    (d / "nested" / "more").mkdir(parents=True)
    (d / "link").symlink_to(canary)
    (d / "nested" / "link").symlink_to(canary / "sub")
    (d / "nested" / "more" / "file").write_bytes(b"x")
    os.mkfifo(d / "fifo")
    before = tree(canary)
    fd = dirfd(d)
    try:
        assert safefs.remove_contents(fd) == 3
    finally:
        os.close(fd)
    assert os.listdir(d) == [] and tree(canary) == before
    deep = d
    for _ in range(safefs.MAX_REMOVE_DEPTH + 2):
        deep = deep / "x"
    deep.mkdir(parents=True)
    fd = dirfd(d)
    try:
        with pytest.raises(safefs.UnsafeEntryError, match="deeper"):
            safefs.remove_contents(fd)
    finally:
        os.close(fd)


# --- the home, after its up-front check ----------------------------------------------


def test_clean_staging_with_a_link_swapped_in_is_refused(home: Home, canary: Path) -> None:
    home.staging.rmdir()
    home.staging.symlink_to(canary)
    before = tree(canary)
    with pytest.raises(HomeTamperedError) as info:
        home.clean_staging()
    assert info.value.code == "home_tampered" and info.value.exit_code == 4
    assert tree(canary) == before


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_lock_swapped_in_is_refused_without_blocking(home: Home, canary: Path, kind: str) -> None:
    home.lock_path.unlink(missing_ok=True)
    if kind == "symlink":
        home.lock_path.symlink_to(canary / "precious.txt")
    elif kind == "fifo":
        os.mkfifo(home.lock_path)
    else:
        home.lock_path.mkdir()
    before = tree(canary)
    with pytest.raises(HomeTamperedError):
        with HomeLock(home):
            pass
    assert tree(canary) == before


def test_lock_is_made_by_link_from_a_random_name(home: Home) -> None:
    home.lock_path.unlink(missing_ok=True)
    with HomeLock(home):
        st = home.lock_path.lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    assert sorted(p.name for p in home.root.iterdir() if p.name.startswith(".")) == []


def test_database_swapped_for_a_link_after_the_check_is_refused(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite follows a link at the database's name; the opened file's name is checked."""
    elsewhere = tmp_path / "elsewhere.db"
    os.rename(home.db_path, elsewhere)
    home.db_path.symlink_to(elsewhere)
    monkeypatch.setattr(Home, "check", lambda self: None)
    with pytest.raises(HomeTamperedError, match="opened as"):
        home.db()


def test_object_folder_link_is_refused_by_the_sweep(
    home: Home, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link at objects/xx is never walked: listed as a link, or swapped in between the
    listing and the open (the listing said "directory"), it is refused."""
    (home.objects / "ab").symlink_to(canary)
    (canary / ("ab" * 32)).write_bytes(b"unreferenced, outside the home")
    before = tree(canary)
    db = connect(home.db_path)  # as the import does, after Home.check
    try:
        with pytest.raises(HomeTamperedError, match="objects/ab is a symbolic link"):
            sweep_orphans(home, db)
        monkeypatch.setattr(safefs, "entries", lambda fd: [("ab", True)])
        with pytest.raises(HomeTamperedError, match="objects/ab is a symbolic link"):
            sweep_orphans(home, db)
    finally:
        db.conn.close()
    assert tree(canary) == before


def _record(digest: str) -> Record:
    return Record("m", "1", digest, 1, "application/octet-stream", 1, "s", 1, (), "t")


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink", "device"])
def test_open_object_never_blocks_or_follows(home: Home, canary: Path, kind: str) -> None:
    digest = "ab" * 32
    (home.objects / "ab").mkdir()
    p = home.objects / "ab" / digest
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    elif kind == "symlink":
        p.symlink_to(canary / "precious.txt")
    else:
        mkdev(p)
    with pytest.raises(ObjectTamperedError, match="not a regular file"):
        open_object(home, _record(digest))


def test_open_object_refuses_a_digest_that_is_a_path(home: Home) -> None:
    with pytest.raises(ObjectTamperedError, match="not a BLAKE3"):
        open_object(home, _record("../../../../etc/passwd" + "0" * 42))


def test_object_fan_out_folder_link_is_home_tampered(home: Home, canary: Path) -> None:
    (home.objects / "ab").symlink_to(canary)
    (canary / ("ab" * 32)).write_bytes(b"x")
    with pytest.raises(HomeTamperedError):
        open_object(home, _record("ab" * 32))


def test_unnamed_copy_refuses_a_staging_link(home: Home, canary: Path) -> None:
    fd = _unnamed_file(home.staging, "x")
    try:
        assert os.fstat(fd).st_nlink == 0  # no name anywhere
    finally:
        os.close(fd)
    home.staging.rmdir()
    home.staging.symlink_to(canary)
    with pytest.raises(HomeTamperedError):
        _unnamed_file(home.staging, "x")


# --- the witness file ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device"])
def test_witness_read_and_write_refuse_what_is_not_a_file(
    home: Home, tmp_path: Path, canary: Path, kind: str
) -> None:
    w = tmp_path / "witness.json"
    if kind == "symlink":
        w.symlink_to(canary / "precious.txt")
    elif kind == "fifo":
        os.mkfifo(w)
    elif kind == "directory":
        w.mkdir()
    else:
        mkdev(w)
    before = tree(canary)
    with pytest.raises(WitnessUnreadableError) as info:
        witness.read(w)
    assert info.value.code == "witness_unreadable" and info.value.exit_code == 4
    db = home.db()
    try:
        with pytest.raises(WitnessUnreadableError):
            witness.write(db, w)
    finally:
        db.conn.close()
    assert tree(canary) == before


def test_witness_absent_or_in_an_absent_folder_is_none(tmp_path: Path) -> None:
    assert witness.read(tmp_path / "nope.json") is None
    assert witness.read(tmp_path / "no" / "folder.json") is None


def test_witness_write_uses_an_unpredictable_temp_name(
    home: Home, tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = tmp_path / "wdir" / "witness.json"
    w.parent.mkdir()
    (w.parent / ".witness.json.aaaa.tmp").symlink_to(canary / "precious.txt")
    names = iter(["aaaa", "cccc"])
    monkeypatch.setattr(safefs, "_token", lambda: next(names))
    before = tree(canary)
    db = home.db()
    try:
        doc = witness.write(db, w)
    finally:
        db.conn.close()
    assert witness.read(w) == doc
    # the planted name is left alone, the temporary one is gone; the lock stays
    assert sorted(os.listdir(w.parent)) == [
        ".witness.json.aaaa.tmp",
        ".witness.json.lock",
        "witness.json",
    ]
    assert tree(canary) == before


def test_flock_within_tries_once_with_no_timeout_and_takes_a_free_lock(tmp_path: Path) -> None:
    """``safefs.flock_within`` (the home lock's and the witness lock's wait): held by
    another open file, no wait is one try (False), a short wait runs out (False, after at
    least the wait); free, it is taken at once (True)."""
    import time

    path = tmp_path / "lock"
    path.write_bytes(b"")
    holder, other = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert safefs.flock_within(holder, 0.0, 0.05)
        assert not safefs.flock_within(other, 0.0, 0.05)
        t = time.monotonic()
        assert not safefs.flock_within(other, 0.2, 0.01)
        assert time.monotonic() - t >= 0.2
        os.close(holder)
        holder = -1
        assert safefs.flock_within(other, 0.0, 0.05)
    finally:
        for fd in (holder, other):
            if fd >= 0:
                os.close(fd)
