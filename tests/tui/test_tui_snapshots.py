"""Screenshots of the main screens at 80x24 and 120x40 (pytest-textual-snapshot).

The world is deterministic (seeded keys, fixed bytes, a frozen clock, fixed
paths), the cursor does not blink and the import screen's clock is stopped, so
the SVGs only change when the UI does. Update with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_tui_home_items import restore_behind_witness
from textual.pilot import Pilot
from textual.widgets import DataTable, Input
from tui_app import make_app, stable
from tui_world import World

from tui.screen_artifact import ArtifactScreen
from tui.screen_review import ReviewScreen
from tui.screen_rollback import RollbackScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
Before = Callable[[Pilot[Any]], Awaitable[None]]


async def settle(pilot: Pilot[Any]) -> None:
    """Workers done and their last messages handled (an import screen shows its result)."""
    await pilot.app.workers.wait_for_complete()
    for _ in range(200):
        await pilot.pause()
        if not getattr(pilot.app.screen, "running", False):
            break
        await pilot.pause(0.02)
    await stable(pilot)


def review(world: World, bundle: str, then: tuple[str, ...] = ()) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.push_screen(ReviewScreen(world.bundles[bundle]))
        await settle(pilot)
        if then:
            await pilot.press(*then)
            await settle(pilot)

    return run


def home(world: World) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.screen.query_one("#bundles", DataTable).move_cursor(row=1)
        await stable(pilot)

    return run


def screen(keys: tuple[str, ...]) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return run


def artifact(world: World) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.push_screen(ArtifactScreen("llm-weights"))
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)

    return run


def rollback(world: World, auth: str, confirm: bool = False) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        pilot.app.push_screen(RollbackScreen("llm-weights"))
        await settle(pilot)
        field = pilot.app.screen.query_one("#auth-path", Input)
        field.value = str(world.auths[auth])
        await pilot.press("enter")
        await settle(pilot)
        if confirm:
            await pilot.press("ctrl+r")
            await stable(pilot)

    return run


@pytest.mark.parametrize("size", SIZES)
def test_home(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=home(snap_world))


@pytest.mark.parametrize("size", SIZES)
def test_review_allowed(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    before = review(snap_world, "good")
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_review_refused(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    before = review(snap_world, "wrong_site")
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_import_done(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    before = review(snap_world, "good", then=("i",))
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=before)


def test_import_tampered(snap_compare: Any, snap_world: World) -> None:
    before = review(snap_world, "tampered", then=("i",))
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_inventory(snap_compare: Any, snap_world: World) -> None:
    before = screen(("i",))
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_artifact(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    before = artifact(snap_world)
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_rollback_valid(snap_compare: Any, snap_world: World, size: tuple[int, int]) -> None:
    before = rollback(snap_world, "valid")
    assert snap_compare(make_app(snap_world), terminal_size=size, run_before=before)


def test_rollback_invalid(snap_compare: Any, snap_world: World) -> None:
    before = rollback(snap_world, "publisher")
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_rollback_confirm(snap_compare: Any, snap_world: World) -> None:
    before = rollback(snap_world, "valid", confirm=True)
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_audit(snap_compare: Any, snap_world: World) -> None:
    before = screen(("a",))
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_keys(snap_compare: Any, snap_world: World) -> None:
    before = screen(("k",))
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_home_light_theme(snap_compare: Any, snap_world: World) -> None:
    before = screen(("f2",))
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)


def test_home_behind_witness(snap_compare: Any, snap_world: World) -> None:
    """A home older than its witness (restored from a backup): what happened, what to do."""
    path = restore_behind_witness(snap_world)
    app = make_app(snap_world, witness=path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=screen(()))
