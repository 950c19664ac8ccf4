"""Pilot tests at 80x24: the help screen, the artifact history (what ``appliance history``
shows, filtered) and the audit detail pane (every field, scrollable).

The extra world content is made here through the public API and the CLI (the conformance
driver): refused imports that name an artifact, a flood of load events, a rollback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_tui_home_items import quiet
from test_tui_snapshots import settle
from test_tui_snapshots_help import long_bundle, naming_bundles
from test_tui_snapshots_more import screen_text
from textual.binding import Binding
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Static
from tui_app import make_app, stable, sync
from tui_world import World

from appliance.loader import load_from_db
from tui import fmt
from tui.app import ApplianceApp
from tui.screen_artifact import ArtifactScreen
from tui.screen_audit import AuditScreen
from tui.screen_confirm import ConfirmScreen
from tui.screen_help import HelpScreen
from tui.screen_import import ImportScreen
from tui.screen_inventory import InventoryScreen
from tui.screen_keys import KeysScreen
from tui.screen_review import ReviewScreen
from tui.screen_rollback import RollbackScreen
from tui.widget_event import EventDetail
from tui.widget_history import HistoryView

sys.path.insert(0, str(Path(__file__).parents[1]))
from conformance.driver import cli, ok

SIZE = (80, 24)


# --- help ----------------------------------------------------------------------------

Opener = Callable[[ApplianceApp, World], Screen[Any]]

SCREENS: list[tuple[str, Opener | None]] = [
    ("home", None),
    ("review", lambda app, w: ReviewScreen(w.bundles["good"])),
    ("inventory", lambda app, w: InventoryScreen()),
    ("artifact", lambda app, w: ArtifactScreen("llm-weights")),
    ("rollback", lambda app, w: RollbackScreen("llm-weights")),
    ("audit", lambda app, w: AuditScreen()),
    ("keys", lambda app, w: KeysScreen()),
    ("confirm", lambda app, w: ConfirmScreen("Roll back?")),
]


TITLES = {
    "home": "Home",
    "review": "Review bundle",
    "inventory": "Inventory",
    "artifact": "Artifact",
    "rollback": "Rollback",
    "audit": "Audit log",
    "keys": "Keys and roles",
    "confirm": "Confirm",
}


@sync
async def test_help_opens_on_every_screen(world: World) -> None:
    """``?`` and F1 open the help over every screen; it lists that screen's bindings (each
    enabled one, by its description and key) and the app's; Esc closes it."""
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await quiet(pilot)
        for i, (label, opener) in enumerate(SCREENS):
            if opener is not None:
                app.push_screen(opener(app, world))
                await quiet(pilot)
            under = app.screen
            # the rollback screen's path field takes "?" as text: F1 opens help there
            key = "f1" if i % 2 or label == "rollback" else "question_mark"
            await pilot.press(key)
            await pilot.pause()
            help_ = app.screen
            assert isinstance(help_, HelpScreen), (label, key)
            rows = {(k.key, k.description, k.everywhere) for k in help_.keys}
            own = [
                b
                for b in Binding.make_bindings(type(under).BINDINGS)
                if under.check_action(b.action, ()) is not False
            ]
            assert own, label
            for b in own:  # every key listed, with its action's (first) description
                described = next(o.description for o in own if o.action == b.action)
                assert any(
                    row[1] == described and app.get_key_display(b) in row[0].split(" / ")
                    for row in rows
                ), (label, b, rows)
            everywhere = {row[1] for row in rows if row[2]}
            if label != "confirm":  # a modal screen hides the app's keys (help is its own)
                assert {"Help", "Light/Dark"} <= everywhere, label
            assert help_.screen_title == TITLES[label], label
            shown = str(help_.query_one("#help-keys", Static).render())
            assert all(row[1] in shown for row in rows), label
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is under, label
            if opener is not None:
                app.pop_screen()
                await quiet(pilot)


@sync
async def test_help_follows_what_is_enabled(world: World) -> None:
    """The list is the live bindings: on a finished import "Cancel" is gone (its
    ``check_action`` says no), while it runs it is there; ``?`` again closes the help."""
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(ReviewScreen(world.bundles["good"]))
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)
        assert isinstance(app.screen, ImportScreen) and not app.screen.running
        await pilot.press("question_mark")
        await stable(pilot)
        assert isinstance(app.screen, HelpScreen)
        described = [k.description for k in app.screen.keys]
        assert "Back" in described and "Cancel" not in described
        await pilot.press("question_mark")
        await stable(pilot)
        assert isinstance(app.screen, ImportScreen)


# --- the artifact history -----------------------------------------------------------------


def refused_imports(world: World) -> None:
    """Two refused imports whose manifests name llm-weights, through the CLI: one for
    another site (signature verified) and one signed by a key nobody trusts."""
    site_b, stranger = naming_bundles(world)
    assert cli(world.home.root, "import", site_b).code == "wrong_site"
    assert cli(world.home.root, "import", stranger).code == "unknown_key"


def history_rows(app: ApplianceApp) -> list[list[str]]:
    table = app.screen.query_one("#history", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_artifact(pilot: Pilot[Any], name: str) -> HistoryView:
    await settle(pilot)
    pilot.app.push_screen(ArtifactScreen(name))
    await settle(pilot)
    return pilot.app.screen.query_one(HistoryView)


@sync
async def test_history_shows_what_appliance_history_shows(world: World) -> None:
    """Refused imports that only named the artifact are in the TUI's history, marked
    authenticated or not, in the same order as ``appliance history --json``."""
    refused_imports(world)
    cli_events = ok(cli(world.home.root, "history", "llm-weights"))["events"]
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_artifact(pilot, "llm-weights")
        rows = history_rows(app)
    assert [r[0] for r in rows] == [str(e["seq"]) for e in reversed(cli_events)]
    assert rows[0][2:] == ["import", "3.0 (claimed)", "rejected unauth."]
    assert rows[1][2:] == ["import", "2.0 (claimed)", "rejected"]
    assert [e["authenticated"] for e in cli_events[-2:]] == [True, False]


@sync
async def test_history_marks_events_after_a_chain_break(world: World) -> None:
    """An altered audit event: it and every later one are marked UNVERIFIED, as the CLI
    marks them (``verified`` false); the earlier ones are not."""
    db = world.home.db()
    seqs = [r[0] for r in db.execute("SELECT seq FROM audit WHERE name = 'llm-weights'")]
    db.execute("UPDATE audit SET detail = '{}' WHERE seq = ?", [seqs[-1]])
    db.conn.commit()
    db.conn.close()
    cli_events = ok(cli(world.home.root, "history", "llm-weights"))["events"]
    assert [e["verified"] for e in cli_events] == [True, False]
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_artifact(pilot, "llm-weights")
        rows = history_rows(app)
        assert "UNVERIFIED: after a break in the audit chain" in screen_text(pilot)
    assert [r[4].endswith("UNVERIFIED") for r in rows] == [True, False]


def flood(world: World, name: str, n: int) -> None:
    """``n`` verified loads of ``name`` (the loader's own API, as a service would)."""
    db = world.home.db()
    try:
        for _ in range(n):
            load_from_db(world.home, db, name).close()
    finally:
        db.conn.close()


@sync
async def test_history_filter_narrows_a_flood_of_loads(world: World) -> None:
    """500 loads and a rollback: ``f`` narrows the history to what the core returned
    without the loads, then to the imports and rollbacks, then to the refusals; the
    title says which filter is on and how many events it shows of how many."""
    flood(world, "llm-weights", 500)
    ok(cli(world.home.root, "rollback", "llm-weights", "--authorization", world.auths["valid"]))
    refused_imports(world)
    events = ok(cli(world.home.root, "history", "llm-weights"))["events"]
    total = len(events)
    assert total == 2 + 500 + 1 + 2
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_artifact(pilot, "llm-weights")
        assert len(history_rows(app)) == total
        heading = view.query_one("#history-title", Static)
        assert f"{total} events" in str(heading.render())
        shown: dict[str, list[str]] = {}
        for label in ("without loads", "imports and rollbacks", "refusals"):
            await pilot.press("f")
            await pilot.pause()
            shown[label] = [r[0] for r in history_rows(app)]
            assert f"{label}: {len(shown[label])} of {total} events" in str(heading.render())
        await pilot.press("f")
        await pilot.pause()
        assert view.filter == 0 and len(history_rows(app)) == total

    def seqs(keep: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [str(e["seq"]) for e in reversed(events) if keep(e)]

    assert shown["without loads"] == seqs(lambda e: e["type"] != "load")
    assert len(shown["without loads"]) == 5
    assert shown["imports and rollbacks"] == seqs(lambda e: e["type"] in ("import", "rollback"))
    assert len(shown["imports and rollbacks"]) == 5  # 2 accepted, 2 refused imports, 1 rollback
    assert shown["refusals"] == seqs(lambda e: e["outcome"] == "rejected")
    assert len(shown["refusals"]) == 2


# --- the audit detail pane ---------------------------------------------------------------


@sync
async def test_audit_detail_shows_the_whole_event_by_scrolling(world: World) -> None:
    """An event whose detail is far longer than the pane: its first field shows, its last
    field is off the pane until the pane is scrolled, then it shows; nothing is cut."""
    assert cli(world.home.root, "import", long_bundle(world)).code == "wrong_site"
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        event = screen.events_log.events[-1]
        assert event["outcome"] == "rejected" and len(str(event["detail"])) > 1500
        fields = fmt.event_fields(event, detail_first=True)
        last = f"{fields[-1][0]}: {fields[-1][1]}"
        pane = screen.query_one("#event-detail", EventDetail)
        assert pane.max_scroll_y > 0  # longer than the pane
        assert "detail.artifact_count: 31" in screen_text(pilot)
        assert last not in screen_text(pilot)
        pane.focus()
        await pilot.press("end")
        await stable(pilot)
        assert pane.scroll_y == pane.max_scroll_y
        assert last in screen_text(pilot) and "detail.artifact_count" not in screen_text(pilot)
