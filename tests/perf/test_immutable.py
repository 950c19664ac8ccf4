"""The big-load fast path: immutable store objects are hashed in place and handed over.

Tests run as root; the session turns the flag off (tests/conftest.py) because other tests
tamper with objects; these turn it on, and clear it before their folders are removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_load import Site, make_site

import appliance
from appliance import store
from appliance.errors import ObjectTamperedError
from appliance.store import clear_immutable, object_path, set_immutable

DATA = {"big@1": bytes(range(256)) * 8192, "small@1": b"tiny"}


def _kernel_allows(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.write_bytes(b"x")
    ok = set_immutable(probe)
    clear_immutable(probe)
    probe.unlink()
    return ok


def _unflag(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            clear_immutable(p)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    if not _kernel_allows(tmp_path):
        pytest.skip("no CAP_LINUX_IMMUTABLE or no inode flags on this file system")
    monkeypatch.setenv("APPLIANCE_IMMUTABLE", "1")
    s = make_site(tmp_path)
    try:
        yield s
    finally:
        _unflag(tmp_path)


def _digest(site: Site, name: str) -> str:
    with appliance.load(name, home=site.home, record=False) as art:
        return art.digest


def test_promoted_objects_are_immutable_and_loaded_in_place(site: Site) -> None:
    site.ship(DATA)
    for name in ("big", "small"):
        path = object_path(site.h, _digest(site, name))
        fd = os.open(path, os.O_RDONLY)
        try:
            assert store.is_immutable(fd)
        finally:
            os.close(fd)
        with appliance.load(name, home=site.home) as art:
            assert art.to_dict()["copy"] == "immutable_inode"
            assert os.fstat(art.fd).st_ino == os.stat(path).st_ino  # the store's own inode
            assert art.read() == DATA[f"{name}@1"]


def test_the_kernel_refuses_changes_to_an_immutable_object(site: Site) -> None:
    site.ship(DATA)
    path = object_path(site.h, _digest(site, "big"))
    with pytest.raises(PermissionError):
        os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        os.open(path, os.O_WRONLY)
    with pytest.raises(PermissionError):
        os.unlink(path)
    with pytest.raises(PermissionError):
        os.rename(path, path.with_name("moved"))
    with pytest.raises(PermissionError):
        os.truncate(path, 0)


def test_a_cleared_and_changed_object_falls_back_and_is_refused(site: Site) -> None:
    """Root (with the capability) clears the flag and changes a byte: the load sees no flag,
    copies, hashes the copy and refuses it."""
    site.ship(DATA)
    path = object_path(site.h, _digest(site, "big"))
    clear_immutable(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\xff")
    with pytest.raises(ObjectTamperedError) as exc:
        appliance.load("big", home=site.home, record=False)
    assert exc.value.code == "object_tampered"


def test_the_appliance_removes_and_replaces_immutable_objects(site: Site) -> None:
    site.ship(DATA)
    digest = _digest(site, "small")
    path = object_path(site.h, digest)
    # replace: promote over an immutable target
    path_staged = site.h.staging / "again.part"
    site.h.staging.mkdir(exist_ok=True)
    path_staged.write_bytes(DATA["small@1"])
    store.promote(site.h, store.Staged.of(path_staged.name, path_staged.stat()), digest)
    assert path.read_bytes() == DATA["small@1"]
    with appliance.load("small", home=site.home, record=False) as art:
        assert art.to_dict()["copy"] == "immutable_inode"
    # remove
    assert store.remove_object(site.h, digest) is True
    assert not path.exists()
    assert store.remove_object(site.h, digest) is False


def test_the_orphan_sweep_removes_an_immutable_orphan(site: Site) -> None:
    site.ship(DATA)
    orphan = object_path(site.h, "ab" * 32)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a killed import")
    assert set_immutable(orphan)
    db = site.h.db()
    try:
        assert store.sweep_orphans(site.h, db) == 1
    finally:
        db.conn.close()
    assert not orphan.exists()


def test_off_means_a_sealed_copy(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_IMMUTABLE", "0")
    site.ship(DATA)
    with appliance.load("small", home=site.home, record=False) as art:
        assert art.to_dict()["copy"] == "sealed_memfd"
        fd = os.open(object_path(site.h, art.digest), os.O_RDONLY)
        try:
            assert not store.is_immutable(fd)
        finally:
            os.close(fd)
