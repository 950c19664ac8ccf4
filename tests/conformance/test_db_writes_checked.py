"""Every row the appliance writes is written inside ``db.transaction``, after its schema
check under the write lock, never by a statement of its own in autocommit mode or inside
a read ``snapshot``.

That is what makes the schema check (``tests/conformance/test_db_schema.py``) complete:
SQLite fires a trigger on INSERT, UPDATE and DELETE only, so a data write outside a
checked transaction is the one place a planted trigger could still run with the
appliance's authority. An SQLite authorizer on every connection the commands open sees
each statement as it is prepared, and notes every data write made outside one. (``exec``
is not run here: in process it would replace the test itself; it records its load event
by the same path as ``load``.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import appliance.db
from bundles.documents import RevokeKey

from .driver import Site, run_in_process

_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


@pytest.fixture
def unchecked_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The data writes prepared outside a checked transaction, as ``action table``."""
    found: list[str] = []
    checked: set[int] = set()  # id() of the connections inside ``transaction``
    seen_writes = [0]
    real_connect = sqlite3.connect
    real_enter = appliance.db.transaction.__enter__
    real_exit = appliance.db.transaction.__exit__

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        if str(args[0] if args else kwargs["database"]) == ":memory:":
            return conn  # db.check_schema's picture of the schema, not a home

        def authorize(action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
            if action in _WRITES and db == "main" and trigger is None:
                seen_writes[0] += 1
                if id(conn) not in checked:
                    found.append(f"{action} {arg1}")
            return sqlite3.SQLITE_OK

        conn.set_authorizer(authorize)
        return conn

    def enter(self: appliance.db.transaction) -> None:
        real_enter(self)
        checked.add(id(self.conn))

    def exit_(self: appliance.db.transaction, *exc: Any) -> None:
        checked.discard(id(self.conn))
        real_exit(self, *exc)

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(appliance.db.transaction, "__enter__", enter)
    monkeypatch.setattr(appliance.db.transaction, "__exit__", exit_)
    yield found
    assert seen_writes[0] > 0, "the authorizer saw no write: the test watched nothing"


def test_every_command_writes_only_inside_a_checked_transaction(
    site: Site, home: Path, tmp_path: Path, unchecked_writes: list[str]
) -> None:
    repo = site.repo
    new = repo.bundle({"n@1.0": b"new artifact"}, sequence=3)
    auth = repo.write(repo.rollback_auth("m", "1.0"), "auth")
    update = repo.write(repo.trust_update(4, [RevokeKey(repo.key("pub2").keyid)]), "trust")
    commands: list[tuple[str | Path, ...]] = [
        ("import", new.path),
        ("load", "m", "-o", tmp_path / "m.bin"),
        ("load", "nope"),  # a refusal is recorded too
        ("rollback", "m", "--authorization", auth),
        ("load", "m", "-o", tmp_path / "m1.bin"),  # the first load after a rollback
        ("trust", "apply", update),
        ("verify",),
        ("audit", "verify"),
    ]
    for args in commands:
        rc, out = run_in_process(home, *args)
        assert rc in (0, 2, 3), f"{args}: {out}"
    assert sorted(set(unchecked_writes)) == []
