"""Scrub finds silent corruption no kernel event reports; an import repairs a bad object."""

from __future__ import annotations

import json
import mmap
import os
import threading
import time

import pytest
from conftest_load import Site
from watch_world import Watched, make_writable, start

from appliance.history import artifact_history
from appliance.importer import import_bundle
from appliance.store import find
from appliance.truststore import load_trust
from appliance.verify import verify_record
from appliance.watch import last_verified, parse_rate
from appliance.watch.scrub import Scrubber, scrub_order
from bundles.errors import UsageError


def _flip_silently(path: os.PathLike[str]) -> None:
    """A byte changed through a shared mapping: no write(2), no inotify event (bit rot)."""
    make_writable(path)  # type: ignore[arg-type]
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as m:
            m[100] ^= 0x01
            m.flush()
    finally:
        os.close(fd)
    os.chmod(path, 0o444)


def test_parse_rate() -> None:
    assert parse_rate("200M") == 200 << 20
    assert parse_rate("0") == 0
    assert parse_rate("1.5k") == 1536
    for bad in ("fast", "-1", "10X", ""):
        with pytest.raises(UsageError) as e:
            parse_rate(bad)
        assert e.value.code == "usage"


def test_scrub_finds_a_flipped_byte_in_an_object_no_one_loads(site: Site) -> None:
    # tool@1.0 is never loaded; the flip comes in before the watcher starts, unseen by it.
    db = site.h.db()
    tool = find(db, "tool", "1.0")
    db.conn.close()
    from appliance.store import object_path

    path = object_path(site.h, tool.digest)
    st_before = os.stat(path)
    _flip_silently(path)
    os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    w = start(site, scrub_rate=parse_rate("50M"))
    try:
        alarm, took = w.wait("object_modified", time.monotonic(), timeout=20)
        assert alarm.subject.endswith(tool.digest)
        assert alarm.detail == {"found_by": "scrub"}
        assert w.codes() == {"object_modified"}
        progress = w.watcher.scrub_progress()
        assert progress is not None and progress.mismatches == 1
    finally:
        w.stop.set()
        w.thread.join(timeout=30)


def test_scrub_goes_oldest_verified_first_and_records_evidence(site: Site) -> None:
    import appliance

    with appliance.load("model", home=site.h, witness=site.witness):
        pass  # model@2.0 verified now: it goes last
    db = site.h.db()
    try:
        order = [d for d, _ in scrub_order(db)]
        model2 = find(db, "model", "2.0").digest
        assert order[-1] == model2
        stop = threading.Event()
        Scrubber(site.h, 0, lambda a: None).one_pass(db, stop)
        seen = last_verified(db)
        assert set(order) <= set(seen)
        with appliance.load("model@1.0", home=site.h, witness=site.witness):
            pass  # verified after the scrub pass: now the most recently verified
        model1 = find(db, "model", "1.0").digest
        assert [d for d, _ in scrub_order(db)][-1] == model1
    finally:
        db.conn.close()


def test_rate_is_honoured(site: Site) -> None:
    """Bytes read per second stay at the rate (work counted by bytes, bounded by time)."""
    db = site.h.db()
    try:
        total = sum(s for _, s in scrub_order(db))
        rate = total // 2  # the pass must take about 2 s
        t = time.monotonic()
        Scrubber(site.h, rate, lambda a: None).one_pass(db, threading.Event())
        assert time.monotonic() - t >= 1.0
    finally:
        db.conn.close()


def test_import_repairs_a_damaged_object_and_history_shows_it(site: Site) -> None:
    w: Watched = start(site)
    try:
        db = site.h.db()
        rec = find(db, "model", "1.0")
        db.conn.close()
        from appliance.store import object_path

        path = object_path(site.h, rec.digest)
        make_writable(path)
        with open(path, "r+b") as f:
            f.write(b"ROT!")
        w.wait("object_modified", time.monotonic())
        # A new bundle that carries model@1.0 again (and something new).
        bundle = site.bundle({"model@1.0": b"one " * 1000, "extra@1.0": b"e" * 100})
        result = import_bundle(site.h, bundle, witness_path=site.witness)
        status = {a["name"]: a["status"] for a in result.to_dict()["artifacts"]}
        assert status == {"model": "repaired", "extra": "new"}
        time.sleep(1.0)
        assert w.codes() == {"object_modified"}, w.codes()  # the repair itself is no alarm
        db = site.h.db()
        try:
            assert (
                verify_record(site.h, db, load_trust(db), find(db, "model", "1.0")).status == "ok"
            )
            events = artifact_history(db, "model")["events"]
            repairs = [e for e in events if e["type"] == "repair"]
            assert len(repairs) == 1 and repairs[0]["version"] == "1.0"
            assert repairs[0]["detail"]["digest"] == rec.digest
        finally:
            db.conn.close()
        assert oct(os.stat(path).st_mode & 0o777) == "0o444"
        # The CLI's history shows it too.
        out = site.cli("history", "model", "--json", check=0)
        assert any(e["type"] == "repair" for e in json.loads(out.stdout)["events"])
    finally:
        w.stop.set()
        w.thread.join(timeout=30)


def test_present_only_when_the_object_verifies(site: Site) -> None:
    bundle = site.bundle({"model@2.0": b"two " * 1000})
    dry = import_bundle(site.h, bundle, dry_run=True)
    assert [a["status"] for a in dry.to_dict()["artifacts"]] == ["present"]
    db = site.h.db()
    rec = find(db, "model", "2.0")
    db.conn.close()
    from appliance.store import object_path

    os.unlink(object_path(site.h, rec.digest))
    dry = import_bundle(site.h, bundle, dry_run=True)
    assert [a["status"] for a in dry.to_dict()["artifacts"]] == ["damaged"]
    done = import_bundle(site.h, bundle, witness_path=site.witness)
    assert [a["status"] for a in done.to_dict()["artifacts"]] == ["repaired"]
    assert object_path(site.h, rec.digest).exists()


def _damage(site: Site) -> tuple[str, os.PathLike[str]]:
    from appliance.store import object_path

    db = site.h.db()
    digest = find(db, "model", "1.0").digest
    db.conn.close()
    path = object_path(site.h, digest)
    make_writable(path)
    with open(path, "r+b") as f:
        f.write(b"ROT!")
    os.chmod(path, 0o444)
    return digest, path


def _events(site: Site, type: str) -> list[dict[str, object]]:
    db = site.h.db()
    try:
        return [e for e in artifact_history(db, "model")["events"] if e["type"] == type]
    finally:
        db.conn.close()


def _has(site: Site, name: str) -> bool:
    db = site.h.db()
    try:
        return db.execute("SELECT 1 FROM artifacts WHERE name = ?", [name]).fetchone() is not None
    finally:
        db.conn.close()


def test_a_fault_before_the_commit_leaves_neither_the_repair_nor_its_event(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new objects are promoted, then the commit fails: no records, no repair event,
    the damaged object untouched (not silently replaced), the audit chain whole."""
    from appliance import audit

    digest, path = _damage(site)
    bad = open(path, "rb").read()
    real = audit.append

    def failing(db: object, type: str, **kw: object) -> object:
        if type == "repair":
            raise OSError(5, "injected fault inside the commit")
        return real(db, type, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "append", failing)
    bundle = site.bundle({"model@1.0": b"one " * 1000, "extra@1.0": b"e" * 100})
    with pytest.raises(OSError):
        import_bundle(site.h, bundle, witness_path=site.witness)
    monkeypatch.setattr(audit, "append", real)
    assert not _has(site, "extra") and _events(site, "repair") == []
    assert open(path, "rb").read() == bad  # not replaced without its event
    site.cli("audit", "verify", check=0)
    # The next import does the repair, with its event.
    done = import_bundle(site.h, bundle, witness_path=site.witness)
    assert {a["name"]: a["status"] for a in done.to_dict()["artifacts"]}["model"] == "repaired"
    assert len(_events(site, "repair")) == 1 and _has(site, "extra")
    site.cli("audit", "verify", check=0)


def test_a_fault_after_the_commit_leaves_the_event_and_a_refused_object(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records and repair event committed together, then the repair's rename fails: the
    history says so, loads still refuse the damaged object, the next import repairs it."""
    import appliance
    from appliance import importer

    digest, path = _damage(site)
    from appliance.store import promote as real

    def failing(home: object, staged: object, d: str, **kw: object) -> None:
        if d == digest:
            raise OSError(5, "injected crash before the repair's rename")
        real(home, staged, d, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(importer, "promote", failing)
    bundle = site.bundle({"model@1.0": b"one " * 1000, "extra@1.0": b"e" * 100})
    with pytest.raises(OSError):
        import_bundle(site.h, bundle, witness_path=site.witness)
    monkeypatch.setattr(importer, "promote", real)
    assert _has(site, "extra") and len(_events(site, "repair")) == 1
    site.cli("audit", "verify", check=0)
    with pytest.raises(Exception) as e:
        with appliance.load("model@1.0", home=site.h, witness=site.witness):
            pass
    assert getattr(e.value, "code", None) is not None
    done = import_bundle(
        site.h, site.bundle({"model@1.0": b"one " * 1000}), witness_path=site.witness
    )
    assert [a["status"] for a in done.to_dict()["artifacts"]] == ["repaired"]
    with appliance.load("model@1.0", home=site.h, witness=site.witness):
        pass
    site.cli("audit", "verify", check=0)
