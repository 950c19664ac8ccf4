"""The real ``appliance tui`` in a real terminal (tmux, 80x24): import a bundle, quit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_world import World

from appliance.store import records

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server on a private socket, so nothing else's sessions are touched."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        )
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "tui", *keys)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"appliance-tui-test-{os.getpid()}")
    yield t
    subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)


def test_real_terminal_import_and_quit(world: World, tmux: Tmux, tmp_path: Path) -> None:
    status = tmp_path / "exit-status"
    env = f"APPLIANCE_HOME={world.home.root} TERM=xterm-256color"
    command = (
        f"env {env} {sys.executable} -m appliance tui --media {world.media}; "
        f"echo $? > {status}; sleep 5"
    )
    tmux.run("new-session", "-d", "-s", "tui", "-x", "80", "-y", "24", command)
    tmux.wait_for("models-5-tampered")
    tmux.wait_for("Latest audit events")
    # The home screen's trust and audit panes are filled by workers off the UI thread, in
    # either order: wait for the trust line itself (its absence still fails, at the bound).
    tmux.wait_for("Trust v2")
    tmux.keys("Down")  # models-3, the good bundle
    time.sleep(0.3)
    tmux.keys("Enter")
    screen = tmux.wait_for("ALLOWED BY POLICY")
    assert "models #3, installed #2: newer" in screen
    tmux.keys("i")
    screen = tmux.wait_for("IMPORTED")
    assert "100%" in screen
    tmux.keys("Escape")
    tmux.wait_for("Media and bundles")
    tmux.keys("q")
    deadline = time.monotonic() + 15
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status.read_text().strip() == "0"
    db = world.home.db()
    try:
        active = {r.name: r.version for r in records(db) if r.active}
    finally:
        db.conn.close()
    assert active["llm-weights"] == "1.2"
