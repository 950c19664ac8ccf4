"""The one-pass pointer check of ``verify`` judges as the per-record one does.

``appliance verify`` reads the pointer-moving audit events of every name once
(``appliance.provenance.Pointers``) instead of once a record. Each case here
tampers with the database the way an attacker who can write it would (a moved
pointer, an edited, removed or replaced event, a rollback whose authorization
is gone or reused) and asserts that the one-pass verdict for every active name
is the per-record ``check_pointer`` verdict, error message included, that
``verify`` exits 4 with ``pointer_unauthorized`` where that refuses, and that
``verify`` changed nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.errors import PointerUnauthorizedError
from appliance.home import Home
from appliance.provenance import Pointers, check_pointer

from .driver import Site, cli, home_files, ok


def _sql(home: Path, statement: str) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        conn.execute(statement)
    conn.close()


def _verdict(fn: object, *args: object) -> str | None:
    try:
        fn(*args)  # type: ignore[operator]
    except PointerUnauthorizedError as e:
        return e.message
    return None


def _verdicts(home: Path) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Per-record and one-pass verdicts for every stored name (verify judges them all:
    the active ones, and those with no active row, which an audited move set)."""
    db = Home(home).db()
    try:
        names = [str(r[0]) for r in db.execute("SELECT DISTINCT name FROM artifacts")]
        one_pass = Pointers(db)
        per_record = {n: _verdict(check_pointer, db, n) for n in names}
        batched = {n: _verdict(one_pass.check, n) for n in names}
        return per_record, batched
    finally:
        db.conn.close()


def _rolled_back(site: Site, home: Path) -> None:
    auth = site.repo.write(site.repo.rollback_auth("m", "1.0"), "rollback")
    ok(cli(home, "rollback", "m", "--authorization", auth))


_M_LAST = "(SELECT MAX(seq) FROM audit WHERE name = 'm' AND type IN ('import', 'rollback'))"
TAMPERS = {
    "pointer moved": "UPDATE active SET version = '1.0' WHERE name = 'm'",
    "pointer cleared": "DELETE FROM active WHERE name = 'm'",
    "event version edited": f"UPDATE audit SET version = '1.0' WHERE seq = {_M_LAST}",
    "event detail edited": f"UPDATE audit SET detail = '{{}}' WHERE seq = {_M_LAST}",
    "event before edited": f"UPDATE audit SET hash = prev_hash WHERE seq = {_M_LAST} - 1",
    "event after replaced": f"UPDATE audit SET prev_hash = hash WHERE seq = {_M_LAST} + 1",
    "pointer event removed": f"DELETE FROM audit WHERE seq = {_M_LAST}",
}
ROLLBACK_TAMPERS = {
    "authorization removed": "DELETE FROM used_authorizations",
    "authorization id edited": "UPDATE used_authorizations SET id = 'x'",
    "pointer moved past the rollback": "UPDATE active SET version = '2.0' WHERE name = 'm'",
}

_AFTER_ROLLBACK = ("pointer moved", "event detail edited", "event before edited")


@pytest.mark.parametrize("rollback", [False, True], ids=["imports", "rollback"])
def test_untampered_verdicts_agree(site: Site, home: Path, rollback: bool) -> None:
    if rollback:
        _rolled_back(site, home)
    per_record, batched = _verdicts(home)
    assert batched == per_record
    assert set(batched.values()) == {None}
    ok(cli(home, "verify"))


@pytest.mark.parametrize(
    ("rollback", "statement"),
    [(False, s) for s in TAMPERS.values()]
    + [(True, TAMPERS[k]) for k in _AFTER_ROLLBACK]
    + [(True, s) for s in ROLLBACK_TAMPERS.values()],
    ids=[f"imports-{k}" for k in TAMPERS]
    + [f"rollback-{k}" for k in (*_AFTER_ROLLBACK, *ROLLBACK_TAMPERS)],
)
def test_tampered_verdicts_agree(site: Site, home: Path, rollback: bool, statement: str) -> None:
    if rollback:
        _rolled_back(site, home)
    _sql(home, statement)
    per_record, batched = _verdicts(home)
    assert batched == per_record
    before = home_files(home)
    v = cli(home, "verify")
    if any(per_record.values()):
        assert (v.rc, v.code) == (4, "pointer_unauthorized"), str(v)
    else:
        assert "pointer_unauthorized" not in str(v)
    assert home_files(home) == before  # verify is read-only
