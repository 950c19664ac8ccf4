"""``appliance demo`` is the README's main command: it must pass, fast, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from appliance.demo import run_demo

REPO = Path(__file__).resolve().parent.parent


def test_demo_exits_0() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-m", "appliance", "demo"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "demo passed" in p.stdout
    assert "refused as expected [sequence_older]" in p.stdout
    assert "refused as expected [object_tampered]" in p.stdout
    assert "refused as expected [key_not_authorized]" in p.stdout
    if os.geteuid() == 0:  # issue 11: a loader user served, an ungranted one refused
        assert "a loader user loads through the service: ok" in p.stdout
        assert "refused as expected [loader_not_authorized]" in p.stdout
    assert "Traceback" not in p.stderr


def test_demo_json() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-m", "appliance", "demo", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] and doc["passed"]
    assert all(s["ok"] for s in doc["steps"])
    service = {"loader_not_authorized"} if os.geteuid() == 0 else {"skipped"}  # issue 11
    assert {s["expected"] for s in doc["steps"]} == {
        "ok", "sequence_older", "object_tampered", "key_not_authorized", *service,
    }  # fmt: skip
    assert not Path(doc["home"]).exists()  # the throwaway home is removed


def test_demo_story_in_process(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path, lines.append)
    assert result.ok, "\n".join(lines)
    assert len(lines) == 2 * len(result.steps)  # one title line and one detail line per step


def test_a_linked_interpreter_in_a_closed_folder_is_not_reachable() -> None:
    """A venv's python is a link: the demo's loader-user steps need the interpreter it
    points to open to others (a pyenv build under /root is not), else they are skipped
    with the reason, not an internal error at the first loader command."""
    import shutil
    import tempfile

    from appliance.demo import _others_can_reach

    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp is open to all (pytest's tmp_path is not)
    try:
        base.chmod(0o755)
        closed, venv = base / "closed", base / "venv"
        closed.mkdir(mode=0o700)
        venv.mkdir(mode=0o755)
        real = closed / "python3"
        real.write_bytes(b"")
        real.chmod(0o755)
        (venv / "python3").symlink_to(real)
        assert not _others_can_reach(venv / "python3")
        closed.chmod(0o755)
        assert _others_can_reach(venv / "python3")
        real.chmod(0o750)  # not runnable by others
        assert not _others_can_reach(venv / "python3")
    finally:
        shutil.rmtree(base)
