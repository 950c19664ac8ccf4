"""Authorized rollback: every refusal with its code, exit 1, store unchanged, audited."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site

from appliance import audit
from appliance.rollback import authorize_rollback
from appliance.store import find, object_path, records
from appliance.truststore import time_floors
from bundles.documents import ROLLBACK_PAYLOAD_TYPE, RollbackAuthorization
from bundles.dsse import Envelope
from bundles.keys import PrivateKey
from bundles.timeutil import parse_stamp, utcnow

V1, V2 = b"model one", b"model two"


def _site(tmp: Path) -> Site:
    s = make_site(tmp)
    s.ship({"model@1.0": V1})
    s.ship({"model@2.0": V2})
    return s


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A fresh site, for tests that change state."""
    return _site(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """One site for the refusals: they change nothing but the audit log."""
    return _site(tmp_path_factory.mktemp("refusals"))


def auth_file(site: Site, key: PrivateKey | None = None, name: str = "model", **kw: Any) -> Path:
    path = site.tmp / f"auth-{os.urandom(4).hex()}.json"
    kw.setdefault("reason", "2.0 misbehaves")
    authorize_rollback(path, name, kw.pop("to", "1.0"), [key or site.rollback], **kw)
    return path


def unsigned_file(site: Site) -> Path:
    now = utcnow()
    auth = RollbackAuthorization(
        "ab" * 16, "model", "1.0", "no one signed", now, now + timedelta(days=1)
    )
    path = site.tmp / "unsigned.json"
    path.write_bytes(Envelope(ROLLBACK_PAYLOAD_TYPE, auth.to_payload(), ()).to_bytes())
    return path


def store_listing(site: Site, cli: bool = False) -> Any:
    """What ``list --json`` prints (through the API unless ``cli``: subprocesses are slow)."""
    if cli:
        return site.cli("list", "--json", check=0).json["artifacts"]
    db = site.h.db()
    try:
        return [r.to_dict() for r in records(db)], db.execute(
            "SELECT * FROM used_authorizations"
        ).fetchall()
    finally:
        db.conn.close()


def refused(site: Site, auth: Path, code: str, exit_code: int = 1, cli: bool = False) -> None:
    before = store_listing(site, cli)
    res = site.cli("rollback", "model", "--authorization", auth, "--json")
    assert res.code == exit_code, res.stderr
    assert res.json["error"]["code"] == code
    assert "Traceback" not in res.stderr
    assert store_listing(site, cli) == before
    if cli:
        events = site.cli("audit", "show", "--json", check=0).json["events"]
    else:
        db = site.h.db()
        events = audit.rows(db)
        db.conn.close()
    last = events[-1]
    assert (last["type"], last["outcome"], last["code"]) == ("rollback", "rejected", code)


def test_publisher_signed_is_not_a_rollback_authorization(shared: Site) -> None:
    refused(shared, auth_file(shared, shared.publisher), "key_not_authorized", cli=True)


def test_unsigned_file_is_refused(shared: Site) -> None:
    refused(shared, unsigned_file(shared), "rollback_not_authorized")


def test_bundle_manifest_is_not_an_authorization(shared: Site) -> None:
    refused(shared, shared.bundles[1] / "manifest.dsse.json", "rollback_not_authorized")


def test_root_key_is_the_wrong_role(shared: Site) -> None:
    refused(shared, auth_file(shared, shared.root), "key_not_authorized")


def test_unknown_key_is_refused(shared: Site) -> None:
    refused(shared, auth_file(shared, PrivateKey.generate()), "rollback_not_authorized")


def test_expired_authorization(shared: Site) -> None:
    past = utcnow() - timedelta(days=10)
    path = auth_file(shared, issued_at=past, expires=past + timedelta(days=1))
    refused(shared, path, "authorization_expired")


def test_authorization_for_another_artifact(shared: Site) -> None:
    refused(shared, auth_file(shared, name="other"), "authorization_mismatch")


def test_authorization_for_another_site(shared: Site) -> None:
    refused(shared, auth_file(shared, sites=("site-b",)), "authorization_mismatch")


def test_digest_must_match_the_stored_record(shared: Site) -> None:
    refused(shared, auth_file(shared, digest="0" * 64), "authorization_mismatch")


def test_tampered_authorization_signature(shared: Site) -> None:
    path = auth_file(shared)
    env = Envelope.from_bytes(path.read_bytes())
    forged = RollbackAuthorization.from_payload(env.payload)
    payload = forged.to_payload().replace(b"2.0 misbehaves", b"2.0 misbehaved")
    path.write_bytes(Envelope(env.payload_type, payload, env.signatures).to_bytes())
    refused(shared, path, "bad_signature")


def test_revoked_rollback_key(site: Site) -> None:
    path = auth_file(site)
    site.cli("trust", "apply", site.revoke(site.rollback), check=0)
    refused(site, path, "revoked_key")


def test_used_twice(site: Site) -> None:
    path = auth_file(site)
    site.cli("rollback", "model", "--authorization", path, check=0)
    site.ship({"model@3.0": b"three"})  # 1.0 is no longer active: only single use refuses
    refused(site, path, "authorization_reused")


def test_target_absent_or_already_active(shared: Site) -> None:
    refused(shared, auth_file(shared, to="9.9"), "not_found", exit_code=2)
    refused(shared, auth_file(shared, to="2.0"), "already_active", exit_code=2)


def test_usage_errors(shared: Site) -> None:
    assert shared.cli("rollback", "model").code == 2  # no --authorization
    assert shared.cli("rollback", "model", "--authorization", "x", "--to", "1.0").code == 2
    assert shared.cli("rollback", "model", "--authorization", shared.tmp / "absent").code == 3


def test_authorized_rollback_then_first_load_verified(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "auth.json"
    res = site.cli(
        "rollback", "authorize", out, "model", "--to", "1.0",
        "--key", site.keydir / "rollback.key", "--reason", "2.0 breaks tokenizer",
        "--expires", "2d", "--json", check=0,
    )  # fmt: skip
    auth = res.json
    assert auth["name"] == "model" and auth["to_version"] == "1.0" and auth["any_site"]
    assert len(auth["id"]) == 32 and auth["signers"] == [site.rollback.keyid]
    res = site.cli("rollback", "model", "--authorization", out, "--json", check=0)
    doc = res.json
    assert (doc["from_version"], doc["to_version"]) == ("2.0", "1.0")
    assert doc["authorized_by"] == [site.rollback.keyid]
    assert doc["reason"] == "2.0 breaks tokenizer" and doc["authorization_id"] == auth["id"]
    assert site.cli("load", "model", check=0).stdout == V1
    assert site.cli("verify", check=0).code == 0  # provenance accepts the authorized move
    db = site.h.db()
    floor = time_floors(db).rollback  # the rollback floor, from the used authorization
    db.conn.close()
    assert floor is not None and floor >= parse_stamp(auth["issued_at"])
    hist = site.cli("history", "model", "--json", check=0).json
    moves = [e for e in hist["events"] if e["type"] == "rollback"]
    assert len(moves) == 1 and moves[0]["outcome"] == "accepted"
    assert moves[0]["signers"] == [site.rollback.keyid]
    assert moves[0]["reason"] == "2.0 breaks tokenizer"
    assert (moves[0]["from_version"], moves[0]["to_version"]) == ("2.0", "1.0")
    loads = [e for e in hist["events"] if e["type"] == "load"]
    assert loads[-1]["outcome"] == "verified" and loads[-1]["version"] == "1.0"


def test_rollback_to_an_object_tampered_while_inactive(site: Site) -> None:
    db = site.h.db()
    path = object_path(site.h, find(db, "model", "1.0").digest)
    db.conn.close()
    os.chmod(path, 0o644)
    path.write_bytes(b"model 0ne")
    os.chmod(path, 0o444)
    auth = auth_file(site, digest=None)
    site.cli("rollback", "model", "--authorization", auth, check=0)  # a pointer move only
    marker = site.tmp / "ran"
    res = site.cli("--json", "exec", "model", "--", "touch", marker)
    assert res.code == 4 and res.json["error"]["code"] == "object_tampered"
    assert not marker.exists()
    assert site.cli("load", "model").code == 4
