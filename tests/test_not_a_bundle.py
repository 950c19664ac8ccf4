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
    doc = env.expect_refusal("not_a_bundle", "import", media, exit_code=2)
    assert "not a bundle directory" in doc["error"]["message"]
    assert env.snapshot().store_part() == before.store_part()
    # An operator's mistake (exit 2), not a decision about a bundle: no audit event.
    assert env.events_since(before.audit_seq) == []


def test_text_file_is_not_a_bundle_exit_2(tmp_path: Path) -> None:
    env = Env(tmp_path / "site")
    notes = tmp_path / "README.txt"
    notes.write_text("copy the bundle folder onto the stick\n" * 30)
    before = env.snapshot()
    doc = env.expect_refusal("not_a_bundle", "import", notes, exit_code=2)
    assert "neither a bundle directory nor a tar file" in doc["error"]["message"]
    assert env.snapshot().store_part() == before.store_part()
    assert env.events_since(before.audit_seq) == []
