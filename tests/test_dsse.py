from __future__ import annotations

import pytest

from bundles.dsse import Envelope, Signature, pae, sign_envelope, verify_envelope
from bundles.errors import (
    EnvelopeFormatError,
    PayloadTypeError,
    SignatureError,
    UnknownKeyError,
    UnsignedError,
)
from bundles.keys import PrivateKey, PublicKey

PT = "application/vnd.test+json"


def resolver(*keys: PrivateKey):  # type: ignore[no-untyped-def]
    table = {k.keyid: k.public for k in keys}
    return lambda keyid: table.get(keyid)


def test_pae_matches_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_roundtrip_and_distinct_signers() -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    env = sign_envelope(PT, b'{"x":1}', [a, b, a])
    again = Envelope.from_bytes(env.to_bytes())
    assert verify_envelope(again, resolver(a, b), PT) == {a.keyid, b.keyid}
    # duplicate signatures by one key count once
    assert len(verify_envelope(again, resolver(a), PT)) == 1


def test_tampered_payload_is_bad_signature() -> None:
    a = PrivateKey.generate()
    env = sign_envelope(PT, b'{"x":1}', [a])
    forged = Envelope(PT, b'{"x":2}', env.signatures)
    with pytest.raises(SignatureError):
        verify_envelope(forged, resolver(a), PT)


def test_tampered_signature_is_bad_signature() -> None:
    a = PrivateKey.generate()
    env = sign_envelope(PT, b"{}", [a])
    sig = env.signatures[0]
    flipped = bytes([sig.sig[0] ^ 1]) + sig.sig[1:]
    with pytest.raises(SignatureError):
        verify_envelope(Envelope(PT, b"{}", (Signature(sig.keyid, flipped),)), resolver(a), PT)


def test_missing_signature_is_unsigned() -> None:
    with pytest.raises(UnsignedError):
        verify_envelope(Envelope(PT, b"{}", ()), resolver(), PT)


def test_unlisted_key_is_unknown() -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    with pytest.raises(UnknownKeyError):
        verify_envelope(sign_envelope(PT, b"{}", [a]), resolver(b), PT)


def test_wrong_payload_type() -> None:
    a = PrivateKey.generate()
    with pytest.raises(PayloadTypeError):
        verify_envelope(sign_envelope(PT, b"{}", [a]), resolver(a), "other")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"payloadType":"x"}',
        b'{"payloadType":"x","payload":"!!","signatures":[]}',
        b'{"payloadType":"x","payload":"","signatures":[{"keyid":1,"sig":""}]}',
    ],
)
def test_malformed_envelopes(raw: bytes) -> None:
    with pytest.raises(EnvelopeFormatError):
        Envelope.from_bytes(raw)


def test_key_id_is_sha256_of_raw_key() -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    k = PrivateKey.generate()
    raw = k.public.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert k.keyid == hashlib.sha256(raw).hexdigest()
    assert PublicKey.from_pem(k.public.to_pem()).keyid == k.keyid
