"""``verify`` writes its human listing in one go: the number of writes to stdout does not
grow with the records (a line at a time cost two writes a record on an unbuffered
stdout), and the bytes are the lines ``_verify_line`` gives, in order, then the total."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest_load import Site, make_site
from counting_out import CountingOut

from appliance.cli.main import main
from appliance.importer import import_bundle
from appliance.store import records


def _verify_writes(site: Site, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, str]:
    out = CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    try:
        code = main(["--home", str(site.home), "verify"])
    finally:
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    return code, out.writes, out.getvalue()


def _site(tmp: Path, n: int) -> Site:
    site = make_site(tmp)
    import_bundle(site.h, site.bundle({f"a{i}@1": f"a {i}".encode() * 20 for i in range(n)}))
    return site


def test_verify_listing_writes_do_not_grow_with_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _verify_writes(_site(tmp_path / "s", 2), monkeypatch)
    large = _verify_writes(_site(tmp_path / "l", 40), monkeypatch)
    assert (small[0], large[0]) == (0, 0), (small, large)
    assert small[1] == large[1], (small[1], large[1])
    lines = large[2].splitlines()
    assert len(lines) == 41, lines
    assert all(x.startswith("OK ") for x in lines[:-1]), lines
    assert {x.split()[1] for x in lines[:-1]} == {f"a{i}@1" for i in range(40)}
    assert lines[-1] == "40 artifact(s) verified", lines[-1]


def test_verify_listing_keeps_each_problem_on_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, 3)
    digest = records(site.h.db())[0].digest
    obj = site.home / "objects" / digest[:2] / digest
    obj.chmod(0o600)
    obj.write_bytes(b"swapped")
    code, _, text = _verify_writes(site, monkeypatch)
    assert code == 4, text
    bad = [x for x in text.splitlines() if x.startswith("TAMPERED")]
    assert len(bad) == 1 and "[object_tampered]" in bad[0], text
