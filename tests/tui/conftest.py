"""Fixtures for the TUI tests: a deterministic world and an app factory."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_world import FIXED_NOW, World, build_world, frozen_clock

from tui.app import ApplianceApp

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


async def stable(pilot: Pilot[Any]) -> None:
    """Workers done, then wait until four renders 50 ms apart are the same.

    A table filled with a result sizes its columns on a later refresh, and a moved cursor
    repaints on the next one: on a loaded machine one pause is not enough.
    """
    await pilot.app.workers.wait_for_complete()
    last, same = "", 0
    for _ in range(80):
        for table in pilot.app.screen.query(DataTable):
            # Textual can keep a header line drawn before the idle pass that measured
            # the rows (cached under the same update count: a narrow header above wide
            # rows; seen about once in 200 shots under load). Snapshots compare what is
            # settled, so each shot is drawn from empty render caches.
            table._clear_caches()
            table.refresh()
        await pilot.pause(0.05)
        shot = pilot.app.export_screenshot()
        same = same + 1 if shot == last else 0
        if same == 3:  # unchanged over 150 ms: a loaded machine can delay one refresh
            return
        last = shot


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


def sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with ``asyncio.run`` (no async plugin is installed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper
