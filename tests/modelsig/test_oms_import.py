"""OpenSSF model signatures made by the real ``model-signing`` package, through the real CLI.

One model directory, signed with the key method (sha256 and BLAKE3 file serialization),
bundled with ``bundle create --model-signature``, imported into a home whose stream
``models`` requires a model signature. Then the attacks, each refused with its code,
exit 1, one audited rejection and the store unchanged: a file changed after signing, the
signature removed, a key the trust store does not know, a revoked key, a file missing or
extra, a signature from the model-signer of another stream.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bundles.documents import AddModelSigner, RequireModelSignature, RevokeKey
from tests.conformance.driver import (
    Repo,
    assert_audited_rejection,
    assert_unchanged,
    cli,
    copy_home,
    ok,
    snapshot,
)
from tests.modelsig.oms_world import (
    FILES,
    cli_bundle,
    ec_keypair,
    ec_public,
    init_home,
    make_model,
    oms_sign,
    statement,
    writer_bundle,
)

pytest.importorskip("model_signing")


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = Repo(root)
        self.signer = ec_keypair(root / "ec", "modelsigner")
        self.stranger = ec_keypair(root / "ec", "stranger")
        self.model = make_model(root / "model")
        self.sig = {
            h: oms_sign(self.model, self.signer, root / f"m-{h}.sig", h)
            for h in ("sha256", "blake3")
        }
        self.template = root / "template"
        init_home(self.repo, self.template, self.signer, label="ML team")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("oms"))


@pytest.fixture
def home(world: World, tmp_path: Path) -> Path:
    return copy_home(world.template, tmp_path / "home")


def refused(home: Path, bundle: Path | str, code: str) -> dict[str, Any]:
    before = snapshot(home)
    r = cli(home, "import", bundle)
    assert r.rc == 1 and r.code == code, str(r)
    after = snapshot(home)
    assert_unchanged(before, after)
    return assert_audited_rejection(before, after, code)


@pytest.mark.parametrize("hashing", ["sha256", "blake3"])
def test_real_signature_imports_under_a_policy_that_requires_it(
    world: World, home: Path, hashing: str
) -> None:
    assert statement(world.sig[hashing])["predicate"]["serialization"]["hash_type"] == hashing
    created = ok(cli_bundle(world.repo, home, world.model, world.sig[hashing], sequence=1))
    rows = {a["name"]: a for a in created["artifacts"]}
    assert rows["m.sig"]["media_type"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    # a sha256 signature makes the bundle list the SHA-256 digests that staging checks
    assert (rows["m/config.json"]["sha256"] is not None) is (hashing == "sha256")
    out = ok(cli(home, "import", created["path"]))
    (sig,) = out["model_signatures"]
    keyid = ec_public(world.signer).keyid
    assert sig["keyid"] == keyid and sig["label"] == "ML team" and sig["hash_type"] == hashing
    assert (
        sig["model"] == "m"
        and sig["root_digest"] == statement(world.sig[hashing])["subject"][0]["digest"]["sha256"]
    )
    assert sorted(sig["files"]) == sorted(f"m/{f}" for f in FILES)
    # history says who signed the model, per artifact
    hist = ok(cli(home, "history", "m/model.safetensors"))
    (event,) = [e for e in hist["events"] if e["type"] == "import"]
    assert event["model_signer"]["keyid"] == keyid
    assert event["model_signer"]["label"] == "ML team"
    assert "model signed by" in event["summary"] and "ML team" in event["summary"]
    # and the loaded bytes are the signed ones
    loaded = home.parent / "cfg.json"
    ok(cli(home, "load", "m/config.json", "-o", loaded))
    assert loaded.read_bytes() == FILES["config.json"]


def test_a_file_changed_after_signing_is_refused(world: World, home: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    (model / "model.safetensors").write_bytes(b"\x00evil\x01" * 300)
    # the CLI writer refuses to sign such a bundle ...
    r = cli_bundle(world.repo, home, model, world.sig["sha256"], sequence=1)
    assert r.rc == 1 and r.code == "model_signature_mismatch", str(r)
    # ... and a publisher who signs one anyway gets it refused at import
    for hashing in ("sha256", "blake3"):
        bundle = writer_bundle(world.repo, model, world.sig[hashing], sequence=1, sha256=True)
        event = refused(home, bundle, "model_signature_mismatch")
        assert "m/model.safetensors changed after it was signed" in event["detail"]["message"]


def test_the_signature_removed_is_refused(world: World, home: Path) -> None:
    created = ok(cli_bundle(world.repo, home, world.model, None, sequence=1))
    refused(home, created["path"], "model_signature_missing")


def test_a_key_the_trust_store_does_not_know_is_refused(
    world: World, home: Path, tmp_path: Path
) -> None:
    sig = oms_sign(world.model, world.stranger, tmp_path / "stranger.sig")
    created = ok(cli_bundle(world.repo, home, world.model, sig, sequence=1))
    event = refused(home, created["path"], "model_signature_invalid")
    assert "no model-signer role holds" in event["detail"]["message"]


def test_a_revoked_model_signer_does_not_count(world: World, home: Path) -> None:
    revoke = world.repo.trust_update(3, [RevokeKey(ec_public(world.signer).keyid)])
    ok(cli(home, "trust", "apply", world.repo.write(revoke, "trust")))
    shown = ok(cli(home, "trust", "show"))
    (row,) = [r for r in shown["roles"] if r["role"] == "model-signer"]
    assert row["stream"] == "models" and row["keys"][0]["revoked"] is True
    created = ok(cli_bundle(world.repo, home, world.model, world.sig["sha256"], sequence=1))
    event = refused(home, created["path"], "model_signature_invalid")
    assert "revoked" in event["detail"]["message"]


def test_a_model_signer_of_another_stream_does_not_count(
    world: World, home: Path, tmp_path: Path
) -> None:
    other = ec_keypair(tmp_path, "other")
    update = world.repo.trust_update(3, [AddModelSigner(ec_public(other), "other")])
    ok(cli(home, "trust", "apply", world.repo.write(update, "trust")))
    sig = oms_sign(world.model, other, tmp_path / "other.sig")
    created = ok(cli_bundle(world.repo, home, world.model, sig, sequence=1))
    event = refused(home, created["path"], "model_signature_invalid")
    assert "of stream other, not of models" in event["detail"]["message"]


def test_a_signed_file_missing_or_an_extra_file_is_refused(
    world: World, home: Path, tmp_path: Path
) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(world.model, fewer)
    (fewer / "tokenizer" / "vocab.txt").unlink()
    event = refused(
        home,
        writer_bundle(world.repo, fewer, world.sig["blake3"], sequence=1),
        "model_signature_mismatch",
    )
    assert "'m/tokenizer/vocab.txt' is not in the bundle" in event["detail"]["message"]
    more = tmp_path / "more"
    shutil.copytree(world.model, more)
    (more / "extra.bin").write_bytes(b"extra")
    event = refused(
        home,
        writer_bundle(world.repo, more, world.sig["blake3"], sequence=1),
        "model_signature_mismatch",
    )
    assert "'m/extra.bin' is not in the model signature" in event["detail"]["message"]


def test_a_tampered_signature_file_is_refused(world: World, home: Path, tmp_path: Path) -> None:
    import base64
    import json

    doc = json.loads(world.sig["sha256"].read_text())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["name"] = "renamed.json"
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(doc))
    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    (model / "config.json").rename(model / "renamed.json")
    event = refused(
        home, writer_bundle(world.repo, model, forged, sequence=1), "model_signature_invalid"
    )
    assert "does not verify" in event["detail"]["message"]


def test_a_stream_that_does_not_require_it_still_verifies_a_present_signature(
    world: World, tmp_path: Path
) -> None:
    repo = world.repo
    home = tmp_path / "free-home"
    init_home(repo, home, world.signer, require=False)
    sig = oms_sign(world.model, world.stranger, tmp_path / "stranger.sig")
    created = ok(cli_bundle(repo, home, world.model, sig, sequence=1))
    refused(home, created["path"], "model_signature_invalid")
    unsigned = ok(cli_bundle(repo, home, world.model, None, sequence=1))
    assert ok(cli(home, "import", unsigned["path"]))["model_signatures"] == []
    # requiring it afterwards: the next unsigned bundle is refused
    update = repo.trust_update(3, [RequireModelSignature("models")])
    ok(cli(home, "trust", "apply", repo.write(update, "trust")))
    assert ok(cli(home, "trust", "show"))["model_signature_required"] == ["models"]
    again = ok(cli_bundle(repo, home, world.model, None, sequence=2, version="2.0"))
    refused(home, again["path"], "model_signature_missing")


def test_bundle_inspect_shows_who_signed_the_model(world: World, home: Path) -> None:
    created = ok(cli_bundle(world.repo, home, world.model, world.sig["blake3"], sequence=1))
    shown = ok(cli(home, "bundle", "inspect", created["path"]))
    (row,) = shown["model_signatures"]
    keyid = ec_public(world.signer).keyid
    assert (row["model"], row["keyid"], row["files"]) == ("m", keyid, 3)
    assert row["matches_manifest"] is True and row["verified"] is False
    pub = world.signer.with_suffix(".pub")
    shown = ok(cli(home, "bundle", "inspect", created["path"], "--model-key", pub))
    assert shown["model_signatures"][0]["verified"] is True


def test_bundle_create_refuses_a_signature_that_does_not_fit_the_artifacts(
    world: World, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    base = ["bundle", "create", out, "--stream", "models", "--sequence", "1", "--any-site"]
    base += ["--key", world.repo.keydir / "pub.key"]
    sig = f"m={world.sig['sha256']}"
    some = f"m/config.json@1.0={world.model / 'config.json'}"
    r = cli(home, *base, "--model-signature", sig, some)
    assert r.rc == 2 and "give it as" in r.out["error"]["message"], str(r)
    r = cli(home, *base, "--model-signature", "m", some)
    assert r.rc == 2 and r.code == "usage", str(r)
    junk = tmp_path / "junk.sig"
    junk.write_text("{}")
    r = cli(home, *base, "--model-signature", f"m={junk}", some)
    assert r.rc == 2 and "lacks" in r.out["error"]["message"], str(r)
    assert not out.exists()


def test_a_publisher_who_lies_about_sha256_is_caught_by_staging(
    world: World, home: Path, tmp_path: Path
) -> None:
    """A compromised publisher key signs the evil bytes' BLAKE3 beside the good file's
    SHA-256 (which the sha256 model signature lists): only staging, hashing the bytes it
    writes, can refuse it."""
    import hashlib

    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    (model / "model.safetensors").write_bytes(b"\x00evil\x01" * 300)
    bundle = writer_bundle(world.repo, model, world.sig["sha256"], sequence=1, sha256=True)
    env = json.loads((bundle / "manifest.dsse.json").read_bytes())
    doc = json.loads(base64.b64decode(env["payload"]))
    good = hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    for s in doc["subject"]:
        if s["name"] == "m/model.safetensors":
            s["digest"]["sha256"] = good
    world.repo.resign(bundle, doc, ["pub"])
    refused(home, bundle, "digest_mismatch")


def test_trust_update_cli_adds_model_signers_and_requires_signatures(
    world: World, tmp_path: Path
) -> None:
    repo = world.repo
    home = tmp_path / "cli-home"
    ok(cli(home, "init", "--root-key", repo.pub("root"), "--site", "site-a"))
    pub = world.stranger.with_suffix(".pub")
    root = ["--key", repo.keydir / "root.key"]
    out = tmp_path / "t2.json"
    made = ok(
        cli(
            home,
            "trust",
            "update",
            out,
            "--version",
            "2",
            *root,
            "--add-key",
            pub,
            "--role",
            "model-signer",
            "--stream",
            "models",
            "--require-model-signature",
            "models",
        )
    )
    assert [op["op"] for op in made["operations"]] == [
        "add_model_signer",
        "require_model_signature",
    ]
    ok(cli(home, "trust", "apply", out))
    shown = ok(cli(home, "trust", "show"))
    (row,) = [r for r in shown["roles"] if r["role"] == "model-signer"]
    assert row["stream"] == "models" and row["keys"][0]["keyid"] == ec_public(world.stranger).keyid
    assert shown["model_signature_required"] == ["models"]
    # usage and key-kind errors
    bad = tmp_path / "bad.json"
    r = cli(
        home,
        "trust",
        "update",
        bad,
        "--version",
        "3",
        *root,
        "--add-key",
        pub,
        "--role",
        "model-signer",
    )
    assert r.rc == 2 and "--stream" in r.out["error"]["message"], str(r)
    r = cli(
        home,
        "trust",
        "update",
        bad,
        "--version",
        "3",
        *root,
        "--add-key",
        repo.pub("pub"),
        "--role",
        "model-signer",
        "--stream",
        "models",
    )
    assert r.rc == 1 and r.code == "bad_key", str(r)  # Ed25519 is not a model-signer key
    r = cli(
        home,
        "trust",
        "update",
        bad,
        "--version",
        "3",
        *root,
        "--add-key",
        pub,
        "--role",
        "publisher",
        "--stream",
        "models",
    )
    assert r.rc == 1 and r.code == "bad_key", str(r)  # nor ECDSA a publisher key
    assert not bad.exists()
