"""Pilot tests at 80x24 of issue 16's home and refresh items: the status of each bundle on
media (the core's ``claimed_statuses``, not a TUI rule), bundle names in natural order, a
home behind its witness explained, and no stale verdicts after a rollback.
"""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from tui_app import make_app, sync
from tui_world import STREAM, World, data

from appliance import witness
from appliance.evaluation import claimed_statuses
from appliance.mediascan import scan
from bundles.writer import ArtifactSpec, create_bundle
from tui.screen_artifact import ArtifactScreen
from tui.screen_home import HomeScreen
from tui.screen_inventory import InventoryScreen
from tui.screen_rollback import RollbackScreen

sys.path.insert(0, str(Path(__file__).parents[1]))
from conformance.driver import cli, ok

SIZE = (80, 24)


async def quiet(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def bundle_rows(home: HomeScreen) -> list[tuple[str, str]]:
    table = home.query_one("#bundles", DataTable)
    return [
        (str(table.get_row_at(i)[0]), str(table.get_row_at(i)[1])) for i in range(table.row_count)
    ]


def expired_bundle(world: World, out: Path, sequence: int) -> Path:
    src = world.base / "src" / out.name
    src.mkdir(parents=True)
    (src / "config-8.0.bin").write_bytes(data("cfg8", 100))
    create_bundle(
        out,
        [ArtifactSpec("config", "8.0", src / "config-8.0.bin")],
        stream=STREAM,
        sequence=sequence,
        keys=[world.publisher],
        expires=world.now - timedelta(hours=1),
        any_site=True,
        issued_at=world.now - timedelta(days=2),
    )
    return out


@sync
async def test_home_marks_each_bundle_and_sorts_names_naturally(world: World) -> None:
    """new, imported, expired, other site: what the core says of each; models-10 after
    models-6 (natural order, not text order)."""
    world.make_bundle(world.media / "models-10", {"config@10.0": data("c10", 100)}, 10)
    world.make_bundle(world.media / "models-6", {"config@6.0": data("c6", 100)}, 6)
    expired_bundle(world, world.media / "models-7-expired", 7)
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        home = app.screen
        assert isinstance(home, HomeScreen)
        rows = bundle_rows(home)
        paths = [str(p) for p in home._bundle_paths]
    # The TUI's scanner keeps the parsed manifests in its own process: read them here.
    claimed = {b.path: b.claimed for m in scan([world.media]) for b in m.bundles if b.claimed}
    names = [name for name, _ in rows]
    assert names == [
        "models-2",
        "models-3",
        "models-4-site-b",
        "models-5-tampered",
        "models-6",
        "models-7-expired",
        "models-10",
    ]
    core = claimed_statuses(world.home, claimed)  # the TUI shows the core's word, as is
    assert [status for _, status in rows] == [core[p] for p in paths]
    assert dict(rows) == {
        "models-2": "imported",
        "models-3": "new",
        "models-4-site-b": "other site",
        "models-5-tampered": "new",  # unknowable before hashing: review and import say why
        "models-6": "new",
        "models-7-expired": "expired",
        "models-10": "new",
    }


def restore_behind_witness(world: World) -> Path:
    """Import the good bundle with a witness, then restore the home from a backup taken
    before: the home is older than its witness. Returns the witness file."""
    root = world.home.root
    backup = root.with_name("home-backup")
    shutil.copytree(root, backup, symlinks=True)
    world.import_(world.bundles["good"])
    path = world.base / "appliance.witness"
    db = world.home.db()
    witness.write(db, path)
    db.conn.close()
    shutil.rmtree(root)
    backup.rename(root)
    return path


@sync
async def test_home_behind_witness_says_what_it_means_and_what_to_do(world: World) -> None:
    path = restore_behind_witness(world)
    app = make_app(world, witness=path)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        summary = str(app.screen.query_one("#trust-summary", Static).render())
    assert "witness home_behind" in summary
    assert "OLDER than its witness" in summary and "appliance witness reset" in summary
    assert "import the newest signed bundle" in summary


@sync
async def test_screens_show_the_rollback_when_back(world: World) -> None:
    """A rollback (through the CLI, as another operator would, and in the TUI): the
    artifact, inventory and home screens show the new active version and the event when
    they are shown again, not what they read before."""
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        app.push_screen(InventoryScreen())
        await quiet(pilot)
        app.push_screen(ArtifactScreen("llm-weights"))
        await quiet(pilot)
        artifact = app.screen
        assert isinstance(artifact, ArtifactScreen) and artifact.active == "1.1"
        await pilot.press("v")  # verify now: a verdict about the state before the rollback
        await quiet(pilot)
        result = artifact.query_one("#verify-result", Static)
        assert "VERIFIED" in str(result.render())
        app.push_screen(RollbackScreen("llm-weights"))
        await quiet(pilot)
        ok(cli(world.home.root, "rollback", "llm-weights", "--authorization", world.auths["valid"]))
        app.pop_screen()
        await quiet(pilot)
        assert app.screen is artifact and artifact.active == "1.0"
        info = str(artifact.query_one("#artifact-info", Static).render())
        assert "active 1.0" in info
        assert "VERIFIED" not in str(result.render())  # the old verdict is gone
        history = artifact.query_one("#history", DataTable)
        assert str(history.get_row_at(0)[2]) == "rollback"
        app.pop_screen()
        await quiet(pilot)
        inventory = app.screen
        assert isinstance(inventory, InventoryScreen)
        table = inventory.query_one(DataTable)
        cells = [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        row_10 = next(c for c in cells if "llm-weights" in c and "1.0" in c)
        row_11 = next(c for c in cells if "llm-weights" in c and "1.1" in c)
        assert "active" in row_10 and "active" not in row_11
        app.pop_screen()
        await quiet(pilot)
        events = app.screen.query_one("#events", DataTable)
        assert str(events.get_row_at(0)[2]) == "rollback"


@sync
async def test_rollback_screen_rechecks_after_rolling_back(world: World) -> None:
    """After the rollback the preview is the core's again, not the one read before: the
    active version is the target now and the single-use authorization is used up."""
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        app.push_screen(RollbackScreen("llm-weights"))
        await quiet(pilot)
        screen = app.screen
        assert isinstance(screen, RollbackScreen)
        field = screen.query_one("#auth-path", Input)
        field.value = str(world.auths["valid"])
        await pilot.press("enter")
        await quiet(pilot)
        before = str(screen.query_one("#rb-preview", Static).render())
        assert "active now: 1.1" in before and screen.preview is not None
        assert screen.preview.valid
        await pilot.press("ctrl+r")
        await pilot.pause()
        await pilot.press("y")
        await quiet(pilot)
        await quiet(pilot)
        assert "ROLLED BACK" in str(screen.query_one("#rb-result", Static).render())
        after = str(screen.query_one("#rb-preview", Static).render())
        assert "active now: 1.0" in after and "AUTHORIZATION SUBMITTED" in after
        assert screen.preview is not None and not screen.preview.valid
        assert screen.preview.problem is not None
        used = screen.preview.problem.code
        await pilot.press("ctrl+r")  # nothing to confirm: the core says no now
        await pilot.pause()
        assert app.screen is screen
    assert used == "authorization_reused"


@sync
async def test_a_database_page_overwritten_outside_sqlite_is_shown_not_a_crash(
    world: World,
) -> None:
    """The audit table's root page overwritten by a writer of the home: the home screen
    says store_corrupt (the core's error) and the app goes on."""
    import sqlite3

    conn = sqlite3.connect(world.home.db_path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit'").fetchone()[0]
    conn.close()
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        with open(world.home.db_path, "r+b") as f:
            f.seek((root - 1) * page)
            f.write(b"\xa5" * page)
        home = app.screen
        assert isinstance(home, HomeScreen)
        home.refresh_data()
        await quiet(pilot)
        summary = str(home.query_one("#trust-summary", Static).render())
        assert app.is_running
    assert "Cannot read the home: [store_corrupt]" in summary, summary
