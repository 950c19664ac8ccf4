"""The appliance's one SQLite file: trust, refs, counters and the audit log.

All state lives in ``HOME/appliance.db`` so that one transaction moves refs,
active versions, high-water marks and the audit chain together.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.errors import (
    DiskFullError,
    IOFailedError,
    LockHeldError,
    NotInitializedError,
    ReadOnlyError,
    ReadOnlyModeError,
    SchemaTamperedError,
    StoreCorruptError,
)
from bundles.errors import ApplianceError


class Database:
    """The open state database: its ``sqlite3`` connection, in autocommit mode
    (``isolation_level=None``: a transaction is only what ``transaction`` or
    ``snapshot`` begins), and ``execute`` on it.

    The product needs nothing more from a database layer. It used to wrap the same
    connection in ``sqlite_utils.Database`` and call only these two; that import (with
    click, dateutil, pluggy and their own imports) cost about 36 ms of CPU at the start
    of every command, a quarter of a small ``exec`` and, beside a big load's hash on two
    cores, wall time too (docs/PERFORMANCE.md).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> sqlite3.Cursor:
        """``conn.execute``: one statement, with ``?`` or ``:name`` parameters."""
        return self.conn.execute(sql, () if parameters is None else parameters)


def read_only() -> bool:
    """``--read-only`` / ``APPLIANCE_READ_ONLY=1``: write nothing at all (forensic copies)."""
    return os.environ.get("APPLIANCE_READ_ONLY", "") not in ("", "0")


SCHEMA_VERSION = 2  # 2: the trust anchor outside the home (home_id)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    keyid TEXT PRIMARY KEY, public_pem TEXT NOT NULL, role TEXT NOT NULL, stream TEXT,
    added_version INTEGER NOT NULL, revoked_version INTEGER);
CREATE TABLE IF NOT EXISTS thresholds (
    role TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', threshold INTEGER NOT NULL,
    PRIMARY KEY (role, stream));
CREATE TABLE IF NOT EXISTS trust_documents (
    version INTEGER PRIMARY KEY, envelope BLOB NOT NULL, applied_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, sequence INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY, stream TEXT NOT NULL, release INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    media_type TEXT NOT NULL, release INTEGER NOT NULL, stream TEXT NOT NULL,
    sequence INTEGER NOT NULL, signers TEXT NOT NULL, imported_at TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS active (
    name TEXT PRIMARY KEY, version TEXT NOT NULL, moved_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (
    stream TEXT NOT NULL, sequence INTEGER NOT NULL, envelope BLOB NOT NULL,
    imported_at TEXT NOT NULL, PRIMARY KEY (stream, sequence));
CREATE TABLE IF NOT EXISTS used_authorizations (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, used_at TEXT NOT NULL,
    to_version TEXT NOT NULL, envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, type TEXT NOT NULL, outcome TEXT NOT NULL,
    code TEXT, name TEXT, version TEXT, detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_name ON audit (name, type);
"""


_SCHEMA_ROWS = "SELECT type, name, tbl_name, sql FROM main.sqlite_master"


@functools.cache
def _our_schema() -> frozenset[tuple[Any, ...]]:
    """Every object ``_SCHEMA`` creates, as SQLite records it (its own text normalised)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        return frozenset(conn.execute(_SCHEMA_ROWS).fetchall())
    finally:
        conn.close()


def foreign_objects(db: Database) -> list[str]:
    """The schema objects of the home's database that the appliance never creates: a
    trigger, a view, a table or an index more, or one of ours with another definition.

    A writer of the home can add any of them with one SQL statement. A trigger is the
    dangerous one: SQLite runs it inside the appliance's own transactions, with its
    authority (on an audit insert, move ``active``; on a load, erase a used
    authorization), and SQLite 3.40 on Python 3.11 offers no switch to turn triggers off.
    """
    ours = _our_schema()
    found = db.execute(_SCHEMA_ROWS).fetchall()
    if len(found) == len(ours) and frozenset(found) == ours:
        return []  # the usual answer, in about 40 us
    found.sort(key=lambda r: (str(r[0]), str(r[1])))
    extra = [
        f"{t} {n}" + (f" on {tbl}" if tbl != n else "")
        for t, n, tbl, sql in found
        if (t, n, tbl, sql) not in ours
    ]
    missing = {(t, n) for t, n, _tbl, _sql in ours} - {(t, n) for t, n, _tbl, _sql in found}
    return extra + [f"{t} {n} missing" for t, n in sorted(missing)]


def check_schema(db: Database) -> None:
    """``schema_tampered`` (exit 4) unless the database holds exactly the appliance's
    schema. Every write transaction checks it after taking the write lock, so nothing can
    be added between the check and the commit; every command that decides on trust checks
    it too (``evidence.verified_trust``), so ``verify`` and ``audit verify`` report it."""
    foreign = foreign_objects(db)
    if foreign:
        raise SchemaTamperedError(
            "the state database holds what the appliance never creates ("
            + ", ".join(foreign[:5])
            + (f", and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            + "): a writer of the home changed its schema"
        )


def connect(path: Path, *, create: bool = False) -> Database:
    """Open the state database; refuse a file that is not ours."""
    if not create and not path.exists():
        raise NotInitializedError(f"no appliance state at {path}")
    ro = read_only() and not create
    try:
        if ro:  # a forensic copy: SQLite itself refuses every write
            uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if create:
            conn.executescript(_SCHEMA)
        else:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise StoreCorruptError(f"{path} is not an appliance state database")
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise LockHeldError(f"state database {path} is busy: {e}") from e
        if isinstance(e, sqlite3.OperationalError) and "readonly" in str(e):
            raise ReadOnlyError(f"state database {path} is read-only: {e}") from e
        raise StoreCorruptError(f"state database {path} is unreadable or corrupt: {e}") from e
    # No database-layer plugins: no installed package's entry point gets a hook on it.
    return Database(conn)


def check_integrity(db: Database) -> None:
    """SQLite's own check of every page, table and index (``PRAGMA quick_check``, which
    skips only the index contents' match with their tables): a destroyed page of a
    table that a command does not read is found too. ``store_corrupt`` (exit 4)."""
    try:
        rows = db.conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as e:
        raise StoreCorruptError(f"state database is corrupt: {e}") from e
    problems = [str(r[0]) for r in rows]
    if problems != ["ok"]:
        raise StoreCorruptError("state database is corrupt: " + "; ".join(problems))


def get_meta(db: Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", [key]).fetchone()
    return None if row is None else str(row[0])


def set_meta(db: Database, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[None]:
    """One read transaction around several reads, so that they see one state of the database.

    Every statement outside a transaction is its own snapshot: an import that commits
    between two reads would show its stored manifest without its audit event. Inside a
    transaction already (``transaction`` or an enclosing ``snapshot``) this does nothing.
    """
    conn = db.conn
    if conn.in_transaction:
        yield
        return
    try:
        conn.execute("BEGIN")  # deferred: the shared lock is taken by the first read
    except sqlite3.OperationalError as e:
        raise translate_sqlite_error(e) from e
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")  # nothing was written: this only releases the lock


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back on any error; map SQLite errors."""

    def __init__(self, db: Database) -> None:
        self.db, self.conn = db, db.conn

    def __enter__(self) -> None:
        if read_only():
            raise ReadOnlyModeError("--read-only: this would change the appliance's state")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            check_schema(self.db)  # under the write lock: fixed until COMMIT
        except sqlite3.Error as e:
            self._rollback()
            raise translate_sqlite_error(e) from e
        except SchemaTamperedError:
            self._rollback()
            raise

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise translate_sqlite_error(exc) from exc
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise translate_sqlite_error(e) from e

    def _rollback(self) -> None:
        """Roll back if SQLite has not already (a COMMIT that hit a full disk). A ROLLBACK
        that fails itself is raised as its stable error (``translate_sqlite_error``),
        never as a bare ``sqlite3.Error`` (the error that made it roll back stays in
        its chain). The state is then the last commit's: the hot journal is rolled
        back by the next connection."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise translate_sqlite_error(e) from e


@contextlib.contextmanager
def sqlite_errors() -> Iterator[None]:
    """Inside: an SQLite error escaping a read (a page overwritten outside SQLite, a disk
    error) is raised as its stable error (``translate_sqlite_error``). For the places that
    answer a person or a loader (the TUI's workers, the service, ``preview_bundle``);
    the CLI does the same for every command."""
    try:
        yield
    except sqlite3.Error as e:
        raise translate_sqlite_error(e) from e


def translate_sqlite_error(e: sqlite3.Error) -> ApplianceError:
    """The stable error for a failed SQLite call: full disk, read-only, busy, a file that
    is not (or no longer) a database (``store_corrupt``, exit 4), else ``io_failed``."""
    text = str(e)
    if "full" in text:
        return DiskFullError(f"disk full while writing state: {text}")
    if "readonly" in text or "read-only" in text:
        return ReadOnlyError(f"state is read-only: {text}")
    if "locked" in text or "busy" in text:
        return LockHeldError(f"state database is busy: {text}")
    if isinstance(e, sqlite3.DatabaseError) and "malformed" in text or "not a database" in text:
        return StoreCorruptError(f"state database is corrupt: {text}")
    return IOFailedError(f"state database error: {text}")
