"""More screenshots at 80x24: the loader grants on the keys screen, the ASCII mode, help.

Each ``run_before`` ends when two renders 50 ms apart agree (``stable``), as in
test_tui_snapshots.py, so the SVGs hold on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from conftest import make_app
from textual.pilot import Pilot
from tui_world import STREAM, World

from appliance.importer import apply_trust_envelope
from appliance.truststore import load_trust
from bundles.documents import TRUST_PAYLOAD_TYPE, AllowLoader, TrustUpdate
from bundles.dsse import sign_envelope

Before = Callable[[Pilot[Any]], Awaitable[None]]


async def stable(pilot: Pilot[Any]) -> None:
    """Workers done, then wait until two renders 50 ms apart are the same."""
    await pilot.app.workers.wait_for_complete()
    last = ""
    for _ in range(60):
        await pilot.pause(0.05)
        shot = pilot.app.export_screenshot()
        if shot == last:
            return
        last = shot


def keys_then(*keys: str) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        for key in keys:
            await pilot.press(key)
            await stable(pilot)

    return run


def grant_loader(world: World, principal: str = "svc-infer") -> None:
    """A real root-signed trust update (v3) granting ``principal`` loads of llm-weights."""
    db = world.home.db()
    try:
        state = load_trust(db)
        update = TrustUpdate(
            state.version + 1,
            world.now,
            (AllowLoader(principal, STREAM, ("llm-weights",)),),
        )
        env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [world.root])
        apply_trust_envelope(db, state, env, "tests")
    finally:
        db.conn.close()


def test_keys_with_grant(snap_compare: Any, snap_world: World) -> None:
    grant_loader(snap_world)
    app = make_app(snap_world)
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys_then("k"))
