"""The bundle reader: authenticate first, then bounded reads; each refusal its own code."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conformance.driver import (
    Built,
    flip_bit,
    make_bundle,
    make_key,
    pack_tar,
    raw_envelope,
    resign,
    resolver_for,
    sign_payload,
    strip_signatures,
    tamper_payload,
    tamper_signature,
    tar_member,
    write_manifest,
)

from bundles.dsse import sign_envelope
from bundles.errors import (
    ApplianceError,
    ArtifactMissingError,
    ArtifactTooLongError,
    ArtifactTruncatedError,
    DigestMismatchError,
    EnvelopeFormatError,
    ManifestFormatError,
    ManifestTooLargeError,
    MediaChangedError,
    NotABundleError,
    PayloadTypeError,
    SignatureError,
    UnknownKeyError,
    UnlistedFileError,
    UnsignedError,
)
from bundles.hashing import hash_path
from bundles.media import open_media
from bundles.reader import (
    MANIFEST_FILE,
    MAX_MANIFEST_FILE_BYTES,
    MAX_TRUST_FILE_BYTES,
    Bundle,
    open_bundle,
    peek,
    read_trust_updates,
    verify_artifacts,
)


def _open(b: Built) -> Bundle:
    return open_bundle(b.path, b.resolver())


def _refused(
    b: Built, cls: type[ApplianceError], code: str, *, full: bool = True
) -> ApplianceError:
    with pytest.raises(cls) as info:
        with _open(b) as bundle:
            if full:
                bundle.check_files()
                verify_artifacts(bundle)
    assert info.type is cls, info.value
    assert info.value.code == code
    return info.value


def _read_all(bundle: Bundle, name: str, chunk: int = 333) -> tuple[bytes, int]:
    art = bundle.manifest.artifact(name)
    assert art is not None
    out = bytearray()
    buf = bytearray(chunk)
    with bundle.open_artifact(art) as r:
        while n := r.readinto(buf):
            out += buf[:n]
        return bytes(out), r.bytes_read


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize("part_size", [None, 1000, 1], ids=["whole", "parts1000", "parts1"])
def test_round_trip(tmp_path: Path, tar: bool, part_size: int | None) -> None:
    arts = {"model@1.0": os.urandom(2500), "empty@1": b"", "org/tok@2.0": b"tok"}
    if part_size == 1:
        arts = {"small@1": b"abcdef"}
    b = make_bundle(tmp_path, artifacts=arts, tar=tar, part_size=part_size, sha256=True)
    with _open(b) as bundle:
        assert bundle.signers == {b.key.keyid}
        assert bundle.manifest == b.manifest
        bundle.check_files()
        verify_artifacts(bundle)
        for name, data in b.contents.items():
            got, read = _read_all(bundle, name)
            assert got == data
            assert read == len(data)  # each byte read from media exactly once
    if part_size == 1000:
        art = b.manifest.artifact("model")
        assert art is not None and [p.size for p in art.parts] == [1000, 1000, 500]


def test_segments_point_at_the_signed_bytes(tmp_path: Path) -> None:
    for tar in (False, True):
        b = make_bundle(tmp_path / str(tar), tar=tar, part_size=1000)
        with _open(b) as bundle:
            art = bundle.manifest.artifact("model")
            assert art is not None
            with bundle.open_artifact(art) as r:
                segs = r.segments()
                assert len(segs) == 3
                data = b"".join(os.pread(fd, n, off) for fd, off, n in segs)
                assert data == b.contents["model"]
                assert r.bytes_read == 0


def test_peek_is_unverified_and_needs_no_keys(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with open_media(b.path) as src:
        env, manifest = peek(src)
    assert manifest == b.manifest
    assert env.signatures[0].keyid == b.key.keyid


def test_trust_updates_read_in_order_not_verified(tmp_path: Path) -> None:
    root = make_key()
    ups = [sign_envelope("x/trust", f'{{"v":{i}}}'.encode(), [root]).to_bytes() for i in (2, 3)]
    b = make_bundle(tmp_path, trust_updates=ups)
    with open_media(b.path) as src:
        envs = read_trust_updates(src)
    assert [e.payload for e in envs] == [b'{"v":2}', b'{"v":3}']
    with _open(b) as bundle:
        bundle.check_files()  # trust/NNNN.dsse.json files are expected


def test_trust_update_over_limit(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    (b.path / "trust").mkdir()
    with open(b.path / "trust" / "0001.dsse.json", "wb") as f:
        f.truncate(MAX_TRUST_FILE_BYTES + 1)
    with open_media(b.path) as src, pytest.raises(ManifestTooLargeError):
        read_trust_updates(src)


def test_duplicate_signatures_and_extra_keys(tmp_path: Path) -> None:
    k1, k2 = make_key(), make_key()
    b = make_bundle(tmp_path, keys=[k1], extra_keys=[k1, k2])
    with open_bundle(b.path, resolver_for(k1, k2)) as bundle:
        assert bundle.signers == {k1.keyid, k2.keyid}
    with open_bundle(b.path, resolver_for(k2)) as bundle:
        assert bundle.signers == {k2.keyid}  # unknown keys' signatures are ignored


# --- signatures ----------------------------------------------------------------------


def test_tampered_payload(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    tamper_payload(b.path)
    _refused(b, SignatureError, "bad_signature")


def test_tampered_signature(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    tamper_signature(b.path)
    _refused(b, SignatureError, "bad_signature")


def test_missing_signature(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    strip_signatures(b.path)
    _refused(b, UnsignedError, "unsigned")


def test_signature_by_unlisted_key(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with pytest.raises(UnknownKeyError) as info:
        open_bundle(b.path, resolver_for(make_key()))
    assert info.value.code == "unknown_key"


def test_wrong_payload_type(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    payload = (b.path / MANIFEST_FILE).read_bytes()
    env = sign_payload(b.manifest.to_payload(), b.keys, payload_type="text/plain")
    write_manifest(b.path, env)
    assert payload != env
    _refused(b, PayloadTypeError, "wrong_payload_type")
    with open_media(b.path) as src, pytest.raises(PayloadTypeError):
        peek(src)


def test_payload_is_not_parsed_before_verification(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    write_manifest(b.path, raw_envelope(b"{not json", [(b.key.keyid, b"\0" * 64)]))
    _refused(b, SignatureError, "bad_signature")  # not malformed_manifest


def test_malformed_envelope(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    write_manifest(b.path, b'{"payloadType": 1}')
    _refused(b, EnvelopeFormatError, "malformed_envelope")


def test_manifest_file_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with open(b.path / MANIFEST_FILE, "r+b") as f:
        f.truncate(MAX_MANIFEST_FILE_BYTES + 1)
    _refused(b, ManifestTooLargeError, "manifest_too_large")


def test_manifest_missing(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    (b.path / MANIFEST_FILE).unlink()
    _refused(b, NotABundleError, "not_a_bundle")  # an operator's mistake: exit 2


def test_signed_but_invalid_manifest(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["extra"] = 1

    resign(b.path, edit, b.keys)
    _refused(b, ManifestFormatError, "malformed_manifest")


# --- artifacts on media --------------------------------------------------------------


def test_endless_data_file_longer_than_signed(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with open(b.file("model"), "ab") as f:
        f.write(b"more")
    _refused(b, ArtifactTooLongError, "artifact_too_long")


def test_endless_data_grows_while_read(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with _open(b) as bundle:
        art = bundle.manifest.artifact("model")
        assert art is not None
        with bundle.open_artifact(art) as r:
            buf = bytearray(100)
            assert r.readinto(buf) == 100
            with open(b.file("model"), "ab") as f:
                f.write(b"x" * 10)
            with pytest.raises(ArtifactTooLongError):
                while r.readinto(buf):
                    pass
            assert r.bytes_read == art.size  # never a byte past the signed end


def test_part_longer_than_signed_part(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, part_size=1000)
    p0, p1 = b.file("model", 0), b.file("model", 1)
    data0, data1 = p0.read_bytes(), p1.read_bytes()
    p0.write_bytes(data0 + data1[:1])  # total unchanged, but part 0 holds 1001
    p1.write_bytes(data1[1:])
    _refused(b, ArtifactTooLongError, "artifact_too_long")


def test_truncated(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with open(b.file("model"), "r+b") as f:
        f.truncate(10)
    _refused(b, ArtifactTruncatedError, "artifact_truncated")


def test_truncated_while_read(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    with _open(b) as bundle:
        art = bundle.manifest.artifact("model")
        assert art is not None
        with bundle.open_artifact(art) as r:
            buf = bytearray(100)
            r.readinto(buf)
            with open(b.file("model"), "r+b") as f:
                f.truncate(150)
            with pytest.raises(MediaChangedError):  # flaky media, exit 3, not a rejection
                while r.readinto(buf):
                    pass


def test_truncated_tar(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, tar=True)
    with _open(b) as bundle:
        art = bundle.manifest.artifact("model")
        assert art is not None
        with bundle.open_artifact(art) as r:
            os.truncate(b.path, 1024)
            with pytest.raises(MediaChangedError):
                while r.readinto(bytearray(64)):
                    pass


def test_missing_file(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    b.file("tokenizer").unlink()
    _refused(b, ArtifactMissingError, "artifact_missing")
    with _open(b) as bundle:
        art = bundle.manifest.artifact("tokenizer")
        assert art is not None
        with pytest.raises(ArtifactMissingError):
            bundle.open_artifact(art)


def test_missing_part(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, part_size=1000)
    b.file("model", 2).unlink()
    _refused(b, ArtifactMissingError, "artifact_missing")


def test_unlisted_extra_file(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    (b.path / "artifacts" / "model@1.0_extra.bin").write_bytes(b"x")
    _refused(b, UnlistedFileError, "unlisted_file")


@pytest.mark.parametrize("rel", ["README", "trust/1.dsse.json", "trust/0001.json"])
def test_unlisted_file_elsewhere(tmp_path: Path, rel: str) -> None:
    b = make_bundle(tmp_path)
    (b.path / rel).parent.mkdir(exist_ok=True)
    (b.path / rel).write_bytes(b"x")
    _refused(b, UnlistedFileError, "unlisted_file")


def test_unlisted_member_in_tar(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    t = pack_tar(tmp_path / "x.tar", b.path, extra=[tar_member("artifacts/evil", b"x")])
    with open_bundle(t, b.resolver()) as bundle, pytest.raises(UnlistedFileError):
        bundle.check_files()


def test_parts_that_do_not_add_up(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, part_size=1000)

    def edit(doc: dict[str, Any]) -> None:
        for entry in doc["predicate"]["artifacts"]:
            if "parts" in entry:
                entry["parts"][0]["size"] += 1

    resign(b.path, edit, b.keys)
    e = _refused(b, ManifestFormatError, "malformed_manifest")
    assert "add up" in e.message


def test_tampered_artifact_one_bit(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    flip_bit(b.file("model"), 1234)
    _refused(b, DigestMismatchError, "digest_mismatch")


def test_tampered_artifact_in_tar(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, tar=True)
    with open_media(b.path) as src, src.open("artifacts/model@1.0_model.bin") as m:
        offset = m.offset
    flip_bit(b.path, offset + 7)
    _refused(b, DigestMismatchError, "digest_mismatch")


def test_wrong_artifact_under_right_name(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    b.file("model").write_bytes(b"W" * len(b.contents["model"]))  # same size, other bytes
    _refused(b, DigestMismatchError, "digest_mismatch")


def test_sha256_is_checked_too(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, sha256=True)

    def edit(doc: dict[str, Any]) -> None:
        doc["subject"][0]["digest"]["sha256"] = "0" * 64

    resign(b.path, edit, b.keys)
    e = _refused(b, DigestMismatchError, "digest_mismatch")
    assert "SHA-256" in e.message


def test_mix_and_match_artifact_from_another_manifest(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a")
    other = make_bundle(tmp_path / "b", artifacts={"model@1.0": b"other"})
    foreign = other.manifest.artifact("model")
    assert foreign is not None
    with _open(a) as bundle, pytest.raises(ValueError):
        bundle.open_artifact(foreign)


def test_manifest_from_another_bundle_mismatches_artifacts(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a")
    b = make_bundle(tmp_path / "b", artifacts={"model@1.0": b"z" * 2400, "tokenizer@1.0": b"t"})
    (a.path / MANIFEST_FILE).write_bytes((b.path / MANIFEST_FILE).read_bytes())
    with open_bundle(a.path, b.resolver()) as bundle:
        with pytest.raises((DigestMismatchError, ArtifactTooLongError)):
            bundle.check_files()
            verify_artifacts(bundle)


def test_open_bundle_closes_media_on_refusal(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(UnknownKeyError):
            open_bundle(b.path, resolver_for(make_key()))
    assert len(os.listdir("/proc/self/fd")) == before


def test_bundle_tar_layout_is_readable_by_tarfile(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, tar=True, part_size=1000)
    with tarfile.open(b.path) as tf:
        names = tf.getnames()
    assert names == sorted(names)
    assert MANIFEST_FILE in names
    digest, size = hash_path(b.sources / "model.bin")
    art = b.manifest.artifact("model")
    assert art is not None and (art.blake3, art.size) == (digest, size)
