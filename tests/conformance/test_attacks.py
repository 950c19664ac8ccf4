"""Every attack of the threat model (docs/SECURITY.md) against the real CLI.

For each: exit code, error code, no change.

Each case copies the prepared site, makes one hostile input with the
repository simulator (changing exactly one thing of a valid bundle, trust
update or document), runs ``appliance --json import|trust apply ...`` and
asserts: the exit code, the ``--json`` error code, that ``list``, ``verify``,
``trust show`` and the object files are unchanged and staging is empty, and
that the audit log gained exactly one ``rejected`` event with that code.
Positive controls show the unmodified inputs are accepted, so each refusal is
for the one thing the case changed.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bundles.canonical import canonical_bytes
from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, RevokeKey, RotateRoot
from bundles.dsse import Envelope, Signature
from bundles.manifest import MAX_MANIFEST_BYTES, PAYLOAD_TYPE
from bundles.reader import MANIFEST_FILE, MAX_MANIFEST_FILE_BYTES
from bundles.timeutil import utcnow

from .driver import (
    SITE,
    Built,
    Site,
    Snapshot,
    assert_audited_rejection,
    assert_unchanged,
    cli,
    duplicate_signature_envelope,
    new_events,
    ok,
    pack_tar,
    snapshot,
    tar_member,
)

M3 = b"model weights v3 " * 300  # 5,100 bytes
TOK2 = b"tokenizer tables " * 300  # the same size: swapping them keeps sizes right


@dataclass
class Ctx:
    site: Site
    home: Path
    tmp: Path
    before: Snapshot | None = None  # set when a case changes state on purpose first
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def repo(self) -> Any:
        return self.site.repo

    def next_bundle(self, **kw: Any) -> Built:
        """The valid next bundle of stream models: sequence 3, m@3.0 and tok@2.0."""
        artifacts = kw.pop("artifacts", {"m@3.0": M3, "tok@2.0": TOK2})
        return self.repo.bundle(artifacts, sequence=kw.pop("sequence", 3), **kw)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Ctx], list[str | os.PathLike[str]]]  # the CLI args of the attack
    exit: int
    code: str
    # None: the refusal is an audit event. Otherwise why it cannot be one.
    unaudited: str | None = None


CASES: list[Case] = []


def case(id: str, exit: int, code: str, unaudited: str | None = None) -> Callable[..., Any]:
    def register(fn: Callable[[Ctx], list[str | os.PathLike[str]]]) -> Any:
        CASES.append(Case(id, fn, exit, code, unaudited))
        return fn

    return register


def as_form(ctx: Ctx, built: Built, form: str, extra: Any = ()) -> Path:
    if form == "dir":
        assert not extra
        return built.path
    return pack_tar(built.path.with_suffix(".tar"), built.path, extra)


def importing(path: Path) -> list[str | os.PathLike[str]]:
    return ["import", path]


# --- artifacts: arbitrary, tampered, wrong, endless, truncated, missing, extra, mixed ---

for form in ("dir", "tar"):

    @case(f"arbitrary-artifact-{form}", 1, "digest_mismatch")
    def _arbitrary(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        b.file("m").write_bytes(os.urandom(len(M3)))
        return importing(as_form(ctx, b, form))

    @case(f"tampered-artifact-one-bit-{form}", 1, "digest_mismatch")
    def _one_bit(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        data = bytearray(b.file("m").read_bytes())
        data[len(data) // 2] ^= 0x01
        b.file("m").write_bytes(bytes(data))
        return importing(as_form(ctx, b, form))

    @case(f"wrong-artifact-under-right-name-{form}", 1, "digest_mismatch")
    def _swapped(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        m, t = b.file("m").read_bytes(), b.file("tok").read_bytes()
        b.file("m").write_bytes(t)
        b.file("tok").write_bytes(m)
        return importing(as_form(ctx, b, form))

    @case(f"endless-data-{form}", 1, "artifact_too_long")
    def _endless(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        with open(b.file("m"), "ab") as f:
            f.write(b"\0" * (1 << 20))
        return importing(as_form(ctx, b, form))

    @case(f"truncated-artifact-{form}", 1, "artifact_truncated")
    def _truncated(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        os.truncate(b.file("m"), len(M3) - 1)
        return importing(as_form(ctx, b, form))

    @case(f"missing-file-{form}", 1, "artifact_missing")
    def _missing(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        b.file("tok").unlink()
        return importing(as_form(ctx, b, form))

    @case(f"extra-file-{form}", 1, "unlisted_file")
    def _extra(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        (b.path / "artifacts" / "payload.sh").write_bytes(b"#!/bin/sh\nrm -rf /\n")
        return importing(as_form(ctx, b, form))

    @case(f"mix-and-match-same-names-{form}", 1, "digest_mismatch")
    def _mix(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        # bundle A and bundle B: the same names, versions, paths and sizes, other bytes;
        # A's signed manifest with B's artifacts
        a = ctx.next_bundle()
        b = ctx.next_bundle(artifacts={"m@3.0": os.urandom(len(M3)), "tok@2.0": TOK2})
        (b.path / MANIFEST_FILE).write_bytes((a.path / MANIFEST_FILE).read_bytes())
        return importing(as_form(ctx, b, form))

    @case(f"mix-and-match-old-manifest-{form}", 1, "artifact_missing")
    def _mix_old(ctx: Ctx, form: str = form) -> list[str | os.PathLike[str]]:
        # the signed manifest of an imported bundle (sequence 2) with a new bundle's artifacts
        b = ctx.next_bundle()
        old = ctx.site.bundles["models2"].path / MANIFEST_FILE
        (b.path / MANIFEST_FILE).write_bytes(old.read_bytes())
        return importing(as_form(ctx, b, form))


# --- replay, rollback of releases, names ------------------------------------------------


@case("replay-same-sequence-dir", 1, "sequence_replayed")
def _replay(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.site.bundles["models2"].path)


@case("replay-same-sequence-tar", 1, "sequence_replayed")
def _replay_tar(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.site.bundles["models2"]
    return importing(pack_tar(ctx.tmp / "replay.tar", b.path))


@case("replay-older-sequence", 1, "sequence_older")
def _older(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.site.bundles["models1"].path)


@case("release-counter-goes-back", 1, "release_counter_not_increasing")
def _release(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # a new sequence, but artifact m at release 1 (the store holds release 2)
    b = ctx.next_bundle(artifacts={"m@0.9": M3}, releases={"m": 1})
    return importing(b.path)


@case("same-version-other-bytes", 1, "version_conflict")
def _conflict(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(artifacts={"m@2.0": M3}).path)


@case("name-of-another-stream", 1, "name_owned_by_other_stream")
def _owned(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.repo.bundle({"m@9.0": M3}, stream="other", sequence=2, signers=("other",))
    return importing(b.path)


# --- freeze, site --------------------------------------------------------------------


@case("freeze-expired", 1, "expired")
def _expired(ctx: Ctx) -> list[str | os.PathLike[str]]:
    now = utcnow()
    b = ctx.next_bundle(issued_at=now - timedelta(days=2), expires=now - timedelta(days=1))
    return importing(b.path)


@case("freeze-clock-set-back", 1, "expired")
def _clock_back(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # A bundle issued 10 days ahead is accepted and raises trusted time; a bundle valid
    # for 5 more days by the system clock is then expired: the clock cannot unfreeze it.
    now = utcnow()
    ahead = ctx.next_bundle(issued_at=now + timedelta(days=10), expires=now + timedelta(days=40))
    ok(cli(ctx.home, "import", ahead.path))
    ctx.before = snapshot(ctx.home)
    b = ctx.next_bundle(sequence=4, artifacts={"m@4.0": M3}, expires=now + timedelta(days=5))
    return importing(b.path)


@case("another-site", 1, "wrong_site")
def _site(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(sites=("site-b",)).path)


# --- signatures: threshold, duplicates, revoked, unknown, role, stream ------------------


def _dual(ctx: Ctx, signers: tuple[str, ...] = ("dual1", "dual2")) -> Built:
    return ctx.repo.bundle({"d@2.0": M3}, stream="dual", sequence=2, signers=signers)


@case("below-threshold", 1, "threshold_not_met")
def _below(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(_dual(ctx, ("dual1",)).path)


@case("duplicate-signatures-one-key", 1, "threshold_not_met")
def _dupes(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = _dual(ctx, ("dual1",))
    env = duplicate_signature_envelope(b.envelope(), ctx.repo.key("dual1"), 2)
    (b.path / MANIFEST_FILE).write_bytes(env.to_bytes())
    return importing(b.path)


@case("duplicate-signatures-one-key-tar", 1, "threshold_not_met")
def _dupes_tar(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = _dual(ctx, ("dual1",))
    env = duplicate_signature_envelope(b.envelope(), ctx.repo.key("dual1"), 5)
    (b.path / MANIFEST_FILE).write_bytes(env.to_bytes())
    return importing(pack_tar(ctx.tmp / "dupes.tar", b.path))


@case("signature-under-another-keyid", 1, "bad_signature")
def _relabel(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # dual1's signature labelled as dual2's, to fake a second signer
    b = _dual(ctx, ("dual1",))
    env = b.envelope()
    fake = Signature(ctx.repo.key("dual2").keyid, env.signatures[0].sig)
    forged = Envelope(env.payload_type, env.payload, (*env.signatures, fake))
    (b.path / MANIFEST_FILE).write_bytes(forged.to_bytes())
    return importing(b.path)


@case("revoked-key", 1, "revoked_key")
def _revoked(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(signers=("old",)).path)


@case("unknown-key", 1, "unknown_key")
def _unknown(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(signers=("stranger",)).path)


@case("key-of-another-stream", 1, "key_not_authorized")
def _stream(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(signers=("other",)).path)


@case("rollback-key-signs-bundle", 1, "key_not_authorized")
def _rb_role(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(signers=("rb",)).path)


@case("root-key-signs-bundle", 1, "key_not_authorized")
def _root_role(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.next_bundle(signers=("root",)).path)


@case("tampered-manifest-payload", 1, "bad_signature")
def _payload(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    env = b.envelope()
    payload = env.payload.replace(b'"sequence":3', b'"sequence":4', 1)
    assert payload != env.payload
    (b.path / MANIFEST_FILE).write_bytes(
        Envelope(env.payload_type, payload, env.signatures).to_bytes()
    )
    return importing(b.path)


@case("unsigned-manifest", 1, "unsigned")
def _unsigned(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    env = b.envelope()
    (b.path / MANIFEST_FILE).write_bytes(Envelope(env.payload_type, env.payload, ()).to_bytes())
    return importing(b.path)


@case("manifest-under-trust-payload-type", 1, "wrong_payload_type")
def _ptype(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    env = ctx.repo.sign(b.envelope().payload, ("pub",), TRUST_PAYLOAD_TYPE)
    (b.path / MANIFEST_FILE).write_bytes(env.to_bytes())
    return importing(b.path)


# --- forged and malformed trust updates --------------------------------------------------


def _apply(ctx: Ctx, env: Envelope | bytes) -> list[str | os.PathLike[str]]:
    return ["trust", "apply", ctx.repo.write(env, "trust")]


def _add_pub(ctx: Ctx, name: str = "newpub") -> AddKey:
    return AddKey(ctx.repo.key(name).public, "publisher", "models")


@case("forged-trust-update-unknown-key", 1, "trust_update_not_authorized")
def _tu_unknown(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(4, [_add_pub(ctx)], signers=("mallory",)))


@case("forged-trust-update-publisher-key", 1, "trust_update_not_authorized")
def _tu_pub(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(4, [_add_pub(ctx)], signers=("pub",)))


@case("forged-trust-update-rollback-key", 1, "trust_update_not_authorized")
def _tu_rb(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(4, [_add_pub(ctx)], signers=("rb",)))


@case("forged-trust-update-tampered-payload", 1, "bad_signature")
def _tu_tampered(ctx: Ctx) -> list[str | os.PathLike[str]]:
    env = ctx.repo.trust_update(4, [RevokeKey(ctx.repo.key("pub2").keyid)])
    evil = ctx.repo.trust_update(4, [RevokeKey(ctx.repo.key("pub").keyid)])
    return _apply(ctx, Envelope(env.payload_type, evil.payload, env.signatures))


@case("trust-update-unsigned", 1, "unsigned")
def _tu_unsigned(ctx: Ctx) -> list[str | os.PathLike[str]]:
    env = ctx.repo.trust_update(4, [_add_pub(ctx)])
    return _apply(ctx, Envelope(env.payload_type, env.payload, ()))


@case("trust-update-replayed", 1, "trust_update_replayed")
def _tu_replay(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(3, [_add_pub(ctx)]))


@case("trust-update-version-gap", 1, "trust_update_version_gap")
def _tu_gap(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(5, [_add_pub(ctx)]))


@case("trust-update-readds-revoked-key", 1, "revoked_key_readded")
def _tu_readd(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _apply(ctx, ctx.repo.trust_update(4, [_add_pub(ctx, "old")]))


@case("root-rotation-not-cosigned-by-new-root", 1, "root_rotation_not_cosigned")
def _tu_rotate(ctx: Ctx) -> list[str | os.PathLike[str]]:
    op = RotateRoot((ctx.repo.key("root2").public,), 1)
    return _apply(ctx, ctx.repo.trust_update(4, [op], signers=("root",)))


@case("root-rotation-signed-by-new-root-only", 1, "trust_update_not_authorized")
def _tu_rotate_new(ctx: Ctx) -> list[str | os.PathLike[str]]:
    op = RotateRoot((ctx.repo.key("root3").public,), 1)
    return _apply(ctx, ctx.repo.trust_update(4, [op], signers=("root3",)))


def bad_oid_pem(ctx: Ctx) -> str:
    """An Ed25519 key whose algorithm OID was changed: a key type no one supports."""
    import base64

    from cryptography.hazmat.primitives import serialization

    der = bytearray(
        ctx.repo.key("odd").public.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    der[8] = 0x7F  # 1.3.101.112 (Ed25519) -> 1.3.101.127
    b64 = base64.b64encode(bytes(der)).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"


@case("trust-update-key-of-unknown-algorithm", 1, "bad_key")
def _tu_odd_key(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # found by fuzz/fuzz_documents.py: cryptography's UnsupportedAlgorithm escaped
    doc = ctx.repo.trust_update(4, [_add_pub(ctx)])
    payload = json.loads(doc.payload)
    payload["operations"][0]["public_key"] = bad_oid_pem(ctx)
    return _apply(ctx, ctx.repo.sign(canonical_bytes(payload), ("root",), TRUST_PAYLOAD_TYPE))


@case("forged-trust-update-carried-in-bundle", 1, "trust_update_not_authorized")
def _tu_carried(ctx: Ctx) -> list[str | os.PathLike[str]]:
    forged = ctx.repo.trust_update(4, [_add_pub(ctx, "evil")], signers=("evil",))
    b = ctx.next_bundle(trust_updates=[forged.to_bytes()])
    return importing(b.path)


# --- rollback authorizations (the pointer moves only with one) ------------------------------


def _rollback(ctx: Ctx, env: Envelope) -> list[str | os.PathLike[str]]:
    return ["rollback", "m", "--authorization", ctx.repo.write(env, "auth")]


@case("rollback-authorized-by-publisher-key", 1, "key_not_authorized")
def _rb_pub(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _rollback(ctx, ctx.repo.rollback_auth("m", "1.0", signers=("pub",)))


@case("rollback-authorized-by-revoked-key", 1, "revoked_key")
def _rb_old(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # "old" is revoked (it was a publisher key): revocation is reported first
    return _rollback(ctx, ctx.repo.rollback_auth("m", "1.0", signers=("old",)))


@case("rollback-authorization-unsigned", 1, "rollback_not_authorized")
def _rb_unsigned(ctx: Ctx) -> list[str | os.PathLike[str]]:
    env = ctx.repo.rollback_auth("m", "1.0")
    return _rollback(ctx, Envelope(env.payload_type, env.payload, ()))


@case("rollback-authorization-expired", 1, "authorization_expired")
def _rb_expired(ctx: Ctx) -> list[str | os.PathLike[str]]:
    now = utcnow()
    env = ctx.repo.rollback_auth(
        "m", "1.0", issued_at=now - timedelta(days=8), expires=now - timedelta(days=1)
    )
    return _rollback(ctx, env)


@case("rollback-authorization-other-site", 1, "authorization_mismatch")
def _rb_site(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _rollback(ctx, ctx.repo.rollback_auth("m", "1.0", sites=("site-b",)))


@case("rollback-authorization-other-artifact", 1, "authorization_mismatch")
def _rb_name(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _rollback(ctx, ctx.repo.rollback_auth("tok", "1.0"))


@case("rollback-authorization-wrong-digest", 1, "authorization_mismatch")
def _rb_digest(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _rollback(ctx, ctx.repo.rollback_auth("m", "1.0", digest="0" * 64))


@case("rollback-authorization-reused", 1, "authorization_reused")
def _rb_reused(ctx: Ctx) -> list[str | os.PathLike[str]]:
    args = _rollback(ctx, ctx.repo.rollback_auth("m", "1.0"))
    ok(cli(ctx.home, *args))
    ctx.before = snapshot(ctx.home)
    return args


# --- archive tricks: tar -----------------------------------------------------------------

TAR_TRICKS: dict[str, tuple[str, Callable[[Ctx, Built], Any]]] = {
    "absolute-path": ("archive_unsafe_path", lambda c, b: [tar_member("/etc/cron.d/evil", b"x")]),
    "dotdot": ("archive_unsafe_path", lambda c, b: [tar_member("../evil", b"x")]),
    "dotdot-inside": (
        "archive_unsafe_path",
        lambda c, b: [tar_member("artifacts/../../evil", b"x")],
    ),
    "symlink-member": (
        "archive_link",
        lambda c, b: [tar_member("artifacts/link", type=tarfile.SYMTYPE, linkname="/etc/shadow")],
    ),
    "hardlink-member": (
        "archive_link",
        lambda c, b: [tar_member("artifacts/hard", type=tarfile.LNKTYPE, linkname="/etc/shadow")],
    ),
    "char-device": ("archive_special_file", lambda c, b: [tar_member("dev", type=tarfile.CHRTYPE)]),
    "block-device": (
        "archive_special_file",
        lambda c, b: [tar_member("blk", type=tarfile.BLKTYPE)],
    ),
    "fifo": ("archive_special_file", lambda c, b: [tar_member("fifo", type=tarfile.FIFOTYPE)]),
    "duplicate-member": (
        "archive_duplicate_member",
        lambda c, b: [tar_member(b.manifest.artifacts[0].path, os.urandom(len(M3)))],
    ),
    "case-look-alike": (
        "archive_duplicate_member",
        lambda c, b: [tar_member(MANIFEST_FILE.upper(), b"{}")],
    ),
    "unicode-look-alike": (
        # FULLWIDTH LATIN SMALL LETTER M: NFKC folds it onto "manifest.dsse.json"
        "archive_duplicate_member",
        lambda c, b: [tar_member("\uff4danifest.dsse.json", b"{}")],
    ),
    "not-nfc-name": ("archive_unsafe_path", lambda c, b: [tar_member("artifacts/e\u0301", b"x")]),
    "name-over-1024-bytes": ("path_too_long", lambda c, b: [tar_member("a/" * 520 + "x", b"x")]),
    "nested-deeper-than-32": (
        "nesting_too_deep",
        lambda c, b: [tar_member("/".join(["d"] * 40), b"x")],
    ),
}

for trick, (trick_code, extra) in TAR_TRICKS.items():

    @case(f"tar-{trick}", 1, trick_code)
    def _tar_trick(ctx: Ctx, extra: Any = extra) -> list[str | os.PathLike[str]]:
        b = ctx.next_bundle()
        return importing(pack_tar(ctx.tmp / "trick.tar", b.path, extra(ctx, b)))


@case("tar-artifact-is-symlink", 1, "archive_link")
def _tar_art_link(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    path = b.manifest.artifact("m").path  # type: ignore[union-attr]
    link = tar_member(path, type=tarfile.SYMTYPE, linkname="/etc/passwd")
    return importing(pack_tar(ctx.tmp / "t.tar", b.path, [link], skip=[path]))


@case("tar-gzip-compressed", 1, "archive_corrupt")
def _tar_gz(ctx: Ctx) -> list[str | os.PathLike[str]]:
    import gzip

    b = ctx.next_bundle()
    raw = pack_tar(ctx.tmp / "raw.tar", b.path).read_bytes()
    out = ctx.tmp / "b.tar"
    out.write_bytes(gzip.compress(raw))
    return importing(out)


@case("tar-truncated-no-end-block", 1, "archive_corrupt")
def _tar_cut(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    out = pack_tar(ctx.tmp / "b.tar", b.path)
    data = out.read_bytes().rstrip(b"\0")
    out.write_bytes(data + b"\0" * (-len(data) % 512))
    return importing(out)


# --- archive tricks: directory -------------------------------------------------------------


def _dir_trick(ctx: Ctx, do: Callable[[Path, Built], None]) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    do(b.path, b)
    return importing(b.path)


DIR_TRICKS: dict[str, tuple[str, Callable[[Path, Built], None]]] = {
    "symlink-extra": ("archive_link", lambda p, b: os.symlink("/etc/shadow", p / "shadow")),
    "artifact-is-symlink": (
        "archive_link",
        lambda p, b: (b.file("m").unlink(), os.symlink("/etc/passwd", b.file("m"))) and None,
    ),
    "symlinked-directory": (
        "archive_link",
        lambda p, b: os.symlink("/etc", p / "artifacts" / "etc", target_is_directory=True),
    ),
    "fifo": ("archive_special_file", lambda p, b: os.mkfifo(p / "fifo")),
    "char-device": (
        "archive_special_file",
        lambda p, b: os.mknod(p / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3)),
    ),
    "case-look-alike": (
        "archive_duplicate_member",
        lambda p, b: (p / MANIFEST_FILE.upper()).write_bytes(b"{}") and None,
    ),
    "unicode-look-alike": (
        "archive_duplicate_member",
        lambda p, b: (p / "\uff4danifest.dsse.json").write_bytes(b"{}") and None,
    ),
    "not-nfc-name": (
        "archive_unsafe_path",
        lambda p, b: (p / "artifacts" / "e\u0301").write_bytes(b"x") and None,
    ),
    "hardlink-extra-name": (
        # a directory cannot link outside its file system; an extra name is an extra file
        "unlisted_file",
        lambda p, b: os.link(b.file("m"), p / "artifacts" / "m-again"),
    ),
    "nested-deeper-than-32": (
        "nesting_too_deep",
        lambda p, b: (p / Path(*["d"] * 40)).mkdir(parents=True),
    ),
}

for trick, (trick_code, do) in DIR_TRICKS.items():

    @case(f"dir-{trick}", 1, trick_code)
    def _dir(ctx: Ctx, do: Callable[[Path, Built], None] = do) -> list[str | os.PathLike[str]]:
        if do is DIR_TRICKS["char-device"][1] and os.geteuid() != 0:
            pytest.skip("mknod of a device needs root")
        return _dir_trick(ctx, do)


# --- signed manifests that lie about paths; oversized and deeply nested manifests --------


def _resigned(ctx: Ctx, edit: Callable[[dict[str, Any]], None]) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    doc = b.doc()
    edit(doc)
    ctx.repo.resign(b.path, doc, ("pub",))
    return importing(b.path)


def _set_path(value: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["artifacts"][0]["path"] = value

    return edit


@case("signed-manifest-absolute-path", 1, "unsafe_path")
def _m_abs(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _resigned(ctx, _set_path("/etc/passwd"))


@case("signed-manifest-dotdot-path", 1, "unsafe_path")
def _m_dotdot(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _resigned(ctx, _set_path("artifacts/../../../etc/passwd"))


@case("signed-manifest-case-colliding-paths", 1, "duplicate_name")
def _m_case(ctx: Ctx) -> list[str | os.PathLike[str]]:
    def edit(doc: dict[str, Any]) -> None:
        arts = doc["predicate"]["artifacts"]
        arts[1]["path"] = arts[0]["path"].upper().replace("ARTIFACTS/", "artifacts/")

    return _resigned(ctx, edit)


@case("signed-manifest-path-over-1024-bytes", 1, "path_too_long")
def _m_long(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _resigned(ctx, _set_path("artifacts/" + "a" * 1100))


@case("signed-manifest-nested-deeper-than-32", 1, "nesting_too_deep")
def _m_deep(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    payload = b.envelope().payload[:-1] + b',"x":' + b"[" * 40 + b"]" * 40 + b"}"
    (b.path / MANIFEST_FILE).write_bytes(ctx.repo.sign(payload, ("pub",)).to_bytes())
    return importing(b.path)


@case("envelope-nested-deeper-than-32", 1, "nesting_too_deep")
def _env_deep(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    (b.path / MANIFEST_FILE).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    return importing(b.path)


def _payload_base64_edited(ctx: Ctx, edit: Callable[[str], str]) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    doc = b.envelope().to_dict()
    doc["payload"] = edit(doc["payload"])
    (b.path / MANIFEST_FILE).write_bytes(canonical_bytes(doc))
    return importing(b.path)


@case("envelope-payload-base64-url-alphabet", 1, "malformed_envelope")
def _env_b64_url(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # strict base64 only (bundles.dsse._b64): the URL-safe alphabet's "-" is refused
    return _payload_base64_edited(ctx, lambda text: "-" + text[1:])


@case("envelope-payload-base64-data-after-padding", 1, "malformed_envelope")
def _env_b64_after_padding(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return _payload_base64_edited(ctx, lambda text: text + "AA==AA==")


@case("signed-manifest-over-the-cap", 1, "manifest_too_large")
def _m_big(ctx: Ctx) -> list[str | os.PathLike[str]]:
    b = ctx.next_bundle()
    payload = b.envelope().payload[:-1] + b',"pad":"' + b"p" * MAX_MANIFEST_BYTES + b'"}'
    (b.path / MANIFEST_FILE).write_bytes(ctx.repo.sign(payload, ("pub",)).to_bytes())
    return importing(b.path)


@case("manifest-file-over-limit-sparse", 1, "manifest_too_large")
def _m_sparse(ctx: Ctx) -> list[str | os.PathLike[str]]:
    # refused by its size before a byte is read: a sparse file costs nothing to make
    b = ctx.next_bundle()
    os.truncate(b.path / MANIFEST_FILE, MAX_MANIFEST_FILE_BYTES + 1)
    return importing(b.path)


@case("signed-manifest-over-100000-artifacts", 1, "too_many_artifacts")
def _m_many(ctx: Ctx) -> list[str | os.PathLike[str]]:
    def edit(doc: dict[str, Any]) -> None:
        doc["subject"] = [0] * 100_001

    return _resigned(ctx, edit)


@case("signed-manifest-unknown-field", 1, "malformed_manifest")
def _m_field(ctx: Ctx) -> list[str | os.PathLike[str]]:
    def edit(doc: dict[str, Any]) -> None:
        doc["predicate"]["artifacts"][0]["exec"] = "sh -c 'id'"

    return _resigned(ctx, edit)


# --- refusals made before the home is touched: exit 3, not audited ------------------------


@case(
    "bundle-path-missing",
    3,
    "bundle_not_found",
    unaudited="operational (exit 3): no decision about a bundle was made; the media was absent",
)
def _absent(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return importing(ctx.tmp / "no-such-bundle")


@case(
    "trust-update-file-missing",
    3,
    "file_not_found",
    unaudited="operational (exit 3): the file to apply is absent; nothing was decided",
)
def _tu_absent(ctx: Ctx) -> list[str | os.PathLike[str]]:
    return ["trust", "apply", ctx.tmp / "no-such-update.json"]


# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_attack_is_refused_and_changes_nothing(
    case: Case, site: Site, home: Path, tmp_path: Path
) -> None:
    ctx = Ctx(site, home, tmp_path)
    args = case.make(ctx)
    before = ctx.before or site.snapshot
    result = cli(home, *args)
    assert (result.rc, result.code) == (case.exit, case.code), str(result)
    assert result.out["error"]["message"], "an error without a message"
    after = snapshot(home)
    assert_unchanged(before, after)
    if case.unaudited is None:
        assert_audited_rejection(before, after, case.code)
    else:
        assert new_events(before, after) == [], case.unaudited


def test_case_count() -> None:
    """At least 40 cases, covering every attack of the threat model (docs/SECURITY.md)."""
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_control_the_unmodified_next_bundle_is_accepted(
    form: str, site: Site, home: Path, tmp_path: Path
) -> None:
    """The cases change one thing of this bundle; unchanged, it imports."""
    ctx = Ctx(site, home, tmp_path)
    path = as_form(ctx, ctx.next_bundle(), form)
    out = ok(cli(home, "import", path))
    assert {(a["name"], a["status"]) for a in out["artifacts"]} == {("m", "new"), ("tok", "new")}
    after = snapshot(home)
    assert after.verify[0] == 0
    assert [(e["type"], e["outcome"]) for e in new_events(site.snapshot, after)] == [
        ("import", "accepted"),
        ("import", "accepted"),
        ("bundle_import", "accepted"),
    ]


def test_control_dual_stream_with_both_signatures_is_accepted(
    site: Site, home: Path, tmp_path: Path
) -> None:
    ok(cli(home, "import", _dual(Ctx(site, home, tmp_path)).path))


def test_control_trust_update_signed_by_root_is_accepted(
    site: Site, home: Path, tmp_path: Path
) -> None:
    ctx = Ctx(site, home, tmp_path)
    assert ok(cli(home, *_apply(ctx, ctx.repo.trust_update(4, [_add_pub(ctx)]))))["version"] == 4


def test_control_root_rotation_cosigned_is_accepted(site: Site, home: Path, tmp_path: Path) -> None:
    ctx = Ctx(site, home, tmp_path)
    op = RotateRoot((ctx.repo.key("root4").public,), 1)
    env = ctx.repo.trust_update(4, [op], signers=("root", "root4"))
    ok(cli(home, *_apply(ctx, env)))
    # the old root no longer counts
    forged = ctx.repo.trust_update(5, [_add_pub(ctx)], signers=("root",))
    r = cli(home, *_apply(ctx, forged))
    assert (r.rc, r.code) == (1, "trust_update_not_authorized"), str(r)


def test_broken_bundle_does_not_suppress_a_carried_revocation(
    site: Site, home: Path, tmp_path: Path
) -> None:
    """Trust updates carried by a bundle apply on their own merit, even if the bundle fails."""
    ctx = Ctx(site, home, tmp_path)
    revoke = ctx.repo.trust_update(4, [RevokeKey(ctx.repo.key("pub2").keyid)])
    b = ctx.next_bundle(trust_updates=[revoke.to_bytes()])
    data = bytearray(b.file("m").read_bytes())
    data[0] ^= 0x80
    b.file("m").write_bytes(bytes(data))
    r = cli(home, "import", b.path)
    assert (r.rc, r.code) == (1, "digest_mismatch"), str(r)
    after = snapshot(home)
    assert after.trust["trust_version"] == 4
    assert ctx.repo.key("pub2").keyid in after.trust["revoked"]
    assert after.listing == site.snapshot.listing
    assert after.objects == site.snapshot.objects
    assert [(e["type"], e["outcome"], e["code"]) for e in new_events(site.snapshot, after)] == [
        ("trust_update", "accepted", None),
        ("import", "rejected", "digest_mismatch"),
    ]


def test_manifest_payload_is_canonical_json_of_the_case_doc(site: Site, tmp_path: Path) -> None:
    """Self-check of the simulator: re-signing an unedited doc gives the same payload."""
    b = Ctx(site, tmp_path, tmp_path).next_bundle()
    assert canonical_bytes(b.doc()) == b.envelope().payload
    assert b.envelope().payload_type == PAYLOAD_TYPE
    assert b.manifest.sites == (SITE,)
