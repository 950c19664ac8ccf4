"""Pointing at a folder that is not a bundle (a mount point, a home) is refused before any walk."""

from __future__ import annotations

import os
from pathlib import Path

from import_env import Env


def test_folder_without_manifest_is_refused_without_walking_it(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    media = tmp_path / "usb"
    (media / "bundle-7" / "artifacts").mkdir(parents=True)
    os.symlink("/etc/passwd", media / "link")  # a walk would stop here with archive_link
    before = env.snapshot()
    doc = env.expect_refusal("artifact_missing", "import", media)
    assert "not a bundle directory" in doc["error"]["message"]
    assert env.snapshot().store_part() == before.store_part()
    assert env.events_since(before.audit_seq)[-1]["code"] == "artifact_missing"
