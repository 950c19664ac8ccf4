"""Every policy refusal of ``appliance import`` and ``appliance trust apply``, black-box.

Each test builds a signed input with one thing wrong, runs the real CLI and
asserts: exit 1, its own error code, the store unchanged (``list``,
``verify``, the files under ``objects/`` and ``trust show`` identical before
and after), no staging leftovers, and the refusal recorded in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conformance.driver import Json, manifest_of, pack_tar, staging_files, trust_envelope
from import_env import Env

from appliance.errors import ExpiredError
from appliance.home import Home
from appliance.policy import StoreView, check_bundle
from appliance.trust import TrustState
from appliance.truststore import load_trust, trusted_now
from bundles.documents import AddKey, RevokeKey, RotateRoot, SetThreshold
from bundles.keys import PrivateKey
from bundles.timeutil import parse_stamp, utcnow

DATA = b"model weights v1\n" * 64


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(
        tmp_path_factory.mktemp("policy-template"), site="site-a", streams=("models", "tools")
    )


@pytest.fixture
def env(template: Env, tmp_path: Path) -> Iterator[Env]:
    yield template.clone(tmp_path / "env")


def refused_unchanged(
    env: Env,
    code: str,
    *args: str | Path,
    event_type: str = "import",
) -> Json:
    """Run a command that must be refused with ``code``; nothing else may move."""
    before = env.snapshot()
    doc = env.expect_refusal(code, *args)
    after = env.snapshot()
    assert after.store_part() == before.store_part()
    assert after.trust == before.trust
    assert staging_files(env.home) == []
    new = after.events_after(before)
    rejected = [e for e in new if e["outcome"] == "rejected" and e["code"] == code]
    assert [e["type"] for e in rejected] == [event_type], new
    return doc


# --- signatures and keys -------------------------------------------------------


@pytest.mark.parametrize("duplicate", [False, True], ids=["one-signature", "same-key-twice"])
def test_threshold_not_met(env: Env, duplicate: bool) -> None:
    second = env.new_key("publisher-models-2")
    env.apply_trust(
        [AddKey(second.public, "publisher", "models"), SetThreshold("publisher", "models", 2)]
    )
    key = env.publishers["models"]
    bundle = env.bundle({"m@1": DATA}, keys=[key, key] if duplicate else [key])
    refused_unchanged(env, "threshold_not_met", "import", bundle)
    # Control: both keys meet the threshold.
    env.import_ok(env.bundle({"m@1": DATA}, keys=[key, second]))


def test_key_of_another_stream(env: Env) -> None:
    bundle = env.bundle({"m@1": DATA}, stream="models", keys=[env.publishers["tools"]])
    refused_unchanged(env, "key_not_authorized", "import", bundle)


def test_rollback_key_cannot_sign_a_bundle(env: Env) -> None:
    bundle = env.bundle({"m@1": DATA}, keys=[env.rollback])
    refused_unchanged(env, "key_not_authorized", "import", bundle)


def test_revoked_key(env: Env) -> None:
    key = env.publishers["models"]
    env.import_ok(env.bundle({"m@1": DATA}, sequence=1))
    env.apply_trust([RevokeKey(key.keyid)])
    bundle = env.bundle({"m@2": DATA + b"2"}, sequence=2, keys=[key])
    refused_unchanged(env, "revoked_key", "import", bundle)


# --- anti-rollback, freeze, site -------------------------------------------------


def test_replayed_sequence(env: Env) -> None:
    first = env.bundle({"m@1": DATA}, sequence=1)
    env.import_ok(first)
    refused_unchanged(env, "sequence_replayed", "import", first)
    other = env.bundle({"m@2": DATA + b"2"}, sequence=1)
    refused_unchanged(env, "sequence_replayed", "import", other)


def test_older_sequence(env: Env) -> None:
    older = env.bundle({"m@1": DATA}, sequence=2)
    env.import_ok(env.bundle({"m@3": DATA + b"3"}, sequence=3))
    refused_unchanged(env, "sequence_older", "import", older)


def test_expired(env: Env) -> None:
    now = utcnow()
    bundle = env.bundle(
        {"m@1": DATA}, issued_at=now - timedelta(days=10), expires=now - timedelta(seconds=5)
    )
    refused_unchanged(env, "expired", "import", bundle)


def test_wrong_site(env: Env) -> None:
    bundle = env.bundle({"m@1": DATA}, sites=["site-b"])
    refused_unchanged(env, "wrong_site", "import", bundle)
    env.import_ok(env.bundle({"m@1": DATA}, sites=["site-b", "site-a"]))


def test_trusted_time_floor_refuses_what_expired_before_a_signed_time(env: Env) -> None:
    """After a bundle issued at T, one expiring before T is expired, whatever the clock."""
    t = utcnow().replace(microsecond=0) + timedelta(days=10)
    env.import_ok(env.bundle({"m@1": DATA}, sequence=1, issued_at=t, expires=t + timedelta(days=1)))
    shown = env.expect_ok("trust", "show")
    assert parse_stamp(shown["time_floors"]["streams"]["models"]) >= t  # the stream's floor
    # Valid by the system clock (expires in 5 days), expired by trusted time (T is in 10).
    late = env.bundle({"m@2": DATA + b"2"}, sequence=2, expires=utcnow() + timedelta(days=5))
    refused_unchanged(env, "expired", "import", late)


def test_trusted_time_floor_pure_policy(env: Env) -> None:
    """The pure policy decides with the ``trusted_now`` it is given, not the system clock."""
    now = utcnow()
    bundle = env.bundle({"m@1": DATA}, expires=now + timedelta(days=5))
    manifest = manifest_of(bundle)
    db = Home(env.home).db()
    state: TrustState = load_trust(db)
    view = StoreView("site-a", {}, {}, {})
    signers = frozenset({env.publishers["models"].keyid})
    check_bundle(state, view, manifest, signers, now)  # accepted by today's clock
    with pytest.raises(ExpiredError):
        check_bundle(state, view, manifest, signers, now + timedelta(days=6))
    # The floor is derived from signed times: a row written into the state database by
    # a writer of the home raises nothing (there is no floor row any more).
    floor = now + timedelta(days=6)
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('trusted_time', ?)",
        [floor.strftime("%Y-%m-%dT%H:%M:%SZ")],
    )
    assert trusted_now(db, stream="models") < floor.replace(microsecond=0)


# --- names, versions, release counters -------------------------------------------


def test_same_version_other_bytes(env: Env) -> None:
    env.import_ok(env.bundle({"m@1": DATA}, sequence=1))
    bundle = env.bundle({"m@1": DATA + b"tampered"}, sequence=2)
    refused_unchanged(env, "version_conflict", "import", bundle)


def test_release_counter_not_increasing(env: Env) -> None:
    env.import_ok(env.bundle({"m@1": DATA}, sequence=5))  # release 5 (the sequence)
    bundle = env.bundle({"m@2": DATA + b"2"}, sequence=6, releases={"m@2": 5})
    refused_unchanged(env, "release_counter_not_increasing", "import", bundle)
    lower = env.bundle({"m@3": DATA + b"3"}, sequence=7, releases={"m@3": 2})
    refused_unchanged(env, "release_counter_not_increasing", "import", lower)


def test_name_owned_by_other_stream(env: Env) -> None:
    env.import_ok(env.bundle({"m@1": DATA}, stream="models", sequence=1))
    bundle = env.bundle({"m@2": DATA + b"2"}, stream="tools", sequence=1)
    refused_unchanged(env, "name_owned_by_other_stream", "import", bundle)


# --- trust updates -----------------------------------------------------------------


@pytest.mark.parametrize("signer", ["publisher", "unknown", "rollback"])
def test_forged_trust_update_via_apply(env: Env, signer: str) -> None:
    key = {
        "publisher": env.publishers["models"],
        "unknown": PrivateKey.generate(),
        "rollback": env.rollback,
    }[signer]
    evil = env.new_key("evil")
    forged = env.trust_update([AddKey(evil.public, "publisher", "models")], keys=[key])
    refused_unchanged(
        env, "trust_update_not_authorized", "trust", "apply", forged, event_type="trust_update"
    )


def test_forged_trust_update_carried_in_a_bundle(env: Env) -> None:
    evil = env.new_key("evil")
    forged = trust_envelope(
        env.trust_version + 1, [AddKey(evil.public, "publisher", "models")], [evil]
    ).to_bytes()
    bundle = env.bundle({"m@1": DATA}, keys=[evil], trust_updates=[forged])
    refused_unchanged(
        env, "trust_update_not_authorized", "import", bundle, event_type="trust_update"
    )
    tar = env.bundle({"m@1": DATA}, keys=[evil], trust_updates=[forged], tar=True)
    refused_unchanged(env, "trust_update_not_authorized", "import", tar, event_type="trust_update")


def test_replayed_trust_update(env: Env) -> None:
    refused_unchanged(
        env,
        "trust_update_replayed",
        "trust",
        "apply",
        env.initial_update,
        event_type="trust_update",
    )


def test_trust_update_version_gap(env: Env) -> None:
    spare = env.new_key("spare")
    gap = env.trust_update(
        [AddKey(spare.public, "publisher", "models")], version=env.trust_version + 2
    )
    refused_unchanged(
        env, "trust_update_version_gap", "trust", "apply", gap, event_type="trust_update"
    )


def test_root_rotation_not_cosigned(env: Env) -> None:
    new_root = env.new_key("root-2")
    rotation = [RotateRoot((new_root.public,), 1)]
    old_only = env.trust_update(rotation, keys=[env.root])
    refused_unchanged(
        env, "root_rotation_not_cosigned", "trust", "apply", old_only, event_type="trust_update"
    )
    new_only = env.trust_update(rotation, keys=[new_root])
    refused_unchanged(
        env, "trust_update_not_authorized", "trust", "apply", new_only, event_type="trust_update"
    )
    # Control: signed by both sets, the rotation is accepted.
    env.apply_trust(rotation, keys=[env.root, new_root])


def test_revoked_key_readded(env: Env) -> None:
    spare = env.new_key("spare")
    env.apply_trust([AddKey(spare.public, "publisher", "tools")])
    env.apply_trust([RevokeKey(spare.keyid)])
    readd = env.trust_update([AddKey(spare.public, "publisher", "tools")])
    refused_unchanged(
        env, "revoked_key_readded", "trust", "apply", readd, event_type="trust_update"
    )


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_carried_revocation_applies_although_the_artifacts_are_refused(env: Env, tar: bool) -> None:
    revoked = env.publishers["tools"].keyid
    revocation = trust_envelope(env.trust_version + 1, [RevokeKey(revoked)], [env.root]).to_bytes()
    src = env.bundle({"a@1": DATA, "b@1": b"small artifact"}, trust_updates=[revocation], tar=False)
    target = src / manifest_of(src).artifact("b").path  # type: ignore[union-attr]
    raw = bytearray(target.read_bytes())
    raw[3] ^= 0x01
    target.write_bytes(bytes(raw))
    if tar:
        bundle = pack_tar(env.path("broken.tar"), src)
    else:
        bundle = src
    assert revoked not in env.expect_ok("trust", "show")["revoked"]
    before = env.snapshot()
    env.expect_refusal("digest_mismatch", "import", bundle)
    after = env.snapshot()
    assert after.store_part() == before.store_part()
    assert staging_files(env.home) == []
    assert revoked in after.trust["revoked"]
    assert after.trust["trust_version"] == before.trust["trust_version"] + 1
    events = [(e["type"], e["outcome"], e["code"]) for e in after.events_after(before)]
    assert events == [("trust_update", "accepted", None), ("import", "rejected", "digest_mismatch")]
