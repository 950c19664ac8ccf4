"""Home shows unacknowledged alarms first; acknowledging one there is the audit event."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conftest_load import Site

from appliance.store import find, object_path
from appliance.watch import Watcher, unacknowledged
from tui.app import ApplianceApp
from tui.widget_alarms import AlarmsPanel


def _raise_one(site: Site) -> int:
    db = site.h.db()
    digest = find(db, "model", "2.0").digest
    db.conn.close()
    os.unlink(object_path(site.h, digest))
    found = Watcher(site.h, site.witness, sinks=()).check_once()
    assert [a.code for a in found] == ["object_removed"]
    db = site.h.db()
    try:
        return unacknowledged(db)[0].seq
    finally:
        db.conn.close()


async def _wait(pilot: object, cond: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def _app(home: Path) -> ApplianceApp:
    app = ApplianceApp(home, [], auto_media=False, poll_interval=3600.0, cursor_blink=False)
    app.clock = lambda: 0.0
    return app


def test_no_alarm_no_panel(site: Site) -> None:
    async def go() -> None:
        app = _app(site.home)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.5)
            assert app.screen.query_one(AlarmsPanel).display is False

    asyncio.run(go())


def test_alarm_shown_first_and_acknowledged_from_the_tui(site: Site) -> None:
    seq = _raise_one(site)

    async def go() -> None:
        app = _app(site.home)
        async with app.run_test(size=(100, 30)) as pilot:
            panel = app.screen.query_one(AlarmsPanel)
            await _wait(pilot, lambda: panel.has_class("-shown") and panel.display)
            # First on Home: above the trust summary, and it has the focus.
            children = list(app.screen.children)
            assert children.index(panel) < children.index(app.screen.query_one("#trust-summary"))
            text = str(panel.query_one("#alarm-advice").render())
            assert "Re-import" in text
            row = panel.found[0]
            assert (row.seq, row.code) == (seq, "object_removed") and row.at
            await pilot.press("x")
            await _wait(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen")
            await pilot.press("y")
            await _wait(pilot, lambda: not panel.display)
        db = site.h.db()
        try:
            assert unacknowledged(db) == []
            ack = db.execute(
                "SELECT detail FROM audit WHERE type = 'alarm_ack' ORDER BY seq DESC"
            ).fetchone()
            assert f'"alarm_seq":{seq}' in ack[0]
        finally:
            db.conn.close()

    asyncio.run(go())
