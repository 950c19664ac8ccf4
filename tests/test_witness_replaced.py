"""A witness replaced while it is read: an appliance write in another process, not an attack.

Appliance writes replace the witness by ``rename``. A reader that looked at the old
file and opened the new one used to refuse (``witness_unreadable``, exit 4), so a load
beside an import, or the watcher beside a rollback, could fail for no reason. It now
looks again; a name that keeps being swapped is still refused, and so is anything but a
regular file at it (``tests/conformance/test_home_links.py``:
``test_witness_replaced_is_witness_unreadable``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest_load import witnessed_site

import appliance
from appliance import safefs, witness
from bundles.errors import ApplianceError


def _swap_after_each_look(monkeypatch: pytest.MonkeyPatch, path: Path, times: int) -> list[int]:
    """After each of the first ``times`` looks at the witness's name, replace the file by
    rename (a new inode, the same bytes), as a concurrent appliance write does."""
    real = safefs.lstat_at
    swaps: list[int] = []

    def lstat_then_swap(dir_fd: int, name: str) -> os.stat_result | None:
        st = real(dir_fd, name)
        if name == path.name and len(swaps) < times:
            tmp = path.with_name(f".{path.name}.new")
            tmp.write_bytes(path.read_bytes())
            os.replace(tmp, path)
            swaps.append(st.st_ino if st else 0)
        return st

    monkeypatch.setattr(safefs, "lstat_at", lstat_then_swap)
    return swaps


def test_a_witness_replaced_between_the_look_and_the_open_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, wit = witnessed_site(tmp_path)
    before = witness.read(wit)
    swaps = _swap_after_each_look(monkeypatch, wit, times=3)
    assert witness.read(wit) == before
    assert len(swaps) == 3  # three swapped opens, the fourth look read it


def test_a_witness_swapped_at_every_look_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, wit = witnessed_site(tmp_path)
    swaps = _swap_after_each_look(monkeypatch, wit, times=1000)
    with pytest.raises(ApplianceError) as info:
        witness.read(wit)
    assert info.value.code == "witness_unreadable"
    assert "swapped while opened" in info.value.message
    assert len(swaps) == witness.SWAP_RETRIES


REPLACER = """
import os, sys, time
path, go, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
tmp = path + ".replacer"
while not os.path.exists(go):
    time.sleep(0.001)
for _ in range(count):
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
"""


def _beside_a_replacer(
    path: Path, tmp: Path, count: int, once: Callable[[], None], at_least: int
) -> list[str]:
    """Call ``once`` over and over while another process replaces ``path`` by rename
    ``count`` times, and at least ``at_least`` times; the refusals it met.

    The replacer starts its loop only when the calls start, and the calls go on for as
    long as it replaces, so every replacement happens beside them whatever the machine's
    speed (a fixed number of calls beside a free-running replacer measured 435
    replacements on a slow CI machine, too few).
    """
    go = tmp / "go"
    proc = subprocess.Popen([sys.executable, "-c", REPLACER, str(path), str(go), str(count)])
    failures: list[str] = []
    calls = 0
    try:
        go.touch()
        while proc.poll() is None or calls < at_least:
            try:
                once()
            except ApplianceError as e:
                failures.append(f"{e.code}: {e.message}")
            calls += 1
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    return failures


def test_loads_beside_a_process_replacing_the_witness_all_succeed(tmp_path: Path) -> None:
    site, wit = witnessed_site(tmp_path)

    def load() -> None:
        with appliance.load("model", home=site.h, witness=wit) as art:
            assert art.size == 3

    assert _beside_a_replacer(wit, tmp_path, 3000, load, at_least=50) == []


def test_reads_beside_a_process_replacing_the_witness_never_refuse(tmp_path: Path) -> None:
    site, wit = witnessed_site(tmp_path)
    expected = witness.read(wit)

    def read() -> None:
        assert witness.read(wit) == expected

    assert _beside_a_replacer(wit, tmp_path, 20000, read, at_least=1000) == []
