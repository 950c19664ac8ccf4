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
