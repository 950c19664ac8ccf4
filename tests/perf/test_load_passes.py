"""Big loads read the object once, and ``-o`` never copies through a Python loop.

Counted, not timed: every ``preadv``/``pread``/``read``/``sendfile`` on the store object's
inode, and every mapping of it (``mmap.mmap``: the CLI hashes an immutable object through
one, ``bundles.hashing.hash_mapped``), is recorded through seams on ``os`` and ``mmap``
(the hashing module and the CLI call them by attribute), and the totals are pinned. The
flag is on here (tests/perf/test_immutable.py explains why the session turns it off).
"""

from __future__ import annotations

import argparse
import importlib
import io
import mmap
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from test_immutable import _kernel_allows

from appliance.cli import cmd_load
from appliance.cli.context import Context
from appliance.store import clear_immutable, object_path
from bundles.errors import ApplianceError

BIG = bytes(range(256)) * 8192 * 3  # 6 MiB: more than one read chunk, so the pipelined pass


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    if not _kernel_allows(tmp_path):
        pytest.skip("no CAP_LINUX_IMMUTABLE or no inode flags on this file system")
    monkeypatch.setenv("APPLIANCE_IMMUTABLE", "1")
    s = make_site(tmp_path)
    s.ship({"big@1": BIG})
    try:
        yield s
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                clear_immutable(p)


class Reads:
    """Bytes moved out of one inode, by system call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ino: int) -> None:
        self.ino = ino
        self.bytes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        for name, src in (("preadv", 0), ("pread", 0), ("read", 0), ("sendfile", 1)):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name), src))
        real_memfd = os.memfd_create

        def memfd(*a: Any) -> int:
            self.calls["memfd_create"] += 1
            return real_memfd(*a)

        monkeypatch.setattr(os, "memfd_create", memfd)
        real_mmap = mmap.mmap

        def mapping(fd: int, length: int, *a: Any, **kw: Any) -> mmap.mmap:
            if os.fstat(fd).st_ino == self.ino:
                self.calls["mmap"] += 1
                self.bytes["mmap"] += length
            return real_mmap(fd, length, *a, **kw)

        monkeypatch.setattr(mmap, "mmap", mapping)

    def _wrap(self, name: str, real: Any, src: int) -> Any:
        def call(*args: Any) -> Any:
            result = real(*args)
            if os.fstat(args[src]).st_ino == self.ino:
                self.calls[name] += 1
                self.bytes[name] += result if isinstance(result, int) else len(result)
            return result

        return call


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"ref": "big", "output": None, "socket": None, "digest": None}
    base.update(kw)
    return argparse.Namespace(**base)


def _ctx(site: Site) -> Context:
    return Context(home=site.home, stdout=io.StringIO(), stderr=io.StringIO())


def _ino(site: Site) -> int:
    (obj,) = (p for p in (site.home / "objects").rglob("*") if p.is_file())
    assert obj == object_path(site.h, obj.name)
    return obj.stat().st_ino


def test_load_to_a_file_hashes_once_and_copies_in_the_kernel(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch, _ino(site))
    out = tmp_path / "out.bin"
    doc = cmd_load.run_load(_args(output=out), _ctx(site))
    assert doc["copy"] == "immutable_inode"
    assert out.read_bytes() == BIG
    # The hash: one pass over the object, through one mapping (the CLI's head start,
    # taken by the loader: no second hash).
    assert (reads.calls["mmap"], reads.bytes["mmap"]) == (1, len(BIG))
    assert reads.bytes["preadv"] == 0
    assert reads.bytes["sendfile"] == len(BIG)  # the output: one kernel copy
    assert reads.calls["pread"] == reads.calls["read"] == 0  # no Python-level copy loop
    assert reads.calls["sendfile"] == 1
    assert reads.calls["memfd_create"] == 0  # no sealed copy on this path


def test_load_to_dev_null_writes_from_a_mapping(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A character device takes ``write`` from a mapping of the verified descriptor (the
    kernel's /dev/null reads no page of it); the hash is the other mapping."""
    reads = Reads(monkeypatch, _ino(site))
    written: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        n = real_write(fd, data)
        if os.path.samestat(os.fstat(fd), os.stat("/dev/null")):
            written.append(n)
        return n

    monkeypatch.setattr(os, "write", write)
    cmd_load.run_load(_args(output=Path("/dev/null")), _ctx(site))
    assert (reads.calls["mmap"], reads.bytes["mmap"]) == (2, 2 * len(BIG))
    assert sum(written) == len(BIG) and len(written) == 1
    assert reads.calls["sendfile"] == reads.calls["preadv"] == 0
    assert reads.calls["pread"] == reads.calls["read"] == 0


class Exec(Exception):
    pass


def test_exec_reads_the_object_once_and_hands_over_that_descriptor(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    ino = _ino(site)
    reads = Reads(monkeypatch, ino)
    seen: dict[str, Any] = {}

    def execvpe(file: str, argv: list[str], env: dict[str, str]) -> None:
        fd = int(env["APPLIANCE_FD"])
        seen.update(argv=argv, ino=os.fstat(fd).st_ino, offset=os.lseek(fd, 0, os.SEEK_CUR))
        os.close(fd)
        raise Exec

    monkeypatch.setattr(os, "execvpe", execvpe)
    with pytest.raises(Exec):
        cmd_load.run_exec(_args(rest=["cat", "{}"], refusal_status=None), _ctx(site))
    assert seen["ino"] == ino and seen["offset"] == 0
    assert seen["argv"][1].startswith("/dev/fd/")
    assert (reads.calls["mmap"], reads.bytes["mmap"]) == (1, len(BIG))  # hashed once
    assert sum(reads.calls[k] for k in ("preadv", "pread", "read", "sendfile")) == 0
    assert reads.calls["memfd_create"] == 0  # nothing else read it


def test_without_the_flag_the_object_is_read_once_into_the_sealed_copy(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    ino = _ino(site)
    clear_immutable(object_path(site.h, next((site.home / "objects").rglob("?" * 64)).name))
    reads = Reads(monkeypatch, ino)
    doc = cmd_load.run_load(_args(output=Path("/dev/null")), _ctx(site))
    assert doc["copy"] == "sealed_memfd"
    assert reads.calls["memfd_create"] == 1
    assert reads.bytes["sendfile"] == len(BIG)  # into the copy; the hash reads the copy
    assert reads.bytes["preadv"] == reads.calls["pread"] == reads.calls["read"] == 0
    assert reads.calls["mmap"] == 0  # no head start, no mapping: the store file may change


class Exited(Exception):
    pass


def test_load_skips_the_interpreter_teardown_after_flushing(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_main = importlib.import_module("appliance.cli.main")  # the module, not main()

    codes: list[int] = []

    def _exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(os, "_exit", _exit)
    # ``entry`` keeps NumPy out (``sys.modules["numpy"] = None``): undone after this test,
    # or a later test in this worker that looks for NumPy (hypothesis does) breaks.
    monkeypatch.setitem(sys.modules, "numpy", sys.modules.get("numpy"))
    out = tmp_path / "fast.bin"
    monkeypatch.setattr(
        "sys.argv", ["appliance", "--home", str(site.home), "load", "big", "-o", str(out)]
    )
    with pytest.raises(Exited):
        cli_main.entry()
    assert codes == [0] and out.read_bytes() == BIG
    monkeypatch.setattr(
        "sys.argv", ["appliance", "--home", str(site.home), "load", "nope", "-o", str(out)]
    )
    with pytest.raises(Exited):
        cli_main.entry()
    assert codes == [0, 2]  # a refusal keeps its exit code
    monkeypatch.setattr("sys.argv", ["appliance", "--version"])
    assert cli_main.entry() == 0 and codes == [0, 2]  # other commands exit normally


def test_the_cli_load_verifies_with_the_cycle_collector_paused_then_restores_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's load parses its bundle's stored manifest (up to 100,000 entries) with
    the collector paused (``cli.context.no_cycle_collection``); a refusal restores it."""
    import gc

    import appliance.loader

    seen: list[bool] = []
    real = appliance.loader.load_from_home

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(appliance.loader, "load_from_home", spy)
    assert gc.isenabled()
    doc = cmd_load.run_load(_args(output=Path("/dev/null")), _ctx(site))
    assert doc["size"] == len(BIG) and seen == [False] and gc.isenabled()
    with pytest.raises(ApplianceError):
        cmd_load.run_load(_args(ref="nope", output=Path("/dev/null")), _ctx(site))
    assert seen == [False, False] and gc.isenabled()
