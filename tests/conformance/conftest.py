"""Fixtures: one prepared site per worker (built through the real CLI), copied per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from .driver import Site, build_site, copy_home


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def wsite(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The same site with a state witness configured."""
    return build_site(tmp_path_factory.mktemp("wsite"), witness=True)


@pytest.fixture
def home(site: Site, tmp_path: Path) -> Path:
    return copy_home(site.home, tmp_path / "home")
