"""One digest verifier: import checks every digest the manifest signs, as inspect does.

A manifest that signs a wrong SHA-256 beside the right BLAKE3 is refused by the import
(``digest_mismatch``, exit 1, the store unchanged, the refusal audited) and by ``bundle
inspect --verify``; a right one imports. Both paths use ``bundles.hashing.ArtifactDigests``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest_load import Site, make_site

from appliance.store import records
from bundles.canonical import canonical_bytes
from bundles.dsse import Envelope, sign_envelope
from bundles.manifest import PAYLOAD_TYPE
from bundles.reader import MANIFEST_FILE

# model is over staging.SMALL (copied by the kernel, hashed by the chasing thread); tok is
# under it (one read, hash and write)
DATA = {"model@1": b"weights " * 200_000, "tok@1": b"vocab " * 100}


def _with_sha256(site: Site, bundle: Path, wrong: str | None, on: str = "tok") -> None:
    """Re-sign the bundle's manifest listing SHA-256 digests (``wrong`` for artifact ``on``)."""
    env = Envelope.from_bytes((bundle / MANIFEST_FILE).read_bytes())
    doc: dict[str, Any] = json.loads(env.payload)
    by_name = {ref.partition("@")[0]: data for ref, data in DATA.items()}
    for subject in doc["subject"]:
        digest = hashlib.sha256(by_name[subject["name"]]).hexdigest()
        subject["digest"]["sha256"] = wrong if wrong and subject["name"] == on else digest
    signed = sign_envelope(PAYLOAD_TYPE, canonical_bytes(doc), [site.publisher])
    (bundle / MANIFEST_FILE).write_bytes(signed.to_bytes())


def _state(site: Site) -> tuple[Any, ...]:
    db = site.h.db()
    try:
        recs = [r.to_dict() for r in records(db)]
        events = db.execute("SELECT seq, type, outcome, code FROM audit ORDER BY seq").fetchall()
    finally:
        db.conn.close()
    objects = sorted(p.name for p in site.h.objects.rglob("*") if p.is_file())
    return recs, events, objects


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@pytest.mark.parametrize("on", ["model", "tok"])
def test_wrong_signed_sha256_is_refused_by_import(site: Site, on: str) -> None:
    bundle = site.bundle(DATA)
    _with_sha256(site, bundle, "00" * 32, on)
    before = _state(site)
    res = site.cli("--json", "import", bundle)
    assert res.code == 1, res.stderr
    assert res.json["error"]["code"] == "digest_mismatch"
    assert "SHA-256" in res.json["error"]["message"]
    recs, events, objects = _state(site)
    assert (recs, objects) == (before[0], before[2]), "the store changed"
    assert events[: len(before[1])] == before[1]
    assert [tuple(e[1:]) for e in events[len(before[1]) :]] == [
        ("import", "rejected", "digest_mismatch")
    ]
    assert list(site.h.staging.glob("*")) == []


def test_wrong_signed_sha256_is_refused_by_inspect(site: Site) -> None:
    bundle = site.bundle(DATA)
    _with_sha256(site, bundle, "00" * 32)
    pub = site.keydir / "publisher.pub"
    res = site.cli("--json", "bundle", "inspect", bundle, "--key", pub, "--verify")
    assert res.code == 1, res.stderr
    assert res.json["error"]["code"] == "digest_mismatch"


def test_right_signed_sha256_imports(site: Site) -> None:
    bundle = site.bundle(DATA)
    _with_sha256(site, bundle, None)
    res = site.cli("--json", "import", bundle)
    assert res.code == 0, res.stderr
    assert sorted(a["name"] for a in res.json["artifacts"]) == ["model", "tok"]
