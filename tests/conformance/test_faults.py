"""Faults: media I/O errors, a full disk, a read-only home, a corrupt database, stale locks.

Which are real and which injected (the SECURITY.md table says the same):

* media read error mid-import: REAL. The bundle lives on an ext4 file system
  on a loop device; its metadata and manifest are in the page cache, then the
  device is shrunk to 1 MiB (``losetup -c``), so the kernel answers the
  artifact reads with EIO, as for a failing USB stick.
* media read error in a tar: INJECTED. The CLI runs under a wrapper that makes
  ``os.preadv`` raise EIO after a few calls (no core code is changed).
* full disk: REAL. The home is on a tmpfs of 8 MiB; a 12 MiB artifact does not fit.
  A second case fills the file system so that the database commit itself fails.
* read-only home: REAL. ``mount -o remount,ro`` of the home's tmpfs (root ignores
  chmod, so a chmod-based test would prove nothing here).
* corrupt database: REAL bytes overwritten in ``appliance.db``.
* lock left by a dead process: REAL (a process takes the lock and is SIGKILLed);
  a live holder gives ``lock_held``, and ``--wait`` waits for it.

Each refusal is exit 3 or 4 with a one-line error, nothing is lost (``verify``
and ``audit verify`` pass, ``list`` unchanged) and a later operation works.
Tests needing ``mount`` or loop devices skip with the reason when not permitted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bundles.documents import RevokeKey

from .driver import (
    Site,
    assert_unchanged,
    cli,
    cli_env,
    copy_home,
    ok,
    parse_json_stdout,
    snapshot,
)


def _run(*cmd: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, check=False)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    p = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if p.returncode:
        pytest.skip(f"mount -t tmpfs not permitted here: {p.stderr.decode().strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


class LoopMedia:
    """An ext4 file system on a loop device, like a USB stick that can fail."""

    def __init__(self, image: Path, mnt: Path, dev: str) -> None:
        self.image, self.mnt, self.dev = image, mnt, dev

    def remount(self) -> None:
        """Drop this file system's page cache (umount writes back and forgets it)."""
        assert _run("umount", str(self.mnt)).returncode == 0
        assert _run("mount", self.dev, str(self.mnt)).returncode == 0

    def fail(self) -> None:
        """From now on, reads past the first MiB of the device fail with EIO."""
        os.truncate(self.image, 1 << 20)
        assert _run("losetup", "-c", self.dev).returncode == 0


@contextmanager
def loop_media(tmp: Path, size_mb: int = 64) -> Iterator[LoopMedia]:
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("loop devices need root, losetup and mkfs.ext4")
    image, mnt = tmp / "usb.img", tmp / "usb"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    if _run("mkfs.ext4", "-q", "-F", str(image)).returncode:
        pytest.skip("mkfs.ext4 failed")
    p = _run("losetup", "-f", "--show", str(image))
    if p.returncode:
        pytest.skip(f"no loop device: {p.stderr.decode().strip()}")
    dev = p.stdout.decode().strip()
    try:
        if _run("mount", dev, str(mnt)).returncode:
            pytest.skip("cannot mount a loop device here")
        yield LoopMedia(image, mnt, dev)
    finally:
        _run("umount", "-l", str(mnt))
        _run("losetup", "-d", dev)


def _assert_nothing_lost(home: Path, before_listing: object) -> None:
    after = snapshot(home)
    assert after.listing == before_listing
    assert after.verify[0] == 0
    assert after.staging == []
    ok(cli(home, "audit", "verify"))


def _one_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("appliance: error")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr


# --- media errors ---------------------------------------------------------------------------


def test_media_read_error_mid_import_real_eio(site: Site, home: Path, tmp_path: Path) -> None:
    b = site.repo.bundle({"m@3.0": os.urandom(24 << 20), "tok@2.0": b"t" * 1000}, sequence=3)
    with loop_media(tmp_path) as usb:
        media = usb.mnt / "bundle"
        shutil.copytree(b.path, media)
        usb.remount()
        for dirpath, _dirs, files in os.walk(media):  # metadata and the manifest cached
            for f in files:
                p = Path(dirpath) / f
                data = p.read_bytes() if f.endswith(".json") else None
                assert data is None or data
        usb.fail()
        r = cli(home, "import", media)
    assert (r.rc, r.code) == (3, "media_unreadable"), str(r)
    _one_line(r.stderr)
    _assert_nothing_lost(home, site.snapshot.listing)
    ok(cli(home, "import", b.path))  # the same bundle from good media imports


# Reads of files under $MEDIA (by any of the calls the importer may use: preadv,
# pread, readv, read, copy_file_range) fail with EIO after $FAIL_AFTER of them.
_EIO_WRAPPER = textwrap.dedent(
    """
    import errno, os, sys
    media, left = os.environ["MEDIA"], [int(os.environ["FAIL_AFTER"])]
    def on_media(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(media)
        except OSError:
            return False
    def wrap(real):
        def failing(fd, *a, **k):
            if on_media(fd):
                left[0] -= 1
                if left[0] < 0:
                    raise OSError(errno.EIO, "Input/output error (injected)")
            return real(fd, *a, **k)
        return failing
    for name in ("preadv", "pread", "readv", "read", "copy_file_range"):
        setattr(os, name, wrap(getattr(os, name)))
    from appliance.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("fail_after", [1, 4, 9])
def test_media_read_error_in_tar_injected(
    fail_after: int, site: Site, home: Path, tmp_path: Path
) -> None:
    b = site.repo.bundle(
        {"m@3.0": os.urandom(6 << 20), "tok@2.0": b"t" * 1000},
        sequence=3,
        tar=True,
        part_size=1 << 20,
    )
    argv = [
        sys.executable,
        "-c",
        _EIO_WRAPPER,
        "--home",
        str(home),
        "--json",
        "import",
        str(b.path),
    ]
    env = cli_env({"FAIL_AFTER": str(fail_after), "MEDIA": str(b.path)})
    p = subprocess.run(argv, capture_output=True, env=env, check=False)
    out = parse_json_stdout(p.stdout, argv, p.stderr)
    assert (p.returncode, out["error"]["code"]) == (3, "media_unreadable"), out
    _one_line(p.stderr.decode())
    _assert_nothing_lost(home, site.snapshot.listing)


def test_media_path_absent_or_unreadable(site: Site, home: Path, tmp_path: Path) -> None:
    r = cli(home, "import", tmp_path / "gone")
    assert (r.rc, r.code) == (3, "bundle_not_found"), str(r)
    odd = tmp_path / "fifo"
    os.mkfifo(odd)
    r = cli(home, "import", odd)
    assert (r.rc, r.code) == (2, "not_a_bundle"), str(r)  # an operator's mistake
    _assert_nothing_lost(home, site.snapshot.listing)


# --- a full disk ------------------------------------------------------------------------------


def test_full_disk_under_home_real_tmpfs(site: Site, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "8m") as fs:
        home = copy_home(site.home, fs / "home")
        before = snapshot(home)
        big = site.repo.bundle({"m@3.0": os.urandom(12 << 20)}, sequence=3)
        r = cli(home, "import", big.path)
        assert (r.rc, r.code) == (3, "disk_full"), str(r)
        _one_line(r.stderr)
        after = snapshot(home)
        assert_unchanged(before, after)
        assert shutil.disk_usage(fs).free > 7 << 20, "the partial staging file was not removed"
        small = site.repo.bundle({"m@3.0": os.urandom(1 << 20)}, sequence=3)
        ok(cli(home, "import", small.path))
        assert snapshot(home).verify[0] == 0


def _database_commit_on_full_disk(site: Site, tmp_path: Path) -> str:
    """Objects fit, the database's journal and pages do not: the commit fails, nothing moves."""
    with tmpfs(tmp_path / "small", "8m") as fs:
        home = copy_home(site.home, fs / "home")
        before = snapshot(home)
        b = site.repo.bundle({"m@3.0": b"x" * 2000}, sequence=3)
        filler = fs / "filler"
        with open(filler, "wb") as f:  # leave a few KiB: enough for a staging file only
            free = shutil.disk_usage(fs).free
            f.write(b"\0" * (free - (12 << 10)))
        r = cli(home, "import", b.path)
        assert r.rc == 3, str(r)
        _one_line(r.stderr)
        filler.unlink()
        after = snapshot(home)
        assert after.listing == before.listing and after.verify == before.verify
        ok(cli(home, "audit", "verify"))
        ok(cli(home, "import", b.path))
        return str(r.code)


def test_full_disk_at_database_commit_nothing_lost(site: Site, tmp_path: Path) -> None:
    _database_commit_on_full_disk(site, tmp_path)


def test_full_disk_at_database_commit_says_disk_full(site: Site, tmp_path: Path) -> None:
    assert _database_commit_on_full_disk(site, tmp_path) == "disk_full"


# --- a read-only home ---------------------------------------------------------------------------


def test_read_only_home_real_remount(site: Site, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "32m") as fs:
        home = copy_home(site.home, fs / "home")
        before = snapshot(home)
        assert _run("mount", "-o", "remount,ro", str(fs)).returncode == 0
        try:
            repo = site.repo
            b = repo.bundle({"m@3.0": b"x" * 2000}, sequence=3)
            update = repo.trust_update(4, [RevokeKey(repo.key("pub2").keyid)])
            auth = repo.write(repo.rollback_auth("m", "1.0"), "auth")
            for args in (
                ["import", b.path],
                ["trust", "apply", repo.write(update, "trust")],
                ["rollback", "m", "--authorization", auth],
            ):
                r = cli(home, *args)
                assert r.rc == 3 and r.code in ("read_only", "io_error"), str(r)
                _one_line(r.stderr)
            # reading still works on a read-only home
            assert ok(cli(home, "list"))["artifacts"] == before.listing
        finally:
            assert _run("mount", "-o", "remount,rw", str(fs)).returncode == 0
        assert_unchanged(before, snapshot(home))
        ok(cli(home, "import", b.path))


# --- a corrupt database -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "middle-page", "truncated", "emptied", "garbage"])
def test_corrupt_database(how: str, site: Site, home: Path) -> None:
    db = home / "appliance.db"
    data = bytearray(db.read_bytes())
    if how == "header":
        data[0:16] = b"NOT SQLITE AT AL"
    elif how == "middle-page":
        page = int.from_bytes(data[16:18], "big") or 65536
        start = page * 2
        data[start : start + page] = os.urandom(page)
    elif how == "truncated":
        data = data[: len(data) // 3]
    elif how == "emptied":
        data = bytearray()
    else:
        data = bytearray(os.urandom(len(data)))
    db.write_bytes(bytes(data))
    b = site.repo.bundle({"m@3.0": b"x" * 2000}, sequence=3)
    codes = set()
    for args in (["list"], ["verify"], ["audit", "verify"], ["import", b.path]):
        r = cli(home, *args)
        assert r.rc in (3, 4), str(r)
        if how != "emptied":
            assert (r.rc, r.code) == (4, "store_corrupt"), str(r)
        _one_line(r.stderr)
        codes.add(r.code)
    assert not (home / "objects").exists() or {
        p.name for p in (home / "objects").rglob("*") if p.is_file()
    } == {p.name for p in (site.home / "objects").rglob("*") if p.is_file()}, "objects changed"


# --- locks ----------------------------------------------------------------------------------------

_HOLD = "import fcntl, os, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "


def test_lock_left_by_dead_process(site: Site, home: Path) -> None:
    code = _HOLD + "f.write('%d\\n' % os.getpid()); f.flush(); os.kill(os.getpid(), 9)"
    p = subprocess.run([sys.executable, "-c", code, str(home / "lock")], check=False)
    assert p.returncode == -signal.SIGKILL
    assert (home / "lock").read_text().strip()  # a stale pid is left in the file
    b = site.repo.bundle({"m@3.0": b"x" * 2000}, sequence=3)
    ok(cli(home, "import", b.path))


def test_lock_held_by_live_process_then_wait(site: Site, home: Path) -> None:
    code = _HOLD + "print('held', flush=True); time.sleep(float(sys.argv[2]))"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(home / "lock"), "3"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        b = site.repo.bundle({"m@3.0": b"x" * 2000}, sequence=3)
        r = cli(home, "import", b.path)
        assert (r.rc, r.code) == (3, "lock_held"), str(r)
        _one_line(r.stderr)
        t0 = time.monotonic()
        ok(cli(home, "import", "--wait", b.path))
        assert time.monotonic() - t0 > 0.5, "--wait did not wait for the holder"
    finally:
        holder.kill()
        holder.wait()
