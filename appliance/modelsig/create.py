"""``bundle create --model-signature NAME[@VERSION]=FILE.sig``: carry an OMS signature.

The signature becomes the artifact ``NAME.sig`` (media type of a Sigstore
bundle) beside the model's files, which are the artifacts ``NAME/REL`` (see
``appliance.modelsig.check``). Here, on the connected side, the signature file
is read and its statement parsed (its key is the appliance's to check), every
file it lists must be given as an artifact and nothing else under ``NAME/``,
sha256 signatures make the writer list SHA-256 digests for the model's files,
and the manifest is compared with the signed digests before it is signed: the
writer never signs a bundle whose model changed after it was model-signed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ModelSignatureError
from appliance.modelsig.check import SIGNATURE_SUFFIX, artifact_for, compare
from appliance.modelsig.oms import (
    BUNDLE_MEDIA_TYPE,
    MAX_SIGNATURE_BYTES,
    ModelStatement,
    SignatureFile,
)
from bundles.errors import UsageError
from bundles.files import read_input_file
from bundles.manifest import Manifest
from bundles.writer import ArtifactSpec


@dataclass(frozen=True)
class PlannedSignature:
    model: str
    version: str | None
    path: Path
    statement: ModelStatement
    files: tuple[str, ...]  # artifact names of the signed files


def plan_signature(text: str) -> PlannedSignature:
    """Parse ``NAME[@VERSION]=FILE.sig`` and read the signature file (usage errors: exit 2)."""
    ref, sep, path = text.partition("=")
    model, at, version = ref.partition("@")
    if not sep or not model or not path or (at and not version):
        raise UsageError(f"--model-signature {text!r} must be NAME[@VERSION]=FILE.sig")
    data = read_input_file(Path(path), MAX_SIGNATURE_BYTES, "model signature")
    if len(data) > MAX_SIGNATURE_BYTES:
        raise UsageError(f"{path} is over {MAX_SIGNATURE_BYTES} bytes: not a model signature")
    try:
        statement = ModelStatement.parse(SignatureFile.parse(data).payload)
        files = tuple(artifact_for(model, r.name) for r in statement.resources)
    except ModelSignatureError as e:
        raise UsageError(f"--model-signature {model}: {e.message}") from e
    return PlannedSignature(model, version or None, Path(path), statement, files)


def add_signatures(specs: list[ArtifactSpec], planned: Sequence[PlannedSignature]) -> None:
    """Check coverage, mark sha256 files, and append one ``NAME.sig`` spec per signature."""
    by_name = {s.name: s for s in specs}
    for p in planned:
        missing = [f for f in p.files if f not in by_name]
        if missing:
            raise UsageError(
                f"model {p.model}: the signature lists {missing[0]!r}; give it as "
                f"{missing[0]}@VERSION=PATH ({len(missing)} signed file(s) not given)"
            )
        under = {n for n in by_name if n == p.model or n.startswith(p.model + "/")}
        extra = sorted(under - set(p.files))
        if extra:
            raise UsageError(f"model {p.model}: {extra[0]!r} is not in its model signature")
        versions = {by_name[f].version for f in p.files}
        version = p.version
        if version is None:
            if len(versions) != 1:
                raise UsageError(
                    f"model {p.model}: its files have versions {', '.join(sorted(versions))}; "
                    "name the signature's version: NAME@VERSION=FILE.sig"
                )
            version = versions.pop()
        if p.statement.hash_type == "sha256":
            for f in p.files:
                by_name[f].sha256 = True
        specs.append(
            ArtifactSpec(p.model + SIGNATURE_SUFFIX, version, p.path, media_type=BUNDLE_MEDIA_TYPE)
        )


def check_manifest(planned: Sequence[PlannedSignature]) -> Callable[[Manifest], None]:
    """The writer's last check before it signs: the manifest digests are the signed ones."""

    def check(manifest: Manifest) -> None:
        for p in planned:
            compare(manifest, p.model, p.statement)

    return check
