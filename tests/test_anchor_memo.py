"""Anchors are parsed once per exact content: a rewritten anchor is always read afresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance import anchor as A
from appliance.errors import AnchorInvalidError
from bundles.keys import PrivateKey


def _anchor(path: Path, home_id: str) -> A.Anchor:
    return A.Anchor(
        path=path,
        home="/nowhere/home",
        home_id=home_id,
        root_keys=(PrivateKey.generate().public,),
        root_threshold=1,
        site="s1",
        witness=None,
        created_at="2026-12-02T00:00:00Z",
    )


def test_rewritten_anchor_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    A.write_anchor(_anchor(path, "a" * 32))
    first = A.read_anchor(path)
    assert A.read_anchor(path) is first  # same bytes: parsed once
    A.write_anchor(_anchor(path, "b" * 32), replace=True)
    second = A.read_anchor(path)
    assert second.home_id == "b" * 32
    doc = json.loads(path.read_text())
    doc["root_threshold"] = 2  # more than the one root key
    path.write_text(json.dumps(doc))
    with pytest.raises(AnchorInvalidError, match="bad root threshold"):
        A.read_anchor(path)


def test_parse_count_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    A.write_anchor(_anchor(path, "c" * 32))
    calls: list[bytes] = []
    real = A._parse

    def counting(p: Path, d: bytes) -> A.Anchor:
        calls.append(d)
        return real(p, d)

    monkeypatch.setattr(A, "_parse", counting)
    A._parsed.clear()
    for _ in range(5):
        A.read_anchor(path)
    assert len(calls) == 1


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from appliance import evidence

    reads: list[Path] = []
    real = evidence.read_anchor

    def counting(path: Path) -> A.Anchor:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(evidence, "read_anchor", counting)
    return reads


def test_a_load_reads_the_anchor_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the home, the witness location and the trust chain each take the anchor:
    inside one load (``evidence.one_anchor``) that is one read, so one anchor decides."""
    from conftest_load import make_site

    import appliance

    site = make_site(tmp_path, witness=True)
    site.ship({"model@1.0": b"one"})
    reads = _count_reads(monkeypatch)
    for record in (False, True):
        reads.clear()
        with appliance.load("model", home=site.h, witness=site.witness, record=record) as art:
            assert art.read() == b"one"
        assert len(reads) == 1, (record, reads)


def test_outside_a_load_every_look_reads_the_anchor_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived connection (the service's) sees an anchor replaced between requests:
    the scope is one load, never a connection's life."""
    from conftest_load import make_site

    from appliance import evidence

    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    db = site.h.db()
    try:
        reads = _count_reads(monkeypatch)
        evidence.anchor_of(db)
        evidence.anchor_of(db)
        assert len(reads) == 2
        with evidence.one_anchor():
            evidence.anchor_of(db)
            evidence.anchor_of(db)
            with evidence.one_anchor():  # nested: the outer scope's
                evidence.anchor_of(db)
        assert len(reads) == 3
        with evidence.one_anchor():
            evidence.anchor_of(db)
        assert len(reads) == 4
    finally:
        db.conn.close()


def test_a_cli_load_reads_the_anchor_once(tmp_path: Path) -> None:
    """``appliance load`` and ``exec`` in their own process: an audit hook reports each
    open of the anchor file as it happens (the commands end with ``os._exit``)."""
    import subprocess
    import sys

    from conftest_load import make_site

    site = make_site(tmp_path, witness=True)
    site.ship({"model@1.0": b"one"})
    hook = (
        "import os, sys, runpy\n"
        "def hook(event, args):\n"
        "    if event == 'open' and str(args[0]).endswith('.json') and 'anchors' in str(args[0]):\n"
        "        os.write(2, b'ANCHOR-OPEN\\n')\n"
        "sys.addaudithook(hook)\n"
        "sys.argv = ['appliance'] + sys.argv[1:]\n"
        "runpy.run_module('appliance', run_name='__main__')\n"
    )
    for args in (["load", "model", "-o", str(tmp_path / "out")], ["exec", "model", "--", "true"]):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                hook,
                "--home",
                str(site.home),
                "--witness",
                str(site.witness),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("ANCHOR-OPEN") == 1, (args, r.stderr)
