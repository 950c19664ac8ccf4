"""Attacks on the appliance's own state: the store, the database, a restored older copy.

The attacker here can write the home (the threat model (docs/SECURITY.md): "a writer that can
modify files in the store"; root is out of scope, but what such a writer does
must be evident). Each case changes one thing under the home with ordinary
file or ``sqlite3`` writes and asserts what ``verify``, ``load`` and ``audit
verify`` say: exit 4 and the specific code. ``verify`` is read-only and records
nothing; ``load`` records a ``load`` event with outcome ``rejected``.

Verify-then-swap (TOCTOU) on load is covered by the load engineer's racing
writer test, ``tests/test_toctou.py`` (in-place rewrite, rename and truncate
during loads, for the sealed memfd and the unnamed-file copies).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from bundles.documents import RevokeKey

from .driver import (
    M2,
    Site,
    assert_unchanged,
    cli,
    copy_home,
    home_files,
    new_events,
    ok,
    outside_db,
    snapshot,
)


def _object(home: Path, site: Site, name: str, version: str) -> Path:
    rec = next(a for a in site.snapshot.listing if (a["name"], a["version"]) == (name, version))
    digest = rec["digest"]["blake3"]
    return home / "objects" / digest[:2] / digest


def _sql(home: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    with conn:
        conn.execute(statement, params)
    conn.close()


def _load(home: Path, ref: str, tmp: Path, witness: Path | None = None) -> object:
    return cli(home, "load", ref, "-o", tmp / "out.bin", witness=witness)


def _assert_load_refused(home: Path, tmp: Path, ref: str, code: str) -> None:
    before = snapshot(home)
    r = _load(home, ref, tmp)
    assert (r.rc, r.code) == (4, code), str(r)  # type: ignore[attr-defined]
    assert not (tmp / "out.bin").exists()
    events = new_events(before, snapshot(home))
    assert [(e["type"], e["outcome"], e["code"]) for e in events] == [("load", "rejected", code)]


# --- an object overwritten, removed or replaced in the store -------------------------------


@pytest.mark.parametrize("how", ["one-bit", "truncated", "extended", "removed", "symlink"])
def test_object_overwritten_in_store(how: str, site: Site, home: Path, tmp_path: Path) -> None:
    obj = _object(home, site, "m", "2.0")
    if how == "one-bit":
        os.chmod(obj, 0o644)
        data = bytearray(obj.read_bytes())
        data[100] ^= 0x04
        obj.write_bytes(bytes(data))
    elif how == "truncated":
        os.chmod(obj, 0o644)
        os.truncate(obj, 10)
    elif how == "extended":
        os.chmod(obj, 0o644)
        with open(obj, "ab") as f:
            f.write(b"more")
    elif how == "removed":
        obj.unlink()
    else:  # a symlink to bytes that would hash right: still refused (never followed)
        good = tmp_path / "good.bin"
        good.write_bytes(M2)
        obj.unlink()
        obj.symlink_to(good)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "object_tampered"), str(v)
    statuses = {(x["name"], x["version"]): x["status"] for x in v.out["results"]}
    assert statuses.pop(("m", "2.0")) == "tampered"
    assert set(statuses.values()) == {"ok"}, "only the tampered object is reported"
    _assert_load_refused(home, tmp_path, "m", "object_tampered")
    ok(cli(home, "audit", "verify"))  # the log is intact; the store is what was changed


def test_other_objects_still_load_when_one_is_tampered(
    site: Site, home: Path, tmp_path: Path
) -> None:
    obj = _object(home, site, "m", "2.0")
    os.chmod(obj, 0o644)
    obj.write_bytes(b"x" * len(M2))
    ok(_load(home, "tok", tmp_path))  # type: ignore[arg-type]
    assert (tmp_path / "out.bin").read_bytes() == site.bundles["models2"].contents["tok@1.0"]


# --- the database edited without authorization ---------------------------------------------


def test_pointer_moved_in_database(site: Site, home: Path, tmp_path: Path) -> None:
    """``UPDATE active`` to an older version, with no rollback authorization.

    The audit chain does not hold the pointer itself, but every pointer move is an
    audited event (an import that activated it, or an authorized rollback);
    ``verify`` and ``load`` cross-check the pointer against the last such event.
    """
    _sql(home, "UPDATE active SET version = '1.0' WHERE name = 'm'")
    listed = {(a["name"], a["version"]): a["active"] for a in ok(cli(home, "list"))["artifacts"]}
    assert listed[("m", "1.0")] is True  # list shows what the database says...
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "pointer_unauthorized"), str(v)  # ...verify says it is a lie
    _assert_load_refused(home, tmp_path, "m", "pointer_unauthorized")
    ok(cli(home, "audit", "verify"))


def test_active_pointer_removed_from_database(site: Site, home: Path) -> None:
    """``DELETE FROM active``: a name with stored records and audited pointer moves but no
    active version is tampering too (the last authorized move set one)."""
    _sql(home, "DELETE FROM active WHERE name = 'm'")
    before = snapshot(home)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "pointer_unauthorized"), str(v)
    statuses = {(x["name"], x["version"]): (x["status"], x["code"]) for x in v.out["results"]}
    assert statuses[("m", "2.0")] == ("unauthorized", "pointer_unauthorized")
    assert {s for (n, _), s in statuses.items() if n != "m"} == {("ok", None)}
    assert_unchanged(before, snapshot(home))  # verify is read-only


def test_active_pointer_moved_to_a_version_with_no_record(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """``UPDATE active SET version = '9.9'`` (no such record): no stored version is active
    then, and the pointer is judged like a removed one, by ``verify``'s batched pass and by
    the one-record check of a load (``load m@2.0``), never passed over."""
    _sql(home, "UPDATE active SET version = '9.9' WHERE name = 'm'")
    before = snapshot(home)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "pointer_unauthorized"), str(v)
    statuses = {(x["name"], x["version"]): (x["status"], x["code"]) for x in v.out["results"]}
    assert statuses[("m", "2.0")] == ("unauthorized", "pointer_unauthorized")
    assert {s for (n, _), s in statuses.items() if n != "m"} == {("ok", None)}
    assert_unchanged(before, snapshot(home))
    _assert_load_refused(home, tmp_path, "m@2.0", "pointer_unauthorized")
    # and the active load, which finds no record: tampering (exit 4), not "not found" (2)
    _assert_load_refused(home, tmp_path, "m", "pointer_unauthorized")


def test_record_removed_is_refused_not_reported_missing(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """A record the log says was imported is gone (its row deleted): ``load m`` and
    ``load m@2.0`` are exit 4 ``record_unauthorized``; a version never imported is still
    ``not_found`` (exit 2)."""
    _sql(home, "DELETE FROM artifacts WHERE name = 'm' AND version = '2.0'")
    _assert_load_refused(home, tmp_path, "m", "record_unauthorized")
    _assert_load_refused(home, tmp_path, "m@2.0", "record_unauthorized")
    r = _load(home, "m@7.0", tmp_path)
    assert (r.rc, r.code) == (2, "not_found"), str(r)  # type: ignore[attr-defined]


def test_active_pointer_removed_is_refused_by_the_active_load(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """``DELETE FROM active``: ``load m`` finds no active version, but an audited move set
    one: exit 4 ``pointer_unauthorized``, not an operator's ``not_found``. A name nothing
    ever set stays ``not_found`` (exit 2)."""
    _sql(home, "DELETE FROM active WHERE name = 'm'")
    _assert_load_refused(home, tmp_path, "m", "pointer_unauthorized")
    r = _load(home, "never-imported", tmp_path)
    assert (r.rc, r.code) == (2, "not_found"), str(r)  # type: ignore[attr-defined]


def test_pointer_moved_and_audit_event_forged(site: Site, home: Path, tmp_path: Path) -> None:
    """Moving the pointer and rewriting the import event's version breaks the chain."""
    _sql(home, "UPDATE active SET version = '1.0' WHERE name = 'm'")
    _sql(home, "UPDATE audit SET version = '1.0' WHERE name = 'm' AND version = '2.0'")
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "pointer_unauthorized"), str(v)
    a = cli(home, "audit", "verify")
    assert (a.rc, a.code) == (4, "audit_chain_broken"), str(a)


def test_record_digest_edited_in_database(site: Site, home: Path, tmp_path: Path) -> None:
    """A record pointed at another stored object (the bytes of m@1.0 for m@2.0)."""
    old = _object(home, site, "m", "1.0").name
    _sql(home, "UPDATE artifacts SET digest = ? WHERE name = 'm' AND version = '2.0'", old)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "record_unauthorized"), str(v)
    _assert_load_refused(home, tmp_path, "m", "record_unauthorized")


@pytest.mark.parametrize(
    ("column", "value"),
    [("media_type", "application/x-pickle"), ("release", 99)],
)
def test_record_field_edited_in_database(
    site: Site, home: Path, tmp_path: Path, column: str, value: object
) -> None:
    """The media type and release a loader is handed are those the signed manifest gives:
    a column edited to something else is a record no manifest backs (exit 4)."""
    _sql(home, f"UPDATE artifacts SET {column} = ? WHERE name = 'm' AND version = '2.0'", value)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "record_unauthorized"), str(v)
    bad = [r for r in v.out["results"] if r["status"] != "ok"]
    assert [(r["name"], r["version"]) for r in bad] == [("m", "2.0")], bad
    _assert_load_refused(home, tmp_path, "m", "record_unauthorized")


@pytest.mark.parametrize("column", ['["feed"]', "[]"])
def test_record_signers_edited_in_database(
    site: Site, home: Path, tmp_path: Path, column: str
) -> None:
    """The signers that count are recomputed from the stored signed manifest, never read
    from the column; but the column is what ``list --json`` shows incident responders, so
    ``verify`` holds it to the import's audit event: an edited column is exit 4; and a
    load, which hands the loader that column in ``LoadedArtifact.record``, refuses too."""
    _sql(home, "UPDATE artifacts SET signers = ? WHERE name = 'm' AND version = '2.0'", column)
    before = snapshot(home)
    v = cli(home, "verify")
    assert (v.rc, v.code) == (4, "record_unauthorized"), str(v)
    bad = [r for r in v.out["results"] if r["status"] != "ok"]
    assert [(r["name"], r["version"]) for r in bad] == [("m", "2.0")], bad
    assert "signers differ" in bad[0]["message"], bad
    one = cli(home, "verify", "m@2.0")
    assert (one.rc, one.code) == (4, "record_unauthorized"), str(one)
    assert_unchanged(before, snapshot(home))
    _assert_load_refused(home, tmp_path, "m", "record_unauthorized")


@pytest.mark.parametrize(
    ("column", "value"),
    [("signers", "not json"), ("signers", '{"a": 1}'), ("signers", "[1]"), ("size", "big")],
)
def test_record_column_no_import_writes(
    site: Site, home: Path, tmp_path: Path, column: str, value: str
) -> None:
    """A column holding a value no import writes: a clear exit 4 from ``list`` and
    ``verify`` alike, naming the record, never an internal error."""
    _sql(home, f"UPDATE artifacts SET {column} = ? WHERE name = 'm' AND version = '2.0'", value)
    before = home_files(home)
    for args in (("list",), ("verify",), ("verify", "m")):
        r = cli(home, *args)
        assert (r.rc, r.code) == (4, "record_unauthorized"), str(r)
        assert "m@2.0" in r.out["error"]["message"], str(r)
    assert home_files(home) == before  # read-only: nothing written
    r = _load(home, "m", tmp_path)
    assert (r.rc, r.code) == (4, "record_unauthorized"), str(r)  # type: ignore[attr-defined]
    assert not (tmp_path / "out.bin").exists()
    assert outside_db(home_files(home)) == outside_db(before)  # no object touched


@pytest.mark.parametrize("detail", ["[]", '"text"', "not json", "{}"])
def test_import_event_detail_no_import_writes(
    site: Site, home: Path, tmp_path: Path, detail: str
) -> None:
    """An import event's detail edited to something no import writes (not an object, not
    JSON, an object without signers): exit 4 from verify and load, never an internal
    error, whether the event backs the active version (m@2.0) or an older one (m@1.0)."""
    _sql(
        home,
        "UPDATE audit SET detail = ? WHERE type = 'import' AND name = 'm' AND version = '1.0'",
        detail,
    )
    _sql(
        home,
        "UPDATE audit SET detail = ? WHERE type = 'import' AND name = 'o' AND version = '1.0'",
        detail,
    )
    before = home_files(home)
    for args in (("verify",), ("verify", "m@1.0"), ("verify", "o")):
        v = cli(home, *args)
        assert v.rc == 4 and v.code in ("record_unauthorized", "pointer_unauthorized"), str(v)
    assert home_files(home) == before  # verify is read-only
    for ref in ("o", "m@1.0"):
        r = _load(home, ref, tmp_path)
        assert r.rc == 4, str(r)  # type: ignore[attr-defined]
        assert r.code in ("record_unauthorized", "pointer_unauthorized"), str(r)  # type: ignore[attr-defined]
        assert not (tmp_path / "out.bin").exists()
    assert outside_db(home_files(home)) == outside_db(before)  # no object touched


def test_record_without_its_import_event(site: Site, home: Path) -> None:
    """A record whose accepted import event is gone from the log (the event's type
    changed, so the chain no longer hashes) has no audited signers: exit 4."""
    _sql(
        home,
        "UPDATE audit SET outcome = 'rejected'"
        " WHERE type = 'import' AND name = 'm' AND version = '1.0'",
    )
    before = home_files(home)
    for args in (("verify",), ("verify", "m@1.0")):
        v = cli(home, *args)
        assert (v.rc, v.code) == (4, "record_unauthorized"), str(v)
        bad = [r for r in v.out["results"] if (r["name"], r["version"]) == ("m", "1.0")]
        assert "no intact audited import event" in bad[0]["message"], str(v)
    assert home_files(home) == before  # verify is read-only


def test_import_event_signers_edited_with_the_column(site: Site, home: Path) -> None:
    """Editing the column and the import event's detail to agree breaks the event's hash."""
    forged = '["feed"]'
    _sql(home, "UPDATE artifacts SET signers = ? WHERE name = 'm' AND version = '1.0'", forged)
    _sql(
        home,
        "UPDATE audit SET detail = json_set(detail, '$.signers', json(?))"
        " WHERE type = 'import' AND name = 'm' AND version = '1.0'",
        forged,
    )
    before = home_files(home)
    for args in (("verify",), ("verify", "m@1.0")):
        v = cli(home, *args)
        assert (v.rc, v.code) == (4, "record_unauthorized"), str(v)
    assert home_files(home) == before  # verify is read-only


def test_audit_event_edited(site: Site, home: Path) -> None:
    _sql(home, "UPDATE audit SET version = '9' WHERE seq = 2")
    a = cli(home, "audit", "verify")
    assert (a.rc, a.code) == (4, "audit_chain_broken"), str(a)


def test_audit_event_removed(site: Site, home: Path) -> None:
    _sql(home, "DELETE FROM audit WHERE seq = 3")
    a = cli(home, "audit", "verify")
    assert (a.rc, a.code) == (4, "audit_chain_broken"), str(a)


def test_audit_tail_truncated_is_caught_by_witness(wsite: Site, tmp_path: Path) -> None:
    """Cutting the last events keeps the chain valid; the witness notices."""
    home, w = _whome(wsite, tmp_path)
    _sql(home, "DELETE FROM audit WHERE seq > 10")
    a = cli(home, "audit", "verify", witness=w)
    assert (a.rc, a.code) == (4, "audit_chain_broken"), str(a)


# --- a restored older copy of the state (VM snapshot, backup) -------------------------------


def _whome(wsite: Site, tmp: Path) -> tuple[Path, Path]:
    assert wsite.witness is not None
    w = tmp / "witness.json"
    home = copy_home(wsite.home, tmp / "home", witness_src=wsite.witness, witness_dst=w)
    return home, w


def test_restored_older_state_is_refused(wsite: Site, tmp_path: Path) -> None:
    """Back up the home, revoke a key, restore the backup: the revoked key would be back.

    With a witness, every command that acts refuses with exit 4 until signed state
    brings the home up to the witness (a current bundle or trust update).
    """
    home, w = _whome(wsite, tmp_path)
    repo = wsite.repo
    backup = tmp_path / "backup"
    subprocess.run(["cp", "-a", str(home), str(backup)], check=True)
    revoke = repo.write(repo.trust_update(4, [RevokeKey(repo.key("pub2").keyid)]), "trust")
    ok(cli(home, "trust", "apply", revoke, witness=w))
    subprocess.run(["rm", "-rf", str(home)], check=True)
    subprocess.run(["mv", str(backup), str(home)], check=True)

    # the restored home would accept a bundle signed by the revoked key: refused, exit 4
    b = repo.bundle({"m@3.0": b"three" * 100}, sequence=3, signers=("pub2",))
    before = snapshot(home, w)
    r = cli(home, "import", b.path, witness=w)
    assert (r.rc, r.code) == (4, "state_rolled_back"), str(r)
    ld = cli(home, "load", "m", "-o", tmp_path / "o.bin", witness=w)
    assert (ld.rc, ld.code) == (4, "state_rolled_back"), str(ld)
    auth = repo.write(repo.rollback_auth("m", "1.0"), "auth")
    rb = cli(home, "rollback", "m", "--authorization", auth, witness=w)
    assert (rb.rc, rb.code) == (4, "state_rolled_back"), str(rb)
    av = cli(home, "audit", "verify", witness=w)
    assert (av.rc, av.code) == (4, "audit_chain_broken"), str(av)
    after = snapshot(home, w)
    assert after.listing == before.listing and after.objects == before.objects
    assert after.trust["trust_version"] == 3

    # re-sync with signed state: the same revocation again brings the home to the witness
    ok(cli(home, "trust", "apply", revoke, witness=w))
    r = cli(home, "import", b.path, witness=w)
    assert (r.rc, r.code) == (1, "revoked_key"), str(r)
    ok(cli(home, "load", "m", "-o", tmp_path / "o2.bin", witness=w))


def test_witness_removed_is_refused(wsite: Site, tmp_path: Path) -> None:
    home, w = _whome(wsite, tmp_path)
    w.unlink()
    before = snapshot(home, w)
    b = wsite.repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    r = cli(home, "import", b.path, witness=w)
    assert (r.rc, r.code) == (4, "witness_missing"), str(r)
    ld = cli(home, "load", "m", "-o", tmp_path / "o.bin", witness=w)
    assert (ld.rc, ld.code) == (4, "witness_missing"), str(ld)
    after = snapshot(home, w)
    assert_unchanged(before, after) if not new_events(before, after) else None
    assert after.listing == before.listing and after.objects == before.objects


def test_witness_is_current_after_normal_work(wsite: Site, tmp_path: Path) -> None:
    """Control: the witnessed home imports, loads and verifies normally."""
    home, w = _whome(wsite, tmp_path)
    b = wsite.repo.bundle({"m@3.0": b"three" * 100}, sequence=3)
    ok(cli(home, "import", b.path, witness=w))
    ok(cli(home, "load", "m", "-o", tmp_path / "o.bin", witness=w))
    assert (tmp_path / "o.bin").read_bytes() == b"three" * 100
    # a load is an audit event the witness has not seen yet: "home_ahead" is fine
    assert ok(cli(home, "audit", "verify", witness=w))["witness"] in ("current", "home_ahead")


def test_removed_trailing_load_event_is_evident(wsite: Site, tmp_path: Path) -> None:
    home, w = _whome(wsite, tmp_path)
    ok(cli(home, "load", "m", "-o", tmp_path / "o.bin", witness=w))
    _sql(home, "DELETE FROM audit WHERE type = 'load'")
    a = cli(home, "audit", "verify", witness=w)
    assert (a.rc, a.code) == (4, "audit_chain_broken"), str(a)


def test_verify_of_a_home_without_its_objects_folder(home: Path) -> None:
    """Every object gone with its folder: each record is object_tampered (exit 4), never an
    internal error (verify's hashing pass once failed closing what it never opened)."""
    import shutil

    subprocess.run(["chattr", "-R", "-i", str(home / "objects")], check=False, capture_output=True)
    shutil.rmtree(home / "objects")
    before = snapshot(home)
    r = cli(home, "verify")
    assert (r.rc, r.code) == (4, "object_tampered"), str(r)
    assert_unchanged(before, snapshot(home))
