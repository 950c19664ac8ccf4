"""Pilot tests of the operator flows at 80x24: import, refusals, cancel, rollback, media."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static
from tui_app import make_app, sync
from tui_world import World, data

from appliance.store import records
from tui.app import ApplianceApp
from tui.screen_artifact import ArtifactScreen
from tui.screen_confirm import ConfirmScreen
from tui.screen_home import HomeScreen
from tui.screen_import import ImportScreen
from tui.screen_inventory import InventoryScreen
from tui.screen_review import ReviewScreen
from tui.screen_rollback import RollbackScreen

SIZE = (80, 24)


def state(world: World) -> dict[str, Any]:
    """Everything an import or rollback could change."""
    db = world.home.db()
    try:
        return {
            "records": [r.to_dict() for r in records(db)],
            "streams": db.execute("SELECT * FROM streams").fetchall(),
            "used": db.execute("SELECT id FROM used_authorizations").fetchall(),
            "objects": sorted(p.name for p in world.home.objects.rglob("*") if p.is_file()),
            "staging": sorted(os.listdir(world.home.staging)),
        }
    finally:
        db.conn.close()


def text(app: ApplianceApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(app: ApplianceApp, pilot: Any) -> None:
    """Workers done and their last messages handled (an import screen shows its result)."""
    await app.workers.wait_for_complete()
    for _ in range(200):
        await pilot.pause()
        if not getattr(app.screen, "running", False):
            break
        await pilot.pause(0.02)
    await pilot.pause(0.05)  # a table shown with the result is laid out on the next refresh
    await pilot.pause()


async def open_review(app: ApplianceApp, pilot: Any, bundle: Path) -> ReviewScreen:
    """From Home, move the cursor to ``bundle`` and press Enter."""
    await settle(app, pilot)
    home = app.screen
    assert isinstance(home, HomeScreen)
    row = home._bundle_paths.index(bundle)
    home.query_one("#bundles", DataTable).move_cursor(row=row)
    await pilot.press("enter")
    await settle(app, pilot)
    assert isinstance(app.screen, ReviewScreen)
    return app.screen


@sync
async def test_good_import(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(app, pilot, world.bundles["good"])
        assert review.review is not None and review.review.allowed
        assert "ALLOWED BY POLICY" in text(app, "#verdict")
        facts = text(app, "#facts")
        assert "models #3, installed #2: newer" in facts
        assert "1 of 1 publisher:models: met" in facts
        await pilot.press("i")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ImportScreen)
        assert screen.finished is not None and screen.finished.result is not None
        assert "IMPORTED" in text(app, "#import-result")
        assert [result for _, result, _ in screen.results] == ["pass"] * 3
        assert "stored, active" in text(app, "#import-results")
        await pilot.press("escape")
        assert isinstance(app.screen, HomeScreen)
    active = {r.name: r.version for r in records(world.home.db()) if r.active}
    assert active == {"llm-weights": "1.2", "tokenizer": "1.1", "config": "1.0"}


@pytest.mark.parametrize(
    ("bundle", "code", "words"),
    [
        ("replay", "sequence_replayed", "already imported"),
        ("wrong_site", "wrong_site", "another site"),
    ],
)
@sync
async def test_policy_refusal_shown_before_hashing(
    world: World, bundle: str, code: str, words: str
) -> None:
    before = state(world)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(app, pilot, world.bundles[bundle])
        assert review.review is not None and review.review.problem is not None
        assert review.review.problem.code == code
        verdict = text(app, "#verdict")
        assert "REFUSED" in verdict and words in verdict and code in verdict
        assert "no artifact was hashed" in verdict
        await pilot.press("i")  # disabled: nothing starts
        await settle(app, pilot)
        assert isinstance(app.screen, ReviewScreen)
    assert state(world) == before


@sync
async def test_tampered_artifact_fails_verification(world: World) -> None:
    before = state(world)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(app, pilot, world.bundles["tampered"])
        assert review.review is not None and review.review.allowed  # unknowable before hashing
        await pilot.press("i")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ImportScreen)
        assert screen.finished is not None and screen.finished.problem is not None
        assert screen.finished.problem.code == "digest_mismatch"
        result = text(app, "#import-result")
        assert "REFUSED" in result and "tampered" in result and "unchanged" in result
        assert screen.results == [("config@3.0", "FAIL", "digest_mismatch (see above)")]
    assert state(world) == before


@sync
async def test_cancel_during_verification_leaves_store_unchanged(big_world: World) -> None:
    world = big_world
    before = state(world)
    started, release = threading.Event(), threading.Event()

    def hook(name: str, done: int, size: int) -> None:
        started.set()
        release.wait(10)  # hold the hashing thread until the operator has pressed cancel

    app = make_app(world)
    app.progress_hook = hook
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.push_screen(ReviewScreen(world.bundles["big"]))
        await settle(app, pilot)
        await pilot.press("i")
        for _ in range(200):
            if started.is_set():
                break
            await asyncio.sleep(0.02)
        assert started.is_set()
        screen = app.screen
        assert isinstance(screen, ImportScreen) and screen.running
        await pilot.press("c")
        assert screen.cancel.is_set()
        release.set()
        await settle(app, pilot)
        assert screen.finished is not None and screen.finished.problem is not None
        assert screen.finished.problem.code == "cancelled"
        assert "CANCELLED" in text(app, "#import-result")
    assert state(world) == before


@sync
async def test_ui_stays_responsive_while_hashing(big_world: World) -> None:
    """Key presses are handled while the import thread is busy."""
    release = threading.Event()

    def hook(name: str, done: int, size: int) -> None:
        release.wait(10)

    app = make_app(big_world)
    app.progress_hook = hook
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.push_screen(ReviewScreen(big_world.bundles["big"]))
        await settle(app, pilot)
        await pilot.press("i")
        await pilot.press("f2")  # theme switch, handled while the worker waits
        assert app.theme == "textual-light"
        release.set()
        await settle(app, pilot)


async def rollback_screen(app: ApplianceApp, pilot: Any, auth: Path) -> RollbackScreen:
    await settle(app, pilot)
    app.push_screen(InventoryScreen())
    await settle(app, pilot)
    app.push_screen(ArtifactScreen("llm-weights"))
    await settle(app, pilot)
    await pilot.press("b")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, RollbackScreen)
    field = screen.query_one("#auth-path", Input)
    field.value = str(auth)
    field.focus()
    await pilot.press("enter")
    await settle(app, pilot)
    return screen


@sync
async def test_rollback_with_valid_authorization(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        screen = await rollback_screen(app, pilot, world.auths["valid"])
        assert screen.preview is not None and screen.preview.valid
        preview = text(app, "#rb-preview")
        assert "VALID" in preview and "llm-weights -> 1.0" in preview
        assert "1.1 regressed" in preview
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        assert "ROLLED BACK" in text(app, "#rb-result")
    active = {r.name: r.version for r in records(world.home.db()) if r.active}
    assert active["llm-weights"] == "1.0"


@sync
async def test_rollback_declined_changes_nothing(world: World) -> None:
    before = state(world)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await rollback_screen(app, pilot, world.auths["valid"])
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("n")
        await settle(app, pilot)
        assert "Not rolled back" in text(app, "#rb-result")
    assert state(world) == before


@sync
async def test_rollback_with_invalid_authorization(world: World) -> None:
    before = state(world)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        screen = await rollback_screen(app, pilot, world.auths["publisher"])
        assert screen.preview is not None and not screen.preview.valid
        assert screen.preview.problem is not None
        assert screen.preview.problem.code == "key_not_authorized"
        preview = text(app, "#rb-preview")
        assert "NOT VALID" in preview and "rollback key" in preview
        await pilot.press("ctrl+r")  # disabled: no confirmation, nothing applied
        await pilot.pause()
        assert isinstance(app.screen, RollbackScreen)
    assert state(world) == before


@sync
async def test_new_media_appears_without_restart(world: World, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    app = ApplianceApp(
        world.home.root, [usb], auto_media=False, poll_interval=0.1, cursor_blink=False
    )
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):  # the first poll's answer (a spawned scanner starts slower)
            await pilot.pause(0.05)
            if "No bundles" in text(app, "#no-media"):
                break
        home = app.screen
        assert isinstance(home, HomeScreen) and home._bundle_paths == []
        assert "No bundles" in text(app, "#no-media")
        world.make_bundle(usb / "hotplugged", {"config@7.0": data("cfg7", 100)}, 7)
        for _ in range(50):
            await pilot.pause(0.1)
            if home._bundle_paths:
                break
        assert home._bundle_paths == [usb / "hotplugged"]


@sync
async def test_command_palette_opens_screens(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Inventory")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, InventoryScreen)


def test_every_binding_has_an_id() -> None:
    from tui import (
        screen_artifact,
        screen_audit,
        screen_confirm,
        screen_help,
        screen_home,
        screen_import,
        screen_inventory,
        screen_keys,
        screen_review,
        screen_rollback,
    )

    classes: list[Any] = [
        ApplianceApp,
        screen_home.HomeScreen,
        screen_review.ReviewScreen,
        screen_import.ImportScreen,
        screen_inventory.InventoryScreen,
        screen_artifact.ArtifactScreen,
        screen_rollback.RollbackScreen,
        screen_audit.AuditScreen,
        screen_keys.KeysScreen,
        screen_confirm.ConfirmScreen,
        screen_help.HelpScreen,
    ]
    for cls in classes:
        for b in cls.BINDINGS:
            assert b.id, (cls.__name__, b.key)


def test_cli_does_not_import_textual() -> None:
    code = (
        "import sys, appliance.cli.main, appliance.cli.cmd_tui; "
        "assert 'textual' not in sys.modules and 'tui' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@sync
async def test_media_swapped_after_review_is_not_imported(world: World) -> None:
    """The operator reviewed one bundle; before 'i', the stick now holds another bundle,
    validly signed and importable on its own. The import takes only what was reviewed
    (the core's bundle identity): media_changed, nothing stored, nothing activated."""
    other = world.make_bundle(
        world.base / "elsewhere" / "models-6", {"config@6.0": data("cfg6", 700)}, 6
    )
    before = state(world)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(app, pilot, world.bundles["good"])
        assert review.review is not None and review.review.allowed
        assert review.review.identity is not None
        target = world.bundles["good"]
        shutil.rmtree(target)
        shutil.copytree(other, target)
        await pilot.press("i")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ImportScreen)
        assert screen.finished is not None and screen.finished.problem is not None
        assert screen.finished.problem.code == "media_changed"
        result = text(app, "#import-result")
        assert "media_changed" in result and "not the bundle that was reviewed" in result
    assert state(world) == before
