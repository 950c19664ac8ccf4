"""A writer of the database changes its schema: a trigger, a view, a table or an index
more, or one of the appliance's own redefined or dropped.

A trigger is the dangerous one. SQLite runs it inside the appliance's own transactions,
with the appliance's authority: on the audit insert of the next load it can move the
active version, erase the record of used rollback authorizations, or rewrite a row of any
table. Every write therefore checks the schema under the write lock, and every command
that decides on trust checks it too: each refuses with ``schema_tampered`` (exit 4),
nothing is handed over, the home is left as it was, and the trigger never runs.
Reads that decide nothing (``list``, ``history``, ``audit show``) still answer, for the
responder.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .driver import Result, Site, cli, home_files

PLANTED = {
    "trigger_moves_active": (
        "CREATE TRIGGER t AFTER INSERT ON audit BEGIN "
        "UPDATE active SET version = '1.0' WHERE name = 'm'; END"
    ),
    "trigger_erases_authorizations": (
        "CREATE TRIGGER t AFTER INSERT ON audit BEGIN DELETE FROM used_authorizations; END"
    ),
    "trigger_on_artifacts": (
        "CREATE TRIGGER t BEFORE INSERT ON artifacts BEGIN "
        "UPDATE active SET version = '1.0' WHERE name = 'm'; END"
    ),
    "view": "CREATE VIEW v AS SELECT * FROM audit",
    "table_more": "CREATE TABLE notes (x)",
    "index_more": "CREATE INDEX i ON artifacts (digest)",
    "table_redefined": "ALTER TABLE active ADD COLUMN x DEFAULT 1",
    "index_dropped": "DROP INDEX audit_name",
    "statistics": "ANALYZE",
}


def _plant(home: Path, sql: str) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _state(home: Path) -> dict[str, bytes]:
    """``home_files`` but the lock file, which names its last holder (import and rollback
    take the home lock before they open the database)."""
    return {k: v for k, v in home_files(home).items() if k != "lock"}


def _message(r: Result) -> str:
    return str(r.out["error"]["message"])


def _active(home: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(home / "appliance.db")
    try:
        return conn.execute("SELECT name, version FROM active ORDER BY name").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_planted_schema_object_is_refused_by_every_write_and_every_trust_decision(
    site: Site, home: Path, tmp_path: Path, case: str
) -> None:
    active = _active(home)
    assert ("m", "2.0") in active
    _plant(home, PLANTED[case])
    new = site.repo.bundle({"n@1.0": b"new artifact"}, sequence=3)
    auth = site.repo.write(site.repo.rollback_auth("m", "1.0"), "auth")
    before = _state(home)
    out = tmp_path / "out.bin"
    for args in (
        ("load", "m", "-o", out),
        ("import", new.path),
        ("rollback", "m", "--authorization", auth),
        ("verify",),
        ("audit", "verify"),
    ):
        r = cli(home, *args)
        label = " ".join(map(str, args))
        assert (r.rc, r.code) == (4, "schema_tampered"), f"{label}: {r}"
        assert "a writer of the home changed its schema" in _message(r), f"{label}: {r}"
        assert _state(home) == before, f"{label} changed the home"
    assert not out.exists()
    assert _active(home) == active  # the trigger never ran
    for args in (("list",), ("history", "m"), ("audit", "show")):
        r = cli(home, *args)
        assert r.rc == 0, f"{' '.join(args)}: {r}"  # a read that decides nothing answers


def test_the_refusal_names_what_was_planted(home: Path) -> None:
    _plant(home, PLANTED["trigger_moves_active"])
    _plant(home, PLANTED["view"])
    r = cli(home, "verify")
    assert r.code == "schema_tampered"
    assert "trigger t on audit" in _message(r) and "view v" in _message(r), r


def test_the_untouched_home_has_exactly_the_appliance_schema(site: Site, home: Path) -> None:
    """The check's other side: the homes the appliance makes pass it (else every case
    above would pass on an appliance that refuses everything)."""
    for args in (("verify",), ("audit", "verify"), ("load", "m", "-o", "/dev/null")):
        r = cli(home, *args)
        assert r.rc == 0, r
