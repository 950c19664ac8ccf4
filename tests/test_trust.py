"""The pure trust state machine: each refusal its own error, state untouched."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appliance.errors import (
    KeyNotAuthorizedError,
    RevokedKeyError,
    RevokedKeyReuseError,
    RootRotationError,
    ThresholdError,
    TrustUpdateError,
    TrustUpdateReplayError,
    TrustUpdateUnauthorizedError,
    TrustUpdateVersionError,
)
from appliance.trust import TrustState, apply_update
from bundles.documents import (
    TRUST_PAYLOAD_TYPE,
    AddKey,
    Operation,
    RevokeKey,
    RotateRoot,
    SetThreshold,
    TrustUpdate,
)
from bundles.dsse import Envelope, sign_envelope
from bundles.errors import SignatureError
from bundles.keys import PrivateKey

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def update(version: int, ops: list[Operation], *keys: PrivateKey) -> Envelope:
    doc = TrustUpdate(version, NOW, tuple(ops))
    return sign_envelope(TRUST_PAYLOAD_TYPE, doc.to_payload(), keys)


@pytest.fixture
def root() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def state(root: PrivateKey) -> TrustState:
    return TrustState.initial([root.public], 1)


def test_add_publisher_then_signers_count(root: PrivateKey, state: TrustState) -> None:
    pub = PrivateKey.generate()
    new, _ = apply_update(state, update(2, [AddKey(pub.public, "publisher", "models")], root))
    assert new.version == 2
    assert new.check_signers(frozenset({pub.keyid}), ("publisher", "models")) == {pub.keyid}


def test_key_of_another_stream_is_not_authorized(root: PrivateKey, state: TrustState) -> None:
    pub = PrivateKey.generate()
    new, _ = apply_update(state, update(2, [AddKey(pub.public, "publisher", "a")], root))
    with pytest.raises(KeyNotAuthorizedError):
        new.check_signers(frozenset({pub.keyid}), ("publisher", "b"))


def test_threshold_not_met(root: PrivateKey, state: TrustState) -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    ops: list[Operation] = [
        AddKey(a.public, "publisher", "s"),
        AddKey(b.public, "publisher", "s"),
        SetThreshold("publisher", "s", 2),
    ]
    new, _ = apply_update(state, update(2, ops, root))
    with pytest.raises(ThresholdError):
        new.check_signers(frozenset({a.keyid}), ("publisher", "s"))
    assert new.check_signers(frozenset({a.keyid, b.keyid}), ("publisher", "s"))


def test_revoked_key_rejected_and_never_readded(root: PrivateKey, state: TrustState) -> None:
    pub = PrivateKey.generate()
    s2, _ = apply_update(state, update(2, [AddKey(pub.public, "publisher", "s")], root))
    s3, _ = apply_update(s2, update(3, [RevokeKey(pub.keyid)], root))
    with pytest.raises(RevokedKeyError):
        s3.check_signers(frozenset({pub.keyid}), ("publisher", "s"))
    with pytest.raises(RevokedKeyReuseError):
        apply_update(s3, update(4, [AddKey(pub.public, "publisher", "s")], root))


def test_forged_update_signed_by_unknown_key(state: TrustState) -> None:
    mallory = PrivateKey.generate()
    with pytest.raises(TrustUpdateUnauthorizedError):
        apply_update(state, update(2, [AddKey(mallory.public, "publisher", "s")], mallory))


def test_update_signed_by_publisher_is_not_authorized(root: PrivateKey, state: TrustState) -> None:
    pub = PrivateKey.generate()
    s2, _ = apply_update(state, update(2, [AddKey(pub.public, "publisher", "s")], root))
    with pytest.raises(TrustUpdateUnauthorizedError):
        apply_update(s2, update(3, [SetThreshold("publisher", "s", 1)], pub))


def test_tampered_update_is_bad_signature(root: PrivateKey, state: TrustState) -> None:
    env = update(2, [SetThreshold("rollback", None, 1)], root)
    forged = Envelope(
        env.payload_type, env.payload.replace(b'"threshold":1', b'"threshold":2'), env.signatures
    )
    with pytest.raises(SignatureError):
        apply_update(state, forged)


def test_replayed_and_skipping_versions(root: PrivateKey, state: TrustState) -> None:
    env2 = update(2, [SetThreshold("rollback", None, 1)], root)
    s2, _ = apply_update(state, env2)
    with pytest.raises(TrustUpdateReplayError):
        apply_update(s2, env2)
    with pytest.raises(TrustUpdateVersionError):
        apply_update(s2, update(4, [SetThreshold("rollback", None, 1)], root))


def test_root_rotation_needs_old_and_new(root: PrivateKey, state: TrustState) -> None:
    new_root = PrivateKey.generate()
    rotate: list[Operation] = [RotateRoot((new_root.public,), 1)]
    with pytest.raises(RootRotationError):
        apply_update(state, update(2, rotate, root))  # old only
    with pytest.raises(TrustUpdateUnauthorizedError):
        apply_update(state, update(2, rotate, new_root))  # new only
    s2, _ = apply_update(state, update(2, rotate, root, new_root))
    assert s2.members(("root", "")) == {new_root.keyid}
    # the old root can no longer sign
    with pytest.raises(TrustUpdateUnauthorizedError):
        apply_update(s2, update(3, [SetThreshold("rollback", None, 1)], root))


def test_one_key_one_role(root: PrivateKey, state: TrustState) -> None:
    k = PrivateKey.generate()
    ops: list[Operation] = [AddKey(k.public, "publisher", "s"), AddKey(k.public, "rollback", None)]
    with pytest.raises(TrustUpdateError) as exc:
        apply_update(state, update(2, ops, root))
    assert exc.value.code == "role_conflict"


def test_cannot_strand_the_root(root: PrivateKey, state: TrustState) -> None:
    with pytest.raises(TrustUpdateError) as exc:
        apply_update(state, update(2, [RevokeKey(root.keyid)], root))
    assert exc.value.code == "root_unusable"
