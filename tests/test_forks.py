"""Nothing forks beside another thread (``bundles.forks``): a forked child can inherit a
lock that no one will release, and hang in its first use of it."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from bundles.forks import fork_is_safe
from bundles.hashing import hash_paths


@pytest.fixture
def another_thread() -> Iterator[None]:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(10)


def _files(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"%d" % i * 10)
        paths.append(p)
    return paths


def test_fork_is_unsafe_beside_another_thread(another_thread: None) -> None:
    assert not fork_is_safe()


def test_hash_paths_beside_another_thread_forks_no_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, another_thread: None
) -> None:
    def no_pool(*_a: object, **_k: object) -> None:
        raise AssertionError("a process pool was forked beside another thread")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    paths = _files(tmp_path, 300)
    got = hash_paths(paths, workers=2)
    assert got == [(blake3.blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in paths]
