"""The import reads each artifact byte from the media exactly once.

Every OS call that can read a file (``read``, ``readv``, ``pread``, ``preadv``,
``copy_file_range``, ``sendfile``, ``splice``) is wrapped in process and each
read is recorded as (file, offset, length) when the file lies on the media.
The import (``appliance.importer.import_bundle``) must then have covered
every byte of every artifact exactly once, read nothing else but the manifest
(and, in a tar, the headers), and never mapped a media file.
"""

from __future__ import annotations

import mmap
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import manifest_of, pack_tar, staging_files
from import_env import Env

from appliance.home import Home
from appliance.importer import import_bundle

ARTIFACTS = {
    "weights@1": os.urandom((3 << 20) + 12345),
    "tokenizer@1": os.urandom(100_000),
    "tag@1": b"v1",
}


@dataclass
class ReadLog:
    media: str  # the bundle path; reads of files at or under it are recorded
    reads: list[tuple[str, int, int, str]] = field(default_factory=list)  # path, off, len, call
    mapped: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path_of(self, fd: int) -> str | None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return path if path == self.media or path.startswith(self.media + "/") else None

    def record(self, fd: int, offset: int | None, length: int, call: str) -> None:
        path = self.path_of(fd)
        if path is None or length <= 0:
            return
        with self.lock:
            self.reads.append((path, -1 if offset is None else offset, length, call))


@pytest.fixture
def read_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], ReadLog]]:
    """Start recording reads of one media path (undone at the end of the test)."""

    def start(media: Path) -> ReadLog:
        log = ReadLog(os.path.realpath(media))
        _install(monkeypatch, log)
        return log

    yield start


def _pos(fd: int) -> int | None:
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None


def _install(monkeypatch: pytest.MonkeyPatch, log: ReadLog) -> None:
    real: dict[str, Any] = {
        name: getattr(os, name)
        for name in ("read", "readv", "pread", "preadv", "copy_file_range", "sendfile", "splice")
        if hasattr(os, name)
    }
    real_mmap = mmap.mmap

    def read(fd: int, n: int) -> bytes:
        pos = _pos(fd)
        data: bytes = real["read"](fd, n)
        log.record(fd, pos, len(data), "read")
        return data

    def readv(fd: int, buffers: Any) -> int:
        pos = _pos(fd)
        got: int = real["readv"](fd, buffers)
        log.record(fd, pos, got, "readv")
        return got

    def pread(fd: int, n: int, offset: int) -> bytes:
        data: bytes = real["pread"](fd, n, offset)
        log.record(fd, offset, len(data), "pread")
        return data

    def preadv(fd: int, buffers: Any, offset: int, *flags: int) -> int:
        got: int = real["preadv"](fd, buffers, offset, *flags)
        log.record(fd, offset, got, "preadv")
        return got

    def copy_file_range(src: int, dst: int, count: int, *args: Any, **kw: Any) -> int:
        offset = args[0] if args else kw.get("offset_src")
        pos = _pos(src) if offset is None else offset
        got: int = real["copy_file_range"](src, dst, count, *args, **kw)
        log.record(src, pos, got, "copy_file_range")
        return got

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        pos = _pos(in_fd) if offset is None else offset
        got: int = real["sendfile"](out_fd, in_fd, offset, count)
        log.record(in_fd, pos, got, "sendfile")
        return got

    def splice(src: int, dst: int, count: int, *args: Any, **kw: Any) -> int:
        offset = args[0] if args else kw.get("offset_src")
        pos = _pos(src) if offset is None else offset
        got: int = real["splice"](src, dst, count, *args, **kw)
        log.record(src, pos, got, "splice")
        return got

    def mapped(fileno: int, *args: Any, **kw: Any) -> mmap.mmap:
        path = log.path_of(fileno) if fileno >= 0 else None
        if path is not None:
            log.mapped.append(path)
        return real_mmap(fileno, *args, **kw)

    wrappers = {
        "read": read,
        "readv": readv,
        "pread": pread,
        "preadv": preadv,
        "copy_file_range": copy_file_range,
        "sendfile": sendfile,
        "splice": splice,
    }
    for name in real:
        monkeypatch.setattr(os, name, wrappers[name])
    monkeypatch.setattr(mmap, "mmap", mapped)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _ranges(bundle: Path, tar: Path | None) -> tuple[dict[str, list[tuple[int, int]]], str]:
    """Where each artifact file's bytes lie on the media, and where the manifest does."""
    m = manifest_of(bundle)
    files = [p.path for a in m.artifacts for p in a.files]
    ranges: dict[str, list[tuple[int, int]]] = {}
    if tar is None:
        for rel in files:
            path = os.path.realpath(bundle / rel)
            ranges.setdefault(path, []).append((0, os.path.getsize(path)))
        return ranges, os.path.realpath(bundle / "manifest.dsse.json")
    where = os.path.realpath(tar)
    with tarfile.open(tar) as tf:
        members = {i.name: (i.offset_data, i.offset_data + i.size) for i in tf.getmembers()}
    ranges[where] = [members[rel] for rel in files]
    return ranges, where


@dataclass(frozen=True)
class Case:
    tar: bool
    part_size: int | None


CASES = {
    "dir": Case(False, None),
    "tar": Case(True, None),
    "dir-split": Case(False, 1 << 20),
    "tar-split": Case(True, 1 << 20),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(tmp_path_factory.mktemp("once-template"))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry-run"])
def test_each_artifact_byte_is_read_once(
    template: Env,
    tmp_path: Path,
    read_log: Callable[[Path], ReadLog],
    case: str,
    dry_run: bool,
) -> None:
    env = template.clone(tmp_path / "env")
    c = CASES[case]
    bundle = env.bundle(ARTIFACTS, part_size=c.part_size)
    manifest = manifest_of(bundle)
    if c.part_size:
        assert any(len(a.parts) > 1 for a in manifest.artifacts)
    tar = pack_tar(env.path("bundle.tar"), bundle) if c.tar else None
    media = tar or bundle
    artifact_bytes = sum(a.size for a in manifest.artifacts)
    manifest_size = (bundle / "manifest.dsse.json").stat().st_size
    ranges, manifest_where = _ranges(bundle, tar)

    log = read_log(media)
    result = import_bundle(Home(env.home), media, dry_run=dry_run)
    assert result.bytes_verified == artifact_bytes
    assert log.mapped == []  # media is never mapped (SIGBUS if it shrinks)

    # Every artifact byte read exactly once: the overlaps sum to the size, no byte twice.
    data_reads = [r for r in log.reads if r[3] != "pread" or tar is None]
    for path, spans in ranges.items():
        for start, end in spans:
            hits = [
                _overlap(start, end, off, off + n)
                for p, off, n, _call in data_reads
                if p == path and off >= 0
            ]
            assert sum(hits) == end - start, (path, start, end, sum(hits))
            covered = sorted(
                (max(start, off), min(end, off + n))
                for p, off, n, _call in data_reads
                if p == path and _overlap(start, end, off, off + n)
            )
            for (_a0, a1), (b0, _b1) in zip(covered, covered[1:], strict=False):
                assert a1 <= b0, f"{path}: bytes {b0}..{a1} read twice"
    assert all(off >= 0 for _p, off, _n, _c in log.reads), "a read at an unknown offset"

    # Nothing else: the artifacts, the manifest once, and (tar) headers outside the data.
    total = sum(n for _p, _o, n, _c in data_reads)
    assert total == artifact_bytes + manifest_size, (total, artifact_bytes, manifest_size)
    if tar is None:
        assert sum(n for p, _o, n, _c in log.reads if p == manifest_where) == manifest_size
    else:
        # The header walk (tarfile) reads only headers, except its one-byte probe of the
        # byte before the next header, which is a data byte when a member fills its blocks.
        headers = [(off, n) for _p, off, n, call in log.reads if call == "pread"]
        probes = 0
        for off, n in headers:
            for start, end in ranges[manifest_where]:
                if _overlap(start, end, off, off + n):
                    assert (n, (off + 1) % 512) == (1, 0), f"header read {off}+{n} hit data"
                    probes += 1
        assert probes <= len(ranges[manifest_where])
        assert sum(n for _o, n in headers) < 64 * 1024
    if not dry_run:
        assert staging_files(env.home) == []
        assert len(env.expect_ok("list")["artifacts"]) == len(ARTIFACTS)
