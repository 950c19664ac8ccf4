"""Fixtures for the TUI tests: a deterministic world (the app factory is in tui_app)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tui_world import FIXED_NOW, World, build_world, frozen_clock

SNAP_ROOT = Path("/tmp/appliance-tui-snapshots")


@pytest.fixture(autouse=True)
def unicode_glyphs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The glyphs do not depend on the TERM of the machine running the tests; the ASCII
    tests set ``APPLIANCE_ASCII=1`` themselves."""
    monkeypatch.setenv("APPLIANCE_ASCII", "0")


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world") / "template")


@pytest.fixture(scope="session")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("big") / "template", big=16 << 20)


@pytest.fixture
def world(tmp_path: Path, world_template: World) -> World:
    """A fresh copy of the world (real clock: its bundles expire in 30 days)."""
    return world_template.copy_to(tmp_path / "w")


@pytest.fixture
def big_world(tmp_path: Path, big_template: World) -> World:
    return big_template.copy_to(tmp_path / "w")


@pytest.fixture(scope="session")
def snap_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("snap") / "template", frozen=FIXED_NOW)


@pytest.fixture
def snap_world(request: pytest.FixtureRequest, snap_template: World) -> Iterator[World]:
    """A copy of the frozen world at a fixed path (per test), for stable screenshots."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("test_", "")
    w = snap_template.copy_to(SNAP_ROOT / name)
    with frozen_clock(FIXED_NOW):
        yield w
