"""``history NAME``: imports with signers, authorized moves with who and why, loads, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_load import make_site

import appliance
from appliance.errors import ObjectTamperedError
from appliance.history import artifact_history
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
