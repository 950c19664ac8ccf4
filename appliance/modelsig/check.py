"""Model signatures as extra provenance: which artifacts a signature covers, and the check.

The mapping (docs/CLI.md, "Model signatures"): a bundle carries an OMS
signature as an artifact named ``NAME.sig`` with the media type
``application/vnd.dev.sigstore.bundle.v0.3+json``; it covers the artifacts
named ``NAME/REL`` for every file ``REL`` it lists (a one-file model, listed
as ``.``, is the artifact ``NAME`` itself). The publisher's manifest covers the
signature file like any artifact, so it is authenticated, size-checked and
stored with the model.

``check_model_signatures`` runs in the import's decision, after the manifest is
authenticated and before any model byte is read: every signature must verify
under a live ``model-signer`` key of the bundle's stream, and every file digest
it lists must equal the digest the publisher's manifest gives that artifact
(BLAKE3, or SHA-256 for sha256 signatures). Staging then refuses any byte that
does not match those manifest digests, so an import succeeds only when the
staged bytes are the model-signed bytes, and the model's media is read once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import (
    ModelSignatureInvalidError,
    ModelSignatureMismatchError,
    ModelSignatureMissingError,
)
from appliance.modelsig.oms import (
    BUNDLE_MEDIA_TYPE,
    DSSE_PAYLOAD_TYPE,
    MAX_SIGNATURE_BYTES,
    ModelStatement,
    SignatureFile,
    pae,
)
from appliance.trust import ModelSignerEntry, TrustState
from bundles.errors import (
    BadNameError,
    DigestMismatchError,
    PathTooLongError,
    RejectedError,
    UnsafePathError,
)
from bundles.hashing import new_hasher
from bundles.keys import EcPublicKey
from bundles.manifest import Artifact, Manifest
from bundles.media import MediaSource
from bundles.names import check_artifact_name, check_relative_path
from bundles.reader import ArtifactReader, Bundle

SIGNATURE_SUFFIX = ".sig"
ReadArtifact = Callable[[Artifact], bytes]


@dataclass(frozen=True)
class ModelSignature:
    """One verified model signature: who signed which artifacts."""

    model: str  # NAME
    signature: str  # the artifact ref NAME.sig@VERSION
    keyid: str
    label: str | None
    hash_type: str
    root_digest: str
    files: tuple[str, ...]  # the artifact names it covers, in the signature's order

    def signer(self) -> dict[str, Any]:
        """What an import event records about who signed the model."""
        return {
            "model": self.model,
            "signature": self.signature,
            "keyid": self.keyid,
            "label": self.label,
            "hash_type": self.hash_type,
            "root_digest": self.root_digest,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.signer(), "files": list(self.files)}


@dataclass(frozen=True)
class ModelCheck:
    """The outcome for one bundle: the verified signatures, and whether the stream needs them."""

    required: bool
    signatures: tuple[ModelSignature, ...] = ()
    _by_file: dict[str, ModelSignature] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_file.update({f: s for s in self.signatures for f in s.files})

    def signer_of(self, artifact_name: str) -> ModelSignature | None:
        return self._by_file.get(artifact_name)

    def audit_detail(self, artifact_name: str) -> dict[str, Any]:
        """``{"model_signer": {...}}`` for an import event of a covered artifact, else ``{}``."""
        s = self.signer_of(artifact_name)
        return {} if s is None else {"model_signer": s.signer()}

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.signatures]


def is_signature(artifact: Artifact) -> bool:
    return artifact.media_type == BUNDLE_MEDIA_TYPE


def model_name(signature_artifact: str) -> str:
    """``NAME`` of ``NAME.sig``; a signature artifact named otherwise is refused."""
    if not signature_artifact.endswith(SIGNATURE_SUFFIX) or len(signature_artifact) <= 4:
        raise ModelSignatureInvalidError(
            f"model signature artifact {signature_artifact!r} must be named NAME{SIGNATURE_SUFFIX}"
        )
    return signature_artifact[: -len(SIGNATURE_SUFFIX)]


def artifact_for(model: str, resource: str) -> str:
    """The artifact name of a signed file: ``NAME/REL``, or ``NAME`` for a one-file model."""
    if resource == ".":
        return model
    try:
        rel = check_relative_path(resource, "signed file")
        return check_artifact_name(f"{model}/{rel}")
    except (BadNameError, UnsafePathError, PathTooLongError) as e:
        raise ModelSignatureInvalidError(
            f"model {model}: signed file {resource!r} cannot be an artifact name: {e.message}"
        ) from e


def covered_by(manifest: Manifest, model: str) -> set[str]:
    """The bundle's artifacts a signature of ``model`` must cover: NAME and NAME/..."""
    return {
        a.name
        for a in manifest.artifacts
        if not is_signature(a) and (a.name == model or a.name.startswith(model + "/"))
    }


def _digest(artifact: Artifact, hash_type: str) -> str | None:
    return artifact.blake3 if hash_type == "blake3" else artifact.sha256


def compare(manifest: Manifest, model: str, statement: ModelStatement) -> tuple[str, ...]:
    """Raise ``ModelSignatureMismatchError`` unless the signed files are exactly the
    artifacts under ``model`` with the same digests; return their artifact names."""
    signed = {artifact_for(model, r.name): r for r in statement.resources}
    present = covered_by(manifest, model)
    missing = sorted(set(signed) - present)
    if missing:
        raise ModelSignatureMismatchError(
            f"model {model}: signed file {missing[0]!r} is not in the bundle "
            f"({len(missing)} missing)"
        )
    extra = sorted(present - set(signed))
    if extra:
        raise ModelSignatureMismatchError(
            f"model {model}: artifact {extra[0]!r} is not in the model signature "
            f"({len(extra)} extra)"
        )
    for name, resource in signed.items():
        artifact = manifest.artifact(name)
        assert artifact is not None  # present holds only manifest artifacts
        ours = _digest(artifact, statement.hash_type)
        if ours is None:
            raise ModelSignatureInvalidError(
                f"model {model}: the manifest lists no SHA-256 of {name} to check the sha256 "
                "model signature against (bundle create --model-signature lists it)"
            )
        if ours != resource.digest:
            raise ModelSignatureMismatchError(
                f"model {model}: {name} changed after it was signed ({statement.hash_type} "
                f"{ours[:16]}... is not the signed {resource.digest[:16]}...)"
            )
    return tuple(signed)


def _signer(state: TrustState, stream: str, sig: SignatureFile) -> ModelSignerEntry:
    """The live model-signer key of ``stream`` that made ``sig``; else refuse."""

    def usable(e: ModelSignerEntry) -> bool:
        return e.stream == stream and e.key.keyid not in state.revoked

    if sig.key_hint is not None:
        if sig.key_hint in state.revoked:
            raise ModelSignatureInvalidError(f"model signature by revoked key {sig.key_hint[:16]}")
        entry = state.model_signers.get(sig.key_hint)
        if entry is None:
            raise ModelSignatureInvalidError(
                f"model signature by key {sig.key_hint[:16]}, which no model-signer role holds"
            )
        if not usable(entry):
            raise ModelSignatureInvalidError(
                f"model signature by key {sig.key_hint[:16]}, a model signer of stream "
                f"{entry.stream}, not of {stream}"
            )
        sig.verify(entry.key)
        return entry
    # an older signature without a key hint: try the stream's live keys
    for entry in sorted(state.model_signers.values(), key=lambda e: e.key.keyid):
        if usable(entry) and entry.key.verify(sig.signature, pae(DSSE_PAYLOAD_TYPE, sig.payload)):
            return entry
    raise ModelSignatureInvalidError(
        f"model signature (no key hint) verifies under no live model-signer key of {stream}"
    )


def verify_signature(
    state: TrustState, manifest: Manifest, artifact: Artifact, data: bytes
) -> ModelSignature:
    """Verify one signature artifact's bytes against today's trust and the manifest."""
    model = model_name(artifact.name)
    sig = SignatureFile.parse(data)
    entry = _signer(state, manifest.stream, sig)  # verify before parse
    statement = ModelStatement.parse(sig.payload)
    files = compare(manifest, model, statement)
    return ModelSignature(
        model,
        artifact.ref,
        entry.key.keyid,
        entry.name,
        statement.hash_type,
        statement.root_digest,
        files,
    )


def check_models(state: TrustState, manifest: Manifest, read: ReadArtifact) -> ModelCheck:
    """Verify every model signature of an authenticated manifest; enforce the stream's policy.

    ``read`` returns a signature artifact's bytes, checked against its manifest digest.
    Raises ``ModelSignatureInvalidError``, ``ModelSignatureMismatchError`` or, for a
    stream that requires model signatures, ``ModelSignatureMissingError`` when an
    artifact is covered by no valid signature.
    """
    required = manifest.stream in state.model_signature_required
    sig_artifacts = [a for a in manifest.artifacts if is_signature(a)]
    models = {model_name(s.name) for s in sig_artifacts}
    for m in sorted(models):
        parts = m.split("/")
        prefixes = ("/".join(parts[:i]) for i in range(1, len(parts)))
        outer = next((p for p in prefixes if p in models), None)
        if outer is not None:
            raise ModelSignatureInvalidError(f"model {m} lies inside model {outer}: they overlap")
    signatures = tuple(verify_signature(state, manifest, a, read(a)) for a in sig_artifacts)
    check = ModelCheck(required, signatures)
    if required:
        if not signatures:
            raise ModelSignatureMissingError(
                f"stream {manifest.stream} requires a model signature; the bundle carries none"
            )
        for art in manifest.artifacts:
            if not is_signature(art) and check.signer_of(art.name) is None:
                raise ModelSignatureMissingError(
                    f"stream {manifest.stream} requires model signatures; {art.ref} is covered "
                    "by none"
                )
    return check


def read_signature(source: MediaSource, artifact: Artifact) -> bytes:
    """A signature artifact's bytes from the bundle's media, bounded and checked against
    the manifest's BLAKE3 (it is small; staging reads and checks it again)."""
    if artifact.size > MAX_SIGNATURE_BYTES:
        raise ModelSignatureInvalidError(
            f"{artifact.ref}: {artifact.size} bytes, over the {MAX_SIGNATURE_BYTES} limit"
        )
    buf = bytearray(artifact.size)
    view = memoryview(buf)
    done = 0
    with ArtifactReader(source, artifact) as reader:
        while done < artifact.size:
            n = reader.readinto(view[done:])
            if n == 0:
                break
            done += n
        reader.readinto(memoryview(bytearray(1)))  # at the end: refuses a part that grew
    hasher = new_hasher(artifact.size)
    hasher.update(buf[:done])
    if done != artifact.size or hasher.hexdigest() != artifact.blake3:
        raise DigestMismatchError(f"{artifact.ref}: BLAKE3 does not match the signed digest")
    return bytes(buf)


def check_bundle_models(state: TrustState, bundle: Bundle) -> ModelCheck:
    """``check_models`` for an authenticated ``bundles.reader.Bundle`` on media."""
    return check_models(state, bundle.manifest, lambda a: read_signature(bundle.source, a))


def describe_models(
    manifest: Manifest, read: ReadArtifact, keys: dict[str, EcPublicKey]
) -> list[dict[str, Any]]:
    """For ``bundle inspect`` (no trust store): each signature as it claims to be, whether
    it verifies under one of ``keys`` and whether its digests match the manifest."""
    rows: list[dict[str, Any]] = []
    for a in manifest.artifacts:
        if not is_signature(a):
            continue
        row: dict[str, Any] = {
            "signature": a.ref,
            "model": None,
            "keyid": None,
            "hash_type": None,
            "files": 0,
            "verified": False,
            "matches_manifest": False,
            "problem": None,
        }
        try:
            row["model"] = model = model_name(a.name)
            sig = SignatureFile.parse(read(a))
            row["keyid"] = sig.key_hint
            key = keys.get(sig.key_hint or "")
            if key is not None:
                sig.verify(key)
                row["verified"] = True
            statement = ModelStatement.parse(sig.payload)
            row["hash_type"], row["files"] = statement.hash_type, len(statement.resources)
            compare(manifest, model, statement)
            row["matches_manifest"] = True
        except RejectedError as e:
            row["problem"] = {"code": e.code, "message": e.message}
        rows.append(row)
    return rows
