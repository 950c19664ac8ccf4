"""Shared by the atheris harnesses: fixed keys, seed inputs, the one allowed exception root."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundles.documents import (
    ROLLBACK_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    AddKey,
    RevokeKey,
    RollbackAuthorization,
    RotateRoot,
    SetThreshold,
    TrustUpdate,
)
from bundles.dsse import sign_envelope
from bundles.errors import ApplianceError
from bundles.keys import PrivateKey
from bundles.manifest import PAYLOAD_TYPE, Artifact, Manifest

ALLOWED = ApplianceError  # anything else escaping a parser is a finding
NOW = datetime(2026, 11, 1, tzinfo=UTC)
# Fixed keys from fixed seeds: the same signatures every run, so a corpus stays useful.
ROOT = PrivateKey(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
PUB = PrivateKey(Ed25519PrivateKey.from_private_bytes(bytes(range(33, 65))))


def manifest_payload() -> bytes:
    art = Artifact("m", "1.0", 1, 5, "application/octet-stream", "artifacts/m/1.0/a", "0" * 64)
    m = Manifest("models", 1, NOW, NOW + timedelta(days=30), (art,), ("site-a",))
    return m.to_payload()


def trust_payload() -> bytes:
    ops = (
        AddKey(PUB.public, "publisher", "models"),
        RevokeKey("1" * 64),
        SetThreshold("publisher", "models", 1),
        RotateRoot((ROOT.public,), 1),
    )
    return TrustUpdate(2, NOW, ops).to_payload()


def rollback_payload() -> bytes:
    auth = RollbackAuthorization(
        "0" * 32, "m", "1.0", "why", NOW, NOW + timedelta(days=7), "0" * 64, ("site-a",), False
    )
    return auth.to_payload()


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs for each harness (the fuzzer mutates from these)."""
    manifest_env = sign_envelope(PAYLOAD_TYPE, manifest_payload(), [PUB]).to_bytes()
    trust_env = sign_envelope(TRUST_PAYLOAD_TYPE, trust_payload(), [ROOT]).to_bytes()
    rb_env = sign_envelope(ROLLBACK_PAYLOAD_TYPE, rollback_payload(), [PUB]).to_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("manifest.dsse.json", manifest_env), ("artifacts/m/1.0/a", b"hello")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    gnu = io.BytesIO()
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("a" * 200)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    return {
        "manifest": [manifest_payload(), manifest_env],
        "documents": [trust_payload(), rollback_payload(), trust_env, rb_env],
        "tar": [buf.getvalue(), gnu.getvalue()],
    }
