"""Complexity pinned by counting work (never by timing).

* ``verify`` of N records from one bundle verifies and parses that bundle's stored
  signed manifest once, not N times; a changed stored envelope is not served from the
  memo.
* ``verify`` of N records runs a number of SQL statements that does not grow with N
  (the pointer events are read once, the database token taken once, per command).
* Audited loads from one bundle read and hash its stored signed manifest once, not once
  per load (a load's own audit commit does not make the next one read it again); a
  change by anyone else does.
* ``verify`` opens each ``objects/xx`` once, and hashes small objects in helper
  processes when there are many.
* An import makes its batch durable with two ``syncfs`` calls (before and after the
  renames) and a number of ``fsync`` calls that does not grow with its artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site

import appliance
from appliance import provenance, store, verify
from appliance.errors import RecordUnauthorizedError
from appliance.importer import import_bundle
from appliance.store import Record, records
from appliance.truststore import load_trust
from appliance.verify import verify_record, verify_records
from bundles.dsse import Envelope


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    for table in (provenance._memo, provenance._memo_keyids, provenance._row_digests):
        table.clear()
    yield


def _bundle(site: Site, n: int, tag: str) -> Path:
    return site.bundle({f"{tag}{i}@1": f"{tag} {i}".encode() * 50 for i in range(n)})


def _verify_all(site: Site) -> list[str]:
    db = site.h.db()
    try:
        trust = load_trust(db)
        return [verify_record(site.h, db, trust, r).status for r in records(db)]
    finally:
        db.conn.close()


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {"verify_envelope": 0, "from_payload": 0}
    real_verify = provenance.verify_envelope
    real_parse = provenance.parse_stored

    def verify(*a: Any, **k: Any) -> Any:
        seen["verify_envelope"] += 1
        return real_verify(*a, **k)

    def parse(payload: bytes) -> Any:
        seen["from_payload"] += 1
        return real_parse(payload)

    monkeypatch.setattr(provenance, "verify_envelope", verify)
    monkeypatch.setattr(provenance, "parse_stored", parse)
    provenance._manifest_cache.clear()  # parses made earlier in this process (imports)
    return seen


@pytest.mark.parametrize("n", [3, 40])
def test_verify_of_n_records_verifies_the_manifest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    site = make_site(tmp_path)
    import_bundle(site.h, _bundle(site, n, "a"))
    seen = _counting(monkeypatch)
    assert _verify_all(site) == ["ok"] * n
    assert seen == {"verify_envelope": 1, "from_payload": 1}
    assert _verify_all(site) == ["ok"] * n  # a second pass in the same process: no more
    assert seen == {"verify_envelope": 1, "from_payload": 1}


def test_two_bundles_two_verifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path)
    import_bundle(site.h, _bundle(site, 5, "a"))
    import_bundle(site.h, _bundle(site, 7, "b"))
    seen = _counting(monkeypatch)
    assert _verify_all(site) == ["ok"] * 12
    assert seen == {"verify_envelope": 2, "from_payload": 2}


def _forge_stored_envelope(site: Site) -> None:
    """Another connection rewrites the stored manifest (one byte more of payload)."""
    db = site.h.db()
    try:
        raw = bytes(db.execute("SELECT envelope FROM manifests").fetchone()[0])
        env = Envelope.from_bytes(raw)
        forged = Envelope(env.payload_type, env.payload + b" ", env.signatures)
        db.execute("UPDATE manifests SET envelope = ?", [forged.to_bytes()])
    finally:
        db.conn.close()


def test_a_changed_stored_envelope_is_not_served_from_the_memo(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_bundle(site.h, _bundle(site, 4, "a"))
    assert _verify_all(site) == ["ok"] * 4  # now in the memo
    _forge_stored_envelope(site)
    statuses = _verify_all(site)
    assert statuses == ["unauthorized"] * 4


def _verify_statements(site: Site) -> tuple[list[str], int, int]:
    """Statuses, SQL statements run and pointer-event reads of one ``verify_records`` pass
    over every record (what ``appliance verify`` does)."""
    db = site.h.db()
    statements: list[str] = []
    try:
        trust = load_trust(db)
        recs = records(db)
        reads = provenance.counters["pointer_reads"]
        db.conn.set_trace_callback(statements.append)
        statuses = [s.status for s in verify_records(site.h, db, trust, recs)]
        db.conn.set_trace_callback(None)
        return statuses, len(statements), provenance.counters["pointer_reads"] - reads
    finally:
        db.conn.close()


def test_verify_statements_do_not_grow_with_records(tmp_path: Path) -> None:
    small_site = make_site(tmp_path / "small")
    import_bundle(small_site.h, _bundle(small_site, 50, "a"))
    large_site = make_site(tmp_path / "large")
    import_bundle(large_site.h, _bundle(large_site, 200, "a"))
    small = _verify_statements(small_site)
    large = _verify_statements(large_site)
    assert small[0] == ["ok"] * 50 and large[0] == ["ok"] * 200
    assert small[1] == large[1], (small[1], large[1])  # the same SQL for 50 and 200 records
    assert small[2] == large[2] == 1  # the pointer events: read once per pass
    assert small[1] < 20, small[1]


def _import_counting(site: Site, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    calls = {"fsync": 0}
    real = os.fsync

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    before = store.counters["syncfs"]
    import_bundle(site.h, bundle)
    monkeypatch.setattr(os, "fsync", real)
    return store.counters["syncfs"] - before, calls["fsync"]


def test_import_durability_does_not_grow_with_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    small = _import_counting(site, _bundle(site, 2, "a"), monkeypatch)
    large = _import_counting(site, _bundle(site, 60, "b"), monkeypatch)
    assert small[0] == large[0] == 2, (small, large)  # one syncfs before, one after renames
    assert small[1] == large[1], (small, large)  # fsyncs: the same for 2 and 60 artifacts


def _create_counting(tmp: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    from datetime import timedelta

    from bundles import durable
    from bundles.keys import PrivateKey
    from bundles.timeutil import utcnow
    from bundles.writer import ArtifactSpec, create_bundle

    src = tmp / f"src{n}"
    src.mkdir()
    specs = []
    for i in range(n):
        (src / f"f{i}").write_bytes(b"x" * (i + 1))
        specs.append(ArtifactSpec(f"f{i}", "1", src / f"f{i}"))
    calls = {"fsync": 0}
    real = os.fsync

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    before = durable.counters["syncfs"]
    create_bundle(
        tmp / f"bundle{n}",
        specs,
        stream="models",
        sequence=1,
        keys=[PrivateKey.generate()],
        expires=utcnow() + timedelta(days=1),
        any_site=True,
    )
    monkeypatch.setattr(os, "fsync", real)
    return durable.counters["syncfs"] - before, calls["fsync"]


def test_bundle_create_durability_does_not_grow_with_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _create_counting(tmp_path, 2, monkeypatch)
    large = _create_counting(tmp_path, 50, monkeypatch)
    assert small == large == (1, small[1]), (small, large)


def _count_manifest_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {"reads": 0}
    real = provenance._envelope_digest

    def digest(raw: bytes) -> bytes:
        seen["reads"] += 1
        return real(raw)

    monkeypatch.setattr(provenance, "_envelope_digest", digest)
    return seen


def _load(site: Site, name: str) -> bytes:
    with appliance.load(name, home=site.home, record=True) as art:
        return art.read()


def test_audited_loads_read_the_stored_manifest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path)
    import_bundle(site.h, _bundle(site, 30, "a"))
    seen = _count_manifest_reads(monkeypatch)
    for i in range(6):
        assert _load(site, f"a{i}") == f"a {i}".encode() * 50
    assert seen["reads"] == 1  # before: once per load (each load's event changed the file)
    db = site.h.db()
    try:
        loads = db.execute("SELECT COUNT(*) FROM audit WHERE type = 'load'").fetchone()[0]
    finally:
        db.conn.close()
    assert loads == 6  # every one audited


def test_a_manifest_changed_between_audited_loads_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection's commit (here: a forged stored envelope) is never carried over:
    the next load reads the row again and refuses it."""
    site = make_site(tmp_path)
    import_bundle(site.h, _bundle(site, 4, "a"))
    seen = _count_manifest_reads(monkeypatch)
    _load(site, "a1")
    _forge_stored_envelope(site)
    with pytest.raises(RecordUnauthorizedError):
        _load(site, "a2")
    assert seen["reads"] == 2


def _verify_many(tmp_path: Path) -> tuple[list[Record], set[str], dict[str, int]]:
    """A store of enough small objects for helpers; the records, the statuses verify gave
    and the counters from before it."""
    site = make_site(tmp_path)
    n = verify._HELPER_MIN + 88
    import_bundle(site.h, site.bundle({f"f{i}@1": b"%d" % i * 20 for i in range(n)}))
    before = dict(verify.counters)
    db = site.h.db()
    try:
        recs = records(db)
        statuses = {s.status for s in verify_records(site.h, db, load_trust(db), recs)}
    finally:
        db.conn.close()
    return recs, statuses, before


def test_verify_opens_each_objects_subdir_once_and_uses_helpers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The helpers fork only when no other thread runs; here the only other one is
    # pytest-timeout's idle timer (the CLI, where verify runs, has none).
    monkeypatch.setattr(verify, "fork_is_safe", lambda: True)
    recs, statuses, before = _verify_many(tmp_path)
    assert statuses == {"ok"}
    prefixes = {r.digest[:2] for r in recs}
    # each objects/xx opened once by this process (a helper counts in its own copy)
    helpers = verify.counters["helper_processes"] - before["helper_processes"]
    assert helpers == min((os.cpu_count() or 1) - 1, verify._MAX_HELPERS)
    assert verify.counters["subdir_opens"] - before["subdir_opens"] <= len(prefixes)


def test_verify_beside_another_thread_forks_no_helper(tmp_path: Path) -> None:
    """A threaded caller (a library user, the TUI) gets the same answers, hashed in this
    process: no helper is forked beside a thread (``bundles.forks``)."""
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        _, statuses, before = _verify_many(tmp_path)
    finally:
        stop.set()
        other.join(10)
    assert statuses == {"ok"}
    assert verify.counters["helper_processes"] == before["helper_processes"]
