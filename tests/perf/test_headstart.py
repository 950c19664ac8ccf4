"""The CLI's head start on a big load (``appliance.headstart``), counted, not timed.

* The hash starts before sqlite-utils, cryptography and the trust, audit and provenance
  code are imported (``sys.modules`` when the hash thread is made, in a subprocess).
* A load hashes once: the loader takes the head start's hash for the inode it opened.
* A wrong guess (another object) is dropped: the loader hashes its own descriptor, and
  the bytes handed over are the record's.
* A refusal after the head start leaves no descriptor open and no hash running.
* With a hash running beside the provenance check, a tampered object is still reported
  as ``object_tampered`` when provenance refuses too (the order of the checks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from test_immutable import _kernel_allows
from test_load_passes import _args, _ctx

from appliance import headstart, loader, store
from appliance.cli import cmd_load
from appliance.errors import DigestPinnedError, ObjectTamperedError, RevokedKeyError
from appliance.store import clear_immutable, find, object_path

BIG = bytes(range(256)) * 8192 * 3  # 6 MiB
OTHER = bytes(reversed(range(256))) * 8192 * 3

# Imported only after the hash started (each costs milliseconds of CPU at start-up).
LATE = ("sqlite_utils", "cryptography", "dateutil", "click", "pluggy")
LATE_OURS = (
    "appliance.loader",
    "appliance.verify",
    "appliance.provenance",
    "appliance.audit",
    "appliance.trust",
    "appliance.evidence",
    "appliance.witness",
    "appliance.store",
    "appliance.db",
    "bundles.documents",
    "bundles.keys",
)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    if not _kernel_allows(tmp_path):
        pytest.skip("no CAP_LINUX_IMMUTABLE or no inode flags on this file system")
    monkeypatch.setenv("APPLIANCE_IMMUTABLE", "1")
    s = make_site(tmp_path)
    s.ship({"big@1": BIG, "other@1": OTHER})
    try:
        yield s
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                clear_immutable(p)


class Hashes:
    """Every ``BackgroundHash`` made, and every head start's claim and its answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = 0
        self.claims: list[bool] = []
        real_init = headstart.BackgroundHash.__init__
        real_claim = headstart.HeadStart.claim

        def init(h: headstart.BackgroundHash, fd: int, *, mapped: bool) -> None:
            self.made += 1
            real_init(h, fd, mapped=mapped)

        def claim(hs: headstart.HeadStart, fd: int) -> headstart.BackgroundHash | None:
            got = real_claim(hs, fd)
            self.claims.append(got is not None)
            return got

        monkeypatch.setattr(headstart.BackgroundHash, "__init__", init)
        monkeypatch.setattr(headstart.HeadStart, "claim", claim)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "blake3-load"]


_PROBE = """
import json, sys
from appliance import headstart
seen = []
real = headstart.BackgroundHash.__init__
def init(self, fd, *, mapped):
    seen.append(sorted(m for m in sys.modules if m.split(".")[0] in LATE or m in LATE_OURS))
    real(self, fd, mapped=mapped)
headstart.BackgroundHash.__init__ = init
from appliance.cli.main import main
code = main(["--home", HOME, "load", "big", "-o", "/dev/null"])
print(json.dumps({"code": code, "seen": seen}))
"""


def test_the_hash_starts_before_the_product_is_imported(site: Site) -> None:
    script = f"LATE = {LATE!r}\nLATE_OURS = {LATE_OURS!r}\nHOME = {str(site.home)!r}\n" + _PROBE
    env = {**os.environ, "APPLIANCE_IMMUTABLE": "1"}
    env.pop("APPLIANCE_WITNESS", None)
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout.splitlines()[-1])
    assert doc["code"] == 0
    assert doc["seen"] == [[]]  # one hash, started with none of them imported


def test_a_load_hashes_once_through_the_head_start(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = Hashes(monkeypatch)
    out = tmp_path / "out.bin"
    doc = cmd_load.run_load(_args(output=out), _ctx(site))
    assert doc["copy"] == "immutable_inode" and out.read_bytes() == BIG
    assert (hashes.made, hashes.claims) == (1, [True])


def test_a_wrong_guess_is_dropped_and_the_loader_hashes_its_own(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = site.h.db()
    wrong = find(db, "other").digest
    db.conn.close()
    cmd_load.run_load(_args(output=Path("/dev/null")), _ctx(site))  # the process's reader
    monkeypatch.setattr(headstart, "_guess", lambda *a: wrong)  # a writer's lie
    hashes = Hashes(monkeypatch)
    before = _open_fds()
    out = tmp_path / "out.bin"
    doc = cmd_load.run_load(_args(output=out), _ctx(site))
    assert doc["digest"]["blake3"] != wrong and out.read_bytes() == BIG
    # The guess's hash, dropped; the loader hashes its own (here, small: in line).
    assert (hashes.made, hashes.claims) == (1, [False])
    assert _open_fds() == before and not _hash_threads()


def test_a_refusal_after_the_head_start_leaves_nothing_behind(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = _args(output=Path("/dev/null"), digest="0" * 64)
    with pytest.raises(DigestPinnedError):  # once first: the process keeps a reader open
        cmd_load.run_load(pinned, _ctx(site))
    hashes = Hashes(monkeypatch)
    before = _open_fds()
    with pytest.raises(DigestPinnedError):
        cmd_load.run_load(pinned, _ctx(site))
    assert hashes.made == 1 and hashes.claims == []  # refused before the object was opened
    assert _open_fds() == before and not _hash_threads()


def test_the_flag_is_read_as_the_store_reads_it(site: Site) -> None:
    assert headstart.FS_IOC_GETFLAGS == store.FS_IOC_GETFLAGS
    assert headstart.FS_IMMUTABLE_FL == store.FS_IMMUTABLE_FL
    db = site.h.db()
    path = object_path(site.h, find(db, "big").digest)
    db.conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert headstart._immutable(fd) is store.is_immutable(fd) is True
        clear_immutable(path)
        assert headstart._immutable(fd) is store.is_immutable(fd) is False
    finally:
        os.close(fd)


HUGE = bytes(range(256)) * 4096 * (loader.OVERLAP_MIN // (256 * 4096))  # hashed in a thread


@pytest.fixture
def plain_site(tmp_path: Path) -> Site:
    """No immutable flag (the session's default): the sealed-copy path."""
    s = make_site(tmp_path)
    s.ship({"big@1": HUGE})
    return s


def _refuse(db: Any, rec: Any) -> object:
    raise RevokedKeyError("refused by the test's provenance check")


def test_a_tampered_object_is_reported_first_when_provenance_refuses_too(
    plain_site: Site,
) -> None:
    site = plain_site
    db = site.h.db()
    try:
        rec = find(db, "big")
        path = object_path(site.h, rec.digest)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(len(HUGE) - 1)
            f.write(b"\xff" if HUGE[-1:] != b"\xff" else b"\x00")
        before = _open_fds()
        with pytest.raises(ObjectTamperedError):
            loader.verified_open(site.h, db, "big", None, witness_path=None, provenance=_refuse)
        assert _open_fds() == before and not _hash_threads()
    finally:
        db.conn.close()


def test_a_provenance_refusal_with_a_hash_running_closes_everything(plain_site: Site) -> None:
    db = plain_site.h.db()
    try:
        before = _open_fds()
        with pytest.raises(RevokedKeyError):
            loader.verified_open(
                plain_site.h, db, "big", None, witness_path=None, provenance=_refuse
            )
        assert _open_fds() == before and not _hash_threads()
        with loader.verified_open(plain_site.h, db, "big", None, witness_path=None) as art:
            assert art.size == len(HUGE) and art.read() == HUGE
    finally:
        db.conn.close()


def _run_with_timeout(fn: Any, seconds: float = 10.0) -> Any:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the head start blocked"
    return box[0]


def test_a_fifo_or_link_at_the_database_gives_no_guess_and_never_blocks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.mkfifo(home / "appliance.db")  # opening it for reading would wait for a writer
    assert _run_with_timeout(lambda: headstart.head_start(home, "appliance.db", "x")) is None
    os.unlink(home / "appliance.db")
    (tmp_path / "elsewhere.db").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere.db", home / "appliance.db")
    assert headstart.head_start(home, "appliance.db", "x") is None
    assert headstart.head_start(tmp_path / "absent", "appliance.db", "x") is None


def test_a_planted_schema_cannot_make_the_guess_run_long(tmp_path: Path) -> None:
    import sqlite3

    home = tmp_path / "home"
    home.mkdir()
    conn = sqlite3.connect(home / "appliance.db")
    conn.executescript(
        "CREATE TABLE active (name TEXT, version TEXT);"
        "CREATE VIEW artifacts AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
        "FROM n) SELECT 'x' AS name, '1' AS version, printf('%064d', i) AS digest FROM n "
        "WHERE i < 0;"
    )
    conn.close()
    got = _run_with_timeout(lambda: headstart.head_start(home, "appliance.db", "x@1"))
    assert got is None
