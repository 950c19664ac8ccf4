"""A model directory signed by the real OpenSSF ``model-signing`` package, and a home that
trusts (or does not trust) its ECDSA key: the pieces the model-signature tests share.

Signatures are made with ``model_signing.signing.Config().use_elliptic_key_signer`` (the
key method), with sha256 or BLAKE3 file serialization. Bundles are made through the real
CLI (``bundle create --model-signature``) or, where a case needs what the CLI refuses to
write, through the in-process writer.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bundles.documents import AddKey, AddModelSigner, RequireModelSignature
from bundles.keys import EcPublicKey
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec
from tests.conformance.driver import SITE, Repo, cli, write_bundle

OMS_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
FILES = {
    "config.json": b'{"hidden_size": 8, "layers": 2}\n',
    "model.safetensors": b"\x00weights\x01" * 300,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}


def ec_keypair(directory: Path, name: str, curve: ec.EllipticCurve | None = None) -> Path:
    """``NAME.pem`` (private, PKCS#8) and ``NAME.pub`` (SPKI) in ``directory``; the .pem path."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / f"{name}.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    (directory / f"{name}.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem


def ec_public(pem: Path) -> EcPublicKey:
    return EcPublicKey.from_pem(pem.with_suffix(".pub").read_bytes())


def make_model(root: Path, files: dict[str, bytes] | None = None) -> Path:
    for rel, data in (files or FILES).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def oms_sign(model: Path, key_pem: Path, out: Path, hashing: str = "sha256") -> Path:
    """Sign ``model`` with the real model-signing package (key method)."""
    import model_signing

    hc = model_signing.hashing.Config().use_file_serialization(hashing_algorithm=hashing)
    model_signing.signing.Config().set_hashing_config(hc).use_elliptic_key_signer(
        private_key=key_pem
    ).sign(model, out)
    return out


def statement(sig: Path) -> dict[str, Any]:
    import base64

    doc = json.loads(sig.read_text())
    payload: dict[str, Any] = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    return payload


def artifact_args(name: str, model: Path, version: str = "1.0") -> list[str]:
    """``NAME/REL@VERSION=PATH`` for every file of the model directory."""
    return [
        f"{name}/{p.relative_to(model).as_posix()}@{version}={p}"
        for p in sorted(model.rglob("*"))
        if p.is_file()
    ]


def cli_bundle(
    repo: Repo,
    home: Path,
    model: Path,
    sig: Path | None,
    *,
    sequence: int,
    name: str = "m",
    stream: str = "models",
    version: str = "1.0",
) -> Any:
    """``appliance bundle create`` through the real CLI; the Result."""
    out = repo.fresh("mbundle")
    args: list[Any] = ["bundle", "create", out, "--stream", stream, "--sequence", str(sequence)]
    args += ["--key", repo.keydir / "pub.key", "--site", SITE]
    if sig is not None:
        args += ["--model-signature", f"{name}={sig}"]
    result = cli(home, *args, *artifact_args(name, model, version))
    result.out.setdefault("path", str(out))
    return result


def writer_bundle(
    repo: Repo,
    model: Path,
    sig: Path | None,
    *,
    sequence: int,
    name: str = "m",
    sha256: bool = False,
) -> Path:
    """The in-process writer without the CLI's model-signature check (what an attacker
    or a careless publisher could sign)."""
    out = repo.fresh("wbundle")
    specs = [
        ArtifactSpec(f"{name}/{p.relative_to(model).as_posix()}", "1.0", p, sha256=sha256)
        for p in sorted(model.rglob("*"))
        if p.is_file()
    ]
    if sig is not None:
        specs.append(ArtifactSpec(f"{name}.sig", "1.0", sig, media_type=OMS_MEDIA_TYPE))
    expires = utcnow() + timedelta(days=1)
    write_bundle(out, specs, [repo.key("pub")], sequence=sequence, expires=expires, sites=(SITE,))
    return out


def init_home(
    repo: Repo, home: Path, signer: Path | None, *, require: bool = True, label: str | None = None
) -> None:
    """A home at trust version 2: publisher ``pub`` of stream models, the model signer
    ``signer`` (ECDSA) of models, and with ``require`` the stream needs model signatures."""
    repo.init_home(home)
    ops: list[Any] = [AddKey(repo.key("pub").public, "publisher", "models")]
    if signer is not None:
        ops.append(AddModelSigner(ec_public(signer), "models", label))
    if require:
        ops.append(RequireModelSignature("models"))
    repo.apply(home, repo.trust_update(2, ops))
