"""Screenshots at 80x24 of issue 16's TUI items: the help screen, the artifact history with
refused imports that named it and with the filter on, the audit detail pane scrolled to
the end of a long event, the import screen in the ASCII mode, the rollback screen
re-checked after rolling back.

World content beyond tests/tui/tui_world.py is made here in process (the frozen clock only
holds in this process), through the public API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_tui_snapshots_more import Before, keys_then
from textual.pilot import Pilot
from textual.widgets import Input
from tui_app import make_app, stable
from tui_world import World, seeded_key

from appliance.importer import import_bundle
from appliance.loader import load_from_db
from bundles.errors import ApplianceError
from tui.screen_artifact import ArtifactScreen
from tui.screen_review import ReviewScreen
from tui.screen_rollback import RollbackScreen
from tui.widget_event import EventDetail

SIZE = (80, 24)


def refuse(world: World, path: Path, code: str) -> None:
    try:
        import_bundle(world.home, path)
    except ApplianceError as e:
        assert e.code == code
    else:
        raise AssertionError(f"{path} imported")


def naming_bundles(world: World) -> tuple[Path, Path]:
    """Two bundles naming llm-weights that the import refuses: one for another site
    (``wrong_site``, its signature verified) and one signed by a key nobody trusts
    (``unknown_key``, unauthenticated)."""
    site_b = world.make_bundle(
        world.base / "extra" / "models-6-site-b",
        {"llm-weights@2.0": b"w20" * 50},
        6,
        sites=("site-b",),
    )
    stranger = world.make_bundle(
        world.base / "extra" / "models-7-stranger",
        {"llm-weights@3.0": b"w30" * 50},
        7,
        keys=[seeded_key(9)],
    )
    return site_b, stranger


def long_bundle(world: World) -> Path:
    """A bundle for another site listing 31 artifacts: its refusal's detail is long."""
    many = {f"artifact-with-a-long-name-{i:02d}@1.0": b"y" for i in range(30)}
    return world.make_bundle(
        world.base / "extra" / "models-8-site-b", {"config@9.0": b"c", **many}, 8, sites=("site-b",)
    )


def refused_imports(world: World) -> None:
    site_b, stranger = naming_bundles(world)
    refuse(world, site_b, "wrong_site")
    refuse(world, stranger, "unknown_key")


def to_artifact(*keys: str) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        pilot.app.push_screen(ArtifactScreen("llm-weights"))
        await stable(pilot)
        for key in keys:
            await pilot.press(key)
            await stable(pilot)

    return run


def test_help_home(snap_compare: Any, snap_world: World) -> None:
    app = make_app(snap_world)
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then("question_mark"))


def test_help_artifact(snap_compare: Any, snap_world: World) -> None:
    app = make_app(snap_world)
    assert snap_compare(app, terminal_size=SIZE, run_before=to_artifact("f1"))


def test_history_refused_imports(snap_compare: Any, snap_world: World) -> None:
    """The refused imports that named llm-weights, the newest (unauthenticated) shown."""
    refused_imports(snap_world)
    app = make_app(snap_world)
    assert snap_compare(app, terminal_size=SIZE, run_before=to_artifact())


def test_history_filtered(snap_compare: Any, snap_world: World) -> None:
    """40 loads, then the filter on "imports and rollbacks" (``f`` twice)."""
    db = snap_world.home.db()
    try:
        for _ in range(40):
            load_from_db(snap_world.home, db, "llm-weights").close()
    finally:
        db.conn.close()
    app = make_app(snap_world)
    assert snap_compare(app, terminal_size=SIZE, run_before=to_artifact("f", "f"))


def test_audit_detail_scrolled(snap_compare: Any, snap_world: World) -> None:
    """A refused import listing 30 artifacts: the pane scrolled to its last field."""
    refuse(snap_world, long_bundle(snap_world), "wrong_site")

    async def run(pilot: Pilot[Any]) -> None:
        await keys_then("a")(pilot)
        pane = pilot.app.screen.query_one("#event-detail", EventDetail)
        pane.focus()
        await pilot.press("end")
        await stable(pilot)

    assert snap_compare(make_app(snap_world), terminal_size=SIZE, run_before=run)


def test_import_done_ascii(
    snap_compare: Any, snap_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ASCII mode's progress bars (``#``), on a finished import."""
    monkeypatch.setenv("APPLIANCE_ASCII", "1")

    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        pilot.app.push_screen(ReviewScreen(snap_world.bundles["good"]))
        await stable(pilot)
        await pilot.press("i")
        for _ in range(200):
            await pilot.app.workers.wait_for_complete()
            await pilot.pause(0.02)
            if not getattr(pilot.app.screen, "running", False):
                break
        await stable(pilot)

    assert snap_compare(make_app(snap_world), terminal_size=SIZE, run_before=run)


def test_rollback_done_rechecked(snap_compare: Any, snap_world: World) -> None:
    """After the rollback: the result and the checks as the core reads them now."""

    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        pilot.app.push_screen(RollbackScreen("llm-weights"))
        await stable(pilot)
        pilot.app.screen.query_one("#auth-path", Input).value = str(snap_world.auths["valid"])
        for key in ("enter", "ctrl+r", "y"):
            await pilot.press(key)
            await stable(pilot)

    assert snap_compare(make_app(snap_world), terminal_size=SIZE, run_before=run)
