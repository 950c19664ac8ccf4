"""Verify-then-swap: a writer races loads; every load gets the signed bytes or is refused.

Another process rewrites the store object in a tight loop, three ways: in
place through a writable re-open after a chmod (flip bytes, then put them
back), replace by rename (a bad file renamed over the object, then the good
one), and truncate-and-grow. Meanwhile this process loads the artifact again
and again. Every load must return bytes equal to the signed bytes or raise
``ObjectTamperedError``; never other bytes. Both copy kinds are raced (the
sealed memfd and the unnamed-file fallback above the RAM cap).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest_load import Site, make_site

import appliance
from appliance.errors import ObjectTamperedError
from appliance.store import find, object_path

SIGNED = bytes(range(256)) * 1024  # 256 KiB: long enough for copies to interleave with writes
RACE_SECONDS = 1.5

ATTACKER = r"""
import os, sys, time
path, mode, stop = sys.argv[1], sys.argv[2], sys.argv[3]
good = open(path, "rb").read()
bad = bytearray(good); bad[len(bad) // 2] ^= 0xFF; bad[7] ^= 1; bad = bytes(bad)
tmp = path + ".evil"
n = 0
while not os.path.exists(stop):
    if mode == "inplace":
        os.chmod(path, 0o644)
        with open(path, "r+b", buffering=0) as f:
            f.seek(len(good) // 2); f.write(bad[len(good) // 2 : len(good) // 2 + 1])
            f.seek(7); f.write(bad[7:8])
            f.seek(len(good) // 2); f.write(good[len(good) // 2 : len(good) // 2 + 1])
            f.seek(7); f.write(good[7:8])
    elif mode == "rename":
        for data in (bad, good):
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
    elif mode == "truncate":
        os.chmod(path, 0o644)
        with open(path, "r+b", buffering=0) as f:
            f.truncate(len(good) // 3)
            f.seek(0, 2); f.write(good[len(good) // 3 :] + b"tail")
            f.truncate(len(good))
    n += 1
with open(path, "wb") if mode != "rename" else open(tmp, "wb") as f:
    f.write(good)
if mode == "rename":
    os.replace(tmp, path)
os.chmod(path, 0o444)
print(n)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    s = make_site(tmp_path_factory.mktemp("toctou"))
    s.ship({"model@1.0": SIGNED})
    return s


@pytest.mark.parametrize("copy", ["sealed", "unnamed"])
@pytest.mark.parametrize("mode", ["inplace", "rename", "truncate"])
def test_racing_writer_never_gets_other_bytes(
    site: Site, mode: str, copy: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if copy == "unnamed":
        monkeypatch.setenv("APPLIANCE_SEAL_MAX", "0")
    db = site.h.db()
    path = object_path(site.h, find(db, "model", "1.0").digest)
    db.conn.close()
    stop = tmp_path / "stop"
    attacker = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, str(path), mode, str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    good = tampered = 0
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            try:
                with appliance.load("model", home=site.home, record=False) as art:
                    data = art.read()
                    again = os.pread(art.fd, len(SIGNED) + 1, 0)  # still the same bytes later
            except ObjectTamperedError:
                tampered += 1
                continue
            assert data == SIGNED, "a load handed over bytes that are not the signed bytes"
            assert again == SIGNED
            good += 1
    finally:
        stop.touch()
        out, _ = attacker.communicate(timeout=30)
    rounds = int(out.strip())
    print(
        f"{mode}/{copy}: {good + tampered} loads ({good} verified, {tampered} refused), "
        f"{rounds} attacker rounds"
    )
    assert attacker.returncode == 0
    assert tampered > 0 and rounds > 0, "the race never hit: the test proves nothing"
    with appliance.load("model", home=site.home, record=False) as art:  # restored: loads again
        assert art.read() == SIGNED


def test_handed_over_copy_survives_later_tampering(site: Site) -> None:
    """Once held, the descriptor's bytes do not change when the store file does."""
    db = site.h.db()
    path = object_path(site.h, find(db, "model", "1.0").digest)
    db.conn.close()
    with appliance.load("model", home=site.home, record=False) as art:
        os.chmod(path, 0o644)
        try:
            with open(path, "r+b") as f:
                f.write(b"\xff" * 64)
            assert art.read() == SIGNED
        finally:
            with open(path, "r+b") as f:
                f.write(SIGNED[:64])
            os.chmod(path, 0o444)
