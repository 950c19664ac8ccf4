"""The TUI's bundle review shows who signed the model, and a bad model signature as a refusal."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from textual.widgets import Static

from tests.conformance.driver import Repo
from tests.modelsig.oms_world import (
    ec_keypair,
    ec_public,
    init_home,
    make_model,
    oms_sign,
    writer_bundle,
)
from tui.app import ApplianceApp
from tui.screen_review import ReviewScreen

pytest.importorskip("model_signing")


def review_text(home: Path, bundle: Path) -> tuple[str, str, bool]:
    async def run() -> tuple[str, str, bool]:
        app = ApplianceApp(home, [], auto_media=False, poll_interval=3600.0, cursor_blink=False)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = ReviewScreen(bundle)
            app.push_screen(screen)
            await pilot.pause()
            await app.workers.wait_for_complete()
            for _ in range(50):
                await pilot.pause(0.02)
                if screen.review is not None:
                    break
            await pilot.pause()
            facts = str(screen.query_one("#facts", Static).render())
            verdict = str(screen.query_one("#verdict", Static).render())
            assert screen.review is not None
            return facts, verdict, screen.review.allowed

    return asyncio.run(run())


def test_review_shows_the_model_signer_and_refuses_a_changed_model(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    signer = ec_keypair(tmp_path / "ec", "ml")
    model = make_model(tmp_path / "model")
    sig = oms_sign(model, signer, tmp_path / "m.sig", "blake3")
    home = tmp_path / "home"
    init_home(repo, home, signer, label="ML team")
    good = writer_bundle(repo, model, sig, sequence=1)
    facts, verdict, allowed = review_text(home, good)
    assert allowed, verdict
    short = ec_public(signer).keyid[:16]
    assert f"m: signed by ML team ({short}), 3 files" in facts, facts  # key_text
    changed = tmp_path / "changed"
    shutil.copytree(model, changed)
    (changed / "config.json").write_bytes(b"{}")
    bad = writer_bundle(repo, changed, sig, sequence=1)
    facts, verdict, allowed = review_text(home, bad)
    assert not allowed
    assert "model_signature_mismatch" in facts and "model_signature_mismatch" in verdict, verdict
