"""Every decision from signed evidence: a writer of the home, with no key, changes nothing.

The attacker edits ``appliance.db`` with ``sqlite3`` as any writer of the home
can. The trust state is derived from the anchor (outside the home) and the
stored root-signed documents, high-water marks from the signed manifests, so
each edit is refused with exit 4 ``trust_state_unauthorized`` by the commands
that decide on it, and reported by ``audit verify``; nothing is imported.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from appliance.anchor import anchor_path
from bundles.keys import PrivateKey

from .driver import M2, Site, cli, copy_home, ok, snapshot


def _sql(home: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        conn.execute(statement, params)
    conn.close()


def snapshot_lenient(home: Path) -> tuple[object, object]:
    """What is stored (records and object files), readable even when trust is refused."""
    from .driver import object_files

    conn = sqlite3.connect(home / "appliance.db")
    rows = conn.execute("SELECT name, version, digest FROM artifacts ORDER BY 1, 2").fetchall()
    active = conn.execute("SELECT name, version FROM active ORDER BY 1").fetchall()
    conn.close()
    return (rows, active), object_files(home)


def test_inserted_publisher_key_is_refused(site: Site, home: Path, tmp_path: Path) -> None:
    """``INSERT INTO keys`` a publisher key of the attacker's: its bundle is not imported."""
    evil = PrivateKey.generate()
    _sql(
        home,
        "INSERT INTO keys (keyid, public_pem, role, stream, added_version, revoked_version)"
        " VALUES (?, ?, 'publisher', 'models', 3, NULL)",
        evil.keyid,
        evil.public.to_pem().decode(),
    )
    site.repo.keys["evil"] = evil
    b = site.repo.bundle({"m@9.0": b"evil" * 64}, sequence=9, signers=("evil",))
    before = snapshot_lenient(home)
    r = cli(home, "import", b.path)
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)
    assert snapshot_lenient(home) == before
    for args in (
        ["verify"],
        ["audit", "verify"],
        ["trust", "show"],
        ["load", "m", "-o", tmp_path / "o"],
    ):
        r = cli(home, *args)
        assert (r.rc, r.code) == (4, "trust_state_unauthorized"), (args, str(r))


def test_revoked_key_brought_back_is_refused(site: Site, home: Path) -> None:
    """``UPDATE keys SET revoked_version = NULL``: the revocation still holds."""
    old = site.repo.key("old").keyid
    _sql(home, "UPDATE keys SET revoked_version = NULL WHERE keyid = ?", old)
    b = site.repo.bundle({"m@9.0": b"old" * 64}, sequence=9, signers=("old",))
    before = snapshot_lenient(home)
    r = cli(home, "import", b.path)
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)
    assert snapshot_lenient(home) == before


def test_threshold_lowered_in_table_is_refused(site: Site, home: Path) -> None:
    _sql(home, "UPDATE thresholds SET threshold = 1 WHERE role = 'publisher' AND stream = 'dual'")
    b = site.repo.bundle({"d@2.0": b"d2" * 64}, stream="dual", sequence=2, signers=("dual1",))
    r = cli(home, "import", b.path)
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)


def test_high_water_mark_lowered_in_table_is_refused(site: Site, home: Path) -> None:
    """``UPDATE streams SET sequence = 0``: the replay of sequence 1 is still refused."""
    _sql(home, "UPDATE streams SET sequence = 0 WHERE stream = 'models'")
    before = snapshot_lenient(home)
    r = cli(home, "import", site.bundles["models1"].path)
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)
    assert snapshot_lenient(home) == before
    r = cli(home, "audit", "verify")
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)


def test_stored_trust_document_removed_is_refused(site: Site, home: Path) -> None:
    """Deleting the trust document that revoked a key leaves a gap the tables cannot hide."""
    _sql(home, "DELETE FROM trust_documents WHERE version = 2")
    r = cli(home, "trust", "show")
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)


def test_site_edited_in_home_is_refused(site: Site, home: Path) -> None:
    _sql(home, "UPDATE meta SET value = 'elsewhere' WHERE key = 'site'")
    r = cli(home, "trust", "show")
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)


def test_witness_cannot_be_switched_off_from_the_home(wsite: Site, tmp_path: Path) -> None:
    """The witness's place is in the anchor, outside the home: no row of the home turns it
    off, and a restored older home is still caught (the old ``witness_path`` row is gone)."""

    w = tmp_path / "witness.json"
    home = copy_home(wsite.home, tmp_path / "home", witness_src=wsite.witness, witness_dst=w)
    _sql(home, "DELETE FROM meta WHERE key LIKE 'witness%'")
    w.unlink()
    r = cli(home, "load", "m", "-o", tmp_path / "o")  # no --witness given: the anchor's counts
    assert (r.rc, r.code) == (4, "witness_missing"), str(r)


def test_anchor_missing_edited_or_unsafe_is_refused(site: Site, home: Path) -> None:
    path = anchor_path(home)
    doc = json.loads(path.read_text())
    path.chmod(0o666)
    r = cli(home, "list")
    assert (r.rc, r.code) == (4, "anchor_invalid"), str(r)
    path.chmod(0o644)
    other = PrivateKey.generate()
    doc["root_keys"] = [other.public.to_pem().decode()]
    path.write_text(json.dumps(doc))
    r = cli(home, "trust", "show")
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)
    path.unlink()
    r = cli(home, "list")
    assert (r.rc, r.code) == (4, "anchor_missing"), str(r)


def test_normal_work_passes_the_evidence_checks(site: Site, home: Path, tmp_path: Path) -> None:
    b = site.repo.bundle({"m@3.0": M2 + b"3"}, sequence=3)
    ok(cli(home, "import", b.path))
    for args in (["verify"], ["audit", "verify"], ["trust", "show"]):
        ok(cli(home, *args))
    snap = snapshot(home)
    assert snap.trust["streams"]["models"] == 3


@pytest.mark.parametrize("table", ["keys", "thresholds", "streams"])
def test_audit_verify_reports_each_edited_table(site: Site, home: Path, table: str) -> None:
    edits = {
        "keys": "UPDATE keys SET role = 'rollback' WHERE role = 'publisher' AND stream = 'other'",
        "thresholds": "INSERT INTO thresholds (role, stream, threshold) VALUES ('rollback', '', 3)",
        "streams": "UPDATE streams SET sequence = sequence + 5 WHERE stream = 'other'",
    }
    _sql(home, edits[table])
    r = cli(home, "audit", "verify")
    assert (r.rc, r.code) == (4, "trust_state_unauthorized"), str(r)
