"""``bundle create`` (directory) pinned by counting work, never by timing.

* Each source is opened once (hashed and copied in one pass), whatever N; a small one is
  read by one ``pread`` (of its size and one byte more), and every file of the bundle is
  created relative to one open descriptor of its folder, not by a path from ``/``.
* Folders are made once each: for N artifacts with plain names, one (``artifacts/``),
  not two per artifact; no ``mkdir`` fails.
* One ``syncfs`` and a number of ``fsync`` calls that does not grow with N.
* Crash safety: when the one ``syncfs`` runs, every artifact file and the manifest are
  already in the staging folder and OUT does not exist yet; OUT appears by a rename
  after it. So OUT never holds a manifest whose bytes are not on disk.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import bundles.errors
import bundles.writer
import bundles.writer_copy
from bundles import durable
from bundles.keys import PrivateKey
from bundles.reader import MANIFEST_FILE
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

N_LARGE = 600


def _specs(root: Path, n: int) -> list[ArtifactSpec]:
    src = root / f"src{n}"
    src.mkdir()
    specs = []
    for i in range(n):
        (src / f"f{i}").write_bytes(os.urandom(1 + i % 5000))
        specs.append(ArtifactSpec(f"f{i}", "1", src / f"f{i}"))
    return specs


def _create(out: Path, specs: list[ArtifactSpec]) -> None:
    create_bundle(
        out,
        specs,
        stream="models",
        sequence=1,
        keys=[PrivateKey.generate()],
        expires=utcnow() + timedelta(days=1),
        any_site=True,
    )


def _count(tmp: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    specs = _specs(tmp, n)
    sources = {os.fspath(s.path) for s in specs}
    seen: dict[str, Any] = {
        "source_opens": 0,
        "creates": 0,
        "creates_by_path": 0,
        "preads": 0,
        "mkdir": 0,
        "mkdir_failed": 0,
        "fsync": 0,
    }
    real_open, real_mkdir, real_fsync, real_pread = os.open, os.mkdir, os.fsync, os.pread

    def counting_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
        if os.fspath(path) in sources:
            seen["source_opens"] += 1
        elif flags & os.O_CREAT and str(path).startswith("artifacts/"):
            seen["creates"] += 1
            seen["creates_by_path"] += kw.get("dir_fd") is None
        return real_open(path, flags, *a, **kw)

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        seen["preads"] += 1
        return real_pread(fd, n, offset)

    def counting_mkdir(path: Any, *a: Any, **kw: Any) -> None:
        if ".tmp/" not in os.fspath(path):  # the staging folder itself (mkdtemp)
            real_mkdir(path, *a, **kw)
            return
        seen["mkdir"] += 1
        try:
            real_mkdir(path, *a, **kw)
        except OSError:
            seen["mkdir_failed"] += 1
            raise

    def counting_fsync(fd: int) -> None:
        seen["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "mkdir", counting_mkdir)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "pread", counting_pread)
    before = durable.counters["syncfs"]
    try:
        _create(tmp / f"bundle{n}", specs)
    finally:
        monkeypatch.setattr(os, "open", real_open)
        monkeypatch.setattr(os, "mkdir", real_mkdir)
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.setattr(os, "pread", real_pread)
    seen["syncfs"] = durable.counters["syncfs"] - before
    return seen


def test_create_work_per_source_is_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _count(tmp_path, 3, monkeypatch)
    large = _count(tmp_path, N_LARGE, monkeypatch)
    assert small["source_opens"] == 3 and large["source_opens"] == N_LARGE, (small, large)
    assert small["preads"] == 3 and large["preads"] == N_LARGE, (small, large)
    assert small["creates"] == 3 and large["creates"] == N_LARGE, (small, large)
    assert small["creates_by_path"] == large["creates_by_path"] == 0, (small, large)
    assert small["mkdir"] == large["mkdir"] == 1, (small, large)  # artifacts/ only
    assert small["mkdir_failed"] == large["mkdir_failed"] == 0, (small, large)
    assert small["syncfs"] == large["syncfs"] == 1, (small, large)
    assert small["fsync"] == large["fsync"], (small, large)


def test_folders_are_made_once_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names with folders: one mkdir per distinct folder, parents first, none failing."""
    src = tmp_path / "src"
    src.mkdir()
    specs = []
    for i in range(40):
        (src / f"f{i}").write_bytes(b"x")
        specs.append(ArtifactSpec(f"org{i % 4}/team{i % 2}/m{i}", "1", src / f"f{i}"))
    made: list[str] = []
    real = os.mkdir

    def mkdir(path: Any, *a: Any, **kw: Any) -> None:
        made.append(os.fspath(path))
        real(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    _create(tmp_path / "out", specs)
    monkeypatch.setattr(os, "mkdir", real)
    rel = sorted(p.split(".tmp/", 1)[1] for p in made if ".tmp/" in p)
    expected = {"artifacts"} | {f"artifacts/org{i % 4}" for i in range(40)}
    expected |= {f"artifacts/org{i % 4}/team{i % 2}" for i in range(40)}
    assert rel == sorted(expected)


def test_manifest_and_files_are_synced_before_out_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = _specs(tmp_path, 30)
    out = tmp_path / "out"
    events: list[str] = []
    real_sync = bundles.writer.sync_filesystem
    real_rename = os.rename

    def sync(path: str | os.PathLike[str]) -> None:
        root = Path(path)
        files = {p.name for p in (root / "artifacts").iterdir()}
        assert files == {f"f{i}@1_f{i}" for i in range(30)}
        assert (root / MANIFEST_FILE).is_file()
        assert not out.exists()
        events.append("syncfs")
        real_sync(path)

    def rename(a: Any, b: Any, *rest: Any, **kw: Any) -> None:
        if Path(b) == out:
            events.append("rename")
        real_rename(a, b, *rest, **kw)

    monkeypatch.setattr(bundles.writer, "sync_filesystem", sync)
    monkeypatch.setattr(os, "rename", rename)
    _create(out, specs)
    assert events == ["syncfs", "rename"]


def test_a_failed_create_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write failure midway (disk full) leaves neither OUT nor the staging folder."""
    specs = _specs(tmp_path, N_LARGE)
    real = bundles.writer_copy.write_all
    count = {"n": 0}

    def write_all(fd: int, view: memoryview) -> None:
        count["n"] += 1
        if count["n"] == N_LARGE // 2:
            raise OSError(28, "No space left on device")
        real(fd, view)

    monkeypatch.setattr(bundles.writer_copy, "write_all", write_all)
    with pytest.raises(bundles.errors.OperationalError):
        _create(tmp_path / "out", specs)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
