"""Objects promoted by an import killed before its commit are swept at the next import."""

from __future__ import annotations

import os
from pathlib import Path

from import_env import Env


def test_unreferenced_object_is_swept_and_referenced_kept(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    env.import_ok(env.bundle({"model@1": b"one" * 1000}, sequence=1))
    objects = sorted(p for p in (env.home / "objects").rglob("*") if p.is_file())
    assert len(objects) == 1
    orphan_dir = env.home / "objects" / "ab"
    orphan_dir.mkdir(exist_ok=True)
    orphan = orphan_dir / ("ab" + "0" * 62)
    orphan.write_bytes(b"left by a killed import")
    os.chmod(orphan, 0o444)

    env.import_ok(env.bundle({"model@2": b"two" * 1000}, sequence=2))

    assert not orphan.exists()
    remaining = sorted(p for p in (env.home / "objects").rglob("*") if p.is_file())
    assert objects[0] in remaining and len(remaining) == 2
    env.expect_ok("verify")


def test_dry_run_sweeps_nothing(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    (env.home / "objects" / "cd").mkdir(parents=True, exist_ok=True)
    orphan = env.home / "objects" / "cd" / ("cd" + "1" * 62)
    orphan.write_bytes(b"x")
    env.expect_ok("import", "--dry-run", env.bundle({"m@1": b"m"}, sequence=1))
    assert orphan.exists()
