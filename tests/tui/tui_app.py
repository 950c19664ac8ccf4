"""What the TUI tests share besides fixtures: the app factory, ``stable`` and ``sync``.

Kept out of ``conftest.py`` so that test modules import it by a name no other test folder
uses (``tests/watch`` has a ``conftest`` module too).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_world import World

from tui.app import ApplianceApp


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
