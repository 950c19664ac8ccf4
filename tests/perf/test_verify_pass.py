"""``verify`` of N records: the per-record work is a lookup and a comparison (counted).

* The pointer pass shows every untampered name sound in its one query: no name is
  judged by the per-name rules (``_judge_pointer``), whatever N; a tampered pointer sends
  that one name, and only it, to those rules, which give their own refusal.
* Each record is checked against its stored manifest without making an ``Artifact``, and
  the manifest row is read once per bundle, whatever N.
* ``records()`` decodes the signers of one bundle once, and gives records equal, field
  for field, to those the dataclass's own constructor makes.
* The whole-list checks of a stored manifest (``_all_hex``, the exact-parse writer)
  accept exactly what the per-value rules accept.
* ``verify`` pauses the cyclic garbage collector for its pass and restores it after.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site
from test_stored_manifest import _fresh_memo  # noqa: F401  # the autouse fixture

from appliance import audit, provenance, store
from appliance.cli.context import no_cycle_collection
from appliance.importer import import_bundle
from appliance.store import records
from appliance.truststore import load_trust
from appliance.verify import verify_records
from bundles import manifest


def _site(tmp_path: Path, n: int) -> Site:
    site = make_site(tmp_path)
    import_bundle(site.h, site.bundle({f"a{i}@1": f"a {i}".encode() * 50 for i in range(n)}))
    return site


def _verify(site: Site) -> list[tuple[str, str | None, str | None]]:
    db = site.h.db()
    try:
        results = verify_records(site.h, db, load_trust(db), records(db))
    finally:
        db.conn.close()
    return [(r.status, r.code, r.message) for r in results]


def _count(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> dict[str, int]:
    calls = {"n": 0}
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("n", [3, 60])
def test_sound_names_are_judged_in_the_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    site = _site(tmp_path, n)
    judged = _count(monkeypatch, provenance, "_judge_pointer")
    artifacts = _count(monkeypatch, manifest, "_trusted_artifact")
    rows = _count(monkeypatch, provenance, "_stored_manifest")
    assert _verify(site) == [("ok", None, None)] * n
    assert judged["n"] == 0  # the same for 3 and 60 names
    assert artifacts["n"] == 0  # no Artifact made for a record's check
    assert rows["n"] == 1  # one bundle: its manifest row read once


def test_a_tampered_pointer_alone_goes_to_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, 20)
    conn = sqlite3.connect(site.home / "appliance.db")
    with conn:
        conn.execute("DELETE FROM active WHERE name = 'a7'")
    conn.close()
    judged = _count(monkeypatch, provenance, "_judge_pointer")
    found = _verify(site)
    assert judged["n"] == 1
    bad = [f for f in found if f[0] != "ok"]
    assert bad == [
        (
            "unauthorized",
            "pointer_unauthorized",
            "a7: has no active version, but the last authorized move set 1 "
            "(the active pointer was removed)",
        )
    ]


def test_records_decode_a_bundles_signers_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site(tmp_path, 30)
    db = site.h.db()
    try:
        decoded = _count(monkeypatch, store.json, "loads")
        recs = records(db)
        assert decoded["n"] == 1
        monkeypatch.undo()
        assert len(recs) == 30
        # equal, field for field and in the same attribute order, to what the frozen
        # dataclass's own __init__ makes
        again = [dataclasses.replace(r) for r in recs]
        assert recs == again
        assert [vars(r) for r in recs] == [vars(r) for r in again]
        assert all(type(r.signers) is tuple and type(r.size) is int for r in recs)
    finally:
        db.conn.close()


_HEX = re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize(
    "values",
    [
        ["ab" * 32],
        ["ab" * 32, "0123456789abcdef" * 4],
        ["AB" * 32],
        ["ab" * 31 + "a"],
        ["ab" * 32 + "a"],
        ["ab" * 31 + "\na"],
        ["ab" * 32, "ab" * 31 + "a\n"],
        ["ab" * 31 + "a\u0663"],  # a non-ASCII digit
        ["ab" * 31 + "g0"],
        ["ab" * 32, 7],
        [],
    ],
)
def test_all_hex_is_the_per_value_rule(values: list[Any]) -> None:
    expected = bool(values) and all(type(v) is str and _HEX.fullmatch(v) for v in values)
    assert manifest._all_hex(values) == expected


def test_verify_pauses_the_cycle_collector_and_restores_it() -> None:
    assert gc.isenabled()
    with no_cycle_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_cycle_collection():
        raise RuntimeError("refused")
    assert gc.isenabled()
    gc.disable()
    try:
        with no_cycle_collection():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


def _pointer_pass_steps(db: Any) -> int:
    """SQLite virtual-machine steps (in thousands) the pointer pass's query takes."""
    steps = {"n": 0}

    def tick() -> int:
        steps["n"] += 1
        return 0

    db.conn.set_progress_handler(tick, 1000)
    try:
        provenance.Pointers(db)
    finally:
        db.conn.set_progress_handler(None, 1000)
    return steps["n"]


def test_the_pointer_pass_does_not_grow_with_load_events(tmp_path: Path) -> None:
    """The pass reads each stored name's accepted imports and rollbacks by the
    ``audit_name`` index: 5,000 load events in the log (the usual bulk of it) add no work
    to it (a scan of the log, as before, took about 40 thousand more steps)."""
    site = _site(tmp_path, 20)
    db = site.h.db()
    try:
        before = _pointer_pass_steps(db)
        with db.conn:
            db.conn.execute("BEGIN")
            audit.append_many(
                db,
                [
                    ("load", {"outcome": "accepted", "name": f"a{i % 20}", "version": "1"})
                    for i in range(5000)
                ],
            )
        after = _pointer_pass_steps(db)
    finally:
        db.conn.close()
    assert _events_in(site) > 5000
    assert after <= before + 1, (before, after)
    assert _verify(site) == [("ok", None, None)] * 20


def _events_in(site: Site) -> int:
    db = site.h.db()
    try:
        return int(db.execute("SELECT count(*) FROM audit").fetchone()[0])
    finally:
        db.conn.close()
