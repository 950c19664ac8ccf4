"""The OMS verifier in process: every way a signature file or its statement can be wrong.

Signatures come from the real ``model-signing`` package; where a case needs a validly
signed but wrong statement, it is signed here with the same ECDSA key over the DSSE PAE
(as model-signing does), so only the one thing under test differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from appliance.errors import (
    ModelSignatureInvalidError,
    ModelSignatureMismatchError,
    ModelSignatureMissingError,
    RevokedKeyReuseError,
    TrustUpdateError,
)
from appliance.modelsig import BUNDLE_MEDIA_TYPE, check_models
from appliance.modelsig.oms import MAX_SIGNATURE_BYTES, ModelStatement, SignatureFile, pae
from appliance.trust import ModelSignerEntry, TrustState, _apply_operations
from bundles.documents import AddModelSigner, RequireModelSignature, RevokeKey, TrustUpdate
from bundles.errors import KeyFormatError, ManifestFormatError
from bundles.hashing import new_hasher
from bundles.keys import EcPublicKey, PrivateKey
from bundles.manifest import Artifact, Manifest
from bundles.timeutil import utcnow
from tests.modelsig.oms_world import FILES, ec_keypair, ec_public, make_model, oms_sign

pytest.importorskip("model_signing")


def b3(data: bytes) -> str:
    h = new_hasher(len(data))
    h.update(data)
    return str(h.hexdigest())


class Signed:
    """A model, its real OMS signature, and helpers to re-sign a changed statement."""

    def __init__(self, root: Path, hashing: str = "sha256", curve: Any = None) -> None:
        self.pem = ec_keypair(root / "ec", f"k-{hashing}", curve)
        self.key = ec_public(self.pem)
        self.model = make_model(root / f"model-{hashing}")
        self.hashing = hashing
        self.data = oms_sign(self.model, self.pem, root / f"{hashing}.sig", hashing).read_bytes()

    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = json.loads(self.data)
        return d

    def statement(self) -> dict[str, Any]:
        s: dict[str, Any] = json.loads(base64.b64decode(self.doc()["dsseEnvelope"]["payload"]))
        return s

    def resign(self, statement: dict[str, Any], doc: dict[str, Any] | None = None) -> bytes:
        private = serialization.load_pem_private_key(self.pem.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        payload = json.dumps(statement, indent=2).encode()
        algo = hashes.SHA256() if private.curve.key_size == 256 else hashes.SHA384()
        sig = private.sign(pae("application/vnd.in-toto+json", payload), ec.ECDSA(algo))
        doc = doc or self.doc()
        doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
        doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
        return json.dumps(doc).encode()

    def manifest(self, sig: bytes, *, files: dict[str, bytes] | None = None) -> Manifest:
        arts = [
            Artifact(
                name=f"m/{rel}",
                version="1.0",
                release=1,
                size=len(data),
                media_type="application/octet-stream",
                path=f"artifacts/m/{i}",
                blake3=b3(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
            for i, (rel, data) in enumerate((files or FILES).items())
        ]
        arts.append(
            Artifact("m.sig", "1.0", 1, len(sig), BUNDLE_MEDIA_TYPE, "artifacts/s", b3(sig))
        )
        now = utcnow()
        return Manifest("models", 1, now, now + timedelta(days=1), tuple(arts), any_site=True)

    def state(self, *, required: bool = True, **kw: Any) -> TrustState:
        entry = ModelSignerEntry(self.key, kw.pop("stream", "models"), 2, "team")
        return TrustState(
            2,
            model_signers={self.key.keyid: entry},
            model_signature_required=frozenset({"models"} if required else ()),
            **kw,
        )

    def check(self, sig: bytes, state: TrustState | None = None, **kw: Any) -> Any:
        m = self.manifest(sig, **kw)
        return check_models(state or self.state(), m, lambda a: sig)


@pytest.fixture(scope="module", params=["sha256", "blake3"])
def signed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    return Signed(tmp_path_factory.mktemp("fmt"), request.param)


def test_the_real_signature_verifies_and_names_its_signer(signed: Signed) -> None:
    result = signed.check(signed.data)
    (sig,) = result.signatures
    assert (
        sig.keyid == signed.key.keyid == signed.doc()["verificationMaterial"]["publicKey"]["hint"]
    )
    assert sig.label == "team" and sig.hash_type == signed.hashing
    assert result.signer_of("m/config.json") is sig and result.signer_of("m.sig") is None


def test_p384_keys_verify(tmp_path: Path) -> None:
    s = Signed(tmp_path, "sha256", ec.SECP384R1())
    assert s.key.curve == "P-384"
    assert s.check(s.data).signatures[0].keyid == s.key.keyid


def test_a_p521_or_ed25519_key_cannot_be_a_model_signer(tmp_path: Path) -> None:
    p521 = ec_keypair(tmp_path, "p521", ec.SECP521R1()).with_suffix(".pub").read_bytes()
    with pytest.raises(KeyFormatError, match="not P-256 or P-384"):
        EcPublicKey.from_pem(p521)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = ed.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="ECDSA"):
        EcPublicKey.from_pem(pem)


def invalid(signed: Signed, data: bytes, match: str, state: TrustState | None = None) -> None:
    with pytest.raises(ModelSignatureInvalidError, match=match) as e:
        signed.check(data, state)
    assert e.value.code == "model_signature_invalid"


def edited(signed: Signed, edit: Any) -> bytes:
    doc = signed.doc()
    edit(doc)
    return json.dumps(doc).encode()


def test_malformed_signature_files_are_invalid(signed: Signed) -> None:
    invalid(signed, b"{", "not valid JSON")
    invalid(signed, b"[]", "must be an object")
    invalid(signed, b'{"mediaType": 1, "mediaType": 2}', "duplicate")
    invalid(signed, b"[" * 100 + b"]" * 100, "nested")
    invalid(signed, b" " * (MAX_SIGNATURE_BYTES + 1), "over")
    invalid(signed, edited(signed, lambda d: d.update(mediaType="x")), "media type")
    invalid(signed, edited(signed, lambda d: d.update(extra=1)), "unknown field")
    invalid(
        signed,
        edited(signed, lambda d: d["verificationMaterial"].update(tlogEntries=[{}])),
        "transparency log",
    )
    invalid(
        signed,
        edited(signed, lambda d: d["verificationMaterial"].update(x509CertificateChain={})),
        "unknown field",
    )
    invalid(
        signed,
        edited(
            signed,
            lambda d: d["dsseEnvelope"]["signatures"].append(d["dsseEnvelope"]["signatures"][0]),
        ),
        "exactly one signature",
    )
    invalid(signed, edited(signed, lambda d: d["dsseEnvelope"].update(payload="%%%")), "base64")
    invalid(
        signed,
        edited(signed, lambda d: d["dsseEnvelope"].update(payloadType="x/y")),
        "payload type",
    )


def test_a_signature_that_does_not_verify_is_invalid(signed: Signed) -> None:
    def flip(d: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(d["dsseEnvelope"]["signatures"][0]["sig"]))
        raw[-1] ^= 1
        d["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(raw).decode()

    invalid(signed, edited(signed, flip), "does not verify")
    # without the key hint, the stream's live keys are tried; a bad signature still fails
    invalid(
        signed,
        edited(signed, lambda d: (d["verificationMaterial"]["publicKey"].pop("hint"), flip(d))),
        "no key hint",
    )


def test_without_a_key_hint_the_streams_keys_are_tried(signed: Signed) -> None:
    data = edited(signed, lambda d: d["verificationMaterial"]["publicKey"].pop("hint"))
    assert signed.check(data).signatures[0].keyid == signed.key.keyid


def test_unknown_revoked_and_foreign_keys_are_invalid(signed: Signed) -> None:
    invalid(signed, signed.data, "no model-signer role holds", TrustState(2))
    revoked = signed.state(revoked=frozenset({signed.key.keyid}))
    invalid(signed, signed.data, "revoked", revoked)
    invalid(signed, signed.data, "of stream other", signed.state(stream="other"))


def test_statement_errors_are_invalid_even_when_signed(signed: Signed) -> None:
    st = signed.statement()
    st["subject"][0]["digest"]["sha256"] = "0" * 64
    invalid(signed, signed.resign(st), "root digest")
    st = signed.statement()
    st["predicate"]["serialization"]["method"] = "shards"
    invalid(signed, signed.resign(st), "byte ranges")
    st = signed.statement()
    st["predicateType"] = "https://model_signing/Digests/v0.1"
    invalid(signed, signed.resign(st), "predicateType")
    st = signed.statement()
    st["predicate"]["resources"].append(dict(st["predicate"]["resources"][0]))
    invalid(signed, signed.resign(st), "listed twice")
    st = signed.statement()
    st["predicate"]["resources"][0]["name"] = "../escape"
    invalid(signed, signed.resign(st), "cannot be an artifact name")
    st = signed.statement()
    st["predicate"]["resources"][0]["algorithm"] = "md5"
    invalid(signed, signed.resign(st), "uses 'md5'")
    st = signed.statement()
    st["subject"].append(st["subject"][0])
    invalid(signed, signed.resign(st), "exactly one subject")


def test_changed_missing_and_extra_files_mismatch(signed: Signed) -> None:
    changed = dict(FILES, **{"config.json": b"{}"})
    with pytest.raises(ModelSignatureMismatchError, match="changed after it was signed"):
        signed.check(signed.data, files=changed)
    fewer = {k: v for k, v in FILES.items() if k != "config.json"}
    with pytest.raises(ModelSignatureMismatchError, match="not in the bundle"):
        signed.check(signed.data, files=fewer)
    with pytest.raises(ModelSignatureMismatchError, match="not in the model signature"):
        signed.check(signed.data, files=dict(FILES, extra=b"x"))


def test_a_required_stream_refuses_uncovered_artifacts(signed: Signed) -> None:
    m = signed.manifest(signed.data)
    other = Artifact("loose", "1.0", 1, 1, "application/octet-stream", "artifacts/l", b3(b"x"))
    bigger = Manifest(m.stream, 1, m.issued_at, m.expires, (*m.artifacts, other), any_site=True)
    with pytest.raises(ModelSignatureMissingError, match="loose@1.0 is covered by none"):
        check_models(signed.state(), bigger, lambda a: signed.data)
    assert check_models(signed.state(required=False), bigger, lambda a: signed.data).signatures
    bare = Manifest(m.stream, 1, m.issued_at, m.expires, (other,), any_site=True)
    with pytest.raises(ModelSignatureMissingError, match="carries none"):
        check_models(signed.state(), bare, lambda a: b"")


def test_a_one_file_model_is_the_artifact_name_itself(tmp_path: Path) -> None:
    s = Signed(tmp_path)
    one = tmp_path / "single.bin"
    one.write_bytes(b"one file model")
    data = oms_sign(one, s.pem, tmp_path / "one.sig").read_bytes()
    (res,) = ModelStatement.parse(SignatureFile.parse(data).payload).resources
    assert res.name == "."
    art = Artifact(
        "m",
        "1.0",
        1,
        14,
        "application/octet-stream",
        "artifacts/x",
        b3(one.read_bytes()),
        sha256=hashlib.sha256(one.read_bytes()).hexdigest(),
    )
    sig = Artifact("m.sig", "1.0", 1, len(data), BUNDLE_MEDIA_TYPE, "artifacts/s", b3(data))
    now = utcnow()
    m = Manifest("models", 1, now, now + timedelta(days=1), (art, sig), any_site=True)
    assert check_models(s.state(), m, lambda a: data).signer_of("m") is not None


def test_trust_update_ops_round_trip_and_refuse_reuse(tmp_path: Path) -> None:
    key = ec_public(ec_keypair(tmp_path, "k"))
    ops = (AddModelSigner(key, "models", "ML team"), RequireModelSignature("models"))
    update = TrustUpdate(2, utcnow().replace(microsecond=0), ops)
    assert TrustUpdate.from_payload(update.to_payload()) == update
    state = _apply_operations(TrustState.initial([PrivateKey.generate().public], 1), update)
    assert state.model_signers[key.keyid].name == "ML team"
    assert state.model_signature_required == {"models"}
    lifted = _apply_operations(
        state, TrustUpdate(3, utcnow(), (RequireModelSignature("models", False),))
    )
    assert lifted.model_signature_required == frozenset()
    with pytest.raises(TrustUpdateError, match="one key, one role"):
        _apply_operations(state, TrustUpdate(3, utcnow(), (AddModelSigner(key, "other"),)))
    revoked = _apply_operations(state, TrustUpdate(3, utcnow(), (RevokeKey(key.keyid),)))
    with pytest.raises(RevokedKeyReuseError):
        _apply_operations(revoked, TrustUpdate(4, utcnow(), (AddModelSigner(key, "models"),)))
    bad = json.loads(update.to_payload())
    bad["operations"][0]["name"] = "bell\x07"
    with pytest.raises(ManifestFormatError, match="printable"):
        TrustUpdate.from_payload(json.dumps(bad).encode())
