"""``history NAME``: imports with signers, authorized moves with who and why, loads, refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conformance.driver import assert_audited_rejection, assert_unchanged, snapshot
from conftest_load import make_site

import appliance
from appliance.errors import ObjectTamperedError
from appliance.history import artifact_history
from appliance.importer import REFUSAL_NAMES
from appliance.rollback import apply_rollback, authorize_rollback
from appliance.store import find, object_path
from bundles.errors import RejectedError


def test_history_tells_the_story_in_order(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one", "tokenizer@1.0": b"tok"})
    site.ship({"model@2.0": b"two"})
    with appliance.load("model", home=site.home):
        pass
    _, bad = authorize_rollback(None, "model", "1.0", [site.publisher], reason="nope")
    with pytest.raises(RejectedError):
        apply_rollback(site.h, "model", bad)
    _, good = authorize_rollback(None, "model", "1.0", [site.rollback], reason="2.0 is broken")
    apply_rollback(site.h, "model", good)
    db = site.h.db()
    path = object_path(site.h, find(db, "model", "1.0").digest)
    path.chmod(0o644)
    path.write_bytes(b"0ne")
    with pytest.raises(ObjectTamperedError):
        appliance.load("model", home=site.home)
    hist = artifact_history(db, "model")
    db.conn.close()

    assert hist["active"] == "1.0"
    assert [v["version"] for v in hist["versions"]] == ["1.0", "2.0"]
    kinds = [(e["type"], e["outcome"], e["version"]) for e in hist["events"]]
    assert kinds == [
        ("import", "accepted", "1.0"),
        ("import", "accepted", "2.0"),
        ("load", "verified", "2.0"),
        ("rollback", "rejected", None),  # refused before its payload is parsed
        ("rollback", "accepted", "1.0"),
        ("load", "rejected", "1.0"),
    ]
    seqs = [e["seq"] for e in hist["events"]]
    assert seqs == sorted(seqs)
    imp = hist["events"][0]
    assert imp["signers"] == [site.publisher.keyid]
    assert imp["detail"]["stream"] == "models" and imp["detail"]["sequence"] == 1
    assert len(imp["digest"]) == 64
    assert hist["events"][3]["code"] == "key_not_authorized"
    move = hist["events"][4]
    assert move["signers"] == [site.rollback.keyid] and move["reason"] == "2.0 is broken"
    assert (move["from_version"], move["to_version"]) == ("2.0", "1.0")
    assert hist["events"][5]["code"] == "object_tampered"
    assert all(e["summary"] for e in hist["events"])


def test_history_cli(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    res = site.cli("history", "model", "--json", check=0)
    assert res.json["ok"] and res.json["events"][0]["type"] == "import"
    res = site.cli("history", "model", check=0)
    assert b"imported model@1.0" in res.stdout
    res = site.cli("history", "nothing", "--json", check=2)
    assert res.json["error"]["code"] == "not_found"


def _break_signature(bundle: Path) -> None:
    """Flip a bit of the publisher's signature: the manifest still parses, it no longer
    verifies (an attacker's edit of the names it lists looks the same)."""
    path = bundle / "manifest.dsse.json"
    doc = json.loads(path.read_bytes())
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[0] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    path.write_text(json.dumps(doc))


def test_history_shows_a_refused_import_that_named_the_artifact(tmp_path: Path) -> None:
    """Issue 14: a bundle with a bad signature naming X is refused, the store does not
    change, and ``history X`` shows the refusal, its code, marked unauthenticated."""
    site = make_site(tmp_path)
    site.ship({"model@1.0": b"one"})
    bad = site.bundle({"model@2.0": b"two", "evil@6.6": b"666"})
    _break_signature(bad)
    before = snapshot(site.home)
    res = site.cli("import", bad, "--json", check=1)
    assert res.json["error"]["code"] == "bad_signature"
    after = snapshot(site.home)
    assert_unchanged(before, after)
    event = assert_audited_rejection(before, after, "bad_signature")
    assert event["detail"]["artifacts"] == [
        {"name": "model", "version": "2.0"},
        {"name": "evil", "version": "6.6"},
    ]
    assert event["detail"]["authenticated"] is False
    assert event["detail"]["artifact_count"] == 2

    for name, version, kinds in (("evil", "6.6", 1), ("model", "2.0", 2)):
        hist = site.cli("history", name, "--json", check=0).json
        assert len(hist["events"]) == kinds
        refused = hist["events"][-1]
        assert (refused["type"], refused["outcome"], refused["code"]) == (
            "import",
            "rejected",
            "bad_signature",
        )
        assert refused["authenticated"] is False and refused["claimed_version"] == version
        assert refused["version"] is None  # the claim is not a version of the store
        text = site.cli("history", name, check=0).stdout.decode()
        assert f"naming {name}@{version} (UNAUTHENTICATED" in text
        assert "REFUSED [bad_signature]" in text
    assert site.cli("history", "evil", "--json", check=0).json["versions"] == []
    assert site.cli("history", "model", "--json", check=0).json["active"] == "1.0"


def test_refused_authenticated_import_names_its_artifacts(tmp_path: Path) -> None:
    """A replayed (validly signed) bundle is refused after its signature verified: the
    refusal names its artifacts as authenticated."""
    site = make_site(tmp_path)
    first = site.ship({"model@1.0": b"one"})
    res = site.cli("import", first, "--json", check=1)
    hist = site.cli("history", "model", "--json", check=0).json
    refused = hist["events"][-1]
    assert refused["code"] == res.json["error"]["code"]
    assert refused["authenticated"] is True and refused["claimed_version"] == "1.0"
    assert hist["events"][0]["authenticated"] is None  # the accepted import: not a claim


def test_refusal_names_are_bounded(tmp_path: Path) -> None:
    """At most REFUSAL_NAMES names are kept; artifact_count says how many were listed."""
    site = make_site(tmp_path)
    many = {f"a{i}@1.0": b"x" for i in range(REFUSAL_NAMES + 1)}
    bad = site.bundle(many)
    _break_signature(bad)
    site.cli("import", bad, "--json", check=1)
    event = site.cli("audit", "show", "--json", check=0).json["events"][-1]
    assert len(event["detail"]["artifacts"]) == REFUSAL_NAMES
    assert event["detail"]["artifact_count"] == REFUSAL_NAMES + 1
    assert site.cli("history", "a0", "--json", check=0).json["events"][0]["code"] == (
        "bad_signature"
    )
    last = site.cli("history", f"a{REFUSAL_NAMES}", "--json", check=2)
    assert last.json["error"]["code"] == "not_found"
