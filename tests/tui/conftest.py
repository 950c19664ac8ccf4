"""Fixtures for the TUI tests: a deterministic world and an app factory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tui_world import FIXED_NOW, World, build_world, frozen_clock  # noqa: E402

from tui.app import ApplianceApp  # noqa: E402

SNAP_ROOT = Path("/tmp/appliance-tui-snapshots")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(tmp_path / "w")


@pytest.fixture
def big_world(tmp_path: Path) -> World:
    return build_world(tmp_path / "w", big=16 << 20)


@pytest.fixture
def snap_world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A world at a fixed path with a frozen clock, for screenshots."""
    base = SNAP_ROOT / request.node.name.replace("[", "-").replace("]", "")
    w = build_world(base, frozen=FIXED_NOW)
    with frozen_clock(FIXED_NOW):
        yield w


def make_app(world: World, **kw: object) -> ApplianceApp:
    app = ApplianceApp(
        world.home.root,
        [world.media],
        auto_media=False,
        poll_interval=3600.0,
        cursor_blink=False,
        **kw,  # type: ignore[arg-type]
    )
    app.clock = lambda: 0.0
    return app
