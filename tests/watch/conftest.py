"""Fixtures: a site with ``model`` 1.0 and 2.0 and ``tool`` 1.0 (witness on), and a running
watcher over it (``watch_world.start``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_load import Site, make_site
from watch_world import Watched, start


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path, witness=True)
    s.ship({"model@1.0": b"one " * 1000, "tool@1.0": b"tool " * 300})
    s.ship({"model@2.0": b"two " * 1000})
    return s


@pytest.fixture
def watched(site: Site) -> Iterator[Watched]:
    w = start(site)
    try:
        yield w
    finally:
        w.stop.set()
        w.thread.join(timeout=30)
        assert not w.thread.is_alive()
