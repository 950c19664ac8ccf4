"""Hypothesis: the trust-update and rollback-authorization parsers and the trust state machine.

Only ``bundles.errors.ApplianceError`` subclasses may escape (anything else is
a crash: exit 3 ``internal_error`` instead of a clean refusal). Bounded for the
default run; ``HYPOTHESIS_PROFILE=long`` runs more examples. The bundle
engineer covers the manifest, DSSE and tar readers; the atheris harnesses in
``fuzz/`` run the same targets coverage-guided.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.trust import TrustState, apply_update
from bundles.canonical import canonical_bytes
from bundles.documents import (
    ROLLBACK_PAYLOAD_TYPE,
    TRUST_PAYLOAD_TYPE,
    RollbackAuthorization,
    TrustUpdate,
)
from bundles.dsse import Envelope, Signature, sign_envelope
from bundles.errors import ApplianceError
from bundles.keys import PrivateKey

settings.register_profile(
    "conformance",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("long", max_examples=5000, deadline=None)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "conformance"))

KEYS = [PrivateKey.generate() for _ in range(5)]
ROOT, PUB, RB = KEYS[0], KEYS[1], KEYS[2]
PEMS = [k.public.to_pem().decode() for k in KEYS]
IDS = [k.keyid for k in KEYS]
NOW = "2026-11-01T00:00:00Z"

json_scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["root", "publisher", "rollback", "Publisher", "", None, 1])
streams = st.sampled_from(["models", "other", "a/b", "", None, "x" * 200, "\u0000", 3])
thresholds = st.sampled_from([0, 1, 2, 3, 65, -1, 2**53, True, "1", None])
keyids = st.sampled_from([*IDS, "0" * 64, "F" * 64, "abc", None])
# the last one: an Ed25519 key under an unknown algorithm OID (the atheris finding)
ODD_PEM = (
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2V/AyEA5/FioQvsVZr+oZXk3OhLaVaNXSywlj60RsBoXisX8vA=\n"
    "-----END PUBLIC KEY-----\n"
)
pems = st.sampled_from(
    [*PEMS, "", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", ODD_PEM]
)


def op() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"op": st.just("add_key"), "public_key": pems, "role": roles, "stream": streams}
        ),
        st.fixed_dictionaries({"op": st.just("revoke"), "keyid": keyids}),
        st.fixed_dictionaries(
            {"op": st.just("threshold"), "role": roles, "stream": streams, "threshold": thresholds}
        ),
        st.fixed_dictionaries(
            {
                "op": st.just("rotate_root"),
                "public_keys": st.lists(pems, max_size=4),
                "threshold": thresholds,
            }
        ),
        json_values,
    )


trust_docs = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["appliance/trust-update/v1", "other"]),
        "version": st.one_of(st.integers(0, 8), thresholds),
        "issued_at": st.sampled_from([NOW, "2026-13-01T00:00:00Z", "", 0, "2026-11-01"]),
        "operations": st.lists(op(), max_size=6),
    },
    optional={"extra": json_values},
)

rollback_docs = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["appliance/rollback-authorization/v1", "x"]),
        "id": st.sampled_from(["0" * 32, "g" * 32, "", None, "0" * 31]),
        "name": st.sampled_from(["m", "m/../x", "", "a" * 200, None, "é"]),
        "to_version": st.sampled_from(["1.0", "", "1 0", None, "x" * 300]),
        "digest": st.sampled_from([None, "0" * 64, "0" * 63, 5]),
        "reason": st.one_of(st.text(max_size=20), st.just("r" * 5000), st.none()),
        "issued_at": st.sampled_from([NOW, "2027-01-01T00:00:00Z", "bad", None]),
        "expires": st.sampled_from(["2026-11-08T00:00:00Z", NOW, "2025-01-01T00:00:00Z", 7]),
        "sites": st.one_of(
            st.lists(st.sampled_from(["site-a", "", "b/c", 1]), max_size=3), json_values
        ),
        "any_site": st.one_of(st.booleans(), json_values),
    },
    optional={"extra": json_values},
)


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


flips = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)


def _parses_or_refuses(parse: Any, payload: bytes) -> None:
    try:
        parse(payload)
    except ApplianceError:
        pass


@PROFILE
@given(st.binary(max_size=2048))
def test_trust_update_parser_random_bytes(data: bytes) -> None:
    _parses_or_refuses(TrustUpdate.from_payload, data)


@PROFILE
@given(trust_docs, flips)
def test_trust_update_parser_structured(doc: dict[str, Any], f: list[tuple[int, int]]) -> None:
    payload = json.dumps(doc).encode()
    _parses_or_refuses(TrustUpdate.from_payload, payload)
    _parses_or_refuses(TrustUpdate.from_payload, _mutate(payload, f))


@PROFILE
@given(st.binary(max_size=2048))
def test_rollback_parser_random_bytes(data: bytes) -> None:
    _parses_or_refuses(RollbackAuthorization.from_payload, data)


@PROFILE
@given(rollback_docs, flips)
def test_rollback_parser_structured(doc: dict[str, Any], f: list[tuple[int, int]]) -> None:
    payload = json.dumps(doc).encode()
    _parses_or_refuses(RollbackAuthorization.from_payload, payload)
    _parses_or_refuses(RollbackAuthorization.from_payload, _mutate(payload, f))


def _start_state() -> TrustState:
    from bundles.documents import AddKey

    state = TrustState.initial([ROOT.public], 1)
    doc = TrustUpdate(
        2,
        datetime(2026, 11, 1, tzinfo=UTC),
        (AddKey(PUB.public, "publisher", "models"), AddKey(RB.public, "rollback", None)),
    )
    state, _ = apply_update(state, sign_envelope(TRUST_PAYLOAD_TYPE, doc.to_payload(), [ROOT]))
    return state


START = _start_state()

signer_sets = st.lists(st.sampled_from(range(len(KEYS))), max_size=4)
payload_types = st.sampled_from([TRUST_PAYLOAD_TYPE, ROLLBACK_PAYLOAD_TYPE, "x"])


@PROFILE
@given(trust_docs, signer_sets, payload_types, st.booleans(), flips)
def test_trust_state_machine_random_envelopes(
    doc: dict[str, Any],
    signers: list[int],
    ptype: str,
    canonical: bool,
    f: list[tuple[int, int]],
) -> None:
    """Signed (often by root, so parsing and the operations are reached) random updates."""
    doc = dict(doc)
    if isinstance(doc.get("version"), int) and doc["version"] in range(0, 9):
        doc["version"] = START.version + doc["version"] % 3  # replay, next, gap
    try:
        payload = canonical_bytes(doc) if canonical else json.dumps(doc).encode()
    except ValueError:
        payload = json.dumps(doc).encode()
    if f and not signers:
        payload = _mutate(payload, f)
    keys = [KEYS[i] for i in signers]
    env = (
        sign_envelope(ptype, payload, keys)
        if keys
        else Envelope(ptype, payload, (Signature(IDS[0], b"\0" * 64),))
    )
    before = (START.version, dict(START.keys), dict(START.thresholds), START.revoked)
    try:
        new, update = apply_update(START, env)
    except ApplianceError:
        pass
    else:
        assert new.version == START.version + 1 == update.version
        assert not (new.members(("root", "")) & new.revoked)
        assert 1 <= new.threshold(("root", "")) <= len(new.members(("root", "")))
        assert START.revoked <= new.revoked, "a revocation was undone"
    assert (START.version, dict(START.keys), dict(START.thresholds), START.revoked) == before


@PROFILE
@given(st.lists(st.tuples(trust_docs, signer_sets), min_size=1, max_size=4))
def test_trust_state_machine_sequences(steps: list[tuple[dict[str, Any], list[int]]]) -> None:
    """A chain of updates: invariants hold after every accepted step."""
    state = START
    for doc, signers in steps:
        doc = dict(doc, version=state.version + 1, type="appliance/trust-update/v1")
        doc["issued_at"] = NOW
        try:
            payload = canonical_bytes(doc)
        except ValueError:
            continue
        env = sign_envelope(TRUST_PAYLOAD_TYPE, payload, [KEYS[i] for i in signers] or [ROOT])
        try:
            state, _ = apply_update(state, env)
        except ApplianceError:
            continue
        assert not (state.members(("root", "")) & state.revoked)
        assert state.threshold(("root", "")) <= len(state.members(("root", "")))
