"""Each change to a stored object raises its alarm within 2 s, and only that alarm."""

from __future__ import annotations

import os
import time
from pathlib import Path

from watch_world import DEADLINE, MARGIN, Watched, make_writable


def _assert_only(w: Watched, code: str, since: float) -> float:
    alarm, took = w.wait(code, since)
    time.sleep(0.3)  # anything else it raises for the same change comes now
    assert w.codes() == {code}, w.codes()
    assert took < DEADLINE - MARGIN, f"{code} after {took:.3f}s"
    assert alarm.subject.startswith("objects/")
    return took


def test_in_place_overwrite(watched: Watched) -> None:
    obj = watched.object()
    make_writable(obj)
    t = time.monotonic()
    with open(obj, "r+b") as f:
        f.write(b"X")
    _assert_only(watched, "object_modified", t)


def test_chmod(watched: Watched) -> None:
    t = time.monotonic()
    make_writable(watched.object())
    _assert_only(watched, "object_modified", t)


def test_truncate(watched: Watched) -> None:
    obj = watched.object()
    make_writable(obj)
    t = time.monotonic()
    os.truncate(obj, 10)
    alarm, _ = watched.wait("object_modified", t)
    _assert_only(watched, "object_modified", t)


def test_rename_away(watched: Watched, tmp_path: Path) -> None:
    t = time.monotonic()
    os.rename(watched.object(), tmp_path / "stolen")
    _assert_only(watched, "object_removed", t)


def test_rename_over(watched: Watched, tmp_path: Path) -> None:
    obj = watched.object()
    evil = tmp_path / "evil"
    evil.write_bytes(b"bad " * 1000)  # same size, other bytes
    os.chmod(evil, 0o444)
    t = time.monotonic()
    os.rename(evil, obj)
    _assert_only(watched, "object_replaced", t)


def test_delete(watched: Watched) -> None:
    t = time.monotonic()
    os.unlink(watched.object())
    _assert_only(watched, "object_removed", t)


def test_unknown_file(watched: Watched) -> None:
    t = time.monotonic()
    (watched.site.h.objects / "ab").mkdir(exist_ok=True)
    (watched.site.h.objects / "ab" / ("ab" + "0" * 62)).write_bytes(b"planted")
    _assert_only(watched, "unknown_object", t)
