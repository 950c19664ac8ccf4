"""An import's work per small artifact on a directory bundle, pinned by counting calls.

* The folder holding the artifacts is opened once per import, not once per file
  (``DirectorySource`` keeps the descriptor of each folder it opens files in).
* A single-part member is ``fstat``-ed twice when hashed: when it is opened (its
  type, inode and size) and at its signed end (did it grow?), not four times.
* The human listing of an import is written in one go: the number of writes to
  stdout does not grow with the number of artifacts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from counting_out import CountingOut

from appliance.cli.main import main
from appliance.staging import stage_artifact
from bundles.media_dir import DirectorySource
from bundles.reader import open_bundle_media


def _bundle(site: Site, n: int, tag: str) -> Path:
    return site.bundle({f"{tag}{i}@1": f"{tag} {i} ".encode() * (64 + i) for i in range(n)})


def _folder_opens(site: Site, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    from appliance.importer import import_bundle

    seen = {"dirs": 0}
    real_open = os.open

    def counting_open(
        path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if path == "artifacts" and flags & os.O_DIRECTORY:
            seen["dirs"] += 1
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", counting_open)
    try:
        import_bundle(site.h, bundle)
    finally:
        monkeypatch.setattr(os, "open", real_open)
    return seen["dirs"]


def test_the_artifacts_folder_is_opened_a_fixed_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    small = _folder_opens(site, _bundle(site, 3, "a"), monkeypatch)
    large = _folder_opens(site, _bundle(site, 80, "b"), monkeypatch)
    assert small == large, (small, large)
    assert large <= 4, large  # the walk, the manifest's checks: never once per file


def test_a_small_member_is_examined_twice_when_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance import witness
    from appliance.evaluation import evaluate_source
    from appliance.truststore import load_trust

    site = make_site(tmp_path)
    path = _bundle(site, 5, "c")
    db = site.h.db()
    try:
        source = open_bundle_media(path)
        assert isinstance(source, DirectorySource)
        with source:
            state = load_trust(db)
            bundle, _ = evaluate_source(db, source, state, witness.check(db, None))
            real_fstat = os.fstat
            calls = {"n": 0}

            def counting_fstat(fd: int) -> os.stat_result:
                calls["n"] += 1
                return real_fstat(fd)

            monkeypatch.setattr(os, "fstat", counting_fstat)
            for a in bundle.manifest.artifacts:
                stage_artifact(bundle, a, None)  # dry run: open, read, hash, check
            monkeypatch.setattr(os, "fstat", real_fstat)
    finally:
        db.conn.close()
    # Two a member, and one for the ``artifacts`` folder when its descriptor is kept.
    assert calls["n"] == 2 * 5 + 1, calls


def _cli_writes(site: Site, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    out = CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    try:
        code = main(["--home", str(site.home), "import", str(bundle)])
    finally:
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    assert code == 0
    return out.writes, out.getvalue()


def test_the_listing_is_written_in_a_fixed_number_of_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    small, _ = _cli_writes(site, _bundle(site, 2, "d"), monkeypatch)
    large, text = _cli_writes(site, _bundle(site, 60, "e"), monkeypatch)
    assert small == large, (small, large)
    lines = text.splitlines()
    assert len(lines) == 61 and all(f"e{i}@1" in text for i in range(60)), text
    assert text.endswith("new\n"), text
