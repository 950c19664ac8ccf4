"""More screenshots at 80x24: the loader grants on the keys screen, the ASCII mode, help.

Each ``run_before`` ends when two renders 50 ms apart agree (``stable``), as in
test_tui_snapshots.py, so the SVGs hold on a loaded machine.
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_app import make_app, stable, sync
from tui_world import STREAM, World

from appliance.importer import apply_trust_envelope
from appliance.truststore import load_trust
from bundles.documents import TRUST_PAYLOAD_TYPE, AllowLoader, TrustUpdate
from bundles.dsse import sign_envelope
from tui.messages import ImportProgress
from tui.screen_artifact import ArtifactScreen
from tui.screen_review import ReviewScreen

Before = Callable[[Pilot[Any]], Awaitable[None]]


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


def screen_text(pilot: Pilot[Any]) -> str:
    """The text of the exported screen (the SVG's text runs, one line per row)."""
    svg = pilot.app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m[2]), []).append((float(m[1]), html.unescape(m[3])))
    text = "\n".join("".join(t for _, t in sorted(r)) for _, r in sorted(rows.items()))
    return text.replace("\xa0", " ")  # the SVG's spaces


def non_ascii(text: str) -> list[str]:
    return sorted({c for c in text if ord(c) > 0x7F})


def to_review(world: World, bundle: str) -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        pilot.app.push_screen(ReviewScreen(world.bundles[bundle]))
        await stable(pilot)

    return run


def to_artifact() -> Before:
    async def run(pilot: Pilot[Any]) -> None:
        await stable(pilot)
        pilot.app.push_screen(ArtifactScreen("llm-weights"))
        await stable(pilot)
        await pilot.press("v")  # the verify result: a check mark in the Unicode mode
        await stable(pilot)

    return run


class HeldImport:
    """Verify and import the 16 MiB bundle of ``big_world``, held after its first progress
    report (so the bars are drawn part done) until ``release`` is set."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.started = threading.Event()
        self.release = threading.Event()
        self.held = ("", 0)

    def hook(self, name: str, done: int, size: int) -> None:
        self.held = (name, size)
        self.started.set()
        self.release.wait(10)

    async def __call__(self, pilot: Pilot[Any]) -> None:
        pilot.app.progress_hook = self.hook  # type: ignore[attr-defined]
        await stable(pilot)
        pilot.app.push_screen(ReviewScreen(self.world.bundles["big"]))
        await stable(pilot)
        await pilot.press("i")
        for _ in range(200):
            if self.started.is_set():
                break
            await asyncio.sleep(0.02)
        # The first progress report may already be the whole file (the copy moves big
        # chunks): show the bars part done, whatever the copy's chunk size, with the
        # message the worker itself sends.
        name, size = self.held
        pilot.app.screen.post_message(ImportProgress(name, size // 2, size))
        for _ in range(5):  # not stable(): it would wait for the held worker
            await pilot.pause(0.05)


@pytest.mark.parametrize("term", ["APPLIANCE_ASCII=1", "TERM=linux"])
@sync
async def test_ascii_mode_draws_only_ascii(
    world: World, big_world: World, monkeypatch: pytest.MonkeyPatch, term: str
) -> None:
    """Home, review (allowed and refused), artifact, the import's progress bars part done,
    the help, the audit log with its detail pane: nothing above U+007F on screen."""
    name, _, value = term.partition("=")
    monkeypatch.delenv("APPLIANCE_ASCII")
    monkeypatch.setenv(name, value)
    shown: dict[str, str] = {}
    for label, before in [
        ("home", keys_then()),
        ("review-good", to_review(world, "good")),
        ("review-refused", to_review(world, "wrong_site")),
        ("artifact", to_artifact()),
        ("import-progress", HeldImport(big_world)),
        ("help", keys_then("question_mark")),
        ("audit", keys_then("a")),
    ]:
        app = make_app(big_world if isinstance(before, HeldImport) else world)
        async with app.run_test(size=(80, 24)) as pilot:
            try:
                await before(pilot)
                shown[label] = screen_text(pilot)
            finally:
                if isinstance(before, HeldImport):
                    before.release.set()
    assert "OK" in shown["review-good"] and "X REFUSED" in shown["review-refused"]
    assert "OK VERIFIED" in shown["artifact"]
    assert "Verifying " in shown["import-progress"] and "#-" in shown["import-progress"]
    assert "Keys: Home" in shown["help"] and "Help" in shown["help"]
    assert "OK CHAIN INTACT" in shown["audit"] and "detail." in shown["audit"]
    assert {k: non_ascii(v) for k, v in shown.items()} == {k: [] for k in shown}


@sync
async def test_unicode_mode_draws_glyphs(world: World, big_world: World) -> None:
    """The check above can fail: the same screens in the Unicode mode hold glyphs."""
    app = make_app(world)
    async with app.run_test(size=(80, 24)) as pilot:
        await to_artifact()(pilot)
        assert "✓ VERIFIED" in screen_text(pilot)
    held = HeldImport(big_world)
    app = make_app(big_world)
    async with app.run_test(size=(80, 24)) as pilot:
        try:
            await held(pilot)
            assert "━" in screen_text(pilot)  # textual's own bar glyphs
        finally:
            held.release.set()


def test_review_ascii(
    snap_compare: Any, snap_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_ASCII", "1")
    before = to_review(snap_world, "good")
    assert snap_compare(make_app(snap_world), terminal_size=(80, 24), run_before=before)
