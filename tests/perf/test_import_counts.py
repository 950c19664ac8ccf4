"""An import of N small artifacts, pinned by counting work (never by timing).

* ``objects`` is opened a number of times that does not grow with N, and each
  ``objects/xx`` at most once for the promotions (plus once by the sweep of
  unreferenced objects for each folder already there), never once per file.
* Every fan-out folder is made (``mkdir``) at most once per import.
* The commit writes all of the import's audit events in one ``audit.append_many``.
* Two ``syncfs`` calls (before and after the renames), no ``fsync`` per file.
* Tiny artifacts are staged in the importing thread: no thread is started for them.
"""

from __future__ import annotations

import os
import string
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site

from appliance import audit, store
from appliance.importer import import_bundle
from appliance.store import records

_HEX = frozenset(string.hexdigits.lower())


def _fanout(name: object) -> bool:
    return isinstance(name, str) and len(name) == 2 and set(name) <= _HEX


def _import_counting(site: Site, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {
        "objects_opens": 0,
        "fanout_opens": 0,
        "fanout_mkdirs": 0,
        "append_many": 0,
        "events": 0,
        "fsync": 0,
        "threads": 0,
    }
    real_open, real_mkdir, real_fsync = os.open, os.mkdir, os.fsync
    real_append_many, real_start = audit.append_many, threading.Thread.start

    def counting_open(
        path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if dir_fd is not None and path == "objects":
            seen["objects_opens"] += 1
        elif dir_fd is not None and _fanout(path):
            seen["fanout_opens"] += 1
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def counting_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if dir_fd is not None and _fanout(path):
            seen["fanout_mkdirs"] += 1
        real_mkdir(path, mode, dir_fd=dir_fd)

    def counting_fsync(fd: int) -> None:
        seen["fsync"] += 1
        real_fsync(fd)

    def counting_append_many(db: Any, events: list[tuple[str, dict[str, Any]]]) -> Any:
        seen["append_many"] += 1
        seen["events"] += len(events)
        return real_append_many(db, events)

    def counting_start(self: threading.Thread) -> None:
        seen["threads"] += 1
        real_start(self)

    existing = set(os.listdir(site.home / "objects")) if (site.home / "objects").exists() else set()
    before_syncfs = store.counters["syncfs"]
    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "mkdir", counting_mkdir)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(audit, "append_many", counting_append_many)
    monkeypatch.setattr(threading.Thread, "start", counting_start)
    try:
        import_bundle(site.h, bundle)
    finally:
        monkeypatch.setattr(os, "open", real_open)
        monkeypatch.setattr(os, "mkdir", real_mkdir)
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.setattr(audit, "append_many", real_append_many)
        monkeypatch.setattr(threading.Thread, "start", real_start)
    seen["syncfs"] = store.counters["syncfs"] - before_syncfs
    seen["existing_fanouts"] = len(existing)
    return seen


def _bundle(site: Site, n: int, tag: str) -> Path:
    return site.bundle({f"{tag}{i}@1": f"{tag} {i} ".encode() * (64 + i) for i in range(n)})


def _new_fanouts(site: Site, tag: str) -> int:
    db = site.h.db()
    try:
        return len({r.digest[:2] for r in records(db) if r.name.startswith(tag)})
    finally:
        db.conn.close()


def test_import_opens_each_folder_once_and_commits_in_one_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    small = _import_counting(site, _bundle(site, 3, "a"), monkeypatch)
    large = _import_counting(site, _bundle(site, 120, "b"), monkeypatch)
    for seen, tag, n in ((small, "a", 3), (large, "b", 120)):
        new_fans = _new_fanouts(site, tag)
        # The sweep opens each folder already there once; the promotions each folder they
        # use once: never once per artifact.
        assert seen["fanout_opens"] <= seen["existing_fanouts"] + new_fans, (seen, new_fans)
        assert seen["fanout_mkdirs"] <= new_fans, (seen, new_fans)
        assert seen["append_many"] == 1 and seen["events"] == n + 1, seen  # + bundle_import
        assert seen["syncfs"] == 2, seen
        assert seen["threads"] == 0, seen  # tiny artifacts: staged in this thread
    assert large["objects_opens"] == small["objects_opens"], (small, large)
    assert small["fsync"] == large["fsync"], (small, large)
    assert large["fanout_opens"] < 120, large


def test_large_artifacts_still_go_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``importer.INLINE`` an artifact is staged by a worker (copy and hash overlap)."""
    from appliance import importer

    site = make_site(tmp_path)
    big = os.urandom(importer.INLINE + 1)
    seen = _import_counting(site, site.bundle({"big@1": big, "tiny@1": b"t" * 10}), monkeypatch)
    assert seen["threads"] >= 1, seen
    assert seen["events"] == 3, seen


def test_a_folder_swapped_while_promoting_stops_the_import_before_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folders are opened once per import: one renamed away (a link left in its place)
    after its first promotion is found by ``Promotion.check_folders``, before the commit."""
    from appliance.errors import HomeTamperedError

    site = make_site(tmp_path)
    real = store.Promotion.promote
    aside = tmp_path / "aside"
    swapped: list[str] = []

    def promote_then_swap(self: store.Promotion, staged: Any, digest: str, **kw: Any) -> None:
        real(self, staged, digest, **kw)
        if not swapped:
            fan = site.home / "objects" / digest[:2]
            os.rename(fan, aside)
            os.symlink(aside, fan)
            swapped.append(digest)

    monkeypatch.setattr(store.Promotion, "promote", promote_then_swap)
    with pytest.raises(HomeTamperedError) as e:
        import_bundle(site.h, _bundle(site, 3, "c"))
    assert swapped and "swapped while the import promoted" in e.value.message
    fan = site.home / "objects" / swapped[0][:2]
    fan.unlink()  # put the folder back, so that the home opens again
    os.rename(aside, fan)
    db = site.h.db()
    try:
        assert [r for r in records(db) if r.name.startswith("c")] == []  # nothing committed
    finally:
        db.conn.close()
