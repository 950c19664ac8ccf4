"""``bundles.hashing.hash_isolated``: a large file hashed through a mapping in a forked
child gives what ``hash_fd`` gives, and whatever goes wrong in the child (the file shrank
under its mapping: SIGBUS; an answer of another shape; the file changed meanwhile) ends
in ``hash_fd``'s own answer, never in the death of the caller.

``appliance verify`` hashes its large objects so (``verify._hash_large``): a tampered
big object is still ``object_tampered`` (exit 4).
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import stat
from pathlib import Path

import pytest
from conftest_load import make_site

from appliance import verify
from appliance.importer import import_bundle
from appliance.store import clear_immutable, find, object_path
from appliance.truststore import load_trust
from bundles import hashing

BIG = hashing.ISOLATED_MIN + 12345


@pytest.fixture(autouse=True)
def _forks(monkeypatch: pytest.MonkeyPatch) -> None:
    # hash_isolated forks only when no other thread runs; here the only other one is
    # pytest-timeout's idle timer.
    monkeypatch.setattr(hashing, "fork_is_safe", lambda: True)


def _big(tmp_path: Path, size: int = BIG) -> Path:
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
        f.write(os.urandom(size & ((1 << 20) - 1)))
    return path


def _both(path: Path) -> tuple[tuple[str, int], tuple[str, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return hashing.hash_isolated(fd), hashing.hash_fd(fd)
    finally:
        os.close(fd)


def _counts() -> tuple[int, int]:
    return hashing.counters["isolated_hashes"], hashing.counters["isolated_fallbacks"]


def test_a_big_file_is_hashed_in_a_child_as_hash_fd_hashes_it(tmp_path: Path) -> None:
    path = _big(tmp_path)
    hashes, fallbacks = _counts()
    isolated, read = _both(path)
    assert isolated == read and read[1] == BIG
    assert _counts() == (hashes + 1, fallbacks)
    # The parent's global BLAKE3 pool exists now (hash_fd above): the child makes its own.
    assert hashing.hash_path(path) == read
    assert _counts() == (hashes + 2, fallbacks)


def test_a_small_file_or_another_thread_forks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    before = _counts()
    assert _both(small)[0] == _both(small)[1]
    monkeypatch.setattr(hashing, "fork_is_safe", lambda: False)
    path = _big(tmp_path)
    isolated, read = _both(path)
    assert isolated == read
    assert _counts() == before


def test_a_file_that_shrinks_under_the_mapping_kills_only_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _big(tmp_path)

    def shrinking(fd: int, **kw: object) -> tuple[str, int] | None:  # runs in the child
        faulthandler.disable()  # pytest's: it would print the child's SIGBUS as a crash
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as m:
            os.truncate(path, 4096)
            m[size - 1]  # beyond the end of the file now: SIGBUS ends the child here
        return None

    monkeypatch.setattr(hashing, "hash_mapped", shrinking)
    hashes, fallbacks = _counts()
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, size = hashing.hash_isolated(fd)
    finally:
        os.close(fd)
    assert size == 4096  # hash_fd's answer for what the file holds now
    assert _counts() == (hashes + 1, fallbacks + 1)
    assert (digest, size) == _both(path)[1]


@pytest.mark.parametrize("answer", [None, ("not hex" * 9, BIG), ("a" * 64, BIG + 1)])
def test_an_answer_of_another_shape_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: tuple[str, int] | None
) -> None:
    path = _big(tmp_path)
    monkeypatch.setattr(hashing, "hash_mapped", lambda fd, **kw: answer)
    hashes, fallbacks = _counts()
    isolated, read = _both(path)
    assert isolated == read
    assert _counts() == (hashes + 1, fallbacks + 1)


def test_a_file_changed_while_the_child_hashed_is_hashed_again_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _big(tmp_path)
    real = hashing.hash_mapped

    def and_write(fd: int, **kw: int) -> tuple[str, int] | None:  # runs in the child
        found = real(fd, **kw)
        with open(path, "r+b") as f:
            f.write(b"changed after the child mapped it")
        return found

    monkeypatch.setattr(hashing, "hash_mapped", and_write)
    hashes, fallbacks = _counts()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = hashing.hash_isolated(fd)
    finally:
        os.close(fd)
    assert _counts() == (hashes + 1, fallbacks + 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert got == hashing.hash_fd(fd)  # the bytes as they are now, read here
    finally:
        os.close(fd)


def test_verify_of_a_big_object_hashes_it_in_a_child_and_finds_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "fork_is_safe", lambda: True)
    site = make_site(tmp_path / "site")
    import_bundle(site.h, site.bundle({"big@1": _big(tmp_path).read_bytes()}))
    db = site.h.db()
    try:
        recs = [find(db, "big", "1")]
        hashes, _ = _counts()
        assert [r.status for r in verify.verify_records(site.h, db, load_trust(db), recs)] == ["ok"]
        assert _counts()[0] == hashes + 1
    finally:
        db.conn.close()
    obj = object_path(site.h, recs[0].digest)
    clear_immutable(obj)
    os.chmod(obj, stat.S_IMODE(os.stat(obj).st_mode) | stat.S_IWUSR)
    with open(obj, "r+b") as f:
        f.seek(BIG // 2)
        f.write(b"\xff")
    res = site.cli("--json", "verify", check=4)
    assert res.json["error"]["code"] == "object_tampered"
    assert res.json["results"][0]["status"] == "tampered"
