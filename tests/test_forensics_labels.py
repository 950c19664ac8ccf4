"""Issue 14 (remainder): trusted time on every audit event, key labels wherever a key id is
shown, a non-JSON audit detail refused cleanly, refused carried trust updates that name
what their bundle listed. Through the CLI where a responder would look."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import assert_audited_rejection, assert_unchanged, snapshot
from conftest_load import STREAM, Site, make_site

from appliance import audit
from appliance.importer import apply_trust_envelope
from appliance.truststore import load_trust
from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, SetThreshold, TrustUpdate
from bundles.dsse import Envelope, sign_envelope
from bundles.timeutil import format_time, parse_stamp, utcnow

PUBLISHER_LABEL = "alice-laptop"
ROLLBACK_LABEL = "ops rollback"


def _apply(site: Site, env: bytes) -> None:
    db = site.h.db()
    try:
        apply_trust_envelope(db, load_trust(db), Envelope.from_bytes(env), "test")
    finally:
        db.conn.close()


def _labelled_site(tmp_path: Path) -> Site:
    """make_site, then a root-signed update that names the publisher and rollback keys."""
    site = make_site(tmp_path)
    _apply(
        site,
        site.trust_update(
            AddKey(site.publisher.public, "publisher", STREAM, PUBLISHER_LABEL),
            AddKey(site.rollback.public, "rollback", None, ROLLBACK_LABEL),
        ),
    )
    return site


def _db_bytes(home: Path) -> str:
    h = hashlib.sha256()
    for name in ("appliance.db", "appliance.db-wal"):
        p = home / name
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def _export(site: Site) -> list[dict[str, Any]]:
    return [json.loads(line) for line in site.cli("audit", "export", check=0).stdout.splitlines()]


# --- 1. trusted time on every event; chain order, not the clock ------------------------


def test_every_event_carries_the_trusted_time(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    events = _export(site)
    assert [e["type"] for e in events] == ["init", "trust_update", "import", "bundle_import"]
    for e in events:
        tt = e["detail"]["trusted_time"]
        assert parse_stamp(tt) >= parse_stamp(e["ts"]) - timedelta(seconds=1), e
    # a root-signed time ahead of the clock is the trusted time of the events after it
    ahead = utcnow() + timedelta(days=3)
    update = TrustUpdate(site.trust_version + 1, ahead, (SetThreshold("publisher", STREAM, 1),))
    site.trust_version += 1
    _apply(site, sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [site.root]).to_bytes())
    site.ship({"model@2.0": b"two"})
    later = _export(site)[len(events) :]
    assert [e["type"] for e in later] == ["trust_update", "import", "bundle_import"]
    assert all(e["detail"]["trusted_time"] == format_time(ahead) for e in later)
    assert all(parse_stamp(e["ts"]) < ahead for e in later)  # the clock stayed the clock
    show = site.cli("audit", "show", "--json", check=0).json["events"]
    assert show[-1]["detail"]["trusted_time"] == format_time(ahead)
    assert f"trusted {format_time(ahead)}" in site.cli("audit", "show", check=0).stdout.decode()


def test_clock_running_backwards_chain_order_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two imports, the clock a day ahead for the first and a day behind for the second:
    history lists them in chain order and shows both the time stamp (never backwards),
    the raw clock of the second and each event's trusted time."""
    site = make_site(tmp_path)
    now = utcnow()
    ahead, behind = now + timedelta(days=1), now - timedelta(days=1)
    monkeypatch.setattr(audit, "utcnow", lambda: ahead)
    site.ship({"model@1.0": b"one"})
    monkeypatch.setattr(audit, "utcnow", lambda: behind)
    site.ship({"model@2.0": b"two"})
    monkeypatch.undo()

    hist = site.cli("history", "model", "--json", check=0).json
    events = hist["events"]
    assert [e["version"] for e in events] == ["1.0", "2.0"]  # chain order
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    first, second = events
    assert first["ts"] == second["ts"] == format_time(ahead)  # never runs backwards
    assert "clock" not in first["detail"]
    assert second["detail"]["clock"] == format_time(behind)  # the raw clock is kept
    assert first["trusted_time"] == format_time(ahead)
    # the clock went back; the trusted time is the floor in force (root-signed, ~now)
    assert parse_stamp(second["trusted_time"]) >= parse_stamp(format_time(behind))
    assert second["trusted_time"] == second["detail"]["trusted_time"]
    text = site.cli("history", "model", check=0).stdout.decode().splitlines()
    line1 = next(t for t in text if "imported model@1.0" in t)
    line2 = next(t for t in text if "imported model@2.0" in t)
    assert text.index(line1) < text.index(line2)
    assert f"trusted {first['trusted_time']}" in line1
    assert f"trusted {second['trusted_time']}" in line2
    assert f"(system clock {format_time(behind)})" in line2
    # --at by the chain's time stamps: at 'ahead' both had happened
    at = site.cli("history", "model", "--at", format_time(ahead), "--json", check=0).json
    assert [e["version"] for e in at["events"]] == ["1.0", "2.0"] and at["active"] == "2.0"


# --- 2. key labels wherever a key id is shown ------------------------------------------


def _label_of(entries: list[dict[str, Any]], keyid: str) -> str | None:
    (hit,) = [e for e in entries if e["keyid"] == keyid]
    label: str | None = hit["label"]
    return label


def test_labels_in_import_history_audit_and_bundle_inspect(tmp_path: Path) -> None:
    site = _labelled_site(tmp_path)
    pub = site.publisher.keyid
    shown = f"{PUBLISHER_LABEL} ({pub[:16]})"
    bundle = site.bundle({"model@1.0": b"one"})

    pubkey = site.keydir / "publisher.pub"
    doc = site.cli("--json", "bundle", "inspect", bundle, "--key", pubkey, check=0).json
    assert doc["signers"] == [pub] and _label_of(doc["labels"], pub) == PUBLISHER_LABEL
    assert doc["signatures"][0]["label"] == PUBLISHER_LABEL
    text = site.cli("bundle", "inspect", bundle, check=0).stdout.decode()
    assert f"({PUBLISHER_LABEL})" in text

    imp = site.cli("import", bundle, "--json", check=0).json
    assert imp["signers"] == [pub]  # nothing renamed
    assert imp["labels"] == [{"keyid": pub, "label": PUBLISHER_LABEL}]
    second = site.bundle({"model@2.0": b"two"})
    out = site.cli("import", second, check=0)
    assert shown in out.stdout.decode() + out.stderr

    hist = site.cli("history", "model", "--json", check=0).json
    assert hist["labels_error"] is None
    assert hist["events"][0]["signers"] == [pub]
    assert hist["events"][0]["labels"] == [{"keyid": pub, "label": PUBLISHER_LABEL}]
    assert shown in hist["events"][0]["summary"]
    assert shown in site.cli("history", "model", check=0).stdout.decode()

    events = site.cli("audit", "show", "--json", check=0).json["events"]
    imported = [e for e in events if e["type"] == "import"]
    assert imported and all(e["labels"] == hist["events"][0]["labels"] for e in imported)
    init = events[0]
    assert init["type"] == "init"
    assert _label_of(init["labels"], site.root.keyid) is None  # a key without a label
    assert f"by {shown}" in site.cli("audit", "show", check=0).stdout.decode()


def test_labels_in_rollback_authorize_and_apply(tmp_path: Path) -> None:
    site = _labelled_site(tmp_path)
    for v in ("1.0", "2.0", "3.0"):
        site.ship({f"model@{v}": v.encode()})
    rid = site.rollback.keyid
    shown = f"{ROLLBACK_LABEL} ({rid[:16]})"
    auth = tmp_path / "auth.json"
    key = site.keydir / "rollback.key"
    res = site.cli(
        "rollback", "authorize", auth, "model", "--to", "2.0", "--key", key, "--reason", "bad"
    )
    assert res.code == 0, res.stderr
    assert f"signed by {shown}" in res.stdout.decode() + res.stderr
    auth2 = tmp_path / "a2.json"
    doc = site.cli(
        "rollback", "authorize", auth2, "model", "--to", "1.0", "--key", key, "--json", check=0
    ).json
    assert doc["signers"] == [rid] and doc["labels"] == [{"keyid": rid, "label": ROLLBACK_LABEL}]

    applied = site.cli("rollback", "model", "--authorization", auth, "--json", check=0).json
    assert applied["authorized_by"] == [rid]
    assert applied["labels"] == [{"keyid": rid, "label": ROLLBACK_LABEL}]
    hist = site.cli("history", "model", "--json", check=0).json
    move = hist["events"][-1]
    assert move["type"] == "rollback" and move["signers"] == [rid]
    assert move["labels"] == [{"keyid": rid, "label": ROLLBACK_LABEL}]
    assert f"authorized by {shown}" in move["summary"]
    text = site.cli("rollback", "model", "--authorization", auth2, check=0)
    assert f"authorized by {shown}" in text.stdout.decode() + text.stderr


def _edit_stored_label(home: Path, version: int, old: str, new: str) -> None:
    """An attacker with write access to the database renames a key: labels live only in
    the stored root-signed trust documents, so that is where the edit has to go."""
    con = sqlite3.connect(home / "appliance.db")
    (raw,) = con.execute(
        "SELECT envelope FROM trust_documents WHERE version = ?", [version]
    ).fetchone()
    doc = json.loads(bytes(raw))
    payload = base64.b64decode(doc["payload"]).decode()
    assert old in payload
    doc["payload"] = base64.b64encode(payload.replace(old, new).encode()).decode()
    con.execute(
        "UPDATE trust_documents SET envelope = ? WHERE version = ?",
        [json.dumps(doc).encode(), version],
    )
    con.commit()
    con.close()


def test_a_label_edited_in_the_database_is_never_shown(tmp_path: Path) -> None:
    site = _labelled_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    _edit_stored_label(site.home, site.trust_version, PUBLISHER_LABEL, "mallory-pc")
    before = _db_bytes(site.home)
    # decisions refuse the edited evidence outright
    res = site.cli("trust", "show", "--json", check=4)
    assert res.json["error"]["code"] == "trust_state_unauthorized"
    # output that only names keys shows bare key ids and says why; never the edit
    hist = site.cli("history", "model", "--json", check=0)
    assert b"mallory" not in hist.stdout and PUBLISHER_LABEL.encode() not in hist.stdout
    doc = hist.json
    assert doc["labels_error"].startswith("key labels unavailable [trust_state_unauthorized]")
    assert doc["events"][0]["labels"] == [{"keyid": site.publisher.keyid, "label": None}]
    text = site.cli("history", "model", check=0)
    assert "key labels unavailable [trust_state_unauthorized]" in text.stderr
    assert b"mallory" not in site.cli("audit", "show", "--json", check=0).stdout
    assert _db_bytes(site.home) == before


# --- 3. a detail that is not JSON: a clean refusal --------------------------------------


def _rewrite_detail(home: Path, seq: int, detail: str) -> None:
    """Replace one event's detail and re-link every later hash (the chain has no key: a
    writer of the database can do this), so only the parse can notice."""
    con = sqlite3.connect(home / "appliance.db")
    con.execute("UPDATE audit SET detail = ? WHERE seq = ?", [detail, seq])
    cols = ("seq", "ts", "type", "outcome", "code", "name", "version", "detail")
    prev = audit.GENESIS
    for row in con.execute(f"SELECT {', '.join(cols)} FROM audit ORDER BY seq").fetchall():
        event = dict(zip(cols, row, strict=True))
        digest = audit.event_hash(prev, event)
        con.execute(
            "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", [prev, digest, event["seq"]]
        )
        prev = digest
    con.commit()
    con.close()


@pytest.mark.parametrize("detail", ["not json {", "[1, 2]"])
def test_history_refuses_an_audit_detail_that_is_not_a_json_object(
    tmp_path: Path, detail: str
) -> None:
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    seq = next(e["seq"] for e in _export(site) if e["type"] == "import")
    _rewrite_detail(site.home, seq, detail)
    before = _db_bytes(site.home)
    for args in (("history", "model"), ("history", "model", "--at", format_time(utcnow()))):
        res = site.cli(*args, "--json", check=4)
        assert res.json["error"]["code"] == "audit_chain_broken"
        assert f"audit event {seq}" in res.json["error"]["message"]
        plain = site.cli(*args, check=4)
        assert "Traceback" not in plain.stderr and "[audit_chain_broken]" in plain.stderr
    res = site.cli("list", "--at", format_time(utcnow()), "--json", check=4)
    assert res.json["error"]["code"] == "audit_chain_broken"
    assert site.cli("audit", "show", "--json", check=4).json["error"]["code"] == (
        "audit_chain_broken"
    )
    # the chain was re-linked around the edit, but the verifier still refuses the detail
    res = site.cli("audit", "verify", "--json", check=4)
    assert res.json["error"]["code"] == "audit_chain_broken"
    message = res.json["error"]["message"]
    assert f"audit event {seq} has a detail that is not a JSON object" in message
    # the export is the responder's raw material: the row as stored, never refused
    exported = next(e for e in _export(site) if e["seq"] == seq)
    assert exported["detail"] is None and exported["detail_json"] == detail
    assert f"audit event {seq}" in exported["detail_error"]
    assert _db_bytes(site.home) == before


# --- 4. a refused carried trust update names what its bundle listed ---------------------


def test_refused_carried_trust_update_records_the_manifest_names(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    forged = TrustUpdate(
        site.trust_version + 1, utcnow(), (AddKey(site.rollback.public, "root", None),)
    )
    env = sign_envelope(TRUST_PAYLOAD_TYPE, forged.to_payload(), [site.publisher]).to_bytes()
    bundle = site.bundle({"model@9.0": b"nine", "other@1": b"x"}, trust_updates=(env,))
    before = snapshot(site.home)
    res = site.cli("import", bundle, "--json", check=1)
    assert res.json["error"]["code"] == "trust_update_not_authorized"
    after = snapshot(site.home)
    assert_unchanged(before, after)
    event = assert_audited_rejection(before, after, "trust_update_not_authorized")
    assert event["type"] == "trust_update" and event["name"] is None
    d = event["detail"]
    assert d["artifacts"] == [
        {"name": "model", "version": "9.0"},
        {"name": "other", "version": "1"},
    ]
    assert d["artifact_count"] == 2 and d["stream"] == STREAM and d["sequence"] == 2
    assert d["authenticated"] is True  # the manifest itself is signed by the publisher
    assert d["source"] and d["message"]

    hist = site.cli("history", "model", "--json", check=0).json
    refused = hist["events"][-1]
    assert (refused["type"], refused["outcome"], refused["code"]) == (
        "trust_update",
        "rejected",
        "trust_update_not_authorized",
    )
    assert refused["claimed_version"] == "9.0" and refused["authenticated"] is True
    assert [e["type"] for e in site.cli("history", "other", "--json", check=0).json["events"]] == [
        "trust_update"
    ]
    assert "naming model@9.0" in site.cli("history", "model", check=0).stdout.decode()


def test_trusted_time_follows_new_trust_documents_and_is_null_when_underivable(
    tmp_path: Path,
) -> None:
    """One open database (as the loader service keeps): a newer root-signed time is seen
    by the next event; an edited trust document makes trusted_time null with the refusal's
    code, and the event is still recorded."""
    from appliance.db import transaction

    site = make_site(tmp_path)
    db = site.h.db()
    try:
        with transaction(db):
            first = json.loads(audit.append(db, "load", outcome="verified")["detail"])
        ahead = utcnow() + timedelta(days=2)
        update = TrustUpdate(site.trust_version + 1, ahead, (SetThreshold("publisher", STREAM, 1),))
        site.trust_version += 1
        env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [site.root])
        apply_trust_envelope(db, load_trust(db), env, "test")
        with transaction(db):
            second = json.loads(audit.append(db, "load", outcome="verified")["detail"])
        assert parse_stamp(first["trusted_time"]) < ahead
        assert second["trusted_time"] == format_time(ahead)
        db.execute("UPDATE trust_documents SET envelope = ? WHERE version = 2", [b"{}"])
        with transaction(db):
            third = json.loads(audit.append(db, "load", outcome="verified")["detail"])
        assert third["trusted_time"] is None
        assert third["trusted_time_unknown"] == "trust_state_unauthorized"
    finally:
        db.conn.close()


def test_appending_derives_the_trust_chain_once_per_change_not_once_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting, not timing: 50 events on one open database (the loader service's journal)
    derive the verified root floor once; a new trust document makes it once more."""
    from appliance import evidence
    from appliance.db import transaction

    site = make_site(tmp_path)
    calls: list[int] = []
    real = evidence.trust_chain

    def counted(db: Any) -> Any:
        calls.append(1)
        return real(db)

    monkeypatch.setattr(evidence, "trust_chain", counted)
    db = site.h.db()
    try:
        with transaction(db):
            for _ in range(50):
                audit.append(db, "load", outcome="verified")
        assert len(calls) == 1
        update = TrustUpdate(
            site.trust_version + 1, utcnow(), (SetThreshold("publisher", STREAM, 1),)
        )
        site.trust_version += 1
        env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [site.root])
        apply_trust_envelope(db, real(db).current, env, "test")  # appends one event itself
        calls.clear()
        with transaction(db):
            for _ in range(50):
                audit.append(db, "load", outcome="verified")
        assert len(calls) == 0  # the trust_update event already derived the new floor
    finally:
        db.conn.close()
