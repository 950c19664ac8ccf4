"""Issue 14: the review, artifact and keys screens show each key's root-signed label next to
its id, in the one format the CLI uses (``appliance.trust.key_text``)."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import DataTable, Static
from tui_app import make_app, sync
from tui_world import STREAM, World

from appliance.importer import apply_trust_envelope
from appliance.trust import key_text
from appliance.truststore import load_trust
from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, TrustUpdate
from bundles.dsse import sign_envelope
from bundles.timeutil import utcnow
from tui.screen_artifact import ArtifactScreen
from tui.screen_keys import KeysScreen
from tui.screen_review import ReviewScreen
from tui.widget_history import HistoryView

SIZE = (120, 40)
PUBLISHER = "alice-laptop"
ROLLBACK = "ops rollback"


def _label(world: World) -> None:
    db = world.home.db()
    try:
        state = load_trust(db)
        update = TrustUpdate(
            state.version + 1,
            utcnow() - timedelta(seconds=5),
            (
                AddKey(world.publisher.public, "publisher", STREAM, PUBLISHER),
                AddKey(world.rollback.public, "rollback", None, ROLLBACK),
            ),
        )
        env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [world.root])
        apply_trust_envelope(db, state, env, "tests")
    finally:
        db.conn.close()


def _column(table: DataTable[object], col: int) -> list[str]:
    return [str(table.get_row_at(r)[col]) for r in range(table.row_count)]


async def _settle(app: object, pilot: object) -> None:
    await app.workers.wait_for_complete()  # type: ignore[attr-defined]
    for _ in range(3):
        await pilot.pause(0.05)  # type: ignore[attr-defined]


@sync
async def test_labels_on_keys_review_and_artifact_screens(world: World) -> None:
    _label(world)
    pub = key_text(world.publisher.keyid, PUBLISHER)
    assert pub == f"{PUBLISHER} ({world.publisher.keyid[:16]})"
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await _settle(app, pilot)
        app.push_screen(KeysScreen())
        await _settle(app, pilot)
        keys = _column(app.screen.query_one("#keys", DataTable), 0)
        assert pub in keys
        assert key_text(world.rollback.keyid, ROLLBACK) in keys
        assert key_text(world.root.keyid, None) in keys  # no label: the id prefix alone

        app.pop_screen()
        app.push_screen(ReviewScreen(world.bundles["good"]))
        await _settle(app, pilot)
        assert _column(app.screen.query_one("#signatures", DataTable), 0) == [pub]

        app.pop_screen()
        app.push_screen(ArtifactScreen("llm-weights"))
        await _settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, ArtifactScreen)
        imports = [e for e in screen.events if e["type"] == "import"]
        assert imports and all(pub in e["summary"] for e in imports)
        history = screen.query_one(HistoryView)
        history._show_event(len(history.shown) - 1)  # the oldest: the first import
        await pilot.pause()
        assert pub in str(screen.query_one("#event-summary .event-detail-text", Static).render())
