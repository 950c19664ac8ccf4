"""docs/examples/loader_client.py, a page of plain Python, loads through the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service_world import MODEL_V2, World

from bundles.documents import AllowLoader

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "loader_client.py"


def test_example_client_as_a_loader_user(world: World, users):
    loader, other = users.make("apld"), users.make("apno")
    world.apply(AllowLoader(loader.name, "models"))
    world.start()
    env = {"PATH": "/usr/bin:/bin"}  # no PYTHONPATH: it must not need the appliance package
    kw = {"user": loader.uid, "group": loader.gid, "extra_groups": []}
    res = subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), str(world.sock), "model"],
        capture_output=True,
        env=env,
        timeout=60,
        **kw,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == MODEL_V2
    assert "import appliance" not in EXAMPLE.read_text()
    assert len(EXAMPLE.read_text().splitlines()) <= 80  # a page
    res = subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), str(world.sock), "model", "--digest", "0" * 64],
        capture_output=True,
        env=env,
        timeout=60,
        **kw,
    )
    assert res.returncode == 1 and b"digest_pinned" in res.stderr
    res = subprocess.run(
        [sys.executable, "-I", str(EXAMPLE), str(world.sock), "model"],
        capture_output=True,
        env=env,
        timeout=60,
        user=other.uid,
        group=other.gid,
        extra_groups=[],
    )
    assert res.returncode == 1 and b"loader_not_authorized" in res.stderr
    assert res.stdout == b""
